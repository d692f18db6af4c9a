"""Lazy access to the two backends: ``get_backend("torch" | "tensorflow")``.

Neither framework is imported until a backend is asked for, so either backend alone works.
"""

from __future__ import annotations

import importlib
from types import SimpleNamespace

__all__ = ["BACKENDS", "get_backend", "is_available"]

BACKENDS = ("torch", "tensorflow")
_PARTS = ("physics", "network", "training", "reassemble", "refine")
_FRAMEWORK = {"torch": ("torch", "torch"), "tensorflow": ("tensorflow", "tf")}


def is_available(name):
    """True when the framework of backend ``name`` is installed."""
    return importlib.util.find_spec(_FRAMEWORK[name][0]) is not None


def get_backend(name):
    """Return the backend ``name`` as a namespace of its modules.

    The namespace has ``name`` and the modules ``physics``, ``network``, ``training``,
    ``reassemble`` and ``refine`` of ``ptycholib.<name>``; both backends give them the same public names.

    Raises
    ------
    ValueError
        Unknown backend name.
    ImportError
        The framework is not installed; the message names the extra to install.
    """
    if name not in BACKENDS:
        raise ValueError(f"backend={name!r} is not supported; allowed values: 'torch', 'tensorflow'.")
    package, extra = _FRAMEWORK[name]
    if not is_available(name):
        raise ImportError(f"backend {name!r} needs {package}: pip install -e '.[{extra}]'")
    modules = {part: importlib.import_module(f"ptycholib.{name}.{part}") for part in _PARTS}
    return SimpleNamespace(name=name, **modules)
