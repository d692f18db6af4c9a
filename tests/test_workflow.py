"""train -> save -> load -> reconstruct, on both backends and across them (SPEC sections 6, 7)."""

import numpy as np
import pytest

from ptycholib import archive, workflow
from ptycholib.backends import BACKENDS, get_backend, is_available
from ptycholib.config import Config, apply_overrides

AVAILABLE = [b for b in BACKENDS if is_available(b)]


def tiny_config(backend, **overrides):
    return apply_overrides(Config(), {"backend": backend, "gridsize": 2, "n_filters_scale": 1, "n_groups": 24,
                                      "nepochs": 1, "batch_size": 8, "validation_fraction": 0.2, **overrides})


@pytest.fixture(scope="module", params=AVAILABLE)
def trained(request, tiny_train_test, tmp_path_factory):
    train, _ = tiny_train_test
    model = workflow.train_model(train, tiny_config(request.param), progress=False)
    path = archive.save_model(tmp_path_factory.mktemp(request.param) / archive.DEFAULT_NAME, model.archive)
    return model, path


def test_training_returns_archive_and_history(trained):
    model, _ = trained
    assert len(model.history) == 1 and np.isfinite(model.history[0]["loss"])
    assert model.n_groups == 24 and model.archive.input_scale > 0
    assert set(model.archive.weights) == set(archive.canonical_shapes(model.archive.config.model))


def test_reconstruction_lands_on_object_grid(trained, tiny_train_test):
    model, path = trained
    _, test = tiny_train_test
    recon = workflow.reconstruct(path, test)
    assert recon.obj.shape == test.obj.shape and recon.obj.dtype == np.complex64
    assert recon.region.any() and np.all(recon.weights[recon.region] > 0)
    assert recon.object_patches.shape == (test.n_positions, 4, 64, 64)
    scores = workflow.evaluate(recon, test)
    assert 0 < scores["amplitude_ssim"] <= 1


def test_archive_round_trip_predicts_identically(trained, tiny_train_test):
    model, path = trained
    _, test = tiny_train_test
    direct = workflow.reconstruct(model, test)
    loaded = workflow.reconstruct(path, test)
    np.testing.assert_array_equal(direct.object_patches, loaded.object_patches)


@pytest.mark.skipif(len(AVAILABLE) < 2, reason="needs both backends")
def test_cross_backend_prediction_matches(trained, tiny_train_test):
    model, path = trained
    _, test = tiny_train_test
    other = next(b for b in BACKENDS if b != model.archive.backend)
    own = workflow.reconstruct(path, test).object_patches
    cross = workflow.reconstruct(path, test, backend=other).object_patches
    assert np.max(np.abs(cross - own)) <= 1e-4 * np.max(np.abs(own))


def test_supervised_needs_object(tiny_train_test):
    train, _ = tiny_train_test
    no_object = type(train)(amplitudes=train.amplitudes, x_px=train.x_px, y_px=train.y_px, probe=train.probe)
    with pytest.raises(ValueError, match="supervised.* needs the true object"):
        workflow.train_model(no_object, tiny_config(AVAILABLE[0], model_type="supervised"))


def test_wrong_pattern_size_is_refused(trained, tiny_train_test):
    _, path = trained
    _, test = tiny_train_test
    cut = type(test)(amplitudes=np.zeros((test.n_positions, 128, 128), np.float32), x_px=test.x_px + 32,
                     y_px=test.y_px + 32, probe=np.ones((128, 128), np.complex64))
    with pytest.raises(ValueError, match="trained for N=64"):
        workflow.reconstruct(path, cut)


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend='jax' is not supported"):
        get_backend("jax")
