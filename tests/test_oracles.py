"""Independent oracles for the physics, the reassembly and the loss (issue 12).

The parity tests compare both backends with the NumPy reference (`ptycholib.forward`,
`ptycholib.reassemble`), and all three share helpers: `forward.window_weights`, `forward.disk_mask`,
`forward.gaussian_kernel_1d`, the reassembly plan, layout and weights, and `forward.extract_patches`
(used by the simulator). A conceptual mistake in one of those passes every parity test. The oracles
here are written from the conventions of docs/architecture.md and SPEC sections 3, 4 and 7 with
SciPy and NumPy primitives only; no oracle calls a helper of the code under test.

Conventions stated once (SPEC 3):

* a position ``(x, y)`` is in object pixels, ``x`` along columns, ``y`` along rows, and names the
  window centre at index ``N // 2``; offsets and shifts carry their last axis as ``(x, y)``;
* translation ``T(d)[X](r, c) = X(r - dy, c - dx)``, bilinear, zeros outside.

Boundary handling of the SciPy oracles: ``scipy.ndimage.map_coordinates(order=1)`` and
``scipy.ndimage.shift(order=1)`` in ``mode="grid-constant"`` interpolate against the zero padding, so
a sample half a pixel outside the image reads half the edge value, which is ptycholib's "zeros
outside"; they agree on the whole image. (``mode="constant"`` does not interpolate beyond the edge
and differs in the one-pixel rim; only the interior would be comparable there.) Smoothing is
``scipy.ndimage.gaussian_filter(image, sigma, mode="constant", cval=0, radius=max(1, ceil(3 sigma)))``
over the last two axes: zero padding, 'same' size, taps normalised to sum 1 over the truncated support
(``radius=r`` is ``truncate=r / sigma``).

The backends compute in float32/complex64 only (their ``to_tensor`` casts), so they are compared at
float32 precision; the NumPy code is compared at float64 precision where it computes in float64.
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
from scipy import ndimage

from ptycholib import forward, grouping, reassemble, simulate
from ptycholib.config import ModelConfig, TrainingConfig

BACKENDS = ["torch", "tensorflow"]
NLL_EPS = 1e-8  # docs/architecture.md step 5


# --------------------------------------------------------------------------------------------------
# oracles: NumPy and SciPy primitives only


def _sample(image, rows, cols):
    """Bilinear samples of ``image`` (real or complex) at fractional ``(rows, cols)``, zeros outside."""
    image = np.asarray(image)
    coords = np.stack(np.broadcast_arrays(rows, cols))
    if np.iscomplexobj(image):
        return _sample(image.real, rows, cols) + 1j * _sample(image.imag, rows, cols)
    return ndimage.map_coordinates(image.astype(np.float64), coords, order=1, mode="grid-constant", cval=0.0)


def shift_oracle(image, dx, dy):
    """``T(d)[X]`` of one 2-D image: ``scipy.ndimage.shift`` takes the shift per axis, (rows, cols)."""
    image = np.asarray(image)
    if np.iscomplexobj(image):
        return shift_oracle(image.real, dx, dy) + 1j * shift_oracle(image.imag, dx, dy)
    return ndimage.shift(image.astype(np.float64), (dy, dx), order=1, mode="grid-constant", cval=0.0)


def patches_oracle(obj, x_px, y_px, size):
    """``patch[k, r, c] = obj(y_k - N//2 + r, x_k - N//2 + c)`` by ``map_coordinates``."""
    steps = np.arange(size) - size // 2
    rows = np.asarray(y_px, dtype=np.float64)[:, None, None] + steps[None, :, None]
    cols = np.asarray(x_px, dtype=np.float64)[:, None, None] + steps[None, None, :]
    return _sample(obj, rows, cols)


def blur_oracle(images, sigma):
    """Zero-padded Gaussian blur of the last two axes (see the module docstring for the matching)."""
    if sigma <= 0:
        return np.asarray(images)
    radius = max(1, math.ceil(3 * sigma))
    return ndimage.gaussian_filter(
        np.asarray(images, dtype=np.complex128), sigma, mode="constant", cval=0.0, radius=radius, axes=(-2, -1)
    )


def window_oracle(size, *, pad_object, probe_big):
    """Weight of one patch on the group canvas: the central N/2 square when only it is predicted."""
    if pad_object and not probe_big:
        weights = np.zeros((size, size))
        centre = slice(size // 2 - size // 4, size // 2 + size // 4)
        weights[centre, centre] = 1.0
        return weights
    return np.ones((size, size))


def disk_oracle(size):
    """The disk of radius N/4 about the window centre ``(N//2, N//2)``."""
    rows, cols = np.indices((size, size)) - size // 2
    return (np.hypot(rows, cols) <= size / 4).astype(np.float64)


def probe_hat_oracle(probe, probe_scale, probe_mask):
    """``P / (probe_scale * mean |P| inside the disk)``, times the disk if ``probe_mask`` (SPEC 4.5)."""
    probe = np.asarray(probe, dtype=np.complex128)
    disk = disk_oracle(probe.shape[-1]).astype(bool)
    probe_hat = probe / (probe_scale * np.abs(probe[disk]).mean())
    return probe_hat * disk if probe_mask else probe_hat


def far_field_oracle(exit_wave, intensity_scale):
    """``s |fftshift(fft2(psi))| / N`` with NumPy's FFT."""
    exit_wave = np.asarray(exit_wave, dtype=np.complex128)
    spectrum = np.fft.fftshift(np.fft.fft2(exit_wave, axes=(-2, -1)), axes=(-2, -1))
    return intensity_scale * np.abs(spectrum) / exit_wave.shape[-1]


def group_views_oracle(object_patches, offsets, weights):
    """Views of the group canvas in each member's frame: ``sum_i T(o_i-o_j)[w O_i] / sum_i T(o_i-o_j)[w]``.

    Written per group and member pair with `shift_oracle`; 1 replaces a zero denominator.
    """
    batch, channels = offsets.shape[:2]
    views = np.zeros(object_patches.shape, dtype=np.complex128)
    for b in range(batch):
        for j in range(channels):
            numerator = 0
            denominator = 0
            for i in range(channels):
                dx, dy = offsets[b, i] - offsets[b, j]
                numerator = numerator + shift_oracle(weights * object_patches[b, i], dx, dy)
                denominator = denominator + shift_oracle(weights, dx, dy)
            views[b, j] = numerator / np.where(denominator > 0, denominator, 1.0)
    return views


def shared_views_oracle(group_objects, offsets):
    """``view_j[r, c] = O(r + o_j.y, c + o_j.x)``: every member cuts its view from the group's object."""
    size = group_objects.shape[-1]
    rows, cols = np.indices((size, size))
    views = np.zeros(offsets.shape[:2] + (size, size), dtype=np.complex128)
    for b, j in np.ndindex(offsets.shape[:2]):
        views[b, j] = _sample(group_objects[b, 0], rows + offsets[b, j, 1], cols + offsets[b, j, 0])
    return views


def forward_oracle(cfg, object_patches, offsets, probe, intensity_scale):
    """Docs/architecture.md steps 2-4 from the oracles above: ``(views, predicted amplitudes)``."""
    object_patches = np.asarray(object_patches, dtype=np.complex128)
    if cfg.gridsize == 1:
        views = object_patches
    elif cfg.object_big:
        views = group_views_oracle(object_patches, offsets, window_oracle(cfg.N, pad_object=cfg.pad_object, probe_big=cfg.probe_big))
    else:
        views = shared_views_oracle(object_patches, offsets)
    exit_wave = blur_oracle(views * probe_hat_oracle(probe, cfg.probe_scale, cfg.probe_mask), cfg.gaussian_smoothing_sigma)
    return views, far_field_oracle(exit_wave, intensity_scale)


def nll_oracle(predicted, measured):
    """Poisson NLL in counts: ``mean(a_hat^2 - a^2 log(a_hat^2 + 1e-8))``."""
    predicted = np.asarray(predicted, dtype=np.float64)
    measured = np.asarray(measured, dtype=np.float64)
    return float(np.mean(predicted**2 - measured**2 * np.log(predicted**2 + NLL_EPS)))


def mae_oracle(predicted, measured):
    """Mean absolute amplitude error ``mean|a_hat - a|``."""
    return float(np.mean(np.abs(np.asarray(predicted, dtype=np.float64) - np.asarray(measured, dtype=np.float64))))


def ramp(x, y, coefficients=(0.3 - 0.2j, -0.15 + 0.4j, 1.0 + 0.5j)):
    """A complex linear ramp ``a x + b y + c`` of the absolute object coordinates."""
    a, b, c = coefficients
    return a * np.asarray(x) + b * np.asarray(y) + c


def _axis_classes(source, first, last):
    """Per pixel, where a bilinear read at ``source`` falls relative to a support ``[first, last]``.

    Returns ``(inside, outside)``: every tap with a non-zero weight inside the support
    (``first <= source <= last``), or none (``source <= first - 1`` or ``source >= last + 1``); in
    between the read straddles an edge of the support.
    """
    return (source >= first) & (source <= last), (source <= first - 1) | (source >= last + 1)


def _relative(measured, expected):
    measured = np.asarray(measured).astype(np.complex128)
    expected = np.asarray(expected).astype(np.complex128)
    return float(np.max(np.abs(measured - expected)) / max(np.max(np.abs(expected)), 1e-300))


# --------------------------------------------------------------------------------------------------
# backends under test


def _to_numpy(value):
    if hasattr(value, "detach"):
        value = value.detach().cpu()
    if hasattr(value, "numpy"):
        return np.asarray(value.numpy())
    return np.asarray(value)


@pytest.fixture(params=BACKENDS)
def backend(request):
    pytest.importorskip(request.param)
    from ptycholib.backends import get_backend

    return get_backend(request.param)


@pytest.fixture(params=["numpy"] + BACKENDS)
def translate(request):
    """``translate_bilinear`` of the NumPy reference and of each backend, returning NumPy."""
    if request.param == "numpy":
        return forward.translate_bilinear
    pytest.importorskip(request.param)
    from ptycholib.backends import get_backend

    physics = get_backend(request.param).physics
    return lambda images, shifts: _to_numpy(physics.translate_bilinear(images, shifts))


@pytest.fixture(params=["numpy"] + BACKENDS)
def reassembler(request):
    """``reassemble_patches`` of the NumPy reference and of each backend, returning NumPy arrays."""
    if request.param == "numpy":
        return reassemble.reassemble_patches
    pytest.importorskip(request.param)
    module = importlib.import_module(f"ptycholib.{request.param}.reassemble")
    return lambda *args, **kwargs: tuple(_to_numpy(v) for v in module.reassemble_patches(*args, **kwargs))


# --------------------------------------------------------------------------------------------------
# translation and patch extraction


SHIFTS = [(0.3, -1.7), (2.5, 0.25), (-3.0, 4.0), (0.5, 0.5), (-0.999, 6.2)]


def test_translation_matches_scipy_shift(translate, rng):
    images = (rng.normal(size=(len(SHIFTS), 13, 17)) + 1j * rng.normal(size=(len(SHIFTS), 13, 17))).astype(np.complex64)
    moved = np.asarray(translate(images, np.array(SHIFTS)))
    assert moved.shape == images.shape
    expected = np.stack([shift_oracle(image, dx, dy) for image, (dx, dy) in zip(images, SHIFTS)])
    assert _relative(moved, expected) < 2e-6


def test_translation_by_half_a_pixel_averages_neighbours(translate):
    """The half-pixel case by hand (no SciPy): ``out[c] = (in[c] + in[c-1]) / 2``, zero before column 0."""
    row = np.array([[1.0, 3.0, 7.0, 15.0]], dtype=np.float32)
    assert np.allclose(np.asarray(translate(row, np.array([0.5, 0.0]))), [[0.5, 2.0, 5.0, 11.0]])
    assert np.allclose(np.asarray(translate(row.T, np.array([0.0, -0.5]))).ravel(), [2.0, 5.0, 11.0, 7.5])


def test_patch_extraction_matches_map_coordinates(rng):
    obj = rng.normal(size=(20, 23)) + 1j * rng.normal(size=(20, 23))
    x_px = np.array([5.3, 10.0, -1.2, 21.5, 11.0])
    y_px = np.array([7.75, 3.5, 18.6, 0.25, 9.0])
    patches = forward.extract_patches(obj, x_px, y_px, 6)
    assert _relative(patches, patches_oracle(obj, x_px, y_px, 6)) < 1e-12


@pytest.mark.parametrize("subpixel", [False, True])
def test_simulated_patterns_match_fft_of_interpolated_views(rng, subpixel):
    """The simulator's noiseless patterns ``|fftshift(fft2(P O_k))|^2 / N^2`` (s = 1, raw probe)."""
    size = 16
    obj = (rng.uniform(0.5, 1.0, (40, 44)) * np.exp(1j * rng.uniform(-np.pi, np.pi, (40, 44)))).astype(np.complex64)
    probe = (rng.normal(size=(size, size)) + 1j * rng.normal(size=(size, size))).astype(np.complex64)
    x_px = np.array([8.0, 20.0, 30.0, 35.0])
    y_px = np.array([8.0, 17.0, 25.0, 31.0])
    if subpixel:
        x_px, y_px = x_px + np.array([0.3, 0.5, 0.9, 0.05]), y_px + np.array([0.7, 0.1, 0.5, 0.45])
    patterns = simulate.far_field_intensity(obj, probe, x_px, y_px)
    expected = far_field_oracle(patches_oracle(obj, x_px, y_px, size) * probe, 1.0) ** 2
    assert _relative(patterns, expected) < 1e-5


# --------------------------------------------------------------------------------------------------
# smoothing, probe normalisation


@pytest.mark.parametrize("sigma", [0.3, 0.8, 1.5, 2.0])
def test_smoothing_matches_scipy_gaussian_filter(rng, sigma):
    images = rng.normal(size=(2, 13, 17)) + 1j * rng.normal(size=(2, 13, 17))
    assert _relative(forward.smooth_gaussian(images, sigma), blur_oracle(images, sigma)) < 1e-12


@pytest.mark.parametrize("sigma", [0.5, 1.5])
def test_gaussian_kernel_is_the_filter_response_to_an_impulse(sigma):
    radius = max(1, math.ceil(3 * sigma))
    impulse = np.zeros(2 * radius + 1)
    impulse[radius] = 1.0
    expected = ndimage.gaussian_filter1d(impulse, sigma, mode="constant", cval=0.0, radius=radius)
    assert np.allclose(forward.gaussian_kernel_1d(sigma), expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("sigma", [0.8, 1.5])
def test_backend_smoothing_matches_scipy_gaussian_filter(backend, rng, sigma):
    """Through ``illuminate`` with a flat probe (``P_hat = 1`` at ``probe_scale = 1``), so only the blur acts."""
    size = 16
    patches = (rng.normal(size=(2, size, size)) + 1j * rng.normal(size=(2, size, size))).astype(np.complex64)
    flat = np.ones((size, size), dtype=np.complex64)
    out = _to_numpy(backend.physics.illuminate(patches, flat, probe_scale=1.0, gaussian_smoothing_sigma=sigma))
    assert _relative(out, blur_oracle(patches, sigma)) < 2e-6


@pytest.mark.parametrize("probe_mask", [False, True])
def test_illumination_matches_probe_normalisation_formula(rng, probe_mask):
    size = 32
    patches = rng.normal(size=(3, size, size)) + 1j * rng.normal(size=(3, size, size))
    probe = (rng.normal(size=(size, size)) + 1j * rng.normal(size=(size, size))).astype(np.complex64)
    out = forward.illuminate(patches, probe, probe_scale=2.5, probe_mask=probe_mask)
    assert _relative(out, patches * probe_hat_oracle(probe, 2.5, probe_mask)) < 2e-6


# --------------------------------------------------------------------------------------------------
# group canvas: analytic cases at sub-pixel offsets


GROUP_OFFSETS = np.array([[[-2.3, -1.45], [1.7, -0.8], [-0.35, 2.1], [0.95, 0.15]]])  # (1, 4, 2); one pair 4 px apart in x


@pytest.fixture(params=["numpy"] + BACKENDS)
def assemble(request):
    if request.param == "numpy":
        return forward.assemble_group_canvas
    pytest.importorskip(request.param)
    from ptycholib.backends import get_backend

    physics = get_backend(request.param).physics
    return lambda patches, offsets, weights: _to_numpy(
        physics.assemble_group_canvas(patches.astype(np.complex64), offsets, weights.astype(np.float32))
    )


def _window_support(size, pad_object, probe_big):
    """First and last index of the weighted square (the same in both axes)."""
    if pad_object and not probe_big:
        return size // 2 - size // 4, size // 2 + size // 4 - 1
    return 0, size - 1


@pytest.mark.parametrize("pad_object, probe_big", [(True, True), (True, False)])
def test_group_canvas_of_ramp_patches_is_the_ramp(assemble, pad_object, probe_big):
    """Patches cut (analytically) from one linear ramp merge into that ramp, seen from each member.

    Patch ``i`` shows ``f(o_i.x - N//2 + c, o_i.y - N//2 + r)``. Bilinear interpolation of a linear
    function is exact, so member ``j``'s view is ``f(o_j.x - N//2 + c, o_j.y - N//2 + r)`` wherever no
    contributing patch is read across the edge of its weighted square, and 0 where no patch lands.
    Constant patches give the constant everywhere a patch lands.
    """
    size = 32
    offsets = GROUP_OFFSETS
    first, last = _window_support(size, pad_object, probe_big)
    weights = window_oracle(size, pad_object=pad_object, probe_big=probe_big)
    rows, cols = np.indices((size, size)) - size // 2
    patches = np.stack([ramp(ox + cols, oy + rows) for ox, oy in offsets[0]])[None]
    views = assemble(patches, offsets, weights)
    constant = assemble(np.full_like(patches, 0.7 - 0.2j), offsets, weights)
    for j, (ox, oy) in enumerate(offsets[0]):
        clean, covered = np.ones((size, size), bool), np.zeros((size, size), bool)
        for i in range(offsets.shape[1]):
            dx, dy = offsets[0, i] - offsets[0, j]
            in_r, out_r = _axis_classes(rows + size // 2 - dy, first, last)
            in_c, out_c = _axis_classes(cols + size // 2 - dx, first, last)
            clean &= (in_r & in_c) | out_r | out_c
            covered |= ~(out_r | out_c)
        expected = ramp(ox + cols, oy + rows)
        assert clean.sum() > 0.15 * size**2
        assert np.abs(views[0, j] - expected)[clean & covered].max() < 1e-5
        assert np.abs(views[0, j])[clean & ~covered].max(initial=0) == 0
        assert np.allclose(constant[0, j][covered], 0.7 - 0.2j, atol=1e-6)
        assert np.all(constant[0, j][~covered] == 0)


# --------------------------------------------------------------------------------------------------
# forward physics of the backends (and the NumPy reference) against the composed oracle


FORWARD_CASES = {
    "group-canvas, central window": dict(gridsize=2, pad_object=True, probe_big=False),
    "group-canvas, mask and blur": dict(gridsize=2, probe_mask=True, gaussian_smoothing_sigma=0.8, probe_scale=2.5),
    "one object per group, blur": dict(gridsize=2, object_big=False, pad_object=False, probe_big=False, gaussian_smoothing_sigma=1.5),
    "gridsize 1, masked probe": dict(gridsize=1, pad_object=False, probe_big=False, probe_mask=True),
}


def _physics_inputs(cfg, seed, batch=2):
    rng = np.random.default_rng(seed)
    size, channels = cfg.N, cfg.gridsize**2
    inputs = rng.uniform(0.0, 2.0, (batch, channels, size, size)).astype(np.float32)
    offsets = rng.uniform(-4.0, 4.0, (batch, channels, 2))
    r2 = np.sum((np.indices((size, size)) - size // 2) ** 2, axis=0)
    probe = (np.exp(-r2 / (2 * (size / 6) ** 2)) * np.exp(1j * rng.uniform(-np.pi, np.pi, (size, size)))).astype(np.complex64)
    return inputs, offsets, probe


@pytest.mark.parametrize("case", list(FORWARD_CASES))
def test_backend_forward_model_matches_scipy_fft_oracle(backend, case):
    """``forward_model`` of a built model against the oracle applied to the model's own patches.

    The model (with its window weights, probe normalisation, mask and blur) is what training uses;
    only its network output is taken from it (`predict_object`).
    """
    cfg = ModelConfig(N=64, n_filters_scale=1, **FORWARD_CASES[case])
    inputs, offsets, probe = _physics_inputs(cfg, seed=5)
    intensity_scale = 37.5
    model = backend.network.build_model(cfg, probe, intensity_scale, seed=0)
    patches = _to_numpy(backend.network.predict_object(model, inputs))
    views, amplitudes = (_to_numpy(v) for v in backend.network.forward_model(model, inputs, offsets))
    expected_views, expected_amplitudes = forward_oracle(cfg, patches, offsets, probe, intensity_scale)
    assert _relative(views, expected_views) < 1e-5
    assert _relative(amplitudes, expected_amplitudes) < 1e-5


@pytest.mark.parametrize("case", list(FORWARD_CASES))
def test_numpy_reference_forward_model_matches_scipy_fft_oracle(case):
    cfg = ModelConfig(N=64, n_filters_scale=1, **FORWARD_CASES[case])
    _, offsets, probe = _physics_inputs(cfg, seed=6)
    rng = np.random.default_rng(7)
    shape = (2, cfg.n_object_channels, cfg.N, cfg.N)
    patches = (rng.uniform(0.2, 1.0, shape) * np.exp(1j * rng.uniform(-np.pi, np.pi, shape))).astype(np.complex64)
    views = forward.group_views(cfg, patches, offsets)
    exit_wave = forward.illuminate(
        views, probe, probe_scale=cfg.probe_scale, probe_mask=cfg.probe_mask, gaussian_smoothing_sigma=cfg.gaussian_smoothing_sigma
    )
    expected_views, expected_amplitudes = forward_oracle(cfg, patches, offsets, probe, 37.5)
    assert _relative(views, expected_views) < 1e-5
    assert _relative(forward.far_field_amplitude(exit_wave, 37.5), expected_amplitudes) < 1e-5


# --------------------------------------------------------------------------------------------------
# loss


def _loss_inputs(seed=3):
    rng = np.random.default_rng(seed)
    predicted = rng.uniform(0.0, 30.0, (2, 4, 16, 16)).astype(np.float32)
    measured = np.sqrt(rng.poisson(predicted.astype(np.float64) ** 2)).astype(np.float32)
    predicted[0, 0, :3, :3] = 0.0  # log(0 + eps) stays finite
    return predicted, measured


def test_numpy_reference_loss_matches_formula():
    predicted, measured = _loss_inputs()
    assert forward.poisson_nll(predicted, measured) == pytest.approx(nll_oracle(predicted, measured), rel=1e-12)
    assert forward.amplitude_mae(predicted, measured) == pytest.approx(mae_oracle(predicted, measured), rel=1e-6)


def test_backend_loss_matches_formula(backend):
    predicted, measured = _loss_inputs()
    nll = float(_to_numpy(backend.physics.poisson_nll(predicted, measured)))
    mae = float(_to_numpy(backend.physics.amplitude_mae(predicted, measured)))
    assert nll == pytest.approx(nll_oracle(predicted, measured), rel=1e-5)
    assert mae == pytest.approx(mae_oracle(predicted, measured), rel=1e-5)


def test_backend_training_loss_gradient_in_log_scale_matches_formula(backend):
    """``dL/d log s`` of the training loss ``p (w_nll NLL + w_mae MAE) + (1 - p) MAE`` (docs/architecture.md).

    With ``a_hat = s A``: ``dNLL/dlog s = mean(2 a_hat^2 - 2 a^2 a_hat^2 / (a_hat^2 + eps))`` and
    ``dMAE/dlog s = mean(sign(a_hat - a) a_hat)``; ``A`` comes from the oracle forward model.
    """
    cfg = ModelConfig(N=64, gridsize=2, n_filters_scale=1)
    inputs, offsets, probe = _physics_inputs(cfg, seed=9)
    intensity_scale, p, w_nll, w_mae = 20.0, 0.75, 1.0, 0.5
    model = backend.network.build_model(cfg, probe, intensity_scale, seed=1)
    patches = _to_numpy(backend.network.predict_object(model, inputs))
    _, predicted = forward_oracle(cfg, patches, offsets, probe, intensity_scale)
    measured = (predicted * np.random.default_rng(2).uniform(0.7, 1.3, predicted.shape)).astype(np.float32)
    d_nll = np.mean(2 * predicted**2 - 2 * measured**2 * predicted**2 / (predicted**2 + NLL_EPS))
    d_mae = np.mean(np.sign(predicted - measured) * predicted)
    expected = p * (w_nll * d_nll + w_mae * d_mae) + (1 - p) * d_mae
    training = TrainingConfig(nll_weight=w_nll, mae_weight=w_mae)
    grads = backend.training.loss_gradients(model, inputs, offsets, measured, training, physics_weight=p)
    assert float(grads["physics.log_intensity_scale"]) == pytest.approx(expected, rel=1e-3)


# --------------------------------------------------------------------------------------------------
# reassembly on the object canvas


def _scan(rng, size, canvas):
    """Sub-pixel positions whose windows stay mostly on the canvas (some cross its edge)."""
    x_px = rng.uniform(size // 2 - 3, canvas[1] - size // 2 + 3, 24)
    y_px = rng.uniform(size // 2 - 3, canvas[0] - size // 2 + 3, 24)
    return x_px, y_px


def _weights_oracle(size, weighting, crop_size, probe):
    """Weight of one patch: 1 on the central ``crop_size`` square (from ``N//2 - crop_size//2``) or ``|P|^2 / max``."""
    if weighting == "probe":
        intensity = np.abs(np.asarray(probe, dtype=np.complex128)) ** 2
        return intensity / intensity.max()
    weights = np.zeros((size, size))
    start = size // 2 - crop_size // 2
    weights[start : start + crop_size, start : start + crop_size] = 1.0
    return weights


@pytest.mark.parametrize("weighting", ["crop", "probe"])
def test_reassembly_is_the_adjoint_of_interpolation(reassembler, rng, weighting):
    """``<G, sum_k S_k[w O_k]> = sum_k <E_k(G), w O_k>`` for test canvases ``G``, ``E_k`` by ``map_coordinates``.

    The reassembly is ``obj = sum_k S_k[w O_k] / sum_k S_k[w]`` with ``S_k`` the bilinear scatter, the
    adjoint of bilinear extraction ``E_k`` at position k (SPEC 7). Testing numerator (``obj * weight``)
    and denominator (``weight``) against random ``G`` pins down both linear maps.
    """
    size, canvas, crop_size = 16, (40, 47), 10
    x_px, y_px = _scan(rng, size, canvas)
    patches = rng.normal(size=(24, size, size)) + 1j * rng.normal(size=(24, size, size))
    probe = rng.normal(size=(size, size)) + 1j * rng.normal(size=(size, size))
    obj, weight = reassembler(patches, x_px, y_px, canvas, crop_size=crop_size, weighting=weighting, probe=probe)
    weights = _weights_oracle(size, weighting, crop_size, probe)
    assert weight.min() >= 0 and (weight > 0).sum() > 0.5 * np.prod(canvas)
    for test_canvas in rng.normal(size=(3,) + canvas):
        views = patches_oracle(test_canvas, x_px, y_px, size)
        expected_weight = np.sum(views * weights)
        expected_numerator = np.sum(views * weights * patches)
        assert np.sum(test_canvas * weight) == pytest.approx(expected_weight, rel=1e-9, abs=1e-9)
        assert _relative(np.sum(test_canvas * weight * obj), expected_numerator) < 1e-9


def test_reassembly_of_ramp_patches_is_the_ramp(reassembler, rng):
    """Crops cut (analytically) from a linear ramp at sub-pixel positions reassemble to the ramp.

    A canvas pixel away from every crop's edge receives, from each crop, two taps per axis whose
    bilinear weights average their positions to the pixel's own; so the ramp comes back exactly and
    the weight there counts the crops that cover it.
    """
    size, canvas, crop_size = 16, (40, 47), 10
    x_px, y_px = _scan(rng, size, canvas)
    steps = np.arange(size) - size // 2
    patches = ramp(x_px[:, None, None] + steps[None, None, :], y_px[:, None, None] + steps[None, :, None])
    obj, weight = reassembler(patches, x_px, y_px, canvas, crop_size=crop_size)
    rows, cols = np.indices(canvas)
    first = -(crop_size // 2)  # crop offsets relative to the window centre
    clean, count = np.ones(canvas, bool), np.zeros(canvas)
    for x, y in zip(x_px, y_px):
        in_r, out_r = _axis_classes(rows - y, first, first + crop_size - 1)
        in_c, out_c = _axis_classes(cols - x, first, first + crop_size - 1)
        clean &= (in_r & in_c) | out_r | out_c
        count += in_r & in_c
    check = clean & (count > 0)
    assert check.sum() > 0.2 * np.prod(canvas)
    assert np.abs(obj - ramp(cols, rows))[check].max() < 1e-9
    assert np.allclose(weight[check], count[check], atol=1e-9)
    assert np.all(weight[clean & (count == 0)] == 0)


def test_scatter_add_is_the_adjoint_of_map_coordinates_extraction(rng):
    canvas = (30, 27)
    x_px, y_px = rng.uniform(-3, 30, 9), rng.uniform(-3, 33, 9)
    values = rng.normal(size=(9, 8, 8))
    scattered = reassemble.scatter_add_patches(values, x_px, y_px, canvas)
    test_canvas = rng.normal(size=canvas)
    expected = np.sum(patches_oracle(test_canvas, x_px, y_px, 8) * values)
    assert np.sum(scattered * test_canvas) == pytest.approx(expected, rel=1e-10)


# --------------------------------------------------------------------------------------------------
# grouping


def test_group_offsets_are_positions_minus_group_mean(rng):
    """Sequential groups at K = C: each position with its C - 1 nearest neighbours (brute force)."""
    x_px, y_px = rng.uniform(0, 50, 30), rng.uniform(0, 40, 30)
    groups = grouping.group_neighbors(x_px, y_px, 2, neighbor_count=4, sequential=True)
    positions = np.stack([x_px, y_px], axis=1)
    distances = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    for seed, members in enumerate(groups.indices):
        assert set(members) == set(np.argsort(distances[seed], kind="stable")[:4])
        expected = positions[members] - positions[members].mean(axis=0)
        assert np.allclose(groups.offsets[seed], expected, atol=1e-12)
