"""Each backend's network and physics-informed model (docs/architecture.md, SPEC sections 4.3 and 4.7).

Backend-generic over the ``backend`` fixture. Weights travel as canonical NumPy dicts, so the same
assertions hold for ``ptycholib.torch`` and ``ptycholib.tensorflow``.
"""

import importlib
import math

import numpy as np
import pytest

from ptycholib import archive, forward
from ptycholib.config import ModelConfig


@pytest.fixture(params=["torch", "tensorflow"])
def backend(request):
    pytest.importorskip(request.param)
    return importlib.import_module(f"ptycholib.{request.param}")


def gaussian_probe(n):
    coords = np.arange(n) - n // 2
    return np.exp(-(coords[:, None] ** 2 + coords[None, :] ** 2) / (2 * (n / 6) ** 2)).astype(np.complex64)


def make_model(backend, seed=0, **options):
    cfg = ModelConfig(**{"n_filters_scale": 1, **options})
    return cfg, backend.network.build_model(cfg, gaussian_probe(cfg.N), 50.0, seed=seed)


def make_batch(rng, cfg, batch):
    channels = cfg.gridsize**2
    inputs = rng.random((batch, channels, cfg.N, cfg.N)).astype(np.float32)
    offsets = rng.uniform(-4, 4, size=(batch, channels, 2))
    return inputs, offsets - offsets.mean(axis=1, keepdims=True)


def numpy_outputs(backend, outputs):
    return tuple(backend.physics.to_numpy(o) for o in outputs)


SHAPE_CASES = [
    (n, gridsize, pad_object, probe_big)
    for n, gridsize in [(64, 1), (64, 2)]
    for pad_object, probe_big in [(True, True), (True, False), (False, True)]
] + [(128, 2, True, True), (128, 1, True, False), (128, 1, False, False)]


@pytest.mark.parametrize("n,gridsize,pad_object,probe_big", SHAPE_CASES)
def test_output_shapes(backend, n, gridsize, pad_object, probe_big):
    cfg, model = make_model(backend, N=n, gridsize=gridsize, pad_object=pad_object, probe_big=probe_big)
    inputs, offsets = make_batch(np.random.default_rng(0), cfg, 2)
    patches, amplitudes = numpy_outputs(backend, backend.network.forward_model(model, inputs, offsets))
    channels = gridsize**2
    assert patches.shape == (2, channels, n, n) and patches.dtype == np.complex64
    assert amplitudes.shape == (2, channels, n, n) and amplitudes.dtype == np.float32
    assert np.all(np.isfinite(amplitudes)) and amplitudes.min() >= 0
    raw = backend.physics.to_numpy(backend.network.predict_object(model, inputs))
    assert raw.shape == (2, channels, n, n) and raw.dtype == np.complex64
    assert np.abs(np.angle(raw)).max() <= math.pi
    if pad_object and not probe_big:  # only the central N/2 region is predicted
        quarter = n // 4
        outside = np.ones((n, n), bool)
        outside[quarter:-quarter, quarter:-quarter] = False
        assert not raw[..., outside].any()


def test_output_shape_n256(backend):
    cfg, model = make_model(backend, N=256, gridsize=1)
    patches = backend.physics.to_numpy(backend.network.predict_object(model, np.ones((1, 1, 256, 256), np.float32)))
    assert patches.shape == (1, 1, 256, 256)


@pytest.mark.parametrize("pad_object,probe_big,object_big",
                         [(True, True, True), (True, False, True), (False, False, True), (True, True, False), (False, False, False)])
def test_weight_names_and_shapes_are_canonical(backend, pad_object, probe_big, object_big):
    cfg, model = make_model(backend, gridsize=2, pad_object=pad_object, probe_big=probe_big, object_big=object_big)
    weights = backend.network.get_weights(model)
    assert {name: value.shape for name, value in weights.items()} == archive.canonical_shapes(cfg)
    assert weights["physics.probe"].dtype == np.complex64
    assert all(v.dtype == np.float32 for k, v in weights.items() if k != "physics.probe")
    np.testing.assert_allclose(weights["physics.probe"], gaussian_probe(64))
    assert float(weights["physics.log_intensity_scale"]) == pytest.approx(math.log(50.0), rel=1e-6)
    assert np.all(weights["encoder.0.conv0.bias"] == 0)  # Glorot kernels, zero biases
    fan_sum = (4 + 32) * 9  # encoder.0.conv0: (in + out) * kh * kw, Glorot limit sqrt(6 / fan_sum)
    assert np.abs(weights["encoder.0.conv0.weight"]).max() <= math.sqrt(6 / fan_sum)


def test_network_alone_exports_no_physics(backend):
    cfg = ModelConfig(n_filters_scale=1, gridsize=2)
    weights = backend.network.get_weights(backend.network.build_network(cfg))
    expected = {k: v for k, v in archive.canonical_shapes(cfg).items() if not k.startswith("physics.")}
    assert {name: value.shape for name, value in weights.items()} == expected


