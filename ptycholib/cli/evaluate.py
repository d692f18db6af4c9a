"""``ptycholib evaluate --recon R --truth D [--json] [--window W] [--no-register] [--remove-ramp]``.

The registration shift is capped by ``--max-shift-px`` (default 3 px) and reported with its cap.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

from ptycholib import data, metrics, workflow
from ptycholib.cli._common import add_measurement, require_at_least_one
from ptycholib.config import InferenceConfig

__all__ = ["register", "run"]

_UNITS = {
    "phase_rmse": "rad",
    "amplitude_psnr": "dB",
    "phase_psnr": "dB",
    "amplitude_frc50": "x Nyquist",
    "phase_frc50": "x Nyquist",
    "amplitude_frc_half_bit": "x Nyquist",
    "phase_frc_half_bit": "x Nyquist",
    "phase_data_range": "rad",
    "shift_px": "px (rows, cols)",
    "max_shift_px": "px",
    "phase_ramp_rad_per_px": "rad/px (rows, cols)",
    "global_phase_rad": "rad",
    "n_pixels": "px",
    "bbox": "rows, cols",
    "window_px": "px",
}


def register(subparsers):
    """Add ``ptycholib evaluate``, which scores a reconstruction against the true object."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score a reconstruction against the true object (SSIM, PSNR, phase RMSE, FRC)",
        description="Compare the complex `object` of a reconstruction NPZ with `objectGuess` of a data NPZ over "
        "the scanned region, after removing the global complex factor (and, by default, a sub-pixel shift of at "
        "most --max-shift-px). "
        "SSIM and PSNR use the true object's range as data_range (SPEC section 10).",
    )
    parser.add_argument("--recon", required=True,
                        help="reconstruction NPZ with `object` (complex (H, W)) and JSON `metadata`")
    parser.add_argument("--truth", required=True,
                        help="data NPZ (SPEC section 5) with `objectGuess`, `xcoords`, `ycoords`")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument(
        "--window",
        type=int,
        default=InferenceConfig().crop_size,
        help="side in pixels of the window around each position that makes up the scanned region "
        "(default: the reassembly crop size, %(default)s)",
    )
    parser.add_argument("--no-register", action="store_true", help="do not estimate and remove a sub-pixel shift")
    parser.add_argument(
        "--max-shift-px",
        type=float,
        default=metrics.DEFAULT_MAX_SHIFT_PX,
        help="largest registration shift (norm, pixels) that may be removed; the output reports the shift, "
        "the cap and whether the cap bound it (shift_capped). 'inf' removes the cap (default: %(default)s)",
    )
    parser.add_argument("--remove-ramp", action="store_true", help="also remove a linear phase ramp")
    add_measurement(parser, "how to read a float diff3d without metadata (the patterns are not used, only validated)")
    parser.set_defaults(func=run)


def _load_truth(path, measurement):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist.")
    try:
        dataset = data.load_npz(path, measurement=measurement)
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path.name} is not a readable NPZ file ({exc}); is it truncated?") from None
    if dataset.obj is None:
        raise ValueError(f"{path.name} has no 'objectGuess'; evaluation needs the true object.")
    return dataset


def _format(value):
    if isinstance(value, list):
        return ", ".join(_format(v) for v in value)
    if value is None:
        return "none"
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"


def run(args):
    """Score the reconstruction in ``args.recon`` against ``args.truth`` and print it; return the exit status."""
    obj, _ = workflow.load_reconstruction(args.recon)
    dataset = _load_truth(args.truth, args.measurement)
    if obj.shape != dataset.obj.shape:
        raise ValueError(
            f"object in {Path(args.recon).name} is {obj.shape} but objectGuess in {Path(args.truth).name} is "
            f"{dataset.obj.shape}; a reconstruction must be on the data's object grid."
        )
    require_at_least_one(args.window, "--window", "pixel")
    if not args.max_shift_px >= 0:  # also NaN
        raise ValueError(f"--max-shift-px={args.max_shift_px} must be >= 0 pixels ('inf' for no cap).")
    mask = metrics.scanned_region_mask(dataset.x_px, dataset.y_px, obj.shape, args.window)
    scores = metrics.evaluate_reconstruction(
        obj, dataset.obj, mask=mask, register=not args.no_register, remove_ramp=args.remove_ramp,
        max_shift_px=args.max_shift_px,
    )  # fmt: skip
    scores["window_px"] = args.window
    if args.json:
        # JSON has no Infinity: a perfect PSNR becomes null.
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in scores.items()}
        print(json.dumps(clean))
        return 0
    width = max(len(k) for k in scores)
    for key, value in scores.items():
        print(f"{key:<{width}}  {_format(value):<16}  {_UNITS.get(key, '')}".rstrip())
    return 0
