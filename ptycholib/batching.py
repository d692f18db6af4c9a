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

__all__ = ["EpochPlan", "epoch_plan", "split_validation", "epoch_order", "TrainingArrays", "prepare_training_arrays",
           "as_group_array", "is_streamed", "NonFiniteLossError"]


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


# --------------------------------------------------------------------------------------------------
# The training data of both backends' ``train`` and ``predict_patches``: checked, split and planned
# once here, in NumPy, so that the two trainers start from the same arrays.

_PRECISIONS = {"32": "32", "32-true": "32", "bf16-mixed": "bf16-mixed"}


def as_group_array(name, values, shape, dtype):
    """Return one array of the groups as NumPy ``dtype``, refusing another shape and NaN or Inf.

    Parameters
    ----------
    name : str
        The argument's name, for the message.
    values : array_like
        A NumPy array (the backends pass their tensors through ``physics.to_numpy`` first).
    shape : tuple of int
        The shape it must have (channels-first, see docs/architecture.md).
    dtype : numpy dtype
        The dtype of the result (no copy when it already has it).

    Returns
    -------
    ndarray of ``shape`` and ``dtype``

    Examples
    --------
    >>> as_group_array("offsets", np.zeros((4, 1, 2)), (4, 1, 2), np.float32).dtype
    dtype('float32')
    >>> as_group_array("offsets", np.zeros((4, 2)), (4, 1, 2), np.float32)
    Traceback (most recent call last):
    ...
    ValueError: offsets has shape (4, 2); expected (4, 1, 2) (channels-first, see docs/architecture.md).
    """
    array = np.asarray(values)
    if array.shape != tuple(shape):
        raise ValueError(f"{name} has shape {array.shape}; expected {tuple(shape)} (channels-first, see docs/architecture.md).")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or Inf values; clean the data before training.")
    return array.astype(dtype, copy=False)


@dataclass(frozen=True)
class TrainingArrays:
    """The checked training data of one ``train`` call (`prepare_training_arrays`).

    Attributes
    ----------
    groups : dict of str to ndarray, or ptycholib.stream.StreamedGroups
        ``inputs`` (G, C, N, N) float32, ``offsets`` (G, C, 2) float32 (last axis ``(x, y)``, pixels)
        and the loss's targets: ``amplitudes`` (G, C, N, N) float32 for ``model_type='pinn'``, or
        ``amplitude`` and ``phase`` (G, K, N, N) float32, modulus and angle of the ground-truth
        patches, for ``model_type='supervised'``.
    supervised : bool
        ``model_type == 'supervised'``.
    precision : str
        ``"32"`` or ``"bf16-mixed"``.
    plan : list of ptycholib.batching.EpochPlan
        One entry per epoch (`epoch_plan`).
    train_indices, val_indices : ndarray of int64
        The groups that train and those held out (`split_validation`).
    """

    groups: dict
    supervised: bool
    precision: str
    plan: list
    train_indices: np.ndarray
    val_indices: np.ndarray


def is_streamed(groups):
    """True for training groups read from a file batch by batch (`ptycholib.stream.StreamedGroups`)."""
    from ptycholib.stream import StreamedGroups

    return isinstance(groups, StreamedGroups)


