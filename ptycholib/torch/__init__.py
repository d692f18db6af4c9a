"""The PyTorch backend: physics, network, training and reassembly, twins of ``ptycholib.tensorflow``.

Importing this package imports torch (and, through `training`, Lightning); reach it through
``ptycholib.backends.get_backend("torch")``. Each module is the twin of the TensorFlow one: the same
``__all__``, sections, helpers and docstrings, with framework calls in between.

Public layout is channels-first, as everywhere in ptycholib: amplitudes ``(B, C, N, N)``, offsets
``(B, C, 2)`` (last axis ``(x, y)``, pixels), object patches ``(B, C, N, N)`` complex64.
"""

from __future__ import annotations

from . import network, physics, reassemble, refine, training

__all__ = ["network", "physics", "reassemble", "refine", "training"]
