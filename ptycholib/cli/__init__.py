"""The ``ptycholib`` command: ``python -m ptycholib <subcommand> ...``.

Each subcommand lives in its own module ``ptycholib/cli/<name>.py`` with ``register(subparsers)``, which
adds its parser, and ``run(args)``, the function that parser dispatches to; argument helpers shared by
several subcommands are in ``ptycholib/cli/_common.py``.

One error path for every subcommand (`main`): a subcommand validates its inputs before it creates any
output, and

- an expected failure -- bad input (`ValueError`, which includes `ConfigError` and `ArchiveError`), a
  file system error (the `OSError` family: missing file, permissions, read-only or full disk), an
  unreadable zip/HDF5/NPZ file (`zipfile.BadZipFile`, `EOFError`), a missing optional dependency, or
  `MemoryError` -- exits with status 2 and one line on stderr naming the file and the problem;
- an unexpected error (a bug) exits with status 1 after one line that says "internal error" and
  where the traceback was written (a file in the temporary folder);
- Ctrl-C (SIGINT) exits with status 130 after one line (for ``train``: how to resume).
"""

from __future__ import annotations

import argparse
import importlib
import contextlib
import os
import signal
import sys
import tempfile
import threading
import traceback
import zipfile

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
    """Run the command line; return the exit status (0 success, 1 internal error, 2 bad input, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    prefix = f"ptycholib {args.command}"
    interrupts = []
    try:
        with _watch_sigint(interrupts):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{prefix}: {_interrupted(args)}", file=sys.stderr)
        return 130
    except SystemExit:
        if not interrupts:
            raise
        # Lightning turns Ctrl-C into sys.exit(1) after its graceful shutdown; report it as an interruption
        print(f"{prefix}: {_interrupted(args)}", file=sys.stderr)
        return 130
    except ImportError as exc:
        print(f"{prefix}: error: {_one_line(exc)} (install the matching extra, see README)", file=sys.stderr)
        return 2
    except _EXPECTED as exc:
        print(f"{prefix}: error: {_describe(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a bug: say so in one line, keep the traceback in a file
        print(f"{prefix}: internal error ({type(exc).__name__}: {_one_line(exc)[:200]}); {_save_traceback(exc, argv)}",
              file=sys.stderr)
        return 1


_EXPECTED = (ValueError, OSError, KeyError, EOFError, MemoryError, zipfile.BadZipFile)


def _one_line(exc):
    if isinstance(exc, KeyError) and exc.args:
        exc = exc.args[0]
    return " ".join(str(exc).split()) or type(exc).__name__


def _describe(exc):
    """One line for an expected failure: the message, with the file named where the exception knows it."""
    if isinstance(exc, MemoryError):
        return f"out of memory{f' ({_one_line(exc)})' if str(exc) else ''}; the input is too large for this machine."
    message = _one_line(exc)
    if isinstance(exc, OSError) and exc.filename is not None and str(exc.filename) not in message:
        message = f"{exc.filename}: {message}"
    return message


@contextlib.contextmanager
def _watch_sigint(interrupts):
    """Record SIGINTs in ``interrupts`` while raising KeyboardInterrupt as Python does (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(signum, frame):
        interrupts.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)


def _interrupted(args):
    out = getattr(args, "out", None)
    if args.command == "train" and out:
        return f"interrupted; resume with `ptycholib train --resume {out}`"
    return "interrupted"


def _save_traceback(exc, argv):
    """Write the traceback to a new file in the temporary folder; return the phrase naming it."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        fd, path = tempfile.mkstemp(prefix="ptycholib-traceback-", suffix=".txt")
        with os.fdopen(fd, "w") as handle:
            command = " ".join(map(str, sys.argv[1:] if argv is None else argv))
            handle.write(f"ptycholib {command}\n{text}")
    except OSError:
        return "the traceback could not be written; rerun with python -X dev for details"
    return f"traceback written to {path}; please report it"