def test_seed_makes_initial_weights_reproducible(backend):
    first = backend.network.get_weights(make_model(backend, seed=3)[1])
    again = backend.network.get_weights(make_model(backend, seed=3)[1])
    other = backend.network.get_weights(make_model(backend, seed=4)[1])
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["encoder.1.conv1.weight"], other["encoder.1.conv1.weight"])


def test_set_weights_round_trip(backend):
    cfg, source = make_model(backend, seed=1, gridsize=2)
    _, target = make_model(backend, seed=2, gridsize=2)
    rng = np.random.default_rng(1)
    weights = backend.network.get_weights(source)
    weights["physics.probe"] = (weights["physics.probe"] * np.exp(0.5j)).astype(np.complex64)
    weights["physics.log_intensity_scale"] = np.float32(2.0)
    backend.network.set_weights(source, weights)
    backend.network.set_weights(target, weights)
    for name, value in backend.network.get_weights(target).items():
        np.testing.assert_array_equal(value, weights[name])
    inputs, offsets = make_batch(rng, cfg, 2)
    for a, b in zip(
        numpy_outputs(backend, backend.network.forward_model(source, inputs, offsets)),
        numpy_outputs(backend, backend.network.forward_model(target, inputs, offsets)),
    ):
        np.testing.assert_array_equal(a, b)


def test_get_weights_returns_copies(backend):
    _, model = make_model(backend)
    weights = backend.network.get_weights(model)
    weights["encoder.0.conv0.weight"][...] = 7.0
    assert not np.any(backend.network.get_weights(model)["encoder.0.conv0.weight"] == 7.0)


def test_set_weights_is_strict(backend):
    _, model = make_model(backend)
    weights = backend.network.get_weights(model)
    missing = {k: v for k, v in weights.items() if k != "decoder_phase.0.conv1.bias"}
    with pytest.raises(ValueError, match="decoder_phase.0.conv1.bias"):
        backend.network.set_weights(model, missing)
    with pytest.raises(ValueError, match="head_amp.extra"):
        backend.network.set_weights(model, {**weights, "head_amp.extra": np.zeros(1, np.float32)})
    wrong = dict(weights)
    wrong["encoder.1.conv0.weight"] = np.zeros((64, 32, 1, 3), np.float32)
    with pytest.raises(ValueError, match="encoder.1.conv0.weight"):
        backend.network.set_weights(model, wrong)
    transposed = dict(weights)
    transposed["physics.probe"] = np.zeros((64, 32), np.complex64)
    with pytest.raises(ValueError, match="physics.probe"):
        backend.network.set_weights(model, transposed)
    np.testing.assert_array_equal(backend.network.get_weights(model)["encoder.0.conv0.weight"], weights["encoder.0.conv0.weight"])


def test_bad_inputs_are_refused(backend):
    cfg, model = make_model(backend, gridsize=2)
    inputs, offsets = make_batch(np.random.default_rng(0), cfg, 2)
    with pytest.raises(ValueError, match="inputs"):
        backend.network.forward_model(model, inputs[:, :1], offsets)
    with pytest.raises(ValueError, match="offsets"):
        backend.network.forward_model(model, inputs, offsets[:, :, :1])
    with pytest.raises(TypeError):
        backend.network.forward_model(backend.network.build_network(cfg), inputs, offsets)
    with pytest.raises(ValueError, match="probe"):
        backend.network.build_model(cfg, np.ones((32, 32), np.complex64), 1.0)


def constant_head_weights(backend, model, rng):
    """Zero every kernel and draw the heads' biases: each channel's patch is a known constant."""
    weights = backend.network.get_weights(model)
    for name, value in weights.items():
        if not name.startswith("physics."):
            weights[name] = np.zeros_like(value)
    channels = weights["head_amp.center.bias"].shape[0]
    amp_bias = rng.normal(size=channels).astype(np.float32)
    phase_bias = rng.normal(size=channels).astype(np.float32)
    weights["head_amp.center.bias"] = amp_bias
    weights["head_phase.center.bias"] = phase_bias
    backend.network.set_weights(model, weights)
    return amp_bias, phase_bias


ACTIVATIONS = {
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "swish": lambda x: x / (1 + np.exp(-x)),
    "softplus": lambda x: np.log1p(np.exp(x)),
    "relu": lambda x: np.maximum(x, 0),
}


