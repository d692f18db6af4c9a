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

import dataclasses

from ptycholib import archive, data, tracking, workflow
from ptycholib.cli._common import add_backend, add_measurement, check_output_folder, output_folder
from ptycholib.config import Config, apply_overrides, load_config

__all__ = ["register", "run"]


def register(subparsers):
    """Add ``ptycholib train`` (data, backend, config file and key=value overrides)."""
    parser = subparsers.add_parser("train", help="train a model and write DIR/wts.h5.zip and DIR/history.csv",
                                   description="Train on a data set in ptycholib's NPZ contract. Config: --config "
                                   "FILE, then key=value overrides (e.g. nepochs=5 gridsize=2), then --backend.")
    parser.add_argument("--data", required=True, help="training data (.npz, SPEC section 5)")
    add_backend(parser, "overrides training.backend")
    parser.add_argument("--config", help="config file (.json/.yaml); defaults when omitted")
    parser.add_argument("--init", metavar="MODEL",
                        help="fine-tune this model archive (wts.h5.zip or its folder) instead of starting afresh")
    add_measurement(parser)
    parser.add_argument("--out", required=True, help="output folder for wts.h5.zip, history.csv and logs")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    parser.set_defaults(func=run)


def run(args):
    """Train on ``args.data`` and write the model and history to ``args.out``; return the exit status."""
    check_output_folder(args.out)
    parent = archive.load_model(args.init) if args.init else None
    config = load_config(args.config) if args.config else (parent.config if parent else Config())
    if parent is not None:
        config = dataclasses.replace(config, model=parent.config.model)
    items = list(args.overrides) + ([f"backend={args.backend}"] if args.backend else [])
    config = apply_overrides(config, items)
    dataset = data.load_npz(args.data, measurement=args.measurement)
    initial_weights, parent_record = None, None
    if parent is not None:
        config, initial_weights, parent_record = workflow.fine_tuning_start(parent, dataset, config,
                                                                            parent_path=args.init)
    with output_folder(args.out) as out:  # removed again if training is refused and the folder is new
        trained = workflow.train_model(dataset, config, initial_weights=initial_weights, log_dir=out / "logs",
                                       progress=not args.no_progress)
    saved = dataclasses.replace(trained.archive, parent=parent_record)
    path = archive.save_model(out / archive.DEFAULT_NAME, saved)
    history_path = tracking.write_history(out / "history.csv", trained.history)
    last = trained.history[-1]
    print(f"trained {config.training.backend} model on {trained.n_groups} groups, {len(trained.history)} epochs "
          f"in {trained.seconds:.1f} s; final loss {last['loss']:.6g}, val_loss {last.get('val_loss')}, "
          f"deviance per pixel {last['deviance']:.4g} (validation {last['val_deviance']:.4g}; 1 = noise floor)")
    print(f"wrote {path} and {history_path}")
    if trained.run_id is not None:  # logger=mlflow: the run holds the files as written here
        tracking.log_files(trained.run_id, [path, history_path], log_dir=out / "logs")
        print(f"MLflow run {trained.run_id} in {tracking.tracking_uri(out / 'logs')}; reconstruct with "
              f"--model runs:/{trained.run_id}/{archive.DEFAULT_NAME}")
    return 0
