"""ptycholib.batching: the epoch plan both trainers follow."""

import pytest

from ptycholib import batching
from ptycholib.config import Stage, TrainingConfig


@pytest.mark.parametrize(
    "schedule, expected",
    [
        ("constant", [0.2, 0.2, 0.2]),
        ("linear", [0.2, 0.6, 1.0]),
        ("cosine", [0.2, 0.6, 1.0]),
        ("exponential", [0.2, 0.4, 1.0]),
    ],
)
def test_epoch_plan_physics_weight(schedule, expected):
    plan = batching.epoch_plan(TrainingConfig(nepochs=3, physics_weight_schedule=schedule, physics_weight_start=0.2))
    assert [p.physics_weight for p in plan] == pytest.approx(expected)


def test_epoch_plan_stages():
    training = TrainingConfig(
        nepochs=5, learning_rate=1e-3, probe_trainable=False,
        stages=(Stage(2), Stage(2, learning_rate_factor=0.1, probe_trainable=True), Stage(1, 0.01, freeze_encoder=True)),
    )
    plan = batching.epoch_plan(training)
    assert [p.stage for p in plan] == [0, 0, 1, 1, 2]
    assert [p.learning_rate for p in plan] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-5])
    assert [p.probe_trainable for p in plan] == [False, False, True, True, False]
    assert [p.freeze_encoder for p in plan] == [False, False, False, False, True]
