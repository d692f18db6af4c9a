"""Each backend's physics against the NumPy reference `ptycholib.forward` (SPEC sections 4 and 8).

Backend-generic: the ``backend`` fixture runs every test on ``ptycholib.torch`` and
``ptycholib.tensorflow`` (skipped when the framework is missing). Inputs are made once in NumPy and
converted with the backend's ``physics.to_tensor``; results come back with ``physics.to_numpy``.
"""

import importlib

import numpy as np
import pytest

from ptycholib import forward

FORWARD_RTOL = 1e-5  # SPEC section 8: forward model, max abs error <= 1e-5 x max abs value


@pytest.fixture(params=["torch", "tensorflow"])
def backend(request):
    pytest.importorskip(request.param)
    return importlib.import_module(f"ptycholib.{request.param}")


def assert_close(actual, expected, rtol=FORWARD_RTOL):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    scale = np.abs(expected).max()
    error = np.abs(actual - expected).max()
    assert error <= rtol * scale, f"max abs error {error:.3g} > {rtol:g} x max abs value {scale:.3g}"


def complex_patches(rng, shape):
    return ((0.5 + rng.random(shape)) * np.exp(1j * rng.uniform(-np.pi, np.pi, shape))).astype(np.complex64)


def gaussian_probe(n, rng):
    coords = np.arange(n) - n // 2
    envelope = np.exp(-(coords[:, None] ** 2 + coords[None, :] ** 2) / (2 * (n / 6) ** 2))
    return (envelope * np.exp(0.3j * rng.normal(size=(n, n)))).astype(np.complex64)


def run(backend, fn, *args, **kwargs):
    physics = backend.physics
    return physics.to_numpy(getattr(physics, fn)(*[physics.to_tensor(a) for a in args], **kwargs))


@pytest.mark.parametrize("n", [64, 128])
@pytest.mark.parametrize("is_complex", [False, True])
def test_translate_matches_reference(backend, n, is_complex):
    rng = np.random.default_rng(1)
    images = complex_patches(rng, (3, 2, n, n)) if is_complex else rng.normal(size=(3, 2, n, n)).astype(np.float32)
    shifts = rng.uniform(-6, 6, size=(3, 2, 2))
    shifts[0, 0] = (n + 3, -2.5)  # entirely outside: all zeros
    physics = backend.physics
    actual = physics.to_numpy(physics.translate_bilinear(physics.to_tensor(images), shifts))
    assert_close(actual, forward.translate_bilinear(images, shifts))
    assert not actual[0, 0].any()


def test_integer_translation_is_zero_filled_roll(backend):
    rng = np.random.default_rng(2)
    image = rng.normal(size=(37, 31)).astype(np.float32)  # non-square catches swapped axes
    expected = np.zeros_like(image)
    expected[3:, :-2] = image[:-3, 2:]  # dx = -2 (towards lower columns), dy = +3 (towards higher rows)
    actual = run(backend, "translate_bilinear", image, np.array([-2.0, 3.0]))
    np.testing.assert_allclose(actual, expected, atol=1e-6)


def test_half_pixel_shift_is_neighbour_average(backend):
    rng = np.random.default_rng(3)
    image = rng.normal(size=(16, 20)).astype(np.float32)
    along_x = run(backend, "translate_bilinear", image, np.array([0.5, 0.0]))
    np.testing.assert_allclose(along_x[:, 1:], 0.5 * (image[:, 1:] + image[:, :-1]), atol=1e-6)
    np.testing.assert_allclose(along_x[:, 0], 0.5 * image[:, 0], atol=1e-6)  # zeros outside
    along_y = run(backend, "translate_bilinear", image, np.array([0.0, -0.5]))
    np.testing.assert_allclose(along_y[:-1], 0.5 * (image[:-1] + image[1:]), atol=1e-6)


def test_translate_broadcasts_shifts_over_images(backend):
    rng = np.random.default_rng(4)
    image = rng.normal(size=(12, 12)).astype(np.float32)
    shifts = rng.uniform(-3, 3, size=(5, 2))
    actual = run(backend, "translate_bilinear", image, shifts)
    assert_close(actual, forward.translate_bilinear(image, shifts))


@pytest.mark.parametrize("n", [64, 128])
@pytest.mark.parametrize("gridsize", [1, 2])
@pytest.mark.parametrize("pad_object,probe_big", [(True, False), (True, True)])
def test_group_canvas_matches_reference(backend, n, gridsize, pad_object, probe_big):
    rng = np.random.default_rng(5)
    channels = gridsize**2
    patches = complex_patches(rng, (2, channels, n, n))
    offsets = rng.uniform(-5, 5, size=(2, channels, 2))
    offsets -= offsets.mean(axis=1, keepdims=True)
    weights = forward.window_weights(n, pad_object=pad_object, probe_big=probe_big)
    physics = backend.physics
    actual = physics.assemble_group_canvas(physics.to_tensor(patches), offsets, physics.to_tensor(weights))
    assert_close(physics.to_numpy(actual), forward.assemble_group_canvas(patches, offsets, weights))


