"""``ptycholib reconstruct --model M --data D [--backend B] [--batch-size N] [--refine K [--refine-probe]] --out recon.npz``.

``M`` is a model archive, a folder holding one, or an MLflow run artifact ``runs:/RUN_ID/wts.h5.zip``
(downloaded from ``--tracking-uri``, default ``MLFLOW_TRACKING_URI``, then verified like any archive).

Large scans: ``--stream auto|on|off`` reads the patterns chunk by chunk (`ptycholib.stream`,
`ptycholib.chunked`; auto above `ptycholib.stream.STREAM_THRESHOLD_BYTES`), ``--positions START:STOP``
writes the reassembly canvases of those positions' groups, and ``--merge PART ...`` adds such parts into
the whole reconstruction (docs/cluster.md).
"""

from __future__ import annotations

import dataclasses

from ptycholib import archive, chunked, refine, stream, tracking, workflow
from ptycholib.cli._common import add_backend, add_measurement, check_output_file, require_at_least_one
from ptycholib.cli.check import add_strict, report_problems

__all__ = ["register", "run"]


def register(subparsers):
    """Add ``ptycholib reconstruct``: a trained model applied to one scan."""
    parser = subparsers.add_parser("reconstruct", help="reconstruct a scan with a trained model (either backend's)",
                                   description="Predict patches for every scan position and reassemble them on the "
                                   "data's object grid. Writes an NPZ with `object` (complex (H, W)) and JSON "
                                   "`metadata`.")
    parser.add_argument("--model", help="model archive (wts.h5.zip), a folder holding one, or runs:/RUN_ID/wts.h5.zip "
                        "(MLflow); required unless --merge")
    parser.add_argument("--tracking-uri", help="MLflow tracking store of a runs:/ model (default: MLFLOW_TRACKING_URI)")
    parser.add_argument("--data", help="scan to reconstruct: .npz (SPEC section 5), .h5 (its HDF5 variant), or a "
                        "ptychodus diffraction.h5 / folder with product.h5 (required unless --merge)")
    add_backend(parser, "predict with this backend (default: the one that trained the model)")
    parser.add_argument("--batch-size", type=int, help="groups per prediction batch")
    add_measurement(parser)
    parser.add_argument("--refine", type=int, metavar="K",
                        help="then refine the network's object through the physics for K sweeps over the scan "
                        "(ptycholib.refine; 0 = network only; default: the archive's inference.refine_iterations)")
    parser.add_argument("--refine-probe", action="store_true", help="refine the probe too (with --refine)")
    parser.add_argument("--refine-alpha", type=float,
                        help="rPIE step regulariser in (0, 1] of the refinement (default: the archive's "
                        "inference.refine_alpha, 1 = ePIE's step)")
    parser.add_argument("--stream", choices=("auto", "on", "off"), default="auto",
                        help="read the patterns chunk by chunk (on), all at once (off), or chunked only when their "
                        "float32 amplitudes exceed 1 GiB (auto, the default)")
    parser.add_argument("--chunk-size", type=int, default=stream.DEFAULT_CHUNK_SIZE,
                        help="groups per chunk when streaming (rounded to whole batches; default %(default)s)")
    parser.add_argument("--positions", metavar="START:STOP",
                        help="predict only the groups of these positions and write their reassembly canvases "
                        "(merge the parts with --merge)")
    parser.add_argument("--merge", nargs="+", metavar="PART",
                        help="merge partial reconstructions (--positions outputs) into one; needs only --out")
    parser.add_argument("--out", required=True, help="output .npz")
    add_strict(parser)
    parser.set_defaults(func=run)


def _merge(args):
    recon = chunked.merge_partials(args.merge)
    path = workflow.save_reconstruction(recon, args.out, merged_parts=[str(part) for part in args.merge])
    print(f"merged {len(args.merge)} partial reconstructions; wrote {path}")
    return 0


