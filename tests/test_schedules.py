"""Learning-rate schedules and early stopping with restored best weights (issue #11, item 2).

The arithmetic lives in `ptycholib.schedules` (pure Python, tested first, and against torch's own
schedulers where torch is installed); then each backend must apply it step by step, log the same
per-epoch values, and end early-stopped training with the best epoch's weights.
"""

import importlib
import math

import numpy as np
import pytest

from ptycholib import batching, config, forward, interop, schedules
from ptycholib.config import Config, ConfigError, ModelConfig, Stage, TrainingConfig
from ptycholib.schedules import LearningRateSchedule

N = 64


# --------------------------------------------------------------------------------------------------
# the shared arithmetic


def rates(training, steps_per_epoch, losses=()):
    """Every step's rate, epoch by epoch: a list of lists."""
    schedule = LearningRateSchedule(training, steps_per_epoch, losses)
    return [[schedule.learning_rate(e, s) for s in range(steps_per_epoch)] for e in range(training.nepochs)]


def test_constant_is_the_epoch_plan():
    training = TrainingConfig(nepochs=4, learning_rate=2e-3, stages=(Stage(3), Stage(1, learning_rate_factor=0.1)))
    assert rates(training, 2) == [[2e-3, 2e-3]] * 3 + [[2e-3 * 0.1, 2e-3 * 0.1]]
    plan = batching.epoch_plan(training)
    assert LearningRateSchedule(training, 2).epoch_learning_rates() == pytest.approx([p.learning_rate for p in plan])
    assert [p.learning_rate_factor for p in plan] == [1.0, 1.0, 1.0, 0.1]


def test_plateau_halves_after_patience_epochs_without_improvement():
    training = TrainingConfig(nepochs=8, learning_rate=1e-3, lr_schedule="plateau", lr_min=1e-5)
    # losses of epochs 0..6: improve, improve, worse, equal (2 bad epochs: plateau), better, worse, worse (plateau)
    losses = [5.0, 4.0, 4.5, 4.0, 3.0, 3.5, 3.2]
    schedule = LearningRateSchedule(training, 3, losses)
    expected = [1e-3, 1e-3, 1e-3, 1e-3, 5e-4, 5e-4, 5e-4, 2.5e-4]
    assert schedule.epoch_learning_rates() == pytest.approx(expected, rel=1e-12)
    assert all(schedule.learning_rate(e, s) == schedule.learning_rate(e, 0) for e in range(8) for s in range(3))
    # only the losses before an epoch count
    assert schedules.learning_rate(training, 3, 0, 3, losses) == 1e-3
    assert schedules.plateau_count(losses, 2) == 2
    assert schedules.plateau_count([1.0, math.nan, math.nan], 2) == 1  # NaN never improves


def test_plateau_floor_and_stage_factor():
    training = TrainingConfig(nepochs=6, learning_rate=1e-3, lr_schedule="plateau", lr_plateau_factor=0.1,
                              lr_plateau_patience=1, lr_min=2e-5, stages=(Stage(4), Stage(2, learning_rate_factor=0.5)))
    schedule = LearningRateSchedule(training, 1, [1.0] * 5)  # every epoch after the first is a plateau
    # v: 1e-3, 1e-3, 1e-4, 2e-5 (floor, not 1e-5), 2e-5, ...; the stage factor multiplies after the floor
    assert schedule.epoch_learning_rates() == pytest.approx([1e-3, 1e-3, 1e-4, 2e-5, 1e-5, 1e-5], rel=1e-12)


def test_cosine_values():
    training = TrainingConfig(nepochs=2, learning_rate=1e-3, lr_schedule="cosine", lr_min=1e-4,
                              stages=(Stage(1), Stage(1, learning_rate_factor=0.5)))
    steps = rates(training, 4)  # T = 8 steps
    flat = [lr / (1.0 if i < 4 else 0.5) for i, lr in enumerate(steps[0] + steps[1])]
    expected = [1e-4 + 9e-4 * (1 + math.cos(math.pi * t / 8)) / 2 for t in range(8)]
    assert flat == pytest.approx(expected, rel=1e-12)
    assert flat[0] == 1e-3 and flat[4] == pytest.approx(5.5e-4)
    assert all(a > b for a, b in zip(flat, flat[1:]))


