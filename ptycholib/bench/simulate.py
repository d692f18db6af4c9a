"""Benchmark ``simulate``: simulator throughput as a ratio to the raw batched FFT, measured in one run."""

from __future__ import annotations

import os

import numpy as np
import scipy.fft

from ptycholib import simulate
from ptycholib.bench import Row, best_time, register
from ptycholib.bench.setting import benchmark_scan

__all__ = ["bench_simulate"]

_BATCH = 256


def _fft_only(stack, workers):
    for start in range(0, len(stack), _BATCH):
        scipy.fft.fft2(stack[start : start + _BATCH], workers=workers)


@register("simulate")
def bench_simulate(quick):
    """SPEC 10 scan (gridsize 2, 1e9 photons): full simulation and its noiseless part vs ``scipy.fft.fft2``.

    The FFT reference transforms a complex64 stack of the same shape, in the same batches and with
    the same number of threads; the simulation adds the object views, the probe, the photon scale,
    exact Poisson draws, the square root and the `PtychoData` validation.
    """
    workers = int(os.environ.get("OMP_NUM_THREADS", "1"))
    shape, x_px, y_px, _ = benchmark_scan(2, n_side=12 if quick else 33)
    obj = simulate.make_object("lines", shape, 0, amplitude_range=(0.0, 1.0), amplitude_only=True)
    probe = simulate.make_probe("disk", 64)
    n_patterns = x_px.size
    rng = np.random.default_rng(0)
    stack = (rng.standard_normal((n_patterns, 64, 64)) + 1j * rng.standard_normal((n_patterns, 64, 64))).astype(np.complex64)
    repeats = 2 if quick else 3
    fft_s = best_time(lambda: _fft_only(stack, workers), repeats=repeats)
    single_s = best_time(lambda: simulate.simulate_dataset(obj, probe, x_px, y_px, 1e9, 0, workers=workers), repeats=repeats)
    full_s = best_time(lambda: simulate.simulate_dataset(obj, probe, x_px, y_px, 1e9, 0, workers=workers,
                                                         poisson_chunk=simulate.POISSON_CHUNK), repeats=repeats)
    noiseless_s = best_time(
        lambda: simulate.simulate_dataset(obj, probe, x_px, y_px, 1e9, 0, noise=False, workers=workers), repeats=repeats
    )
    setting = f"{n_patterns} patterns 64x64, {workers} thread(s)"
    return [
        Row("simulate", "raw batched FFT (scipy.fft)", n_patterns / fft_s, "patterns/s", note=setting),
        Row("simulate", "simulation with Poisson noise", n_patterns / full_s, "patterns/s",
            note="SPEC 10 scan, 1e9 photons, poisson_chunk=64"),
        Row("simulate", "simulation / FFT", fft_s / full_s, "ratio", target=">= 0.5",
            note="exact Poisson draws, chunked over the threads (poisson_chunk=64)"),
        Row("simulate", "simulation / FFT, one Poisson stream (the default)", fft_s / single_s, "ratio",
            note="rng's own draws, pattern after pattern"),
        Row("simulate", "noiseless simulation / FFT", fft_s / noiseless_s, "ratio", target=">= 0.5",
            note="views, probe, FFT, scale, sqrt, validation"),
        Row("simulate", "Poisson share of simulation time", 1 - noiseless_s / full_s, "fraction"),
    ]  # fmt: skip
