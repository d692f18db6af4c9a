"""Argument helpers shared by several subcommand modules of ``ptycholib/cli/``.

Each helper adds one argument, or one group of arguments, the same way wherever it appears, so that a
flag keeps one spelling, one set of choices and one error message across subcommands.
"""

from __future__ import annotations

from ptycholib.backends import BACKENDS

__all__ = ["add_actions", "add_names", "add_backend", "add_measurement", "require_at_least_one"]


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
