"""Metrics on known cases (ptycholib.metrics, SPEC 7 and 10)."""

import json
import math

import numpy as np
import pytest
from scipy.ndimage import fourier_shift, gaussian_filter

from ptycholib import metrics

SHAPE = (72, 80)  # non-square

KEYS = (
    "phase_rmse",
    "amplitude_ssim",
    "phase_ssim",
    "amplitude_psnr",
    "phase_psnr",
    "amplitude_frc50",
    "phase_frc50",
    "amplitude_frc_half_bit",
    "phase_frc_half_bit",
)



@pytest.fixture
def truth(rng):
    amplitude = 0.5 + 0.5 * gaussian_filter(rng.random(SHAPE), 1.5)
    phase = 3 * gaussian_filter(rng.standard_normal(SHAPE), 2)
    return amplitude * np.exp(1j * phase)


def _shift(image, shift_rc):
    return np.fft.ifft2(fourier_shift(np.fft.fft2(image), shift_rc))


def test_identical_images(truth):
    scores = metrics.evaluate_reconstruction(truth, truth)
    assert set(KEYS) <= set(scores)
    assert scores["phase_rmse"] == pytest.approx(0, abs=1e-12)
    assert scores["amplitude_ssim"] == pytest.approx(1)
    assert scores["phase_ssim"] == pytest.approx(1)
    assert scores["amplitude_psnr"] > 200 and scores["phase_psnr"] > 200
    assert scores["amplitude_frc50"] == scores["phase_frc_half_bit"] == 1.0
    amplitude = np.abs(truth)
    assert metrics.psnr(amplitude, amplitude, data_range=1.0) == math.inf
    assert metrics.ssim(amplitude, amplitude, data_range=1.0) == pytest.approx(1)


def test_global_phase_offset_and_amplitude_scale_are_ignored(truth):
    scores = metrics.evaluate_reconstruction(0.3 * np.exp(2.5j) * truth, truth)
    assert scores["phase_rmse"] < 1e-9
    assert scores["amplitude_ssim"] == pytest.approx(1, abs=1e-9)
    assert scores["global_scale"] == pytest.approx(1 / 0.3)
    assert scores["global_phase_rad"] == pytest.approx(-2.5)
    fitted, factor = metrics.remove_global_factor(0.3 * np.exp(2.5j) * truth, truth, return_factor=True)
    np.testing.assert_allclose(fitted, truth, atol=1e-12)


def test_shifted_copy_is_registered(truth):
    moved = _shift(truth, (1.3, -0.6))
    registered, shift = metrics.register_subpixel(moved, truth, upsample_factor=20)
    np.testing.assert_allclose(shift, (-1.3, 0.6), atol=0.05)
    np.testing.assert_allclose(registered, truth, atol=1e-9)
    scores = metrics.evaluate_reconstruction(moved, truth)
    np.testing.assert_allclose(scores["shift_px"], (-1.3, 0.6), atol=0.05)
    assert scores["amplitude_ssim"] > 0.999 and scores["phase_rmse"] < 1e-6
    assert metrics.evaluate_reconstruction(moved, truth, register=False)["amplitude_ssim"] < 0.9


def test_bilinear_registration_moves_the_same_way(truth):
    moved = _shift(truth, (2.0, -1.0))  # whole pixels: bilinear is exact away from the borders
    registered, shift = metrics.register_subpixel(moved, truth, method="bilinear")
    np.testing.assert_allclose(shift, (-2.0, 1.0), atol=0.05)
    np.testing.assert_allclose(registered[4:-4, 4:-4], truth[4:-4, 4:-4], atol=1e-9)


