"""Bad detector pixels are left out of the loss and of the intensity-scale fit (issue 16, item 6)."""

import importlib

import numpy as np
import pytest

from ptycholib import forward
from ptycholib.config import TrainingConfig
from ptycholib.data import PtychoData

from tests.backends.test_training import build, make_groups

N = 64


@pytest.fixture(params=["torch", "tensorflow"])
def backend(request):
    pytest.importorskip(request.param)
    return importlib.import_module(f"ptycholib.{request.param}")


def _mask(rng, fraction=0.05):
    return rng.random((N, N)) < fraction


def _pair(rng):
    predicted = rng.uniform(0.0, 3.0, size=(2, 4, N, N)).astype(np.float32)
    measured = rng.uniform(0.0, 3.0, size=(2, 4, N, N)).astype(np.float32)
    return predicted, measured


@pytest.mark.parametrize("name", ["poisson_nll", "amplitude_mae"])
def test_masked_loss_matches_numpy_and_ignores_masked_values(backend, name, rng):
    predicted, measured = _pair(rng)
    bad = _mask(rng)
    loss = getattr(backend.physics, name)
    reference = getattr(forward, name)(predicted, measured, bad_pixels=bad)
    masked = float(backend.physics.to_numpy(loss(predicted, measured, bad_pixels=bad)))
    assert masked == pytest.approx(reference, rel=1e-5)
    garbage = measured.copy()
    garbage[..., bad] = 1e3
    assert float(backend.physics.to_numpy(loss(predicted, garbage, bad_pixels=bad))) == pytest.approx(masked, rel=1e-6)
    assert float(backend.physics.to_numpy(loss(predicted, garbage))) != pytest.approx(masked, rel=1e-3)


def test_numpy_reference_mask_is_a_mean_over_good_pixels(rng):
    predicted, measured = _pair(rng)
    bad = _mask(rng)
    good = ~bad
    expected = np.mean(np.abs(predicted - measured)[..., good])
    assert forward.amplitude_mae(predicted, measured, bad_pixels=bad) == pytest.approx(expected)
    # no bad pixel: the unmasked loss, exactly
    none_bad = np.zeros((N, N), dtype=bool)
    assert forward.poisson_nll(predicted, measured, bad_pixels=none_bad) == pytest.approx(forward.poisson_nll(predicted, measured))


def test_backends_agree_on_the_masked_loss(rng):
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    from ptycholib.tensorflow import physics as tf_physics
    from ptycholib.torch import physics as torch_physics

    predicted, measured = _pair(rng)
    bad = _mask(rng)
    for name in ("poisson_nll", "amplitude_mae"):
        a = float(torch_physics.to_numpy(getattr(torch_physics, name)(predicted, measured, bad_pixels=bad)))
        b = float(tf_physics.to_numpy(getattr(tf_physics, name)(predicted, measured, bad_pixels=bad)))
        assert a == pytest.approx(b, rel=1e-6)


def test_intensity_scale_fit_ignores_bad_pixels():
    amplitudes, probe = make_groups(n_groups=4)[2].reshape(-1, N, N), make_groups(n_groups=4)[4]
    clean = forward.initial_intensity_scale(amplitudes, probe, 4.0)
    none_bad = np.zeros((N, N), dtype=bool)
    assert forward.initial_intensity_scale(amplitudes, probe, 4.0, bad_pixels=none_bad) == pytest.approx(clean, rel=1e-5)
    bad = np.zeros((N, N), dtype=bool)
    bad[N // 2 - 1 : N // 2 + 2, N // 2 - 1 : N // 2 + 2] = True  # the brightest pixels, beamstop-like
    garbage = amplitudes.copy()
    garbage[:, bad] = 1e3
    masked = forward.initial_intensity_scale(garbage, probe, 4.0, bad_pixels=bad)
    # noiseless data of one model: the fit on the remaining pixels recovers about the same scale
    assert masked == pytest.approx(forward.initial_intensity_scale(amplitudes, probe, 4.0, bad_pixels=bad))
    assert masked == pytest.approx(clean, rel=0.2)


def test_data_zeroes_bad_pixels_without_touching_the_input():
    amplitudes = np.ones((2, N, N), dtype=np.float32)
    bad = np.zeros((N, N), dtype=bool)
    bad[3, 4] = True
    data = PtychoData(amplitudes, [40.0, 41.0], [40.0, 40.0], np.ones((N, N)), bad_pixels=bad)
    assert np.all(data.amplitudes[:, 3, 4] == 0) and data.amplitudes.sum() == 2 * (N * N - 1)
    assert np.all(amplitudes == 1)


def test_training_gradients_ignore_masked_values(backend, rng):
    groups = make_groups(n_groups=4)
    inputs, offsets, amplitudes = groups[:3]
    model = build(backend, groups)
    bad = _mask(rng)
    garbage = amplitudes.copy()
    garbage[..., bad] = 50.0
    config = TrainingConfig(logger="none")
    clean_grads = backend.training.loss_gradients(model, inputs, offsets, amplitudes, config, bad_pixels=bad)
    masked_grads = backend.training.loss_gradients(model, inputs, offsets, garbage, config, bad_pixels=bad)
    unmasked = backend.training.loss_gradients(model, inputs, offsets, garbage, config)
    for name, grad in clean_grads.items():
        np.testing.assert_allclose(masked_grads[name], grad, rtol=1e-5, atol=1e-7, err_msg=name)
    assert not np.allclose(unmasked["physics.probe"], clean_grads["physics.probe"], rtol=1e-3)


def test_train_takes_the_mask(backend, rng):
    groups = make_groups(n_groups=4)
    inputs, offsets, amplitudes = groups[:3]
    config = TrainingConfig(batch_size=4, nepochs=1, validation_fraction=0.0, logger="none")
    with pytest.raises(ValueError, match="bad_pixels must be a boolean"):
        backend.training.train(build(backend, groups), inputs, offsets, amplitudes, config, progress=False,
                               bad_pixels=np.zeros((3, 3), dtype=bool))
    history = backend.training.train(build(backend, groups), inputs, offsets, amplitudes, config, progress=False,
                                     bad_pixels=_mask(rng))
    assert np.isfinite(history[-1]["loss"])


def test_workflow_passes_the_data_mask(tiny_dataset, monkeypatch):
    pytest.importorskip("torch")
    import dataclasses

    from ptycholib import workflow
    from ptycholib.config import Config, apply_overrides
    from ptycholib.torch import training

    bad = np.zeros((N, N), dtype=bool)
    bad[0, :5] = True
    seen = {}

    def fake_train(model, *args, bad_pixels=None, **kwargs):
        seen["bad_pixels"] = bad_pixels
        return [{"epoch": 0, "loss": 0.0}]

    monkeypatch.setattr(training, "train", fake_train)
    config = apply_overrides(Config(), ["gridsize=1", "n_groups=4", "nepochs=1", "n_filters_scale=1", "backend=torch"])
    workflow.train_model(dataclasses.replace(tiny_dataset, bad_pixels=bad), config, progress=False)
    assert np.array_equal(seen["bad_pixels"], bad)
