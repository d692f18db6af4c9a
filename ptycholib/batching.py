"""What both trainers follow, computed once in NumPy: the epoch plan, the validation split and the
batch order.

`epoch_plan` turns a `TrainingConfig` into one `EpochPlan` per epoch (stage, learning rate, physics
weight, trainable parts; SPEC 4.6). SPEC section 8 compares the two backends trained "with the same
batch order"; the frameworks' own shufflers (``tf.data.Dataset.shuffle``, torch's ``RandomSampler``)
cannot agree, so both trainers take their orders from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ptycholib.config import Stage

__all__ = ["EpochPlan", "epoch_plan", "split_validation", "epoch_order"]


@dataclass(frozen=True)
class EpochPlan:
    """What one epoch trains with (both backends follow the same list).

    ``learning_rate`` is ``TrainingConfig.learning_rate * learning_rate_factor``, the rate of a
    ``"constant"`` schedule; other ``lr_schedule`` values multiply the stage's
    ``learning_rate_factor`` with their own per-step value (`ptycholib.schedules`).
    """

    epoch: int
    stage: int
    learning_rate: float
    physics_weight: float
    freeze_encoder: bool
    probe_trainable: bool
    learning_rate_factor: float = 1.0


def epoch_plan(training):
    """Return the per-epoch learning rate, physics weight and trainable parts.

    Parameters
    ----------
    training : TrainingConfig

    Returns
    -------
    list of EpochPlan
        One entry per epoch, ``len == training.nepochs``.

    Notes
    -----
    With ``t = epoch / (nepochs - 1)`` and ``p0 = physics_weight_start`` the physics weight is
    ``p0`` (constant), ``p0 + (1 - p0) t`` (linear), ``p0 + (1 - p0)(1 - cos(pi t)) / 2`` (cosine) or
    ``p0 + (1 - p0) t**2`` (exponential, PtychoPINN-Torch's name for the quadratic ramp).

    Examples
    --------
    >>> from ptycholib.config import TrainingConfig
    >>> plan = epoch_plan(TrainingConfig(nepochs=3, physics_weight_schedule="linear", physics_weight_start=0.0))
    >>> [p.physics_weight for p in plan]
    [0.0, 0.5, 1.0]
    """
    stages = training.stages or (Stage(epochs=training.nepochs),)
    plan = []
    for stage_index, stage in enumerate(stages):
        for _ in range(stage.epochs):
            epoch = len(plan)
            t = epoch / (training.nepochs - 1) if training.nepochs > 1 else 1.0
            p0 = training.physics_weight_start
            ramp = {
                "constant": 0.0,
                "linear": t,
                "cosine": 0.5 * (1.0 - math.cos(math.pi * t)),
                "exponential": t * t,
            }[training.physics_weight_schedule]
            probe = training.probe_trainable if stage.probe_trainable is None else stage.probe_trainable
            plan.append(
                EpochPlan(
                    epoch=epoch,
                    stage=stage_index,
                    learning_rate=training.learning_rate * stage.learning_rate_factor,
                    physics_weight=p0 + (1.0 - p0) * ramp,
                    freeze_encoder=stage.freeze_encoder,
                    probe_trainable=probe,
                    learning_rate_factor=stage.learning_rate_factor,
                )
            )
    return plan


def split_validation(n_groups, fraction, seed):
    """Split group indices into training and validation sets with a seeded permutation.

    Parameters
    ----------
    n_groups : int
    fraction : float
        Fraction in [0, 1) held out for validation (``floor(fraction * n_groups)`` groups, at least one
        when ``fraction > 0`` and there are at least two groups).
    seed : int

    Returns
    -------
    train_indices, val_indices : ndarray of int64, sorted

    Examples
    --------
    >>> train, val = split_validation(10, 0.2, seed=0)
    >>> len(train), len(val)
    (8, 2)
    """
    order = np.random.default_rng([seed, 1]).permutation(n_groups)
    n_val = int(np.floor(fraction * n_groups))
    if fraction > 0 and n_val == 0 and n_groups >= 2:
        n_val = 1
    return np.sort(order[n_val:]).astype(np.int64), np.sort(order[:n_val]).astype(np.int64)


def epoch_order(n_items, seed, epoch):
    """Return the shuffled order of ``n_items`` training items for one epoch (same in both backends).

    Examples
    --------
    >>> (epoch_order(5, 0, 0) == epoch_order(5, 0, 0)).all(), sorted(epoch_order(5, 0, 1).tolist())
    (np.True_, [0, 1, 2, 3, 4])
    """
    return np.random.default_rng([seed, 2, epoch]).permutation(n_items).astype(np.int64)
