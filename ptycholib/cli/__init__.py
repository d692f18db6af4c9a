"""The ``ptycholib`` command: ``python -m ptycholib <subcommand> ...``.

Each subcommand lives in its own module ``ptycholib/cli/<name>.py`` with ``register(subparsers)``, which
adds its parser, and ``run(args)``, the function that parser dispatches to; argument helpers shared by
several subcommands are in ``ptycholib/cli/_common.py``. Convention for every subcommand: bad input exits
with status 2 and one clear line on stderr (what was wrong, which file or key), never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main", "build_parser"]

_COMMANDS = ("config", "simulate", "check", "train", "reconstruct", "evaluate", "bench", "notebooks", "ptychodus")


class _Parser(argparse.ArgumentParser):
    """argparse exits with status 2 on usage errors already; keep the message to one line."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser():
    """Return the argument parser with every available subcommand registered."""
    from ptycholib import __version__

    parser = _Parser(prog="ptycholib", description="Physics-informed neural-network ptychography (torch and tensorflow).")
    parser.add_argument("--version", action="version", version=f"ptycholib {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"ptycholib.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"ptycholib.cli.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv=None):
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, IsADirectoryError, PermissionError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"ptycholib {args.command}: error: {message}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"ptycholib {args.command}: error: {exc} (install the matching extra, see README)", file=sys.stderr)
        return 2
