"""``ptycholib train --data train.npz --backend torch|tensorflow [--config FILE] [--init MODEL] [key=value ...] --out DIR``.

With ``--init`` the run fine-tunes an archived model (either backend's) on the given scan: the model
section of the config is the archive's (an override or config file that changes it is refused), the
training and inference sections come from ``--config`` when given, else from the archive, then the
overrides; every weight, the intensity scale included, starts from the archive, while the probe is
the scan's own (its illumination is what the physics must model) and the input scale ``g`` is
computed on the scan. The new archive records its parent's file name and SHA-256 in the manifest.
Stages with ``freeze_encoder`` and ``learning_rate_factor`` give the usual recipe, e.g.
``stages='[{"epochs": 4, "freeze_encoder": true, "learning_rate_factor": 0.3}]'``.

An interrupted run (Ctrl-C, a killed job) continues with ``ptycholib train --resume DIR`` from its
last complete epoch: ``DIR/run.json`` (written before training starts) names the data, the final
config and the parent, and ``DIR/logs`` holds the checkpoints. A folder that already holds a model or
a run is refused unless ``--overwrite`` is given (its old ``wts.h5.zip`` stays until the new one is
written). A non-finite loss or gradient stops the run with exit 1 and writes no model. The data are
checked first (`ptycholib.datacheck`): warnings, or exit 2 with ``--strict``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import sys
from pathlib import Path

from ptycholib import archive, batching, distributed, stream, tracking, workflow
from ptycholib._io import atomic_write
from ptycholib.cli._common import add_backend, add_measurement, check_output_folder, output_folder
from ptycholib.cli.check import add_strict, report_problems
from ptycholib.config import Config, apply_overrides, config_from_dict, config_to_dict, load_config

__all__ = ["register", "run"]

_RUN_FILE = "run.json"


def register(subparsers):
    """Add ``ptycholib train`` (data, backend, config file and key=value overrides)."""
    parser = subparsers.add_parser("train", help="train a model and write DIR/wts.h5.zip and DIR/history.csv",
                                   description="Train on a data set in ptycholib's NPZ contract. Config: --config "
                                   "FILE, then key=value overrides (e.g. nepochs=5 gridsize=2), then --backend.")
    parser.add_argument("--data", help="training data (.npz, SPEC section 5; .h5, its HDF5 variant; or a ptychodus "
                        "diffraction.h5 / folder); required unless --resume")
    add_backend(parser, "overrides training.backend")
    parser.add_argument("--config", help="config file (.json/.yaml); defaults when omitted")
    parser.add_argument("--init", metavar="MODEL",
                        help="fine-tune this model archive (wts.h5.zip or its folder) instead of starting afresh")
    add_measurement(parser)
    parser.add_argument("--out", help="output folder for wts.h5.zip, history.csv, run.json and logs; required unless "
                        "--resume")
    parser.add_argument("--resume", metavar="DIR",
                        help="continue the interrupted run in DIR from its last complete epoch (its data, config and "
                        "backend come from DIR/run.json)")
    parser.add_argument("--overwrite", action="store_true",
                        help="train into --out even if it holds a model or a run (its logs are cleared; the old "
                        "model is replaced only when the new one is written)")
    add_strict(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--stream", choices=("auto", "on", "off"), default="auto",
                        help="read training batches from the file (on), hold the scan in memory (off), or stream "
                        "only above 1 GiB of amplitudes (auto); same batches either way (docs/cluster.md)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    parser.set_defaults(func=run)


def _holds_run(out):
    return any((out / name).exists() for name in (archive.DEFAULT_NAME, _RUN_FILE, "logs"))


def run(args):
    """Train on ``args.data`` and write the model and history to ``args.out``; return the exit status."""
    if args.resume:
        return _resume(args)
    if not args.data or not args.out:
        raise ValueError("--data and --out are required (or --resume DIR to continue a run).")
    out = check_output_folder(args.out)
    primary = distributed.is_primary_process()  # Lightning's DDP workers re-run this command: rank 0 owns --out
    if primary and _holds_run(out) and not args.overwrite:
        raise ValueError(f"{out} already holds a model or a training run; pass --overwrite to replace it, or "
                         f"--resume {out} to continue it.")
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
    report_problems(dataset, args.data, strict=args.strict)
    if args.overwrite and primary:
        shutil.rmtree(out / "logs", ignore_errors=True)
    record = {"data": str(Path(args.data).resolve()), "measurement": args.measurement, "stream": args.stream,
              "parent": parent_record, "config": config_to_dict(config)}
    with output_folder(out) as out:  # removed again if training is refused and the folder is new
        if primary:
            with atomic_write(out / _RUN_FILE) as handle:
                json.dump(record, handle, indent=2)
        return _train(out, dataset, config, initial_weights, parent_record, args, resume=False)


def _resume(args):
    out = Path(args.resume)
    given = [flag for flag, value in (("--init", args.init), ("--config", args.config), ("--backend", args.backend),
                                      ("--measurement", args.measurement), ("--overwrite", args.overwrite),
                                      ("key=value overrides", args.overrides)) if value]
    if args.out and Path(args.out).resolve() != out.resolve():
        given.append("--out")
    if given:
        raise ValueError(f"--resume continues the run in {out} with its own settings; drop {', '.join(given)}.")
    try:
        record = json.loads((out / _RUN_FILE).read_text())
        config = config_from_dict(record["config"], source=str(out / _RUN_FILE))
        data_path, measurement, parent_record = record["data"], record["measurement"], record["parent"]
    except FileNotFoundError:
        raise ValueError(f"{out} holds no {_RUN_FILE}: not a folder that `ptycholib train --out` started.") from None
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{out / _RUN_FILE} is damaged ({error}); train afresh with --overwrite.") from None
    dataset = stream.open_scan(args.data or data_path, measurement=measurement, mode=record.get("stream", "auto"))
    report_problems(dataset, args.data or data_path, strict=args.strict)
    return _train(out, dataset, config, None, parent_record, args, resume=True)


def _train(out, dataset, config, initial_weights, parent_record, args, *, resume):
    handler = signal.getsignal(signal.SIGINT)
    try:
        trained = workflow.train_model(dataset, config, initial_weights=initial_weights,
                                       log_dir=distributed.log_dir_for(out / "logs", config.training),
                                       progress=not args.no_progress, resume=resume)
    except batching.NonFiniteLossError as error:
        print(f"ptycholib train: error: {error} No model was written to {out}.", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, SystemExit):  # Lightning turns Ctrl-C into SystemExit(1)
        print(f"ptycholib train: interrupted; resume with `ptycholib train --resume {out}`.", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores Ctrl-C after it handled one
    if isinstance(dataset, stream.PatternSource):
        dataset.close()
    if not distributed.is_primary_process():  # DDP / multi-worker: rank 0 writes the results
        return 0
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