def test_group_canvas_never_mixes_groups(backend):
    rng = np.random.default_rng(6)
    patches = complex_patches(rng, (3, 4, 64, 64))
    offsets = rng.uniform(-4, 4, size=(3, 4, 2))
    weights = forward.window_weights(64, pad_object=True, probe_big=False)
    physics = backend.physics
    together = physics.to_numpy(physics.assemble_group_canvas(physics.to_tensor(patches), offsets, weights))
    alone = physics.to_numpy(physics.assemble_group_canvas(physics.to_tensor(patches[1:2]), offsets[1:2], weights))
    np.testing.assert_allclose(together[1:2], alone, rtol=0, atol=1e-6)


@pytest.mark.parametrize("n", [64, 128])
@pytest.mark.parametrize("probe_mask,sigma", [(False, 0.0), (True, 0.0), (False, 1.0), (True, 0.7)])
def test_illuminate_and_far_field_match_reference(backend, n, probe_mask, sigma):
    rng = np.random.default_rng(7)
    patches = complex_patches(rng, (2, 4, n, n))
    probe = gaussian_probe(n, rng)
    options = dict(probe_scale=4.0, probe_mask=probe_mask, gaussian_smoothing_sigma=sigma)
    expected_wave = forward.illuminate(patches, probe, **options)
    physics = backend.physics
    wave = physics.illuminate(physics.to_tensor(patches), physics.to_tensor(probe), **options)
    assert_close(physics.to_numpy(wave), expected_wave)
    amplitudes = physics.far_field_amplitude(wave, 250.0)
    assert_close(physics.to_numpy(amplitudes), forward.far_field_amplitude(expected_wave, 250.0))
    assert physics.to_numpy(amplitudes).dtype == np.float32


def test_normalize_probe_matches_reference(backend):
    rng = np.random.default_rng(8)
    probe = gaussian_probe(64, rng) * 37.0
    actual = run(backend, "normalize_probe", probe, 2.5)
    assert_close(actual, forward.normalize_probe(probe, 2.5))
    disk = forward.disk_mask(64).astype(bool)
    assert np.abs(actual)[disk].mean() == pytest.approx(1 / 2.5, rel=1e-5)


def test_far_field_is_centred_and_obeys_parseval(backend):
    rng = np.random.default_rng(9)
    wave = complex_patches(rng, (3, 64, 64))
    amplitudes = run(backend, "far_field_amplitude", wave, 3.0)
    np.testing.assert_allclose((amplitudes**2).sum(axis=(-2, -1)), 9.0 * (np.abs(wave) ** 2).sum(axis=(-2, -1)), rtol=1e-5)
    flat = run(backend, "far_field_amplitude", np.ones((64, 64), np.complex64), 1.0)
    assert np.unravel_index(flat.argmax(), flat.shape) == (32, 32)  # DC at N // 2
    assert flat[32, 32] == pytest.approx(64.0, rel=1e-6)


def test_losses_match_reference(backend):
    rng = np.random.default_rng(10)
    predicted = (rng.random((4, 4, 64, 64)) * 30).astype(np.float32)
    measured = np.sqrt(rng.poisson(predicted.astype(np.float64) ** 2)).astype(np.float32)
    physics = backend.physics
    nll = float(physics.to_numpy(physics.poisson_nll(physics.to_tensor(predicted), physics.to_tensor(measured))))
    mae = float(physics.to_numpy(physics.amplitude_mae(physics.to_tensor(predicted), physics.to_tensor(measured))))
    assert nll == pytest.approx(forward.poisson_nll(predicted, measured), rel=1e-5)
    assert mae == pytest.approx(forward.amplitude_mae(predicted, measured), rel=1e-5)


def test_fft_amplitude_raw_is_bare_fft(backend):
    rng = np.random.default_rng(11)
    wave = complex_patches(rng, (2, 64, 64))
    assert_close(run(backend, "fft_amplitude_raw", wave), np.abs(np.fft.fft2(wave)))


