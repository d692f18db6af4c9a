"""``ptycholib reconstruct --model M --data D [--backend B] [--batch-size N] --out recon.npz``."""

from __future__ import annotations

import dataclasses

from ptycholib import archive, data, workflow
from ptycholib.cli._common import add_backend, add_measurement, require_at_least_one

__all__ = ["register", "run"]


def register(subparsers):
    """Add ``ptycholib reconstruct``: a trained model applied to one scan."""
    parser = subparsers.add_parser("reconstruct", help="reconstruct a scan with a trained model (either backend's)",
                                   description="Predict patches for every scan position and reassemble them on the "
                                   "data's object grid. Writes an NPZ with `object` (complex (H, W)) and JSON "
                                   "`metadata`.")
    parser.add_argument("--model", required=True, help="model archive (wts.h5.zip) or a folder holding one")
    parser.add_argument("--data", required=True, help="scan to reconstruct (.npz, SPEC section 5)")
    add_backend(parser, "predict with this backend (default: the one that trained the model)")
    parser.add_argument("--batch-size", type=int, help="groups per prediction batch")
    add_measurement(parser)
    parser.add_argument("--out", required=True, help="output .npz")
    parser.set_defaults(func=run)


def run(args):
    """Reconstruct ``args.data`` with the model ``args.model`` and write ``args.out``; return the exit status."""
    model = archive.load_model(args.model)
    inference = model.config.inference
    if args.batch_size is not None:
        require_at_least_one(args.batch_size, "--batch-size")
        inference = dataclasses.replace(inference, batch_size=args.batch_size)
    dataset = data.load_npz(args.data, measurement=args.measurement)
    recon = workflow.reconstruct(model, dataset, backend=args.backend, inference=inference)
    path = workflow.save_reconstruction(recon, args.out, source=str(args.data), model=str(args.model))
    print(f"reconstructed {recon.object_patches.shape[0]} groups with {recon.backend} in "
          f"{recon.inference_seconds:.2f} s (+{recon.reassembly_seconds:.2f} s reassembly); wrote {path}")
    return 0
