"""``ptycholib ptychodus reconstruct|train|settings|list``: ptychodus's batch mode with ptycholib injected.

``reconstruct IN OUT`` and ``train IN OUT`` run ``ptychodus -b ACTION -i IN -o OUT`` (ptychodus's own
``ModelCore.batch_mode_execute``) with ptycholib's reconstructor library added (docs/ptychodus.md).
"""

from __future__ import annotations

import argparse
import logging
import sys

from ptycholib.cli._common import add_actions

__all__ = ["register", "run"]


def register(subparsers):
    """Add ``ptycholib ptychodus`` with its actions reconstruct, train, settings, list and run."""
    actions = add_actions(
        subparsers,
        "ptychodus",
        run,
        help="run ptychodus's batch mode (reconstruct / train) with ptycholib's reconstructors",
        description="Run ptychodus 1.7.0's batch mode on a standard input folder (diffraction.h5, product.h5, "
        "optional settings.ini and model.zip) with ptycholib's reconstructor library injected. Algorithms: "
        "ptycholib_torch, ptycholib_tensorflow, ptycholib_torch-supervised, ptycholib_tensorflow-supervised. "
        "See docs/ptychodus.md.",
    )
    for action, text in (
        ("reconstruct", "reconstruct IN with a trained model; writes OUT/product.NNNNNN.h5"),
        ("train", "train on IN (train_data.npz, or diffraction.h5 + product.h5); writes OUT/wts.h5.zip"),
    ):
        sub = actions.add_parser(action, help=text, description=text)
        sub.add_argument("input_dir", metavar="IN", help="ptychodus input folder")
        sub.add_argument("output_dir", metavar="OUT", help="output folder (created)")
        sub.add_argument("--algorithm", help="algorithm key, e.g. ptycholib_torch; overrides [Processing] Algorithm "
                         "of the settings (default: the settings' value, else ptycholib_torch)")
        sub.add_argument("--settings", help="settings file read before IN/settings.ini (like ptychodus -s)")
        if action == "reconstruct":
            sub.add_argument("--model", help="model archive to use instead of IN/model.zip")
        sub.add_argument("--log-level", type=int, default=logging.WARNING,
                         help="Python logging level of ptychodus's console log (default 30; 20 shows progress)")
    settings = actions.add_parser(
        "settings",
        help="write a settings.ini with [Processing] Algorithm and ptycholib's groups at their defaults",
        description="Write a ptychodus settings.ini holding [Processing] Algorithm and the PtycholibModel, "
        "PtycholibTraining and PtycholibInference groups; --set Group.Parameter=value changes values.",
    )
    settings.add_argument("path", help="settings file to write, e.g. IN/settings.ini")
    settings.add_argument("--algorithm", default="ptycholib_torch", help="algorithm key (default ptycholib_torch)")
    settings.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[],
                          metavar="Group.Parameter=value", help="changes, e.g. --set PtycholibTraining.NumEpochs=5")
    actions.add_parser("list", help="list the algorithm keys ptychodus offers with ptycholib injected")
    app = actions.add_parser(
        "run",
        help="run the ptychodus program itself (GUI, or -b batch) with ptycholib injected",
        description="Run ptychodus's own command line with ptycholib's library added, e.g. "
        "'ptycholib ptychodus run -- -b reconstruct -i IN -o OUT' or 'ptycholib ptychodus run' for the GUI "
        "(needs PyQt5). No checks: an unknown algorithm exits 0 without output, as in plain ptychodus.",
    )
    app.add_argument("arguments", nargs=argparse.REMAINDER, metavar="-- PTYCHODUS_ARGS",
                     help="arguments for ptychodus (after --)")


def run(args):
    """Carry out ``args.action``; return the exit status."""
    handlers = {"reconstruct": _batch, "train": _batch, "settings": _settings, "list": _list, "run": _run_ptychodus}
    return handlers[args.action](args)


def _batch(args):
    from ptycholib import ptychodus as adapter

    try:
        result = adapter.run_batch(
            args.action, args.input_dir, args.output_dir, algorithm=args.algorithm,
            model_path=getattr(args, "model", None), settings_file=args.settings, log_level=args.log_level,
        )
    except adapter.PtychodusBatchError as error:
        print(f"ptycholib ptychodus {args.action}: error: {error}", file=sys.stderr)
        return 1
    if result.action == "reconstruct":
        print(f"{result.algorithm}: reconstructed in {result.seconds:.1f} s; wrote {result.products[-1]}")
    else:
        written = f"; wrote {result.model_path}" if result.model_path else ""
        print(f"{result.algorithm}: trained in {result.seconds:.1f} s{written}")
    return 0


def _settings(args):
    from ptycholib import ptychodus as adapter

    overrides = {}
    for text in args.overrides:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"setting {text!r} must look like Group.Parameter=value.")
        overrides[key.strip()] = value.strip()
    path = adapter.write_settings(args.path, algorithm=args.algorithm, overrides=overrides)
    print(f"wrote {path}")
    return 0


def _run_ptychodus(args):
    from ptycholib import ptychodus as adapter

    arguments = list(args.arguments)
    if arguments[:1] == ["--"]:
        arguments = arguments[1:]
    return adapter.run_ptychodus(arguments)


def _list(args):
    from ptycholib import ptychodus as adapter

    with adapter.create_model_core() as model:
        keys = list(model.processing_core.processing_api.available_reconstructors())
    for key in keys:
        print(key)
    return 0