@pytest.mark.parametrize("gridsize,amp_activation", [(1, "softplus"), (2, "sigmoid"), (2, "swish"), (1, "relu")])
def test_forward_model_of_known_patches_matches_reference(backend, gridsize, amp_activation):
    """Known network output (constant centre per channel) through the physics equals forward.py."""
    cfg, model = make_model(backend, gridsize=gridsize, pad_object=True, probe_big=False, amp_activation=amp_activation,
                            probe_mask=True, gaussian_smoothing_sigma=0.8)
    rng = np.random.default_rng(4)
    amp_bias, phase_bias = constant_head_weights(backend, model, rng)
    n, channels = cfg.N, gridsize**2
    window = forward.window_weights(n, pad_object=True, probe_big=False)
    amplitude = ACTIVATIONS[amp_activation](amp_bias)[None, :, None, None] * window
    phase = (np.pi * np.tanh(phase_bias))[None, :, None, None] * window
    known = (amplitude * np.exp(1j * phase)).astype(np.complex64)
    inputs, offsets = make_batch(rng, cfg, 3)
    known = np.broadcast_to(known, (3, channels, n, n))
    views = forward.assemble_group_canvas(known, offsets, window) if gridsize > 1 else known
    wave = forward.illuminate(views, gaussian_probe(n), probe_scale=cfg.probe_scale, probe_mask=True,
                              gaussian_smoothing_sigma=0.8)
    expected = forward.far_field_amplitude(wave, 50.0)
    patches, amplitudes = numpy_outputs(backend, backend.network.forward_model(model, inputs, offsets))
    np.testing.assert_allclose(backend.physics.to_numpy(backend.network.predict_object(model, inputs)), known, atol=1e-6)
    assert np.abs(patches - views).max() <= 1e-5 * np.abs(views).max()
    assert np.abs(amplitudes - expected).max() <= 1e-5 * np.abs(expected).max()


@pytest.mark.parametrize("object_big", [True, False])
def test_forward_model_patches_are_the_illuminated_views(backend, object_big):
    cfg, model = make_model(backend, gridsize=2, object_big=object_big)
    inputs, offsets = make_batch(np.random.default_rng(5), cfg, 2)
    patches = backend.physics.to_numpy(backend.network.forward_model(model, inputs, offsets)[0])
    raw = backend.physics.to_numpy(backend.network.predict_object(model, inputs))
    assert raw.shape == (2, 4 if object_big else 1, 64, 64)  # one object per group when not object_big
    expected = forward.group_views(cfg, raw, offsets)
    assert patches.shape == (2, 4, 64, 64)
    assert np.abs(patches - expected).max() <= 1e-5 * np.abs(expected).max()


def test_one_object_per_group_has_one_output_channel(backend):
    """object_big=False at gridsize 2 (PtychoPINN): the heads emit one channel, weights say so."""
    cfg, model = make_model(backend, gridsize=2, object_big=False)
    weights = backend.network.get_weights(model)
    assert weights["head_amp.center.weight"].shape[0] == 1 and weights["head_phase.center.weight"].shape[0] == 1
    assert weights["encoder.0.conv0.weight"].shape[1] == 4  # the encoder still sees all C patterns


def test_batch_independence(backend):
    """SPEC 4.7: a group's output does not depend on the other groups in its batch (gridsize 2)."""
    cfg, model = make_model(backend, gridsize=2)
    inputs, offsets = make_batch(np.random.default_rng(6), cfg, 64)
    alone = numpy_outputs(backend, backend.network.forward_model(model, inputs[5:6], offsets[5:6]))
    in_16 = numpy_outputs(backend, backend.network.forward_model(model, inputs[:16], offsets[:16]))
    in_64 = numpy_outputs(backend, backend.network.forward_model(model, inputs, offsets))
    for single, batch16, batch64 in zip(alone, in_16, in_64):
        scale = np.abs(single).max()
        # Different batch sizes may pick different convolution kernels: float rounding only.
        assert np.abs(batch16[5:6] - single).max() <= 1e-5 * scale
        assert np.abs(batch64[5:6] - single).max() <= 1e-5 * scale
    # The other groups' outputs differ from group 5's, so mixing would have shown.
    assert np.abs(in_64[1][6] - in_64[1][5]).max() > 1e-3 * np.abs(in_64[1][5]).max()


def test_physics_model_checks_probe_and_scale(backend):
    """Both PhysicsModels refuse what `ptycholib.forward.check_physics_inputs` refuses."""
    cfg = ModelConfig(n_filters_scale=1)
    with pytest.raises(ValueError, match="intensity_scale"):
        backend.network.build_model(cfg, gaussian_probe(64), 0.0)
    nan_probe = gaussian_probe(64)
    nan_probe[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        backend.network.build_model(cfg, nan_probe, 1.0)


def test_physics_holds_the_parameters(backend):
    """``model.physics`` holds ``log_intensity_scale`` and the real ``(N, N, 2)`` probe in both backends."""
    _, model = make_model(backend)
    physics = backend.physics
    assert tuple(model.physics.probe.shape) == (64, 64, 2)
    np.testing.assert_allclose(physics.to_numpy(model.probe), gaussian_probe(64))
    assert float(physics.to_numpy(model.intensity_scale)) == pytest.approx(50.0, rel=1e-6)
