"""``ptycholib reconstruct --model M --data D [--backend B] [--batch-size N] [--refine K [--refine-probe]] --out recon.npz``.

``M`` is a model archive, a folder holding one, or an MLflow run artifact ``runs:/RUN_ID/wts.h5.zip``
(downloaded from ``--tracking-uri``, default ``MLFLOW_TRACKING_URI``, then verified like any archive).
"""

from __future__ import annotations

import dataclasses

from ptycholib import archive, data, refine, tracking, workflow
from ptycholib.cli._common import add_backend, add_measurement, check_output_file, require_at_least_one
from ptycholib.cli.check import add_strict, report_problems

__all__ = ["register", "run"]


def register(subparsers):
    """Add ``ptycholib reconstruct``: a trained model applied to one scan."""
    parser = subparsers.add_parser("reconstruct", help="reconstruct a scan with a trained model (either backend's)",
                                   description="Predict patches for every scan position and reassemble them on the "
                                   "data's object grid. Writes an NPZ with `object` (complex (H, W)) and JSON "
                                   "`metadata`.")
    parser.add_argument("--model", required=True,
                        help="model archive (wts.h5.zip), a folder holding one, or runs:/RUN_ID/wts.h5.zip (MLflow)")
    parser.add_argument("--tracking-uri", help="MLflow tracking store of a runs:/ model (default: MLFLOW_TRACKING_URI)")
    parser.add_argument("--data", required=True, help="scan to reconstruct (.npz, SPEC section 5)")
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
    parser.add_argument("--out", required=True, help="output .npz")
    add_strict(parser)
    parser.set_defaults(func=run)


def run(args):
    """Reconstruct ``args.data`` with the model ``args.model`` and write ``args.out``; return the exit status."""
    check_output_file(args.out)
    dataset = data.load_npz(args.data, measurement=args.measurement)
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
    recon = workflow.reconstruct(model, dataset, backend=args.backend, inference=inference)
    metadata = {"source": str(args.data), "model": str(args.model), "refine_iterations": args.refine}
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
    print(f"reconstructed {recon.object_patches.shape[0]} groups with {recon.backend} in "
          f"{recon.inference_seconds:.2f} s (+{recon.reassembly_seconds:.2f} s reassembly){refined}; wrote {path}")
    return 0

