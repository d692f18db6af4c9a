"""Named benchmarks: figures and ratios measured in one run (SPEC: speed is a ratio, never an assert).

A benchmark is a function ``fn(quick: bool) -> list[Row]`` registered with `register`. The modules of
this package that define benchmarks (``reassemble``, ``simulate``, ``backends``, ``spec10``, ``refine``,
``scale``) are listed
in ``_BENCH_MODULES`` and imported on demand, so a missing optional backend only removes its
benchmarks. ``setting`` holds SPEC section 10's benchmark scan and data, used by ``simulate`` and
``spec10``.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from dataclasses import asdict, dataclass

__all__ = ["Row", "register", "available", "run", "pin_threads", "best_time", "format_table", "rows_to_json"]

_BENCH_MODULES = ("reassemble", "simulate", "backends", "spec10", "refine", "scale")
_REGISTRY = {}


@dataclass(frozen=True)
class Row:
    """One measured figure.

    Attributes
    ----------
    benchmark, name : str
        Benchmark that produced it and what was measured.
    value : float
    unit : str
    target : str
        The goal it is judged against (e.g. ``">= 0.5"``), empty when there is none.
    note : str
    """

    benchmark: str
    name: str
    value: float
    unit: str
    target: str = ""
    note: str = ""


def register(name):
    """Decorator: register ``fn(quick) -> list[Row]`` under ``name``."""

    def decorate(fn):
        _REGISTRY[name] = fn
        return fn

    return decorate


def _load_modules():
    for module in _BENCH_MODULES:
        try:
            importlib.import_module(f"{__name__}.{module}")
        except ImportError:  # an optional backend is not installed: its benchmarks are absent
            continue


def available():
    """Names of the registered benchmarks."""
    _load_modules()
    return sorted(_REGISTRY)


def pin_threads(n_threads):
    """Pin BLAS/OpenMP, torch and TensorFlow thread pools to ``n_threads`` (call before timing)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n_threads)
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(n_threads)
    if importlib.util.find_spec("tensorflow") is not None:
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(n_threads)
            tf.config.threading.set_inter_op_parallelism_threads(n_threads)
        except RuntimeError:  # already initialised in this process: the earlier setting stands
            pass


def best_time(fn, *, repeats=3, warmup=1):
    """Return the fastest of ``repeats`` wall-clock runs of ``fn()`` in seconds, after ``warmup`` runs.

    The minimum is the least noisy estimate on a shared machine.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run(names=None, *, quick=False, threads=2):
    """Run benchmarks by name (all when None) and return their rows."""
    known = available()
    names = names or known
    unknown = [name for name in names if name not in _REGISTRY]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(known) or 'none'}.")
    pin_threads(threads)
    rows = []
    for name in names:
        rows.extend(_REGISTRY[name](quick))
    return rows


def format_table(rows):
    """Return rows as a fixed-width text table."""
    header = ("benchmark", "figure", "value", "unit", "target", "note")
    lines = [(r.benchmark, r.name, f"{r.value:.4g}", r.unit, r.target, r.note) for r in rows]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*line) for line in lines])


def rows_to_json(rows):
    """Return rows as a JSON string (a list of objects)."""
    return json.dumps([asdict(r) for r in rows], indent=2)