def test_phase_ramp_is_removed(truth):
    rows, cols = np.indices(SHAPE)
    ramped = truth * np.exp(1j * (0.04 * rows - 0.07 * cols + 1.0))
    corrected, slopes = metrics.remove_phase_ramp(ramped, truth, return_ramp=True)
    np.testing.assert_allclose(slopes, (-0.04, 0.07), atol=1e-9)
    assert metrics.evaluate_reconstruction(ramped, truth, remove_ramp=True)["phase_rmse"] < 1e-9
    assert metrics.evaluate_reconstruction(ramped, truth)["phase_rmse"] > 0.5


def test_frc_of_an_image_with_itself_is_one_and_of_noise_near_zero(rng):
    noise = rng.standard_normal(SHAPE)
    same = metrics.frc(noise, noise)
    np.testing.assert_allclose(same.curve, 1.0)
    assert same.resolution_frc50 == same.resolution_half_bit == 1.0
    assert same.frequencies[-1] == 1.0 and same.frequencies.size == min(SHAPE) // 2
    independent = metrics.frc(noise, rng.standard_normal(SHAPE))
    # Its curve fluctuates around 0 with a spread of about 1 / sqrt(pixels in the ring).
    many = independent.ring_pixels >= 50
    assert np.mean(np.abs(independent.curve[many])) < 0.15
    assert np.all(np.abs(independent.curve) < 6 / np.sqrt(independent.ring_pixels))
    assert independent.resolution_frc50 < 0.1
    # The 1/2-bit threshold falls towards 0.2071 / 1.2071 for rings with many pixels.
    assert independent.half_bit[0] > independent.half_bit[-1] > 0.2071 / 1.2071


def test_frc_resolution_tracks_a_low_pass(rng):
    noise = rng.standard_normal((96, 96))
    spectrum = np.fft.fft2(noise)
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(96), np.fft.fftfreq(96), indexing="ij")) / 0.5
    blurred = np.fft.ifft2(spectrum * (radius <= 0.5)).real + 0.05 * rng.standard_normal((96, 96))
    result = metrics.frc(blurred, noise)
    assert 0.4 < result.resolution_frc50 < 0.6


def test_mask_and_bounding_box(truth, rng):
    mask = np.zeros(SHAPE, dtype=bool)
    mask[10:50, 20:70] = True
    spoiled = truth.copy()
    spoiled[~mask] = rng.standard_normal(int((~mask).sum()))
    scores = metrics.evaluate_reconstruction(spoiled, truth, mask=mask)
    assert scores["amplitude_ssim"] == pytest.approx(1)
    assert scores["bbox"] == [10, 50, 20, 70] and scores["n_pixels"] == 40 * 50
    aligned = metrics.align_to_truth(spoiled, truth, mask=mask)
    assert aligned.recon.shape == aligned.truth.shape == aligned.mask.shape == (40, 50)


def test_degenerate_inputs_stay_finite(truth, rng):
    amplitude_only = np.abs(truth).astype(complex)  # constant phase: the truth's phase range is 0
    noisy = amplitude_only + 0.01 * (rng.standard_normal(SHAPE) + 1j * rng.standard_normal(SHAPE))
    scores = metrics.evaluate_reconstruction(noisy, amplitude_only)
    assert scores["phase_data_range"] == pytest.approx(2 * np.pi)
    phase_only = np.exp(1j * np.angle(truth))  # constant amplitude
    zero = metrics.evaluate_reconstruction(np.zeros(SHAPE, complex), phase_only)
    assert zero["amplitude_data_range"] == pytest.approx(1.0)
    for result in (scores, zero):
        values = [result[key] for key in KEYS]
        assert all(math.isfinite(v) for v in values), result
        json.dumps(result)


def test_data_range_is_required_and_checked(truth):
    amplitude = np.abs(truth)
    with pytest.raises(TypeError):
        metrics.ssim(amplitude, amplitude)  # noqa: the point is the missing data_range
    with pytest.raises(ValueError, match="data_range"):
        metrics.psnr(amplitude, amplitude, data_range=0)
    with pytest.raises(ValueError, match="complex"):
        metrics.ssim(truth, truth, data_range=1.0)


