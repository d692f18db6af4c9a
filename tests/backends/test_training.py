"""Each backend's training loop and batched prediction (SPEC section 4.6, issue 5).

Backend-generic over the ``backend`` fixture: Lightning for ``ptycholib.torch``, Keras ``fit`` for
``ptycholib.tensorflow``. The data are a few noiseless groups simulated with `ptycholib.forward`.
"""

import csv
import importlib
import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ptycholib import forward, metrics, tracking
from ptycholib.batching import epoch_plan, split_validation
from ptycholib.config import ModelConfig, Stage, TrainingConfig

N = 64


@pytest.fixture(params=["torch", "tensorflow"])
def backend(request):
    pytest.importorskip(request.param)
    return importlib.import_module(f"ptycholib.{request.param}")


def make_groups(n_groups=8, gridsize=2, seed=0):
    """Noiseless groups of a random object: (inputs, offsets, amplitudes, target_patches, probe, s0)."""
    rng = np.random.default_rng(seed)
    channels = gridsize**2
    obj = ((0.6 + 0.4 * rng.random((160, 170))) * np.exp(0.5j * rng.random((160, 170)))).astype(np.complex64)
    coords = np.arange(N) - N // 2
    probe = np.exp(-(coords[:, None] ** 2 + coords[None, :] ** 2) / (2 * 9.0**2)).astype(np.complex64)
    offsets = rng.uniform(-4, 4, size=(n_groups, channels, 2))
    offsets -= offsets.mean(axis=1, keepdims=True)
    positions = rng.uniform(50, 110, size=(n_groups, 1, 2)) + offsets
    patches = forward.extract_patches(obj, positions[..., 0].ravel(), positions[..., 1].ravel(), N)
    patches = patches.reshape(n_groups, channels, N, N)
    amplitudes = forward.far_field_amplitude(forward.illuminate(patches, probe, probe_scale=4.0), 30.0)
    scale = math.sqrt((N / 2) ** 2 / np.mean(np.sum(amplitudes**2, axis=(-2, -1))))
    s0 = forward.initial_intensity_scale(amplitudes.reshape(-1, N, N), probe, 4.0)
    return (amplitudes * scale).astype(np.float32), offsets, amplitudes, patches, probe, s0


def loss_on(backend, model, inputs, offsets, amplitudes):
    predicted = backend.network.forward_model(model, inputs, offsets)[1]
    return float(backend.physics.to_numpy(backend.physics.poisson_nll(predicted, backend.physics.to_tensor(amplitudes))))


def build(backend, groups, seed=0, **options):
    cfg = ModelConfig(N=N, gridsize=2, n_filters_scale=1, **options)
    inputs, offsets, amplitudes, patches, probe, s0 = groups
    return backend.network.build_model(cfg, probe, s0, seed=seed)


def test_a_few_steps_reduce_the_loss(backend):
    groups = make_groups()
    inputs, offsets, amplitudes = groups[:3]
    model = build(backend, groups)
    # The Poisson NLL is smallest (``floor``) when the prediction equals the noiseless measurement.
    floor = forward.poisson_nll(amplitudes, amplitudes)
    before = loss_on(backend, model, inputs, offsets, amplitudes) - floor
    config = TrainingConfig(batch_size=4, nepochs=4, learning_rate=1e-3, validation_fraction=0.0, logger="none")
    history = backend.training.train(model, inputs, offsets, amplitudes, config, progress=False)
    after = loss_on(backend, model, inputs, offsets, amplitudes) - floor
    assert 0 <= after < 0.7 * before
    assert [r["epoch"] for r in history] == [0, 1, 2, 3]
    assert all(math.isnan(r["val_loss"]) for r in history)
    assert history[-1]["loss"] < history[0]["loss"]