def test_onecycle_values():
    training = TrainingConfig(nepochs=5, learning_rate=1e-3, lr_schedule="onecycle", lr_onecycle_pct_start=0.3)
    flat = sum(rates(training, 4), [])  # T = 20, peak at step 0.3 * 20 - 1 = 5
    assert flat[0] == pytest.approx(1e-3 / 25, rel=1e-12)
    assert flat[5] == pytest.approx(1e-3, rel=1e-12) and max(flat) == flat[5]
    assert flat[-1] == pytest.approx(1e-3 / 25 / 1e4, rel=1e-9)
    assert all(a < b for a, b in zip(flat[:5], flat[1:6])) and all(a > b for a, b in zip(flat[5:], flat[6:]))
    # halfway up: the mean of start and peak
    assert flat[0] + (flat[5] - flat[0]) / 2 == pytest.approx(
        schedules._onecycle(2.5, 20, 1e-3, 0.3), rel=1e-12)


@pytest.mark.parametrize("kind", ["cosine", "onecycle"])
def test_per_step_schedules_match_torch_schedulers(kind):
    torch = pytest.importorskip("torch")
    training = TrainingConfig(nepochs=3, learning_rate=1e-3, lr_schedule=kind, lr_min=1e-5)
    steps_per_epoch, total = 7, 21
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1e-3)
    if kind == "cosine":
        reference = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=1e-5)
    else:
        reference = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=total, pct_start=0.3,
                                                        cycle_momentum=False)
    theirs = []
    for t in range(total):
        theirs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if t < total - 1:
            reference.step()
    assert sum(rates(training, steps_per_epoch), []) == pytest.approx(theirs, rel=1e-9)


def test_schedule_arguments_are_checked():
    training = TrainingConfig(nepochs=2)
    with pytest.raises(ValueError, match="steps_per_epoch=0 must be a positive integer"):
        LearningRateSchedule(training, 0)
    with pytest.raises(ValueError, match="epoch=2 is outside"):
        LearningRateSchedule(training, 3).learning_rate(2, 0)
    with pytest.raises(ValueError, match="step=3 is outside"):
        LearningRateSchedule(training, 3).learning_rate(0, 3)


# --------------------------------------------------------------------------------------------------
# config fields


def test_defaults():
    t = TrainingConfig()
    assert (t.lr_schedule, t.lr_plateau_factor, t.lr_plateau_patience, t.lr_min) == ("constant", 0.5, 2, 1e-4)
    assert (t.lr_onecycle_pct_start, t.early_stopping_restore_best) == (0.3, True)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"lr_schedule": "step"},
         "lr_schedule='step' is not supported; allowed values: 'constant', 'plateau', 'cosine', 'onecycle'"),
        ({"lr_plateau_factor": 1.0}, "lr_plateau_factor=1.0 must be in (0, 1)"),
        ({"lr_plateau_factor": 0}, "lr_plateau_factor=0.0 must be in (0, 1)"),
        ({"lr_plateau_patience": 0}, "lr_plateau_patience=0 must be a positive integer"),
        ({"lr_min": -1e-5}, "lr_min=-1e-05 must be a number >= 0"),
        ({"lr_schedule": "cosine", "learning_rate": 1e-4},
         "lr_min=0.0001 must be below learning_rate=0.0001 for lr_schedule='cosine'"),
        ({"lr_schedule": "plateau", "learning_rate": 5e-5}, "lower lr_min"),
        ({"lr_onecycle_pct_start": 1.0}, "lr_onecycle_pct_start=1.0 must be in (0, 1)"),
        ({"early_stopping_restore_best": "yes"}, "early_stopping_restore_best='yes' must be true or false"),
    ],
)
def test_invalid_values_are_named(overrides, fragment):
    with pytest.raises(ConfigError) as info:
        config.apply_overrides(Config(), overrides)
    assert fragment in str(info.value)


def test_lr_min_is_free_for_schedules_that_ignore_it():
    assert TrainingConfig(learning_rate=1e-5, lr_schedule="onecycle").lr_min == 1e-4
    assert TrainingConfig(learning_rate=1e-30).lr_schedule == "constant"


