"""SPEC section 8 parity: each backend's physics vs the NumPy oracle, and torch vs tensorflow.

Inputs are drawn once in NumPy (`ptycholib.parity.make_physics_inputs`) and fed to both backends;
tolerances come from the one table `ptycholib.parity.TOLERANCES` that notebook 05 reports.
"""

from __future__ import annotations

import pytest

from ptycholib import parity
from ptycholib.config import ModelConfig, TrainingConfig

pytestmark = pytest.mark.parity

# (pad_object, probe_big): the three distinct networks; (False, True) equals (False, False) for the
# network but is kept for the physics, where probe_big changes the window weights.
HEADS = [(True, True), (True, False), (False, False)]
SIZES = [64, 128]
GRIDSIZES = [1, 2]


def _config(size, gridsize, pad_object, probe_big, **overrides):
    return ModelConfig(
        N=size, gridsize=gridsize, n_filters_scale=1, pad_object=pad_object, probe_big=probe_big, **overrides
    )


def _batch(size):
    """Two groups at N=64, one at N=128: keeps the whole file near a minute on two shared cores."""
    return 2 if size == 64 else 1


@pytest.fixture(params=["torch", "tensorflow"])
def backend(request):
    pytest.importorskip(request.param)
    return request.param


@pytest.fixture
def both_backends():
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("gridsize", GRIDSIZES)
@pytest.mark.parametrize("pad_object, probe_big", HEADS + [(False, True)])
def test_forward_model_matches_numpy_reference(backend, size, gridsize, pad_object, probe_big):
    errors = parity.compare_forward_model(backend, _config(size, gridsize, pad_object, probe_big), batch=2, seed=size + gridsize)
    assert max(errors.values()) <= parity.TOLERANCES["forward_model"], errors


@pytest.mark.parametrize("probe_mask, sigma, object_big", [(True, 0.0, True), (False, 0.8, True), (True, 1.5, False)])
def test_forward_model_options_match_numpy_reference(backend, probe_mask, sigma, object_big):
    cfg = _config(64, 2, True, True, probe_mask=probe_mask, gaussian_smoothing_sigma=sigma, object_big=object_big, probe_scale=2.5)
    errors = parity.compare_forward_model(backend, cfg, batch=2, seed=7)
    assert max(errors.values()) <= parity.TOLERANCES["forward_model"], errors


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("gridsize", GRIDSIZES)
@pytest.mark.parametrize("pad_object, probe_big", HEADS)
def test_network_outputs_agree_with_identical_weights(both_backends, size, gridsize, pad_object, probe_big):
    errors = parity.compare_network(_config(size, gridsize, pad_object, probe_big), batch=_batch(size), seed=3, source="torch")
    assert errors.pop("weights_roundtrip") == 0.0
    assert max(errors.values()) <= parity.TOLERANCES["network"], errors


@pytest.mark.parametrize("amp_activation", ["sigmoid", "swish", "softplus", "relu"])
def test_network_agrees_from_tensorflow_weights(both_backends, amp_activation):
    cfg = ModelConfig(N=64, gridsize=2, n_filters_scale=1, amp_activation=amp_activation)
    errors = parity.compare_network(cfg, batch=3, seed=5, source="tensorflow")
    assert errors.pop("weights_roundtrip") == 0.0
    assert max(errors.values()) <= parity.TOLERANCES["network"], errors


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("gridsize", GRIDSIZES)
@pytest.mark.parametrize("pad_object, probe_big", HEADS)
def test_training_step_gradients_agree(both_backends, size, gridsize, pad_object, probe_big):
    training = TrainingConfig(nll_weight=1.0, mae_weight=0.5)
    errors = parity.compare_gradients(
        _config(size, gridsize, pad_object, probe_big), training, batch=_batch(size), seed=11, physics_weight=0.75
    )
    worst = max(errors, key=errors.get)
    assert errors[worst] <= parity.TOLERANCES["gradients"], (worst, errors[worst])


@pytest.mark.parametrize("model_type", ["pinn", "supervised"])
def test_one_object_per_group_agrees(both_backends, model_type):
    """object_big=False at gridsize 2 (PtychoPINN's meaning): network and gradients, both backends."""
    cfg = _config(64, 2, True, True, object_big=False, model_type=model_type)
    errors = parity.compare_network(cfg, batch=2, seed=17, source="torch")
    assert errors.pop("weights_roundtrip") == 0.0
    assert max(errors.values()) <= parity.TOLERANCES["network"], errors
    errors = parity.compare_gradients(cfg, TrainingConfig(nll_weight=1.0, mae_weight=0.5), batch=2, seed=19)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= parity.TOLERANCES["gradients"], (worst, errors[worst])


def test_supervised_gradients_agree(both_backends):
    cfg = ModelConfig(N=64, gridsize=2, n_filters_scale=1, model_type="supervised")
    errors = parity.compare_gradients(cfg, TrainingConfig(), batch=2, seed=13)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= parity.TOLERANCES["gradients"], (worst, errors[worst])


@pytest.mark.parametrize("weighting", ["crop", "probe"])
def test_reassembly_matches_numpy_reference(backend, weighting):
    errors = parity.compare_reassembly(backend, weighting=weighting, seed=2)
    assert max(errors.values()) <= parity.TOLERANCES["reassembly"], errors


def test_rows_report_measurement_against_the_table():
    row = parity.ParityRow(stage="network", detail="x", measured=2e-4, target=parity.TOLERANCES["network"])
    assert not row.passed and row.as_dict()["passed"] is False
    rows = parity.config_and_simulator_rows(seed=1)
    assert len(rows) == 2 and all(r.passed for r in rows)


def test_relative_error_is_max_abs_difference_over_max_reference():
    import numpy as np

    assert parity.relative_error(np.array([1.0, 3.0]), np.array([1.0, 2.0])) == pytest.approx(0.5)
    assert parity.relative_error(np.array([1j]), np.array([0.0])) == pytest.approx(1.0)