def test_schedule_is_what_training_used_and_logged(backend, tmp_path):
    groups = make_groups(n_groups=10)
    inputs, offsets, amplitudes = groups[:3]
    model = build(backend, groups)
    config = TrainingConfig(
        batch_size=4,
        nepochs=3,
        learning_rate=1e-3,
        stages=(Stage(epochs=2), Stage(epochs=1, learning_rate_factor=0.1, freeze_encoder=True, probe_trainable=True)),
        physics_weight_schedule="linear",
        physics_weight_start=0.2,
        mae_weight=0.5,
        probe_trainable=False,
        intensity_scale_trainable=False,
        validation_fraction=0.2,
        logger="csv",
    )
    snapshots = [backend.network.get_weights(model)]
    streamed = []

    def callback(record):
        streamed.append(record)
        snapshots.append(backend.network.get_weights(model))

    history = backend.training.train(
        model, inputs, offsets, amplitudes, config, log_dir=tmp_path, progress=False, callback=callback
    )
    plan = epoch_plan(config)
    assert [r["epoch"] for r in history] == [p.epoch for p in plan]
    assert [r["stage"] for r in history] == [p.stage for p in plan]
    np.testing.assert_allclose([r["learning_rate"] for r in history], [p.learning_rate for p in plan], rtol=1e-6)
    np.testing.assert_allclose([r["physics_weight"] for r in history], [p.physics_weight for p in plan], rtol=1e-6)
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["val_loss"]) for r in history)
    assert streamed == history
    with open(tmp_path / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3
    np.testing.assert_allclose([float(r["learning_rate"]) for r in rows], [p.learning_rate for p in plan], rtol=1e-6)
    np.testing.assert_allclose([float(r["physics_weight"]) for r in rows], [p.physics_weight for p in plan], rtol=1e-6)

    def changed(name, a, b):
        return not np.array_equal(snapshots[a][name], snapshots[b][name])

    # Stage 0 trains the encoder but not the probe; stage 1 freezes the encoder and trains the probe.
    assert changed("encoder.0.conv0.weight", 0, 2) and not changed("encoder.0.conv0.weight", 2, 3)
    assert changed("decoder_amp.0.conv0.weight", 2, 3)
    assert not changed("physics.probe", 0, 2) and changed("physics.probe", 2, 3)
    assert not changed("physics.log_intensity_scale", 0, 3)


def test_mlflow_logger_records_epochs(backend, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    groups = make_groups()
    model = build(backend, groups)
    config = TrainingConfig(batch_size=8, nepochs=1, validation_fraction=0.25, logger="mlflow")
    history = backend.training.train(model, *groups[:3], config, log_dir=tmp_path, progress=False)
    assert len(history) == 1
    assert (tmp_path / "metrics.csv").is_file()
    metric_files = {path.name for path in (tmp_path / "mlruns").rglob("*") if path.parent.name == "metrics"}
    assert {"loss", "val_loss", "physics_weight", "learning_rate", "deviance", "val_amplitude_mae"} <= metric_files


def test_logged_deviance_and_amplitude_mae_match_numpy(backend):
    """The history's data fit is `ptycholib.metrics.poisson_deviance` (and the amplitude MAE) of the same groups."""
    groups = make_groups(n_groups=10)
    inputs, offsets, amplitudes = groups[:3]
    model = build(backend, groups)
    # An update of 1e-30 leaves float32 weights unchanged, so the epoch sees the model as built; batches of 3
    # (the last one short) check that the epoch mean weights every group alike.
    config = TrainingConfig(batch_size=3, nepochs=1, learning_rate=1e-30, validation_fraction=0.3, logger="none")
    (record,) = backend.training.train(model, inputs, offsets, amplitudes, config, progress=False)
    predicted = backend.physics.to_numpy(backend.network.forward_model(model, inputs, offsets)[1])
    train, val = split_validation(len(inputs), 0.3, config.seed)
    for prefix, indices in (("", train), ("val_", val)):
        expected = metrics.poisson_deviance(predicted[indices], amplitudes[indices])
        assert expected > 1.0
        np.testing.assert_allclose(record[f"{prefix}deviance"], expected, rtol=2e-4)
        np.testing.assert_allclose(record[f"{prefix}amplitude_mae"],
                                   forward.amplitude_mae(predicted[indices], amplitudes[indices]), rtol=2e-4)
    assert list(record) == list(tracking.HISTORY_COLUMNS)  # the documented history.csv columns, in order


def test_early_stopping_on_validation_loss(backend):
    groups = make_groups()
    inputs, offsets, amplitudes = groups[:3]
    model = build(backend, groups)
    # An update of 1e-30 leaves float32 weights unchanged: the validation loss never improves.
    config = TrainingConfig(
        batch_size=8, nepochs=5, learning_rate=1e-30, validation_fraction=0.25, early_stopping_patience=1, logger="none"
    )
    history = backend.training.train(model, inputs, offsets, amplitudes, config, progress=False)
    assert len(history) == 2


def test_supervised_baseline_fits_patches(backend):
    groups = make_groups()
    inputs, offsets, amplitudes, patches = groups[:4]
    model = build(backend, groups, model_type="supervised")
    config = TrainingConfig(batch_size=4, nepochs=3, learning_rate=2e-3, validation_fraction=0.0, logger="none")
    probe_before = backend.network.get_weights(model)["physics.probe"]
    history = backend.training.train(model, inputs, offsets, amplitudes, config, target_patches=patches, progress=False)
    assert history[-1]["loss"] < history[0]["loss"]
    assert all(math.isnan(r["deviance"]) and math.isnan(r["val_amplitude_mae"]) for r in history)  # no data fit
    np.testing.assert_array_equal(backend.network.get_weights(model)["physics.probe"], probe_before)
    with pytest.raises(ValueError, match="target_patches"):
        backend.training.train(model, inputs, offsets, amplitudes, config, progress=False)


def test_predict_patches_matches_forward_model(backend):
    groups = make_groups(n_groups=7)
    inputs, offsets = groups[:2]
    model = build(backend, groups)
    patches = backend.training.predict_patches(model, inputs, offsets, batch_size=3)
    assert patches.shape == (7, 4, N, N) and patches.dtype == np.complex64
    expected = backend.physics.to_numpy(backend.network.forward_model(model, inputs, offsets)[0])
    assert np.abs(patches - expected).max() <= 1e-5 * np.abs(expected).max()


def test_bad_training_data_is_refused(backend):
    groups = make_groups()
    inputs, offsets, amplitudes = groups[:3]
    model = build(backend, groups)
    config = TrainingConfig(batch_size=4, nepochs=1, logger="none")
    with pytest.raises(ValueError, match="offsets"):
        backend.training.train(model, inputs, offsets[:, :2], amplitudes, config, progress=False)
    with pytest.raises(ValueError, match="negative"):
        backend.training.train(model, inputs, offsets, -amplitudes, config, progress=False)
    nan_inputs = inputs.copy()
    nan_inputs[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        backend.training.train(model, nan_inputs, offsets, amplitudes, config, progress=False)


DDP_SCRIPT = """
import json, os, sys
import numpy as np
from ptycholib.config import ModelConfig, TrainingConfig
from ptycholib.torch import network, training

rng = np.random.default_rng(0)
amplitudes = (5 * rng.random((12, 1, 64, 64))).astype(np.float32)
model = network.build_model(ModelConfig(N=64, gridsize=1, n_filters_scale=1), np.ones((64, 64), np.complex64), 2.0, seed=1)
before = network.get_weights(model)
config = TrainingConfig(batch_size=4, nepochs=1, accelerator="cpu", devices=2, strategy="ddp", validation_fraction=0.25,
                        logger="none")
history = training.train(model, 0.3 * amplitudes, np.zeros((12, 1, 2)), amplitudes, config, progress=False)
rank = int(os.environ.get("LOCAL_RANK", "0"))
after = network.get_weights(model)
np.savez(os.path.join(sys.argv[1], f"rank{rank}.npz"), **after)
if rank == 0:
    moved = float(np.abs(after["encoder.0.conv0.weight"] - before["encoder.0.conv0.weight"]).max())
    print("RESULT " + json.dumps({"history": history, "moved": moved}))
"""


@pytest.mark.slow
def test_lightning_ddp_on_two_cpu_processes(tmp_path):
    """strategy='ddp', devices=2 on CPU: one epoch in two processes that end with the same weights."""
    pytest.importorskip("torch")
    pytest.importorskip("lightning")
    script = tmp_path / "train_ddp.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    report = json.loads(line[len("RESULT ") :])
    assert len(report["history"]) == 1 and np.isfinite(report["history"][0]["val_loss"])
    assert report["moved"] > 0
    rank0, rank1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    for name in rank0.files:
        np.testing.assert_array_equal(rank0[name], rank1[name])


def test_prepare_training_arrays_checks_targets_plan_and_split():
    """The NumPy preamble both backends' ``train`` share (`ptycholib.batching.prepare_training_arrays`)."""
    from ptycholib import batching

    inputs, offsets, amplitudes, patches = make_groups(n_groups=10)[:4]
    config = TrainingConfig(batch_size=4, nepochs=3, validation_fraction=0.2, seed=5, precision="bf16-mixed")
    pinn = ModelConfig(N=N, gridsize=2, n_filters_scale=1)
    data = batching.prepare_training_arrays(pinn, config, inputs, offsets, amplitudes)
    assert set(data.groups) == {"inputs", "offsets", "amplitudes"} and not data.supervised
    assert all(value.dtype == np.float32 for value in data.groups.values())
    assert data.precision == "bf16-mixed" and data.plan == epoch_plan(config)
    expected = batching.split_validation(10, 0.2, 5)
    np.testing.assert_array_equal(data.train_indices, expected[0])
    np.testing.assert_array_equal(data.val_indices, expected[1])
    supervised = ModelConfig(N=N, gridsize=2, n_filters_scale=1, model_type="supervised")
    data = batching.prepare_training_arrays(supervised, config, inputs, offsets, None, target_patches=patches,
                                            validation_fraction=0.0)
    assert set(data.groups) == {"inputs", "offsets", "amplitude", "phase"} and data.supervised
    np.testing.assert_allclose(data.groups["phase"], np.angle(patches), atol=1e-6)
    assert len(data.val_indices) == 0
    with pytest.raises(ValueError, match="target_patches"):
        batching.prepare_training_arrays(supervised, config, inputs, offsets, amplitudes)
    with pytest.raises(ValueError, match="validation_fraction"):
        batching.prepare_training_arrays(pinn, config, inputs, offsets, amplitudes, validation_fraction=1.0)
    with pytest.raises(ValueError, match="offsets has shape"):
        batching.prepare_training_arrays(pinn, config, inputs, offsets[:, :1], amplitudes)
