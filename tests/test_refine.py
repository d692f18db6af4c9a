"""ptycholib.refine: options, the bilinear plan, the NumPy loss, and refinement on the torch engine.

One small noiseless scan (80 sub-pixel positions, N = 64, a 96 x 104 "lines" object) serves every
refinement test; the other engine is held to this one in ``tests/backends/test_refine_engines.py``.
"""

import dataclasses

import numpy as np
import pytest

from ptycholib import baseline, forward, metrics, refine, simulate, workflow

SHAPE = (96, 104)  # rows, cols: non-square
PATCH = 64


def make_scan(seed=0, *, object_kind="lines", noise=False):
    """80 jittered raster positions (step 4 px) over a 96 x 104 object, disk probe, 1e6 photons."""
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)]
    obj = simulate.make_object(object_kind, SHAPE, streams[0])
    probe = simulate.make_probe("disk", PATCH)
    x_px, y_px = simulate.raster_positions(SHAPE, PATCH, step_px=4, jitter_px=0.3, rng=streams[1])
    return simulate.simulate_dataset(obj, probe, x_px, y_px, 1e6, streams[2], noise=noise)


@pytest.fixture(scope="module")
def scan():
    """The shared noiseless scan; do not modify."""
    return make_scan()


@pytest.fixture(scope="module")
def torch_engine():
    pytest.importorskip("torch")


# ---------------------------------------------------------------------------------------------------
# options and the front end's checks


def test_option_defaults():
    assert refine.RefineOptions().step == 1.0
    assert refine.RefineOptions(optimizer="adam").step == 0.02
    assert refine.RefineOptions(optimizer="adam", step=0.1).step == 0.1


@pytest.mark.parametrize(
    "options, message",
    [
        ({"optimizer": "lbfgs"}, "optimizer='lbfgs' is not supported; allowed values: 'pie', 'adam'."),
        ({"loss": "mse"}, "loss='mse' is not supported; allowed values: 'amplitude', 'poisson'."),
        ({"step": 0}, "step=0 must be a finite number > 0."),
        ({"step": -1.0}, "step=-1.0 must be a finite number > 0."),
        ({"step": float("nan")}, "step=nan must be a finite number > 0."),
        ({"step": True}, "step=True must be a finite number > 0."),
        ({"alpha": 0}, r"alpha=0 must be in \(0, 1\]."),
        ({"alpha": 1.5}, r"alpha=1.5 must be in \(0, 1\]."),
        ({"batch_size": 0}, "batch_size=0 must be an integer >= 1."),
        ({"batch_size": 2.5}, "batch_size=2.5 must be an integer >= 1."),
        ({"batch_size": True}, "batch_size=True must be an integer >= 1."),
        ({"probe_step": 0.0}, "probe_step=0.0 must be a finite number > 0."),
        ({"seed": -1}, "seed=-1 must be an integer >= 0."),
    ],
)
def test_bad_options_raise_one_line(options, message):
    with pytest.raises(ValueError, match=message) as excinfo:
        refine.RefineOptions(**options)
    assert "\n" not in str(excinfo.value)


def test_refine_checks_its_arguments(scan):
    cases = [
        ({"n_iterations": 0}, "n_iterations=0 must be a positive integer."),
        ({"backend": "jax"}, "backend='jax' is not supported"),
        ({"snapshots": (5,)}, r"snapshots=\[5\] must lie in 0..n_iterations=2."),
        ({"batch_size": 0}, "batch_size=0 must be an integer >= 1."),
    ]
    for overrides, message in cases:
        arguments = {"n_iterations": 2, **overrides}
        with pytest.raises(ValueError, match=message) as excinfo:
            refine.refine(None, scan, **arguments)
        assert "\n" not in str(excinfo.value)


def test_refine_checks_the_start_shape(scan, torch_engine):
    with pytest.raises(ValueError, match=r"initial_object has shape \(10, 10\) but the canvas is \(96, 104\)."):
        refine.refine(None, scan, np.ones((10, 10), np.complex64), n_iterations=1)


# ---------------------------------------------------------------------------------------------------
# the plan and the NumPy loss


def test_bilinear_plan_equals_extract_patches(rng):
    shape, patch_size = (23, 31), 8
    canvas = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
    # Sub-pixel positions everywhere, including windows that hang over every border or leave the canvas.
    x_px = np.concatenate([rng.uniform(0, shape[1], 20), [-3.7, 0.2, 30.6, 33.9, 15.5, 15.5, -20.0]])
    y_px = np.concatenate([rng.uniform(0, shape[0], 20), [11.3, -2.4, 22.8, 25.1, -0.5, 23.5, 5.0]])
    index, weight = refine.bilinear_plan(x_px, y_px, patch_size, shape)
    assert index.shape == weight.shape == (27, 4, patch_size, patch_size)
    assert index.dtype == np.int64 and weight.dtype == np.float32
    assert index.min() >= 0 and index.max() < canvas.size
    views = (weight * canvas.ravel()[index]).sum(axis=1)
    expected = forward.extract_patches(canvas, x_px, y_px, patch_size)
    np.testing.assert_allclose(views, expected, rtol=1e-6, atol=1e-6)
    assert not views[-1].any()  # entirely off the canvas


