"""Learning-rate schedules, the one arithmetic both backends follow (SPEC 4.6, issue #11).

The learning rate of optimiser step ``s`` (0-based, within the epoch) of epoch ``e`` is

    lr(e, s) = learning_rate_factor(stage of e) * v(e, s)

where ``v`` is the value of ``TrainingConfig.lr_schedule`` in absolute units, the run's global step
is ``t = e * S + s`` of ``T = nepochs * S`` steps (``S`` optimiser steps per epoch) and
``lr = TrainingConfig.learning_rate``:

``"constant"``
    ``v = lr``.
``"plateau"``
    ``v = max(lr * lr_plateau_factor**k, lr_min)``, where ``k`` counts the plateaus among the
    monitored losses of the epochs *before* ``e``: a plateau is ``lr_plateau_patience``
    consecutive epochs without a loss strictly below the best so far; the count restarts after
    each plateau, the best does not. This is Keras's ReduceLROnPlateau as PtychoPINN uses it
    (reduce after ``patience`` bad epochs; torch's scheduler waits one more), except that any
    decrease counts as an improvement (``min_delta=0``: Keras's absolute 1e-4 means nothing for
    losses in count units). The monitored loss is the validation loss, or the training loss when
    there are no validation groups. ``v`` changes only between epochs.
``"cosine"``
    ``v = lr_min + (lr - lr_min) * (1 + cos(pi * t / T)) / 2``, changing every step (torch's
    CosineAnnealingLR with ``T_max = T``, ``eta_min = lr_min``).
``"onecycle"``
    torch's OneCycleLR (``anneal_strategy='cos'``, ``div_factor=25``, ``final_div_factor=1e4``,
    ``three_phase=False``) with ``max_lr = lr``: cosine from ``lr/25`` at ``t = 0`` up to ``lr``
    at ``t = lr_onecycle_pct_start * T - 1``, then cosine down to ``lr/2.5e5`` at ``t = T - 1``.
    Only the learning rate cycles: Adam's beta1 stays 0.9 (torch's OneCycleLR would also cycle
    it). ``lr_min`` is not used.

Stage factors multiply the schedule (so ``lr_min`` floors ``v``, not the product) and the
``cosine``/``onecycle`` curves span the whole run, across the stages. A history record's
``learning_rate`` is ``lr(e, 0)``, the rate of the epoch's first optimiser step. With a
physics-weight ramp the monitored loss changes definition from epoch to epoch; the plateau count
(like early stopping and ``best_epoch``) compares the values as they are.
"""

from __future__ import annotations

import math

from .batching import epoch_plan

__all__ = [
    "LearningRateSchedule",
    "learning_rate",
    "plateau_count",
    "is_improvement",
    "ONECYCLE_DIV",
    "ONECYCLE_FINAL_DIV",
]

ONECYCLE_DIV = 25.0
"""``"onecycle"`` starts at ``learning_rate / ONECYCLE_DIV`` (torch's ``div_factor``)."""
ONECYCLE_FINAL_DIV = 1e4
"""``"onecycle"`` ends at ``learning_rate / ONECYCLE_DIV / ONECYCLE_FINAL_DIV`` (torch's ``final_div_factor``)."""


def is_improvement(loss, best):
    """Return True when ``loss`` is strictly below ``best`` (NaN never improves).

    The one rule for the plateau schedule, early stopping's best epoch and ``best_epoch`` records.

    Examples
    --------
    >>> is_improvement(1.0, math.inf), is_improvement(1.0, 1.0), is_improvement(math.nan, 2.0)
    (True, False, False)
    """
    return float(loss) < float(best)


def plateau_count(losses, patience):
    """Count the plateaus (learning-rate reductions) a sequence of epoch losses triggers.

    Parameters
    ----------
    losses : sequence of float
        Monitored loss of each finished epoch, in order.
    patience : int
        Epochs without a strict improvement that make one plateau.

    Returns
    -------
    int
        ``k`` of the ``"plateau"`` schedule after these epochs.

    Examples
    --------
    >>> plateau_count([3.0, 2.0, 2.5, 2.4, 2.0, 1.0, 1.5], patience=2)
    1
    >>> plateau_count([1.0, 1.0, 1.0, 1.0, 1.0], patience=2)
    2
    """
    best, wait, count = math.inf, 0, 0
    for loss in losses:
        if is_improvement(loss, best):
            best, wait = float(loss), 0
        else:
            wait += 1
            if wait >= patience:
                count, wait = count + 1, 0
    return count