def test_bad_inputs_raise(truth):
    with pytest.raises(ValueError, match="same object grid"):
        metrics.evaluate_reconstruction(truth[:-1], truth)
    with pytest.raises(ValueError, match="NaN"):
        metrics.evaluate_reconstruction(np.full(SHAPE, np.nan, complex), truth)
    with pytest.raises(ValueError, match="no pixel"):
        metrics.evaluate_reconstruction(truth, truth, mask=np.zeros(SHAPE, bool))
    with pytest.raises(ValueError, match="window_size"):
        metrics.scanned_region_mask([10.0], [10.0], SHAPE, 0)


def test_scanned_region_mask_covers_the_windows():
    mask = metrics.scanned_region_mask(np.array([10.0, 30.0]), np.array([20.0, 20.0]), SHAPE, 8)
    assert mask.sum() == 2 * 64
    assert mask[16:24, 6:14].all() and mask[16:24, 26:34].all()


# ----------------------------------------------------------------------------------------------
# the registration shift is capped (issue #11 item 7): scores that cannot flatter


def test_shift_within_the_cap_is_undone_exactly(truth):
    moved = _shift(truth, (2.0, -1.9))  # norm 2.76 px, inside the default 3 px
    scores = metrics.evaluate_reconstruction(moved, truth)
    np.testing.assert_allclose(scores["shift_px"], (-2.0, 1.9), atol=0.05)
    assert scores["max_shift_px"] == metrics.DEFAULT_MAX_SHIFT_PX == 3.0 and scores["shift_capped"] is False
    assert scores["amplitude_ssim"] == pytest.approx(1, abs=1e-6) and scores["phase_rmse"] < 1e-6
    registered, shift = metrics.register_subpixel(moved, truth)
    np.testing.assert_allclose(registered, truth, atol=1e-9)


def test_shift_beyond_the_cap_is_not_undone(truth):
    moved = _shift(truth, (6.0, -5.0))
    scores = metrics.evaluate_reconstruction(moved, truth)
    assert np.hypot(*scores["shift_px"]) <= 3.0 + 1e-12
    assert scores["shift_capped"] is True and scores["max_shift_px"] == 3.0
    assert scores["amplitude_ssim"] < 0.9  # the misplaced copy keeps its misplacement's scores
    _, shift = metrics.register_subpixel(moved, truth, max_shift_px=2.5)
    assert np.hypot(*shift) <= 2.5 + 1e-12
    uncapped = metrics.evaluate_reconstruction(moved, truth, max_shift_px=None)
    np.testing.assert_allclose(uncapped["shift_px"], (-6.0, 5.0), atol=0.05)
    assert uncapped["max_shift_px"] is None and uncapped["shift_capped"] is False
    assert uncapped["amplitude_ssim"] > 0.999


def test_cap_options(truth):
    moved = _shift(truth, (1.3, -0.6))
    still = metrics.evaluate_reconstruction(moved, truth, max_shift_px=0)
    assert still["shift_px"] == [0.0, 0.0] and still["shift_capped"] is True
    assert metrics.evaluate_reconstruction(moved, truth, register=False)["max_shift_px"] == 0.0
    aligned = metrics.align_to_truth(moved, truth, max_shift_px=1.0)
    assert aligned.shift_capped and np.hypot(*aligned.shift_px) == pytest.approx(1.0)
    for bad in (-1.0, float("nan"), "3"):
        with pytest.raises(ValueError, match="max_shift_px"):
            metrics.evaluate_reconstruction(moved, truth, max_shift_px=bad)