def test_new_fields_round_trip_everywhere(tmp_path):
    values = {"lr_schedule": "onecycle", "lr_plateau_factor": 0.2, "lr_plateau_patience": 4, "lr_min": 1e-6,
              "lr_onecycle_pct_start": 0.4, "early_stopping_restore_best": False, "early_stopping_patience": 3}
    cfg = config.apply_overrides(Config(), values)
    assert interop.from_legacy_dict(interop.to_legacy_dict(cfg))[0] == cfg
    config.save_config(cfg, tmp_path / "c.yaml")
    assert config.load_config(tmp_path / "c.yaml") == cfg
    strings = config.apply_overrides(Config(), [f"{k}={v}" for k, v in values.items()])
    assert strings == cfg
    documented = {name for _, name, _, text in config.field_table() if text}
    assert set(values) <= documented


def test_torch_style_plateau_keys():
    cfg, report = interop.from_torch_style({"training": {"scheduler": "ReduceLROnPlateau", "plateau_factor": 0.25,
                                                        "plateau_patience": 2, "plateau_min_lr": 5e-5,
                                                        "plateau_threshold": 0.0}})
    t = cfg.training
    assert (t.lr_schedule, t.lr_plateau_factor, t.lr_plateau_patience, t.lr_min) == ("plateau", 0.25, 3, 5e-5)
    assert not report.unsupported
    with pytest.raises(ConfigError, match="scheduler"):
        interop.from_torch_style({"scheduler": "WarmupCosine"})
    with pytest.raises(ConfigError, match="plateau_threshold"):
        interop.from_torch_style({"plateau_threshold": 1e-3})


# --------------------------------------------------------------------------------------------------
# both backends


@pytest.fixture(params=["torch", "tensorflow"])
def backend(request):
    pytest.importorskip(request.param)
    return importlib.import_module(f"ptycholib.{request.param}")


@pytest.fixture(scope="module")
def groups():
    """Eight noiseless gridsize-1 groups: (inputs, offsets, amplitudes, probe, s0)."""
    rng = np.random.default_rng(3)
    obj = ((0.6 + 0.4 * rng.random((140, 150))) * np.exp(0.5j * rng.random((140, 150)))).astype(np.complex64)
    coords = np.arange(N) - N // 2
    probe = np.exp(-(coords[:, None] ** 2 + coords[None, :] ** 2) / (2 * 9.0**2)).astype(np.complex64)
    positions = rng.uniform(45, 95, size=(8, 2))
    patches = forward.extract_patches(obj, positions[:, 0], positions[:, 1], N)[:, None]
    amplitudes = forward.far_field_amplitude(forward.illuminate(patches, probe, probe_scale=4.0), 30.0)
    scale = math.sqrt((N / 2) ** 2 / np.mean(np.sum(amplitudes**2, axis=(-2, -1))))
    s0 = forward.initial_intensity_scale(amplitudes.reshape(-1, N, N), probe, 4.0)
    offsets = np.zeros((8, 1, 2))
    return (amplitudes * scale).astype(np.float32), offsets, amplitudes.astype(np.float32), probe, s0


def run(backend, groups, seed=0, callback=None, **training):
    inputs, offsets, amplitudes, probe, s0 = groups
    model = backend.network.build_model(ModelConfig(N=N, gridsize=1, n_filters_scale=1), probe, s0, seed=seed)
    options = {"batch_size": 2, "logger": "none", "seed": 0, **training}
    history = backend.training.train(model, inputs, offsets, amplitudes, TrainingConfig(**options), progress=False,
                                     callback=callback)
    return model, history


SCHEDULE_CASES = {
    # 8 groups, 2 held out, batch 2: 3 optimiser steps per epoch
    "cosine": dict(nepochs=3, learning_rate=1e-3, lr_schedule="cosine", lr_min=1e-5, validation_fraction=0.25,
                   stages=(Stage(2), Stage(1, learning_rate_factor=0.5))),
    "onecycle": dict(nepochs=3, learning_rate=1e-3, lr_schedule="onecycle", validation_fraction=0.25),
    # An update of ~1e-30 leaves float32 weights unchanged: the validation loss repeats exactly,
    # so the plateau schedule halves the rate after every 2 epochs.
    "plateau": dict(nepochs=6, learning_rate=1e-30, lr_schedule="plateau", lr_min=0.0, validation_fraction=0.25),
}


