"""SPEC section 10's benchmark setting: the grid scan, its fixed groups, and the simulated train/test data.

PtychoPINN's speed figures (SPEC section 10) were measured on this setting: amplitude-only 'lines'
objects, an ideal-lens 'disk' probe, N = 64, 1e9 photons and 33 x 33 groups of ``gridsize**2``
positions. The ``simulate`` and ``spec10`` benchmarks use it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ptycholib.data import PtychoData
from ptycholib.grouping import groups_from_indices
from ptycholib.simulate import make_object, make_probe, simulate_dataset

__all__ = ["benchmark_scan", "simulate_benchmark", "BenchmarkData"]


def benchmark_scan(gridsize=2, *, n_side=33, group_stride_px=10, offset_px=4, patch_size=64):
    """Return SPEC section 10's scan: ``n_side**2`` groups, ``gridsize**2`` positions each.

    Group anchors form a square grid of stride ``group_stride_px``; a group's members sit at the
    anchor plus ``offset_px * (i, j)`` for ``i, j < gridsize``. All positions are whole pixels
    (fair to PtyLab's integer-position ePIE, SPEC 7). For the defaults and gridsize 2 the canvas is
    392 x 392 px, as in PtychoPINN.

    Returns
    -------
    shape : tuple of int
        ``(rows, cols)`` of the canvas.
    x_px, y_px : ndarray of shape (n_side**2 * gridsize**2,), float64
    group_indices : ndarray of shape (n_side**2, gridsize**2), int64
        Members of each group (use `ptycholib.grouping.groups_from_indices`).
    """
    if gridsize < 1 or n_side < 1:
        raise ValueError(f"gridsize and n_side must be >= 1; got {gridsize} and {n_side}.")
    margin = 2
    extent = (n_side - 1) * group_stride_px + (gridsize - 1) * offset_px
    side = extent + patch_size + 2 * margin
    anchors = patch_size // 2 + margin + group_stride_px * np.arange(n_side)
    members = offset_px * np.arange(gridsize)
    ay, ax = (a.ravel() for a in np.meshgrid(anchors, anchors, indexing="ij"))
    my, mx = (m.ravel() for m in np.meshgrid(members, members, indexing="ij"))
    x_px = (ax[:, None] + mx[None, :]).ravel().astype(np.float64)
    y_px = (ay[:, None] + my[None, :]).ravel().astype(np.float64)
    group_indices = np.arange(x_px.size, dtype=np.int64).reshape(n_side**2, gridsize**2)
    return (side, side), x_px, y_px, group_indices


class BenchmarkData(NamedTuple):
    """SPEC section 10 data: train and test sets on different objects, and their fixed groups."""

    train: PtychoData
    test: PtychoData
    train_groups: object
    test_groups: object


def simulate_benchmark(gridsize=2, *, nphotons=1e9, seed=0, n_side=33, patch_size=64, noise=True, workers=None):
    """Simulate SPEC section 10's benchmark: amplitude-only 'lines', N = 64, 1e9 photons, 1089 + 1089 groups.

    Train and test use different 'lines' objects (amplitude in [0, 1], no phase) and the same
    ideal-lens 'disk' probe and scan (`benchmark_scan`); each group is the fixed ``gridsize**2``
    block of its anchor, as in PtychoPINN's grid simulation.

    Returns
    -------
    BenchmarkData
    """
    shape, x_px, y_px, group_indices = benchmark_scan(gridsize, n_side=n_side, patch_size=patch_size)
    probe = make_probe("disk", patch_size)
    parts = []
    for split, stream in zip(("train", "test"), np.random.SeedSequence(seed).spawn(2)):
        object_rng, noise_rng = (np.random.default_rng(s) for s in stream.spawn(2))
        obj = make_object("lines", shape, object_rng, amplitude_range=(0.0, 1.0), amplitude_only=True)
        metadata = {"split": split, "benchmark": "SPEC 10", "gridsize": gridsize, "seed": int(seed), "object_kind": "lines"}
        parts.append(
            simulate_dataset(obj, probe, x_px, y_px, nphotons, noise_rng, noise=noise, workers=workers, metadata=metadata)
        )
    groups = groups_from_indices(x_px, y_px, group_indices)
    return BenchmarkData(parts[0], parts[1], groups, groups)
