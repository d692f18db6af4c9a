"""The refinement engines ``ptycholib.torch.refine`` and ``ptycholib.tensorflow.refine`` do the same steps.

Backend-generic tests run on each engine (skipped when its framework is missing); the parity test
needs both. (Named ``test_refine_engines.py``: a second ``test_refine.py`` beside
``tests/test_refine.py`` would clash under pytest's default import mode.)

Where the comparison is made. Five sweeps are compared from a start near the fit (the true object
times a smooth 10 % perturbation, as a network's answer would be): from a flat start the predicted
far field is the probe's, zero up to round-off outside its aperture, so the Fourier constraint takes
the phase of round-off there and either backend's float32 run drifts from a float64 run by up to
1e-2 within a few sweeps (torch's as much as TensorFlow's: not a translation error). The objects are
compared where the scan constrains them (``W = sum_k cut_k^T |P|^2`` above 1e-3 of its maximum):
outside, the object is seen only through the probe's tail, its gradient is round-off, and Adam's
normalised step turns round-off into steps of full size. The Poisson cases take smaller steps
(pie 0.5 and 0.25, Adam 0.001): with ``POISSON_EPS = 1e-8`` the loss's curvature ``a^2 / a_hat^2``
is huge where the prediction falls far below the data, and at the default steps refinement itself
(in float64 too) turns a 1e-6 change of the start into 1e-4 (pie) to 1e-1 (Adam) after five sweeps.
"""

import importlib

import numpy as np
import pytest

from ptycholib import baseline, reassemble, refine, simulate

SHAPE = (96, 104)
PATCH = 64
PARITY_RTOL = 1e-4  # max abs difference <= 1e-4 x max abs value, after 5 sweeps


@pytest.fixture(params=["torch", "tensorflow"])
def backend(request):
    pytest.importorskip(request.param)
    return request.param


@pytest.fixture(scope="module")
def scan():
    """80 jittered raster positions over a 96 x 104 "lines" object, disk probe, noiseless; do not modify."""
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(0).spawn(3)]
    obj = simulate.make_object("lines", SHAPE, streams[0])
    probe = simulate.make_probe("disk", PATCH)
    x_px, y_px = simulate.raster_positions(SHAPE, PATCH, step_px=4, jitter_px=0.3, rng=streams[1])
    return simulate.simulate_dataset(obj, probe, x_px, y_px, 1e6, streams[2], noise=False)


def relative_error(actual, expected, mask=None):
    if mask is not None:
        actual, expected = actual[mask], expected[mask]
    return np.abs(actual - expected).max() / np.abs(expected).max()


def test_engine_is_importable_and_exports_refine_object(backend):
    engine = importlib.import_module(f"ptycholib.{backend}.refine")
    assert engine.__all__ == ["refine_object"]


def test_pie_equals_epie_numpy(scan, backend):
    # 80 positions in batches of 24: the last batch is smaller (a second batch shape for a traced step).
    expected = baseline.epie_numpy(scan.amplitudes, scan.x_px, scan.y_px, scan.probe, SHAPE, n_iterations=2,
                                   alpha=1.0, batch_size=24, seed=3)
    result = refine.refine(None, scan, n_iterations=2, backend=backend, seed=3, batch_size=24)
    assert relative_error(result.obj, expected.obj) <= 1e-4
    np.testing.assert_allclose(2 * result.losses / np.sum(scan.amplitudes**2), expected.errors, rtol=1e-5)
    assert result.backend == backend


CASES = [
    {"optimizer": "pie", "alpha": 1.0, "loss": "amplitude"},
    {"optimizer": "pie", "alpha": 0.3, "loss": "amplitude", "probe_trainable": True},
    {"optimizer": "pie", "alpha": 1.0, "loss": "poisson", "step": 0.5},
    {"optimizer": "pie", "alpha": 0.3, "loss": "poisson", "step": 0.25, "probe_step": 0.25, "probe_trainable": True},
    {"optimizer": "adam", "loss": "amplitude", "probe_trainable": True},
    {"optimizer": "adam", "loss": "poisson", "step": 0.001},
]


@pytest.mark.parity
@pytest.mark.parametrize("options", CASES, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_torch_and_tensorflow_agree(scan, options):
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    perturbation = simulate.make_object("grf", SHAPE, 11, amplitude_range=(0.9, 1.1), phase_range=(-0.1, 0.1))
    start = (scan.obj * perturbation).astype(np.complex64)
    torch_result, tensorflow_result = (refine.refine(None, scan, start, n_iterations=5, backend=backend, **options)
                                       for backend in ("torch", "tensorflow"))
    probe = baseline.effective_probe(scan.amplitudes, scan.probe)[0]
    coverage = reassemble.scatter_add_patches(np.broadcast_to(np.abs(probe) ** 2, scan.amplitudes.shape),
                                              scan.x_px, scan.y_px, SHAPE).real
    constrained = coverage > 1e-3 * coverage.max()
    error = relative_error(tensorflow_result.obj, torch_result.obj, constrained)
    assert error <= PARITY_RTOL, f"object: max abs difference {error:.2e} x max abs value"
    error = relative_error(tensorflow_result.probe, torch_result.probe)
    assert error <= PARITY_RTOL, f"probe: max abs difference {error:.2e} x max abs value"
    np.testing.assert_allclose(tensorflow_result.losses, torch_result.losses, rtol=PARITY_RTOL)
    assert torch_result.losses[-1] < torch_result.losses[0]
