"""Shared fixtures: a seeded ``rng`` and one tiny simulated data set (non-square object, N = 64).

The data set is simulated once per session and handed out as a copy, so a test may modify what it
gets. ``tiny_data_dir`` holds ``train.npz``/``test.npz`` in the layout notebook 02 writes (what
notebook 03 and the CLI read).
"""

import dataclasses
import os

# One thread per framework: on a shared 2-core machine two OpenMP threads per test process collapse
# when another process holds a core (torch runs ~10x slower); set before torch/tensorflow are imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest

from ptycholib import data, simulate  # noqa: E402

TINY_SHAPE = (100, 122)  # rows, cols: non-square, so transposed axes fail loudly
TINY_PATCH = 64
TINY_STEP = 8  # 8 x 5 = 40 raster positions


def _copy(dataset):
    copies = {
        f.name: getattr(dataset, f.name).copy()
        for f in dataclasses.fields(dataset)
        if isinstance(getattr(dataset, f.name), (np.ndarray, dict))
    }
    return dataclasses.replace(dataset, **copies)


def make_tiny_dataset(seed=0, *, shape=TINY_SHAPE, jitter_px=0.3, nphotons=1e6, object_kind="grf"):
    """Simulate the tiny data set (about 40 positions, sub-pixel jitter, phase and amplitude)."""
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)]
    obj = simulate.make_object(object_kind, shape, streams[0])
    probe = simulate.make_probe("disk", TINY_PATCH)
    x_px, y_px = simulate.raster_positions(shape, TINY_PATCH, step_px=TINY_STEP, jitter_px=jitter_px, rng=streams[1])
    return simulate.simulate_dataset(obj, probe, x_px, y_px, nphotons, streams[2], metadata={"seed": seed, "fixture": "tiny"})


@pytest.fixture
def rng():
    """A seeded NumPy generator, fresh for every test."""
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def _tiny_dataset_cached():
    return make_tiny_dataset()


@pytest.fixture
def tiny_dataset(_tiny_dataset_cached):
    """A small simulated `PtychoData`: 100 x 122 px GRF object, N = 64, 40 jittered positions, 1e6 photons."""
    return _copy(_tiny_dataset_cached)


@pytest.fixture(scope="session")
def tiny_train_test():
    """Tiny train and test sets on two objects (``simulate_train_test``; 36 + 16 patterns, N = 64); shared, do not modify."""
    return simulate.simulate_train_test(n_train=36, n_test=16, nphotons=1e6, step_px=4, seed=0)


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory, tiny_train_test):
    """A folder with ``train.npz`` and ``test.npz`` of `tiny_train_test`, as notebook 02 writes them."""
    folder = tmp_path_factory.mktemp("tiny_data")
    train, test = tiny_train_test
    data.save_npz(train, folder / "train.npz")
    data.save_npz(test, folder / "test.npz")
    return folder
