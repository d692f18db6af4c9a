"""PyTorch backend: physics, network and training with the same public names as ``ptycholib.tensorflow``.

Importing this package imports torch (and, through `training`, Lightning). Public layout is
channels-first, as everywhere in ptycholib: amplitudes ``(B, C, N, N)``, offsets ``(B, C, 2)`` (last
axis ``(x, y)``, pixels), object patches ``(B, C, N, N)`` complex64.
"""

from __future__ import annotations

from . import network, physics, training

__all__ = ["network", "physics", "training"]
