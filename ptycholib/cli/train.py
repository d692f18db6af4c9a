"""``ptycholib train --data train.npz --backend torch|tensorflow [--config FILE] [--init MODEL] [key=value ...] --out DIR``.

With ``--init`` the run fine-tunes an archived model (either backend's) on the given scan: the model
section of the config is the archive's (an override or config file that changes it is refused), the
training and inference sections come from ``--config`` when given, else from the archive, then the
overrides; every weight, the intensity scale included, starts from the archive, while the probe is
the scan's own (its illumination is what the physics must model) and the input scale ``g`` is
computed on the scan. The new archive records its parent's file name and SHA-256 in the manifest.
Stages with ``freeze_encoder`` and ``learning_rate_factor`` give the usual recipe, e.g.
``stages='[{"epochs": 4, "freeze_encoder": true, "learning_rate_factor": 0.3}]'``.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

from ptycholib import archive, distributed, stream, workflow
from ptycholib.cli._common import add_backend, add_measurement
from ptycholib.config import Config, apply_overrides, load_config

__all__ = ["register", "run"]


def register(subparsers):
    """Add ``ptycholib train`` (data, backend, config file and key=value overrides)."""
    parser = subparsers.add_parser("train", help="train a model and write DIR/wts.h5.zip and DIR/history.csv",
                                   description="Train on a data set in ptycholib's NPZ contract. Config: --config "
                                   "FILE, then key=value overrides (e.g. nepochs=5 gridsize=2), then --backend.")
    parser.add_argument("--data", required=True, help="training data (.npz, SPEC section 5; .h5, its HDF5 variant; or a "
                        "ptychodus diffraction.h5 / folder)")
    add_backend(parser, "overrides training.backend")
    parser.add_argument("--config", help="config file (.json/.yaml); defaults when omitted")
    parser.add_argument("--init", metavar="MODEL",
                        help="fine-tune this model archive (wts.h5.zip or its folder) instead of starting afresh")
    add_measurement(parser)
    parser.add_argument("--out", required=True, help="output folder for wts.h5.zip, history.csv and logs")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--stream", choices=("auto", "on", "off"), default="auto",
                        help="read training batches from the file (on), hold the scan in memory (off), or stream "
                        "only above 1 GiB of amplitudes (auto); same batches either way (docs/cluster.md)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    parser.set_defaults(func=run)


def run(args):
    """Train on ``args.data`` and write the model and history to ``args.out``; return the exit status."""
    parent = archive.load_model(args.init) if args.init else None
    config = load_config(args.config) if args.config else (parent.config if parent else Config())
    if parent is not None:
        config = dataclasses.replace(config, model=parent.config.model)
    items = list(args.overrides) + ([f"backend={args.backend}"] if args.backend else [])
    config = apply_overrides(config, items)
    dataset = stream.open_scan(args.data, measurement=args.measurement, mode=args.stream)
    initial_weights, parent_record = None, None
    if parent is not None:
        config, initial_weights, parent_record = workflow.fine_tuning_start(parent, dataset, config,
                                                                            parent_path=args.init)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    trained = workflow.train_model(dataset, config, initial_weights=initial_weights,
                                   log_dir=distributed.log_dir_for(out / "logs", config.training),
                                   progress=not args.no_progress)
    if isinstance(dataset, stream.PatternSource):
        dataset.close()
    if not distributed.is_primary_process():  # DDP / multi-worker: rank 0 writes the results
        return 0
    saved = dataclasses.replace(trained.archive, parent=parent_record)
    path = archive.save_model(out / archive.DEFAULT_NAME, saved)
    history_path = out / "history.csv"
    with history_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(trained.history[0]))
        writer.writeheader()
        writer.writerows(trained.history)
    last = trained.history[-1]
    print(f"trained {config.training.backend} model on {trained.n_groups} groups, {len(trained.history)} epochs "
          f"in {trained.seconds:.1f} s; final loss {last['loss']:.6g}, val_loss {last.get('val_loss')}")
    print(f"wrote {path} and {history_path}")
    return 0
