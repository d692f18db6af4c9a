"""The TensorFlow backend: physics, network, training and reassembly, twins of ``ptycholib.torch``.

Importing this package imports TensorFlow (and Keras 3 on its TensorFlow backend); reach it through
``ptycholib.backends.get_backend("tensorflow")``. Each module is the twin of the torch one: the same
``__all__``, sections, helpers and docstrings, with framework calls in between.

Public layout is channels-first, as everywhere in ptycholib: amplitudes ``(B, C, N, N)``, offsets
``(B, C, 2)`` (last axis ``(x, y)``, pixels), object patches ``(B, C, N, N)`` complex64. The network
runs channels-last inside and transposes at its boundary.

TensorFlow's start-up chatter is kept quiet: ``TF_CPP_MIN_LOG_LEVEL`` defaults to 2 (errors only)
unless the caller set it, and the oneDNN notice that TensorFlow prints while loading, before any log
level applies, is discarded. Only TensorFlow reads these settings, so other packages are unaffected;
set ``TF_CPP_MIN_LOG_LEVEL=0`` before importing to see everything.
"""

from __future__ import annotations

import os
import sys


def _import_tensorflow_quietly():
    """Import TensorFlow with the C++ start-up notices (printed on file descriptor 2) discarded."""
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") != "2":
        import tensorflow

        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


if "TF_CPP_MIN_LOG_LEVEL" not in os.environ:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
_import_tensorflow_quietly()

from . import network, physics, reassemble, refine, training  # noqa: E402

__all__ = ["network", "physics", "reassemble", "refine", "training"]