def test_constant_object_baseline_on_lines():
    """The reference scores of "nothing learned": a flat object on notebook 02's 'lines' test object.

    Later quality tests state their margin over these numbers (amplitude SSIM about 0.2, not 0).
    """
    from ptycholib import simulate

    _, test = simulate.simulate_train_test(
        n_train=4, n_test=400, object_kind="lines", probe_kind="fzp", nphotons=1e6, noise=False, seed=0
    )
    region = metrics.scanned_region_mask(test.x_px, test.y_px, test.obj.shape, 20)
    baseline = metrics.constant_object_baseline(test.obj, mask=region)
    assert 0.05 < baseline["amplitude_ssim"] < 0.35
    assert baseline["phase_ssim"] < 0.35 and baseline["phase_rmse"] > 0.2
    assert np.hypot(*baseline["shift_px"]) <= 3.0
    unregistered = metrics.constant_object_baseline(test.obj, mask=region, register=False)
    assert unregistered["amplitude_ssim"] == pytest.approx(baseline["amplitude_ssim"], abs=1e-6)
    flat = np.full(test.obj.shape, 7.0 * np.exp(0.3j))  # any constant scores the same
    same = metrics.evaluate_reconstruction(flat, test.obj, mask=region)
    assert same["amplitude_ssim"] == pytest.approx(baseline["amplitude_ssim"], abs=1e-6)


# --------------------------------------------------------------------------------------------------
# Poisson deviance (the training history's readable loss)


def test_poisson_deviance_of_the_truth_is_one_per_pixel(rng):
    expected = rng.uniform(20, 200, size=100_000)  # high counts: E[D] = 1 + 1/(6 lambda) + ... ~ 1.002
    counts = rng.poisson(expected)
    assert 0.98 < metrics.poisson_deviance(np.sqrt(expected), np.sqrt(counts)) < 1.03
    # Low counts sit below the floor (E[D] -> 0 as lambda -> 0): a dark detector fits "better than noise".
    dim = np.full(100_000, 0.3)
    assert 0.5 < metrics.poisson_deviance(np.sqrt(dim), np.sqrt(rng.poisson(dim))) < 0.95


def test_poisson_deviance_of_simulated_diffraction(rng):
    from ptycholib import simulate

    obj = simulate.make_object("grf", (80, 90), rng)
    probe = simulate.make_probe("disk", 32)
    x_px, y_px = simulate.raster_positions(obj.shape, 32, step_px=8)
    expected = simulate.simulate_counts(obj, probe, x_px, y_px, 1e8, rng, noise=False)
    counts = rng.poisson(expected)
    truth, measured = np.sqrt(expected), np.sqrt(counts)
    bright = expected >= 20
    assert bright.mean() > 0.2
    assert 0.97 < metrics.poisson_deviance(truth, measured, mask=bright) < 1.04
    assert 0.0 < metrics.poisson_deviance(truth, measured) < 1.04  # dark pixels pull it under 1
    assert metrics.poisson_deviance(truth * 1.1, measured, mask=bright) > 5  # a 21 % intensity error is far above


def test_poisson_deviance_perfect_fit_zeros_and_errors():
    counts = np.array([[0.0, 1.0], [4.0, 100.0]])
    assert metrics.poisson_deviance(np.sqrt(counts), np.sqrt(counts)) == 0.0
    # 0 log 0 = 0: a dark pixel costs only its predicted intensity, 2 * 0.25 / 1 pixel
    assert metrics.poisson_deviance(np.array([0.5]), np.array([0.0])) == pytest.approx(0.5)
    assert metrics.poisson_deviance(np.array([0.0]), np.array([1.0])) == math.inf
    assert metrics.poisson_deviance(np.sqrt(counts) + 1, np.sqrt(counts), mask=[[True, False], [False, False]]) == 2.0
    with pytest.raises(ValueError, match="shape"):
        metrics.poisson_deviance(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="negative"):
        metrics.poisson_deviance(-np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="complex"):
        metrics.poisson_deviance(np.ones(3) * 1j, np.ones(3))
    with pytest.raises(ValueError, match="no pixels"):
        metrics.poisson_deviance(np.ones((2, 2)), np.ones((2, 2)), mask=np.zeros((2, 2), bool))
