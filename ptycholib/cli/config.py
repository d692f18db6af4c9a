"""``ptycholib config show [FILE] [key=value ...]``."""

from __future__ import annotations

import yaml

from ptycholib.cli._common import add_actions
from ptycholib.config import Config, apply_overrides, config_to_dict, load_config

__all__ = ["register", "run"]


def register(subparsers):
    """Add ``ptycholib config show``, which prints the resolved configuration."""
    actions = add_actions(subparsers, "config", run, help="show the resolved, validated configuration")
    show = actions.add_parser("show", help="print the resolved config as YAML",
                              description="Read FILE (JSON or YAML; defaults when omitted), apply key=value overrides "
                              "(bare names or section.name), validate, and print the result as YAML.")
    show.add_argument("file", nargs="?", help="config file (.json, .yaml or .yml); omit for the defaults")
    show.add_argument("overrides", nargs="*", metavar="key=value", help="overrides, e.g. nepochs=5 model.N=128")


def run(args):
    """Print the resolved config as YAML (the only action, ``show``); return the exit status."""
    items = list(args.overrides)
    path = args.file
    if path is not None and "=" in path:  # no file given, first item is an override
        items.insert(0, path)
        path = None
    config = load_config(path) if path else Config()
    config = apply_overrides(config, items)
    print(yaml.safe_dump(config_to_dict(config), sort_keys=False), end="")
    return 0