def prepare_training_arrays(model_config, training_config, inputs, offsets, amplitudes, *, target_patches=None,
                            validation_fraction=None):
    """Check the training data, pick the loss's targets, and plan and split the run (both backends).

    What ``ptycholib.torch.training.train`` and ``ptycholib.tensorflow.training.train`` do first, in
    NumPy. It works on arrays that are already grouped; `ptycholib.workflow.prepare_training` comes
    before it and makes those groups (and the untrained model) from a data set.

    Parameters
    ----------
    model_config : ptycholib.config.ModelConfig
        ``N``, ``gridsize`` (C), ``n_object_channels`` (K) and ``model_type``.
    training_config : ptycholib.config.TrainingConfig
        The stages (`epoch_plan`), ``validation_fraction``, ``seed`` and ``precision``.
    inputs : ndarray of shape (G, C, N, N), or ptycholib.stream.StreamedGroups
        Normalised amplitudes ``x = g * a``; or groups whose batches are read from a file (then
        ``offsets``, ``amplitudes`` and ``target_patches`` are not used and ``TrainingArrays.groups``
        is that object).
    offsets : ndarray of shape (G, C, 2)
        Position minus group mean in pixels, last axis ``(x, y)``.
    amplitudes : ndarray of shape (G, C, N, N)
        Measured amplitudes (>= 0); the target for ``model_type='pinn'``.
    target_patches : ndarray of shape (G, K, N, N), complex, optional
        Ground-truth patches; required for, and only used by, ``model_type='supervised'``.
    validation_fraction : float, optional
        Default ``training_config.validation_fraction``.

    Returns
    -------
    TrainingArrays

    Raises
    ------
    ValueError
        A shape differs, a value is NaN or Inf, an amplitude is negative, the supervised targets are
        missing, or the precision or validation fraction is not supported.
    """

    cfg = model_config
    channels, size = cfg.n_channels, cfg.N
    supervised = cfg.model_type == "supervised"
    if is_streamed(inputs):  # checked batch by batch as the patterns are read
        if inputs.source.patch_size != size or inputs.groups.channels != channels:
            raise ValueError(f"streamed groups have {inputs.groups.channels} patterns of {inputs.source.patch_size} px; "
                             f"the model needs {channels} of {size} px.")
        if supervised != (inputs.target_channels is not None):
            raise ValueError("streamed groups were built for another model_type; build them from this config.")
        n_groups, groups = len(inputs), inputs
    else:
        inputs = as_group_array("inputs", inputs, (len(inputs), channels, size, size), np.float32)
        n_groups = len(inputs)
        groups = {"inputs": inputs, "offsets": as_group_array("offsets", offsets, (n_groups, channels, 2), np.float32)}
    if is_streamed(groups):
        pass
    elif supervised:
        if target_patches is None:
            raise ValueError("model_type='supervised' needs target_patches (ground-truth patches, (B, K, N, N) complex).")
        target_shape = (n_groups, cfg.n_object_channels, size, size)
        target_patches = as_group_array("target_patches", target_patches, target_shape, np.complex64)
        groups.update(amplitude=np.abs(target_patches).astype(np.float32), phase=np.angle(target_patches).astype(np.float32))
    else:
        amplitudes = as_group_array("amplitudes", amplitudes, inputs.shape, np.float32)
        if np.any(amplitudes < 0):
            raise ValueError("amplitudes has negative values; pass sqrt(counts) (amplitudes are >= 0).")
        groups["amplitudes"] = amplitudes
    precision = str(getattr(training_config, "precision", "32"))
    if precision not in _PRECISIONS:
        raise ValueError(f"precision={precision!r} is not supported; allowed values: '32', 'bf16-mixed'.")
    fraction = training_config.validation_fraction if validation_fraction is None else validation_fraction
    if not 0 <= fraction < 1:
        raise ValueError(f"validation_fraction={fraction!r} must be in [0, 1).")
    train_indices, val_indices = split_validation(n_groups, fraction, training_config.seed)
    return TrainingArrays(groups, supervised, _PRECISIONS[precision], epoch_plan(training_config), train_indices, val_indices)


class NonFiniteLossError(FloatingPointError):
    """Training met a non-finite loss or gradient; both trainers raise it and stop before the step.

    Attributes
    ----------
    epoch, batch : int
        Where it happened (0-based, the epoch in the whole plan, the batch within the epoch).
    what : str
        ``"loss"`` or ``"gradient"``.
    """

    def __init__(self, epoch, batch, what="loss"):
        self.epoch, self.batch, self.what = int(epoch), int(batch), what
        super().__init__(
            f"non-finite {what} at epoch {self.epoch}, batch {self.batch}: training stopped (the run diverged; "
            "lower learning_rate, or check the data with `ptycholib check`)."
        )