def test_plan_visits_every_position_once_per_sweep_in_epie_order(scan):
    plan = refine.RefinementPlan(x_px=scan.x_px, y_px=scan.y_px, patch_size=PATCH, canvas_shape=SHAPE,
                                 n_iterations=2, batch_size=24, seed=7)
    rng = np.random.default_rng(7)
    for iteration in range(2):
        batches = list(plan.batches(iteration))
        assert [b.positions.size for b in batches] == [24, 24, 24, 8]
        np.testing.assert_array_equal(np.concatenate([b.positions for b in batches]), rng.permutation(80))


# ---------------------------------------------------------------------------------------------------
# refinement (torch engine)


@pytest.mark.parametrize("loss", refine.LOSSES)
def test_engine_loss_equals_numpy_reference(scan, torch_engine, loss):
    start = simulate.make_object("grf", SHAPE, 3)
    # One batch holding every position and one sweep: the recorded loss is the start's.
    result = refine.refine(None, scan, start, n_iterations=1, batch_size=80, loss=loss)
    expected = refine.batch_loss(start, result.probe, scan.amplitudes, scan.x_px, scan.y_px, loss=loss)
    assert result.losses[0] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("alpha", [1.0, 0.3])
def test_pie_equals_epie_numpy(scan, torch_engine, alpha):
    expected = baseline.epie_numpy(scan.amplitudes, scan.x_px, scan.y_px, scan.probe, SHAPE, n_iterations=2,
                                   alpha=alpha, batch_size=16, seed=3)
    result = refine.refine(None, scan, n_iterations=2, optimizer="pie", loss="amplitude", alpha=alpha, step=1.0,
                           batch_size=16, seed=3)
    error = np.abs(result.obj - expected.obj).max() / np.abs(expected.obj).max()
    assert error <= 1e-4, f"max abs difference {error:.2e} x max abs value"
    # The same misfit, normalised as epie_numpy's errors: sum (a_hat - a)^2 / sum a^2.
    np.testing.assert_allclose(2 * result.losses / np.sum(scan.amplitudes**2), expected.errors, rtol=1e-5)
    assert result.start == "flat" and result.backend == "torch"
    assert result.obj.dtype == result.probe.dtype == np.complex64


@pytest.mark.parametrize("optimizer", refine.OPTIMIZERS)
def test_loss_decreases(scan, torch_engine, optimizer):
    losses = refine.refine(None, scan, n_iterations=8, optimizer=optimizer).losses
    assert losses.shape == (8,)
    assert losses[-1] < 0.2 * losses[0]
    assert np.mean(np.diff(losses) < 0) >= 0.8


def test_converges_to_the_true_object(scan, torch_engine):
    result = refine.refine(None, scan, n_iterations=15, alpha=0.05, batch_size=8)
    mask = metrics.scanned_region_mask(scan.x_px, scan.y_px, SHAPE, 20)
    scores = workflow.evaluate(result.obj, scan, mask=mask)
    assert scores["amplitude_ssim"] >= 0.98
    assert scores["phase_ssim"] >= 0.98


def test_snapshots(scan, torch_engine):
    result = refine.refine(None, scan, n_iterations=4, snapshots=(4, 0, 2), batch_size=32)
    assert sorted(result.snapshots) == [0, 2, 4]
    np.testing.assert_array_equal(result.snapshots[0][0], np.ones(SHAPE, np.complex64))
    np.testing.assert_array_equal(result.snapshots[4][0], result.obj)
    seconds = [result.snapshots[i][1] for i in (0, 2, 4)]
    assert seconds[0] == result.start_seconds == 0.0
    assert seconds[0] < seconds[1] < seconds[2] <= result.total_seconds
    again = refine.refine(None, scan, n_iterations=2, batch_size=32)  # the same steps: deterministic
    np.testing.assert_array_equal(result.snapshots[2][0], again.obj)


def test_trained_probe_lowers_the_loss(scan, torch_engine):
    # Data measured with a focused probe, refined from a defocused one.
    wrong = dataclasses.replace(scan, probe=simulate.make_probe("disk", PATCH, defocus_rad=2.0))
    fixed = refine.refine(None, wrong, n_iterations=8)
    trained = refine.refine(None, wrong, n_iterations=8, probe_trainable=True)
    assert trained.losses[-1] < 0.8 * fixed.losses[-1]
    np.testing.assert_array_equal(fixed.probe, baseline.effective_probe(scan.amplitudes, wrong.probe)[0].astype(np.complex64))
    assert not np.allclose(trained.probe, fixed.probe)


def test_given_start_is_rescaled(scan, torch_engine):
    probe = baseline.effective_probe(scan.amplitudes, scan.probe)[0]
    scale = refine.fit_object_scale(scan.obj, probe, scan.amplitudes, scan.x_px, scan.y_px)
    halved = refine.fit_object_scale(0.5 * scan.obj, probe, scan.amplitudes, scan.x_px, scan.y_px)
    assert halved == pytest.approx(2 * scale, rel=1e-5)
    result = refine.refine(None, scan, 0.5 * scan.obj, n_iterations=1, rescale_start=True, snapshots=(0,))
    assert result.start == "given" and result.start_seconds > 0
    np.testing.assert_allclose(result.snapshots[0][0], (0.5 * halved) * scan.obj, rtol=1e-5, atol=1e-6)
