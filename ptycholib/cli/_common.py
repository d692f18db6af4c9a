"""Argument helpers shared by several subcommand modules of ``ptycholib/cli/``.

Each helper adds one argument, or one group of arguments, the same way wherever it appears, so that a
flag keeps one spelling, one set of choices and one error message across subcommands.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from pathlib import Path

from ptycholib.backends import BACKENDS

__all__ = [
    "add_actions",
    "add_names",
    "add_backend",
    "add_measurement",
    "require_at_least_one",
    "require_finite",
    "check_output_folder",
    "check_output_file",
    "output_folder",
]


def add_actions(subparsers, name, run, **kwargs):
    """Add subcommand ``name`` whose next word is a required ACTION; return the actions' subparsers.

    Parameters
    ----------
    subparsers : argparse subparsers action
        Where the subcommand is added.
    name : str
        The subcommand.
    run : callable
        ``run(args)``, called for every action (it may dispatch on ``args.action``).
    **kwargs
        ``help``, ``description`` and the other keywords of ``add_parser``.
    """
    parser = subparsers.add_parser(name, **kwargs)
    parser.set_defaults(func=run)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    return actions


def add_names(parser, help):
    """Add the optional positional ``NAME ...`` list (``args.names``; empty means all)."""
    parser.add_argument("names", nargs="*", metavar="NAME", help=help)


def add_backend(parser, help):
    """Add ``--backend torch|tensorflow`` (``args.backend``, None when not given)."""
    parser.add_argument("--backend", choices=BACKENDS, help=help)


def add_measurement(parser, help="how to read a float diff3d without metadata"):
    """Add ``--measurement amplitude|intensity`` (``args.measurement``), passed on to `ptycholib.data.load_npz`."""
    parser.add_argument("--measurement", choices=("amplitude", "intensity"), help=help)


def require_at_least_one(value, option, unit=""):
    """Raise ValueError with one line unless ``value >= 1``; ``option`` is the flag, e.g. ``"--threads"``.

    Examples
    --------
    >>> require_at_least_one(0, "--workers")
    Traceback (most recent call last):
    ...
    ValueError: --workers=0 must be >= 1.
    """
    if value < 1:
        suffix = f" {unit}" if unit else ""
        raise ValueError(f"{option}={value} must be >= 1{suffix}.")


def require_finite(value, option, *, minimum=None, above=None, below=None):
    """Raise ValueError with one line unless ``value`` is a finite number within the given bounds.

    Examples
    --------
    >>> require_finite(float("inf"), "--step-px", above=0)
    Traceback (most recent call last):
    ...
    ValueError: --step-px=inf must be a finite number > 0.
    """
    bounds = []
    if minimum is not None:
        bounds.append(f">= {minimum:g}")
    if above is not None:
        bounds.append(f"> {above:g}")
    if below is not None:
        bounds.append(f"< {below:g}")
    ok = math.isfinite(value) and (minimum is None or value >= minimum) and (above is None or value > above)
    ok = ok and (below is None or value < below)
    if not ok:
        raise ValueError(f"{option}={value:g} must be a finite number{' ' + ' and '.join(bounds) if bounds else ''}.")


def _writable_ancestor(path, option):
    """Check that ``path`` can be created: its nearest existing ancestor is a writable folder."""
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise NotADirectoryError(f"{option} {path}: {ancestor} is a file, not a folder.")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PermissionError(f"{option} {path}: cannot write in {ancestor} (permission denied or read-only).")


def check_output_folder(path, option="--out"):
    """Check, before any work, that ``path`` is or can become a writable folder; return it as a Path.

    Raises
    ------
    FileExistsError
        ``path`` exists and is not a folder.
    PermissionError
        The folder (or the nearest existing folder above it) is not writable.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{option} {path} exists and is not a folder; give a folder (it is created if missing).")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(f"{option} {path}: cannot write in this folder (permission denied or read-only).")
    else:
        _writable_ancestor(path, option)
    return path


def check_output_file(path, option="--out"):
    """Check, before any work, that file ``path`` can be written (created or replaced); return it as a Path.

    Raises
    ------
    IsADirectoryError
        ``path`` is a folder.
    PermissionError
        Its folder (or the nearest existing folder above it) is not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{option} {path} is a folder; give a file name.")
    if path.parent.is_dir():
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise PermissionError(f"{option} {path}: cannot write in {path.parent} (permission denied or read-only).")
    else:
        _writable_ancestor(path, option)
    return path


@contextlib.contextmanager
def output_folder(path, option="--out"):
    """Create the output folder ``path`` for the block; remove it again if the block fails and it was new.

    A refused run leaves nothing behind: if the folder did not exist and the block raises an
    ``Exception``, the folder and what the block wrote into it are removed. An existing folder is
    never removed, and a KeyboardInterrupt keeps everything (``train`` resumes from it).
    """
    path = check_output_folder(path, option)
    created = None  # the topmost folder this call creates
    for folder in (path, *path.parents):
        if folder.exists():
            break
        created = folder
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except Exception:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