class LearningRateSchedule:
    """The learning rate of every optimiser step of one training run.

    Parameters
    ----------
    training : ptycholib.config.TrainingConfig
        ``learning_rate``, ``lr_schedule`` and its parameters, and the stages (`ptycholib.batching.epoch_plan`).
    steps_per_epoch : int
        Optimiser steps in every epoch (``S``; the same in all epochs).
    losses : sequence of float, optional
        Monitored losses of epochs already finished (see `record`).

    Notes
    -----
    The formulas are in the module docstring. The object holds no framework state: the torch
    backend wraps it in a ``torch.optim.lr_scheduler.LRScheduler`` stepped by Lightning, the
    TensorFlow backend in a Keras callback.

    Examples
    --------
    >>> from ptycholib.config import Stage, TrainingConfig
    >>> training = TrainingConfig(nepochs=4, learning_rate=1e-3, lr_schedule="plateau", lr_plateau_patience=1,
    ...                           stages=(Stage(2), Stage(2, learning_rate_factor=0.1)))
    >>> schedule = LearningRateSchedule(training, steps_per_epoch=3)
    >>> for loss in [1.0, 1.0, 0.5]:
    ...     schedule.record(loss)
    >>> [round(schedule.learning_rate(epoch, 0), 8) for epoch in range(4)]
    [0.001, 0.001, 5e-05, 5e-05]
    """

    def __init__(self, training, steps_per_epoch, losses=()):
        if not isinstance(steps_per_epoch, int) or isinstance(steps_per_epoch, bool) or steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch={steps_per_epoch!r} must be a positive integer.")
        self.training = training
        self.steps_per_epoch = steps_per_epoch
        self.factors = [entry.learning_rate_factor for entry in epoch_plan(training)]
        self.total_steps = len(self.factors) * steps_per_epoch
        self.losses = [float(loss) for loss in losses]

    @property
    def varies_per_step(self):
        """True for ``"cosine"`` and ``"onecycle"``: the rate changes within an epoch."""
        return self.training.lr_schedule in ("cosine", "onecycle")

    def record(self, loss):
        """Append the monitored loss of the epoch that just finished (the plateau schedule reads it)."""
        self.losses.append(float(loss))

    @property
    def best_epoch(self):
        """The recorded epoch of lowest loss (`is_improvement`: strictly lower wins), None before any.

        As in Keras, the first epoch is the best so far even when its loss is NaN. Both backends
        report it in their history and restore that epoch's weights from it.
        """
        best, epoch = math.inf, None
        for index, loss in enumerate(self.losses):
            if is_improvement(loss, best):
                best, epoch = loss, index
            elif epoch is None:
                epoch = index
        return epoch

    def learning_rate(self, epoch, step=0):
        """Return the learning rate of optimiser step ``step`` of epoch ``epoch`` (both 0-based).

        Only the losses of epochs before ``epoch`` count, however many have been recorded.
        """
        if not 0 <= epoch < len(self.factors):
            raise ValueError(f"epoch={epoch} is outside the run's {len(self.factors)} epochs.")
        if not 0 <= step < self.steps_per_epoch:
            raise ValueError(f"step={step} is outside the epoch's {self.steps_per_epoch} steps.")
        return self.factors[epoch] * self._value(epoch, step)

    def _value(self, epoch, step):
        training = self.training
        lr, kind = float(training.learning_rate), training.lr_schedule
        if kind == "constant":
            return lr
        if kind == "plateau":
            reductions = plateau_count(self.losses[:epoch], training.lr_plateau_patience)
            return max(lr * training.lr_plateau_factor**reductions, float(training.lr_min))
        t = epoch * self.steps_per_epoch + step
        if kind == "cosine":
            floor = float(training.lr_min)
            return floor + (lr - floor) * (1.0 + math.cos(math.pi * t / self.total_steps)) / 2.0
        return _onecycle(t, self.total_steps, lr, training.lr_onecycle_pct_start)

    def epoch_learning_rates(self):
        """Return ``[lr(e, 0) for every epoch]`` given the losses recorded so far (what histories log)."""
        return [self.learning_rate(epoch, 0) for epoch in range(len(self.factors))]


def _onecycle(t, total, max_lr, pct_start):
    """torch.optim.lr_scheduler.OneCycleLR's two-phase cosine formula, step ``t`` of ``total``."""
    start = max_lr / ONECYCLE_DIV
    end = start / ONECYCLE_FINAL_DIV
    peak_step = float(pct_start * total) - 1.0
    if t <= peak_step:
        phase_start, phase_end, lr_from, lr_to = 0.0, peak_step, start, max_lr
    else:
        phase_start, phase_end, lr_from, lr_to = peak_step, float(total - 1), max_lr, end
    span = phase_end - phase_start
    pct = (t - phase_start) / span if span > 0 else 1.0  # torch divides by zero here
    return lr_to + (lr_from - lr_to) / 2.0 * (1.0 + math.cos(math.pi * pct))


def learning_rate(training, epoch, step, steps_per_epoch, losses=()):
    """Return the learning rate of one optimiser step (a functional form of `LearningRateSchedule`).

    Parameters
    ----------
    training : ptycholib.config.TrainingConfig
    epoch, step : int
        0-based epoch, and optimiser step within the epoch.
    steps_per_epoch : int
        Optimiser steps per epoch.
    losses : sequence of float
        Monitored losses of the epochs before ``epoch`` (extra entries are ignored).

    Returns
    -------
    float
        ``learning_rate_factor(stage of epoch) * v(epoch, step)`` (module docstring).

    Examples
    --------
    >>> from ptycholib.config import TrainingConfig
    >>> training = TrainingConfig(nepochs=2, learning_rate=1e-3, lr_schedule="cosine", lr_min=0.0)
    >>> round(learning_rate(training, 1, 0, steps_per_epoch=4), 10)
    0.0005
    """
    return LearningRateSchedule(training, steps_per_epoch, losses).learning_rate(epoch, step)