@pytest.mark.parametrize("n", [64, 128])
@pytest.mark.parametrize("gridsize", [1, 2])
def test_known_object_reproduces_noiseless_patterns(backend, n, gridsize):
    """Patches cut from a known object, merged, illuminated and diffracted as the simulator does."""
    rng = np.random.default_rng(12)
    obj = complex_patches(rng, (n + 40, n + 50))
    channels = gridsize**2
    centre = np.array([n // 2 + 25.3, n // 2 + 20.6])
    offsets = rng.integers(-6, 7, size=(1, channels, 2)).astype(np.float64)
    offsets -= offsets.mean(axis=1, keepdims=True)  # whole-pixel differences between members
    positions = centre + offsets[0]
    patches = forward.extract_patches(obj, positions[:, 0], positions[:, 1], n)[None]
    probe = gaussian_probe(n, rng)
    weights = forward.window_weights(n, pad_object=False, probe_big=False)
    views = forward.assemble_group_canvas(patches, offsets, weights)
    expected = forward.far_field_amplitude(forward.illuminate(views, probe, probe_scale=4.0), 1e3)
    physics = backend.physics
    actual = physics.far_field_amplitude(
        physics.illuminate(
            physics.assemble_group_canvas(physics.to_tensor(patches), offsets, physics.to_tensor(weights)),
            physics.to_tensor(probe),
            probe_scale=4.0,
        ),
        1e3,
    )
    assert_close(physics.to_numpy(actual), expected)
    # Whole-pixel differences and full windows: every member's view of the merged canvas is its own patch.
    assert_close(physics.to_numpy(physics.assemble_group_canvas(physics.to_tensor(patches), offsets, weights)), patches)


@pytest.mark.parametrize("n", [64, 128])
def test_one_group_object_reproduces_every_members_patch(backend, n):
    """object_big=False: the true object around the group mean, moved to each member's offset, is
    that member's true patch (whole-pixel offsets, away from the borders), in NumPy and the backend."""
    rng = np.random.default_rng(13)
    obj = complex_patches(rng, (n + 40, n + 50))
    centre = np.array([n // 2 + 25.0, n // 2 + 20.0])
    offsets = np.array([[[-2.0, -2.0], [2.0, -2.0], [-2.0, 2.0], [2.0, 2.0]]])
    members = forward.extract_patches(obj, centre[0] + offsets[0, :, 0], centre[1] + offsets[0, :, 1], n)[None]
    group_object = forward.extract_patches(obj, centre[:1], centre[1:], n)[None]  # (1, 1, N, N)
    inner = (slice(None), slice(None), slice(2, n - 2), slice(2, n - 2))
    reference = forward.shared_object_views(group_object, offsets)
    assert_close(reference[inner], members[inner])
    actual = backend.physics.to_numpy(backend.physics.shared_object_views(backend.physics.to_tensor(group_object), offsets))
    assert_close(actual, reference)
    with pytest.raises(ValueError, match="group_objects must have shape"):
        backend.physics.shared_object_views(backend.physics.to_tensor(members), offsets)


def test_translate_rejects_bad_shifts(backend):
    with pytest.raises(ValueError, match="shifts"):
        backend.physics.translate_bilinear(backend.physics.to_tensor(np.zeros((4, 4), np.float32)), np.zeros(3))


@pytest.mark.parametrize("gridsize,object_big,sigma", [(1, True, 0.0), (2, True, 0.8), (2, False, 0.0)])
def test_forward_model_is_the_steps_composed(backend, gridsize, object_big, sigma):
    """``physics.forward_model`` and `ptycholib.forward.forward_model`: group views, exit wave, amplitudes."""
    from ptycholib.config import ModelConfig

    cfg = ModelConfig(N=64, gridsize=gridsize, object_big=object_big, probe_mask=True, gaussian_smoothing_sigma=sigma)
    rng = np.random.default_rng(8)
    patches = complex_patches(rng, (2, cfg.n_object_channels, 64, 64))
    offsets = rng.uniform(-5, 5, size=(2, cfg.n_channels, 2))
    probe = gaussian_probe(64, rng)
    reference = forward.forward_model(cfg, patches, offsets, probe, 12.0)
    views = forward.group_views(cfg, patches, offsets)
    wave = forward.illuminate(views, probe, probe_scale=cfg.probe_scale, probe_mask=True, gaussian_smoothing_sigma=sigma)
    np.testing.assert_array_equal(reference["amplitudes"], forward.far_field_amplitude(wave, 12.0))
    physics = backend.physics
    steps = physics.forward_model(cfg, physics.to_tensor(patches), offsets, physics.to_tensor(probe), 12.0)
    assert set(steps) == set(reference) == {"views", "exit_wave", "amplitudes"}
    for key in reference:
        assert_close(physics.to_numpy(steps[key]), reference[key])
    window = forward.window_weights(64, pad_object=cfg.pad_object, probe_big=cfg.probe_big)
    again = physics.group_views(cfg, physics.to_tensor(patches), offsets, window=physics.to_tensor(window))
    np.testing.assert_array_equal(physics.to_numpy(again), physics.to_numpy(steps["views"]))


def test_check_physics_inputs_refuses_bad_probe_and_scale():
    from ptycholib.config import ModelConfig

    cfg = ModelConfig(N=64)
    probe = forward.check_physics_inputs(cfg, np.ones((64, 64)), 2.0)
    assert probe.dtype == np.complex64 and probe.shape == (64, 64)
    with pytest.raises(ValueError, match="probe has shape"):
        forward.check_physics_inputs(cfg, np.ones((64, 32)), 2.0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        forward.check_physics_inputs(cfg, np.full((64, 64), np.nan), 2.0)
    for scale in (0.0, -1.0, np.inf):
        with pytest.raises(ValueError, match="intensity_scale"):
            forward.check_physics_inputs(cfg, np.ones((64, 64)), scale)
