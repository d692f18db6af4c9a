"""``ptycholib simulate --object lines --nphotons 1e6 --n-train N --n-test N [--n-objects K] --seed 0 --out DIR``."""

from __future__ import annotations

from ptycholib import data, simulate
from ptycholib.cli._common import check_output_folder, output_folder, require_finite

__all__ = ["register", "run"]


def register(subparsers):
    """Add ``ptycholib simulate``, the seeded simulator of train.npz and test.npz."""
    parser = subparsers.add_parser("simulate",
                                   help="simulate DIR/train.npz and DIR/test.npz (different objects, one probe)",
                                   description="Simulate a training and a test set on two different random objects of "
                                   "one kind, with one probe and Poisson noise, and write them in ptycholib's NPZ "
                                   "contract (amplitudes under diff3d, positions in object pixels, ground truth under "
                                   "objectGuess). With --n-objects K the training set scans K independent objects, "
                                   "tiles of one mosaic objectGuess separated by vacuum, and object_index names each "
                                   "position's tile; the test set is always one held-out object. The same arguments "
                                   "give bit-identical files.")
    parser.add_argument("--object", default="lines", choices=simulate.OBJECT_KINDS,
                        help="object kind (default: lines)")
    parser.add_argument("--probe", default="disk", choices=simulate.PROBE_KINDS,
                        help="probe kind: ideal-lens disk, gaussian, or an out-of-focus zone plate (default: disk)")
    parser.add_argument("--nphotons", type=float, default=1e9, help="mean counts per pattern (default: 1e9)")
    parser.add_argument("--n-train", type=int, default=2500, help="patterns in train.npz (default: 2500)")
    parser.add_argument("--n-test", type=int, default=900, help="patterns in test.npz (default: 900)")
    parser.add_argument(
        "--n-objects", type=int, default=1,
        help="independent objects in train.npz, side by side on one mosaic canvas; the --n-train patterns are "
        "split evenly between them and groups never mix them (default: 1)",
    )  # fmt: skip
    parser.add_argument("--patch-size", type=int, default=64, choices=(64, 128, 256),
                        help="pattern size N in pixels (default: 64)")
    parser.add_argument("--step-px", type=float, default=4.0,
                        help="scan step in object pixels; whole numbers keep a raster on whole pixels (default: 4)")
    parser.add_argument("--scan", default="raster", choices=simulate.SCAN_KINDS, help="scan pattern (default: raster)")
    parser.add_argument("--jitter-px", type=float, default=0.0,
                        help="standard deviation of Gaussian position noise of the raster, px (default: 0)")
    parser.add_argument("--amplitude-only", action="store_true", help="objects without phase")
    parser.add_argument("--beamstop-radius-px", type=float, default=0.0,
                        help="radius of a central beamstop in detector pixels; those pixels read 0 (default: none)")
    parser.add_argument("--bad-pixel-fraction", type=float, default=0.0,
                        help="fraction of dead detector pixels, placed at random (default: 0)")
    parser.add_argument("--noiseless", action="store_true", help="expected counts, no Poisson noise")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.set_defaults(func=run)


_SAME_NAMES = (
    "n_train", "n_test", "patch_size", "nphotons", "step_px", "scan", "jitter_px", "amplitude_only",
    "beamstop_radius_px", "bad_pixel_fraction", "seed", "n_objects",
)  # fmt: skip


def run(args):
    """Simulate ``args.out``/train.npz and test.npz; return the exit status."""
    _check_numbers(args)
    check_output_folder(args.out)
    options = {name: getattr(args, name) for name in _SAME_NAMES}
    train, test = simulate.simulate_train_test(
        object_kind=args.object, probe_kind=args.probe, noise=not args.noiseless, **options
    )
    with output_folder(args.out) as out:
        paths = [data.save_npz(dataset, out / f"{name}.npz") for name, dataset in (("train", train), ("test", test))]
    for path, dataset in zip(paths, (train, test)):
        rows, cols = dataset.obj.shape
        n_objects = 1 if dataset.object_index is None else int(dataset.object_index.max()) + 1
        objects = f"{args.object} object" if n_objects == 1 else f"{n_objects} {args.object} objects on a mosaic"
        print(
            f"wrote {path}: {dataset.n_positions} patterns of {dataset.patch_size} x {dataset.patch_size}, "
            f"{objects} {rows} x {cols} px, {args.nphotons:g} photons per pattern, seed {args.seed}"
        )
    return 0


def _check_numbers(args):
    """Refuse non-finite and out-of-range floats before simulating (one line, exit 2; counts are checked by simulate)."""
    require_finite(args.nphotons, "--nphotons", above=0)
    require_finite(args.step_px, "--step-px", above=0)
    require_finite(args.jitter_px, "--jitter-px", minimum=0)
    require_finite(args.beamstop_radius_px, "--beamstop-radius-px", minimum=0)
    require_finite(args.bad_pixel_fraction, "--bad-pixel-fraction", minimum=0, below=1)
    if not 0 <= args.seed <= 2**32 - 1:
        raise ValueError(f"--seed={args.seed} must be in [0, 2**32 - 1].")