@pytest.mark.parametrize("case", sorted(SCHEDULE_CASES))
def test_backend_logs_the_schedule(backend, groups, case):
    options = SCHEDULE_CASES[case]
    _, history = run(backend, groups, **options)
    training = TrainingConfig(batch_size=2, **options)
    monitored = [r["val_loss"] for r in history]
    logged = [r["learning_rate"] for r in history]
    assert logged == LearningRateSchedule(training, 3, monitored).epoch_learning_rates()
    # The same values whichever backend trained: backend-independent expectations.
    if case == "plateau":
        assert len(set(monitored)) == 1
        assert logged == [1e-30, 1e-30, 1e-30, 5e-31, 5e-31, 2.5e-31]
    else:
        assert logged == LearningRateSchedule(training, 3).epoch_learning_rates()


def test_torch_scheduler_sets_every_step():
    torch = pytest.importorskip("torch")
    from ptycholib.torch import training as torch_training

    training = TrainingConfig(nepochs=3, learning_rate=1e-3, lr_schedule="onecycle",
                              stages=(Stage(2), Stage(1, learning_rate_factor=0.1)))
    schedule = LearningRateSchedule(training, 4)
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([parameter], lr=1.0)
    scheduler = torch_training._SharedSchedule(optimizer, schedule)
    seen = []
    for _ in range(12):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == sum(rates(training, 4), [])
    assert set(scheduler.state_dict()) == {"last_epoch", "_step_count", "losses"}


def test_tensorflow_callback_sets_every_step():
    pytest.importorskip("tensorflow")
    import keras

    from ptycholib.tensorflow import training as tf_training

    training = TrainingConfig(nepochs=3, learning_rate=1e-3, lr_schedule="cosine", lr_min=1e-5,
                              stages=(Stage(2), Stage(1, learning_rate_factor=0.1)))
    schedule = LearningRateSchedule(training, 4)
    optimizer = keras.optimizers.Adam(learning_rate=1.0)

    class Module:  # what the callback reads from the training module
        physics_weight = keras.Variable(1.0)
        plan = batching.epoch_plan(training)

    callback = tf_training._SharedSchedule(optimizer, schedule)
    callback.set_model(Module())
    seen = []
    for epoch in range(3):
        callback.on_epoch_begin(epoch)
        for step in range(4):
            callback.on_train_batch_begin(step)
            seen.append(float(optimizer.learning_rate.numpy()))
    assert seen == pytest.approx(sum(rates(training, 4), []), rel=1e-6)  # float32 variable


@pytest.mark.parametrize("restore", [True, False])
def test_early_stopping_restores_the_best_epoch(backend, groups, restore):
    # Two good epochs, then a learning rate of 1 (stage factor 1000) that wrecks the fit: the
    # validation loss stops improving and training stops after 2 more epochs.
    snapshots = []
    inputs, offsets, amplitudes, probe, s0 = groups
    model = backend.network.build_model(ModelConfig(N=N, gridsize=1, n_filters_scale=1), probe, s0, seed=0)
    options = dict(nepochs=6, learning_rate=1e-3, validation_fraction=0.25, early_stopping_patience=2,
                   early_stopping_restore_best=restore, stages=(Stage(2), Stage(4, learning_rate_factor=1000.0)),
                   batch_size=2, logger="none", seed=0)
    history = backend.training.train(model, inputs, offsets, amplitudes, TrainingConfig(**options), progress=False,
                                     callback=lambda record: snapshots.append(backend.network.get_weights(model)))
    val_losses = [r["val_loss"] for r in history]
    best = history[-1]["best_epoch"]
    assert len(history) < 6 and best < history[-1]["epoch"]
    assert val_losses[best] == np.nanmin(val_losses)
    assert [r["best_epoch"] for r in history][: best + 1] == list(range(best + 1))
    final = backend.network.get_weights(model)
    target = snapshots[best] if restore else snapshots[-1]
    for name in target:
        np.testing.assert_array_equal(final[name], target[name], err_msg=name)
    if restore:
        # the restored model scores the best validation loss again
        _, val_idx = batching.split_validation(len(inputs), 0.25, 0)
        predicted = backend.network.forward_model(model, inputs[val_idx], offsets[val_idx])[1]
        loss = backend.physics.poisson_nll(predicted, backend.physics.to_tensor(amplitudes[val_idx]))
        assert float(backend.physics.to_numpy(loss)) == pytest.approx(val_losses[best], rel=1e-5)

