"""Benchmark ``refine``: physics refinement sweeps per second in each backend, beside ePIE's, in one run."""

from __future__ import annotations

import numpy as np

from ptycholib import backends, baseline, refine, simulate
from ptycholib.bench import Row, best_time, register

__all__ = ["bench_refine"]


def _scan(n_side):
    """A raster scan of ``n_side**2`` positions, 64 x 64 patterns, 1e9 photons (SPEC 10's dose)."""
    shape = simulate.scan_canvas_shape(n_side**2, 64, step_px=4.0)
    x_px, y_px = simulate.raster_positions(shape, 64, step_px=4.0)
    obj = simulate.make_object("lines", shape, 0)
    probe = simulate.make_probe("disk", 64)
    return simulate.simulate_dataset(obj, probe, x_px, y_px, 1e9, 0)


@register("refine")
def bench_refine(quick):
    """Sweeps per second of `ptycholib.refine.refine` (pie rule, batch 16) per backend and of `baseline.epie_numpy`.

    Both visit every position once per sweep in mini-batches of 16 with the same step rule, so the
    ratio is the speed of one framework's autodiff step against the hand-written NumPy update.
    """
    n_side, sweeps = (12, 1) if quick else (30, 3)
    data = _scan(n_side)
    shape = data.obj.shape
    repeats = 1 if quick else 2
    epie_s = best_time(lambda: baseline.epie_numpy(data.amplitudes, data.x_px, data.y_px, data.probe, shape,
                                                   n_iterations=sweeps), repeats=repeats) / sweeps
    setting = f"{data.x_px.size} positions 64x64, batch 16"
    rows = [Row("refine", "ePIE (NumPy) sweeps/s", 1 / epie_s, "sweeps/s", note=setting)]
    for name in backends.BACKENDS:
        if not backends.is_available(name):
            continue
        seconds = best_time(lambda: refine.refine(None, data, n_iterations=sweeps, backend=name), repeats=repeats)
        rows.append(Row("refine", f"refine ({name}) sweeps/s", sweeps / seconds, "sweeps/s", note=setting))
        rows.append(Row("refine", f"refine ({name}) / ePIE", epie_s * sweeps / seconds, "ratio",
                        note="same positions, batch and step rule"))
    return rows