def _partial(args, model, source, inference):
    part = chunked.reconstruct_partial(model, source, positions=chunked.parse_positions(args.positions, len(source)),
                                       backend=args.backend, inference=inference, chunk_size=args.chunk_size)
    path = chunked.save_partial(part, args.out, source=str(args.data), model=str(args.model))
    print(f"reconstructed the groups of positions {part.start}:{part.stop} of {part.n_positions} with "
          f"{part.metadata['backend']} in {part.metadata['inference_seconds']:.2f} s; wrote partial canvases {path}")
    return 0


def run(args):
    """Reconstruct ``args.data`` with the model ``args.model`` and write ``args.out``; return the exit status."""
    check_output_file(args.out)
    if args.merge:
        if args.model or args.data or args.positions:
            raise ValueError("--merge takes only the parts and --out (the parts hold what the merge needs).")
        return _merge(args)
    if not args.model or not args.data:
        raise ValueError("--model and --data are required (unless --merge).")
    require_at_least_one(args.chunk_size, "--chunk-size")
    streaming = args.stream == "on" or bool(args.positions)
    if args.stream == "auto" and not args.positions:
        with stream.open_patterns(args.data, measurement=args.measurement) as source:
            streaming = stream.should_stream(source)
    if not streaming:  # the data are checked before the model is fetched (a streamed scan: chunk by chunk)
        dataset = stream.load_scan(args.data, measurement=args.measurement)
        report_problems(dataset, args.data, strict=args.strict)
    with tracking.local_model(args.model, tracking_uri=args.tracking_uri) as path:
        model = archive.load_model(path)
    inference = model.config.inference
    if args.batch_size is not None:
        require_at_least_one(args.batch_size, "--batch-size")
        inference = dataclasses.replace(inference, batch_size=args.batch_size)
    args.refine = inference.refine_iterations if args.refine is None else args.refine
    args.refine_alpha = inference.refine_alpha if args.refine_alpha is None else args.refine_alpha
    if args.refine < 0:
        raise ValueError(f"--refine={args.refine} must be >= 0 (0: network only).")
    if args.refine_probe and not args.refine:
        raise ValueError("--refine-probe needs --refine K with K >= 1.")
    options = refine.RefineOptions(alpha=args.refine_alpha, probe_trainable=args.refine_probe)
    if streaming and args.refine:
        raise ValueError("--refine needs the scan in memory; use --stream off (or refine a smaller scan).")
    if streaming:
        with stream.open_patterns(args.data, measurement=args.measurement) as source:
            if args.positions:
                return _partial(args, model, source, inference)
            recon = chunked.reconstruct_chunked(model, source, backend=args.backend, inference=inference,
                                                chunk_size=args.chunk_size)
    else:
        recon = workflow.reconstruct(model, dataset, backend=args.backend, inference=inference)
    metadata = {"source": str(args.data), "model": str(args.model), "refine_iterations": args.refine,
                "streamed": streaming}
    refined = ""
    if args.refine:
        start = refine.start_from_reconstruction(recon, recon.obj.shape)
        result = refine.refine(None, dataset, initial_object=start, n_iterations=args.refine, backend=recon.backend,
                               canvas_shape=recon.obj.shape, **dataclasses.asdict(options))
        recon = dataclasses.replace(recon, obj=result.obj)
        metadata.update(refine_probe=args.refine_probe, refine_alpha=args.refine_alpha,
                        refine_seconds=round(result.seconds, 3), refine_final_loss=float(result.losses[-1]))
        refined = f", refined {args.refine} sweeps in {result.seconds:.2f} s"
    path = workflow.save_reconstruction(recon, args.out, **metadata)
    print(f"reconstructed {len(recon.indices)} groups with {recon.backend} in "
          f"{recon.inference_seconds:.2f} s (+{recon.reassembly_seconds:.2f} s reassembly){refined}; wrote {path}")
    return 0

