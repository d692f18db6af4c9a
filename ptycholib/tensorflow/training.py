"""Training and batched prediction with Keras ``fit`` (SPEC sections 4.6 and Q7).

`train` runs the multi-stage schedule of `ptycholib.batching.epoch_plan` with Adam on the arrays that
`ptycholib.batching.prepare_training_arrays` checks and splits: every epoch applies its physics weight
and trainable parts (encoder, probe), every optimiser step its learning rate from
`ptycholib.schedules`, and batches follow `ptycholib.batching.epoch_order`, so both backends see the
same batches. The loss of an epoch with physics weight ``p`` is
``p * (nll_weight * NLL + mae_weight * MAE) + (1 - p) * MAE`` on diffraction amplitudes
(``model_type='pinn'``), or ``mean|A - |Y|| + mean|phi - angle(Y)|`` against ground-truth patches
(``model_type='supervised'``). ``ptycholib.torch.training`` is the same text with Lightning.
Beside the loss, each epoch's record holds the data fit a reader can interpret, computed per
batch from the same prediction without changing the objective: the Poisson deviance per pixel
(`_poisson_deviance`, as `ptycholib.metrics.poisson_deviance`) and the amplitude MAE, for the
training batches and the validation groups (`ptycholib.tracking.HISTORY_COLUMNS`).

Keras: a Keras model holds the loss and its ``train_step``, callbacks set the rates and record each
epoch, and every stage is one ``fit``, compiled anew because the trainable parts may change between
stages, while the one Adam optimiser keeps its moments. The groups stay in memory as tensors and a
``tf.data`` pipeline gathers each batch by index.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os

import keras
import numpy as np
import tensorflow as tf

from .. import batching, distributed, schedules, tracking
from . import network, physics

__all__ = ["train", "predict_patches", "loss_gradients"]

_PRECISIONS = {"32": "float32", "bf16-mixed": "mixed_bfloat16"}  # Keras's dtype policies
_EPOCH_MEANS = ("loss", "deviance", "amplitude_mae")  # per-epoch means in the history, also as val_*
_INFERENCE_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}  # inference.precision -> policy
_INFERENCE_JIT = False  # XLA for prediction: measured by `ptycholib bench inference` (docs/results.md)


# --------------------------------------------------------------------------------------------------
# losses


def _pinn_loss(model, x, offsets, amplitudes, physics_weight, nll_weight, mae_weight, bad_pixels=None):
    return _pinn_loss_and_fit(model, x, offsets, amplitudes, physics_weight, nll_weight, mae_weight, bad_pixels)[0]


def _pinn_loss_and_fit(model, x, offsets, amplitudes, physics_weight, nll_weight, mae_weight, bad_pixels=None):
    """One batch's loss and its data fit ``{"deviance": ..., "amplitude_mae": ...}`` (no gradient through the fit)."""
    _, predicted = model(x, offsets)
    mae = physics.amplitude_mae(predicted, amplitudes, bad_pixels=bad_pixels)
    nll = physics.poisson_nll(predicted, amplitudes, bad_pixels=bad_pixels)
    loss = physics_weight * (nll_weight * nll + mae_weight * mae) + (1.0 - physics_weight) * mae
    return loss, {"deviance": _poisson_deviance(predicted, amplitudes, bad_pixels), "amplitude_mae": tf.stop_gradient(mae)}


def _poisson_deviance(predicted, measured, bad_pixels=None):
    """Poisson deviance per pixel of one batch, as `ptycholib.metrics.poisson_deviance` (float32, no gradient).

    ``2 mean(a^2 log(a^2 / a_hat^2) - (a^2 - a_hat^2))`` with ``0 log 0 = 0``; the log of the ratio
    keeps float32 accurate where ``a_hat^2`` is close to ``a^2``, which is where training ends up.
    ``bad_pixels`` (N, N) are left out of the mean, as from the loss.
    """
    predicted_intensity = tf.square(tf.cast(tf.stop_gradient(predicted), tf.float32))
    measured_intensity = tf.square(tf.cast(measured, tf.float32))
    has_counts = measured_intensity > 0
    ratio = tf.where(has_counts, measured_intensity / predicted_intensity, tf.ones_like(measured_intensity))
    saturated = tf.where(has_counts, measured_intensity * tf.math.log(ratio), tf.zeros_like(measured_intensity))
    return 2.0 * physics._masked_mean(saturated - (measured_intensity - predicted_intensity), bad_pixels)


def _supervised_loss(net, x, target_amplitude, target_phase):
    amplitude, phase = net(x)
    return tf.reduce_mean(tf.abs(amplitude - target_amplitude)) + tf.reduce_mean(tf.abs(phase - target_phase))


# --------------------------------------------------------------------------------------------------
# data: whole groups in memory, batches gathered by index


class _Groups:
    """The groups as tensors: ``groups[indices]`` is one batch (a dict of tensors, one ``tf.gather`` each)."""

    def __init__(self, groups):
        # groups read from a file batch by batch (ptycholib.stream.StreamedGroups): the same batches
        self.streamed = groups if batching.is_streamed(groups) else None
        self.tensors = {} if self.streamed is not None else {name: tf.constant(value) for name, value in groups.items()}

    def __len__(self):
        return len(self.streamed) if self.streamed is not None else len(next(iter(self.tensors.values())))

    def __getitem__(self, indices):
        if self.streamed is not None:
            streamed, keys = self.streamed, self.streamed.keys
            values = tf.numpy_function(lambda i: tuple(streamed.batch(i)[key] for key in keys), [indices],
                                       [tf.float32] * len(keys))
            channels, size = streamed.groups.channels, streamed.source.patch_size
            shapes = {"offsets": (None, channels, 2), "amplitude": (None, streamed.target_channels, size, size),
                      "phase": (None, streamed.target_channels, size, size)}
            for key, value in zip(keys, values):
                value.set_shape(shapes.get(key, (None, channels, size, size)))
            return dict(zip(keys, values))
        return {name: tf.gather(tensor, indices) for name, tensor in self.tensors.items()}

    def batches(self, sampler, epochs):
        """A ``tf.data`` pipeline of ``sampler``'s batches of each of ``epochs``, epoch after epoch."""
        def batched(order):
            return tf.data.Dataset.from_tensor_slices(order).batch(sampler.batch_size, drop_remainder=sampler.drop_remainder)

        orders = [sampler.order(epoch) for epoch in epochs]
        if len(orders) == 1:  # Keras then knows the number of batches (validation runs until they end)
            batches = batched(orders[0])
        else:
            batches = tf.data.Dataset.from_tensor_slices(np.stack(orders)).flat_map(batched)
        return batches.map(self.__getitem__).prefetch(2)


class _BatchSampler:
    """Index batches of one epoch, in `ptycholib.batching.epoch_order` when shuffled.

    ``batch_size`` is global: with several replicas MirroredStrategy splits every batch over them,
    and the last partial batch is dropped (a replica with an empty batch cannot train), so a config
    means the same optimisation on one device or several, as torch's DDP does.
    """

    def __init__(self, indices, batch_size, *, shuffle, seed, drop_remainder=False):
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch_size = batch_size
        self.shuffle, self.seed, self.drop_remainder = shuffle, seed, drop_remainder

    def order(self, epoch):
        """The indices in the order of ``epoch``: the same permutation as the torch backend's."""
        if not self.shuffle:
            return self.indices
        return self.indices[batching.epoch_order(len(self.indices), self.seed, epoch)]

    def __len__(self):
        if self.drop_remainder:
            return len(self.indices) // self.batch_size
        return math.ceil(len(self.indices) / self.batch_size)


# --------------------------------------------------------------------------------------------------
# the training step


class _Module(keras.Model):
    """The physics-informed model, its loss and the per-epoch schedule (a Keras model ``fit`` trains)."""

    def __init__(self, model, plan, training_config, lr_schedule, *, supervised, has_validation, bad_pixels=None):
        super().__init__()
        self.model = model
        self.bad_pixels = None if bad_pixels is None else tf.constant(bad_pixels)
        self.plan = plan
        self.training_config = training_config
        self.supervised = supervised
        self.lr_schedule = lr_schedule
        self.has_validation = has_validation
        self.physics_weight = self.add_weight(
            shape=(), initializer="ones", trainable=False, name="physics_weight", dtype="float32"
        )
        self.trackers = {name: keras.metrics.Mean(name=name) for name in _EPOCH_MEANS}
        # (code, batch) of the epoch's first non-finite step (code 1 = loss, 2 = gradient), then the step count.
        self.finite_check = self.add_weight(shape=(3,), initializer="zeros", trainable=False, name="finite_check",
                                            dtype="float32", aggregation="only_first_replica")
        self.built = True  # every variable exists: no symbolic build (MirroredStrategy would ask for one)

    @property
    def metrics(self):
        return list(self.trackers.values())

    def _logs(self, values):
        if isinstance(self.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
            # Keras averages workers' step outputs along axis 0
            return {name: tf.reshape(value, [1]) for name, value in values.items()}
        return values

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras averages one batch over the replicas to build the model symbolically; under
        # MultiWorkerMirroredStrategy that reduction fails on a dict of tensors. Nothing needs building.
        if isinstance(self.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def set_precision(self, policy):
        """Give every convolution the Keras dtype policy ``policy`` (weights stay float32)."""
        for conv in network._named_convs(self.model.net).values():
            conv.dtype_policy = policy

    # steps ----------------------------------------------------------------------------------------

    def _loss(self, batch):
        """The batch's loss and data fit (`_pinn_loss_and_fit`; no fit for the supervised baseline)."""
        if self.supervised:
            return _supervised_loss(self.model.net, batch["inputs"], batch["amplitude"], batch["phase"]), {}
        return _pinn_loss_and_fit(
            self.model,
            batch["inputs"],
            batch["offsets"],
            batch["amplitudes"],
            self.physics_weight,
            self.training_config.nll_weight,
            self.training_config.mae_weight,
            self.bad_pixels,
        )

    def _accumulate(self, loss, fit, batch):
        """Update the epoch means; return those this model has (Keras logs them, ``val_`` prefixed in validation)."""
        count = tf.cast(tf.shape(batch["inputs"])[0], tf.float32)
        values = {"loss": loss, **fit}
        for name, value in values.items():
            self.trackers[name].update_state(value, sample_weight=count)
        return {name: self.trackers[name].result() for name in values}

    def train_step(self, batch):
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            loss, fit = self._loss(batch)
            # optimiser.apply sums gradients over replicas; dividing keeps the mean.
            scaled = loss / tf.distribute.get_strategy().num_replicas_in_sync
        grads = tape.gradient(scaled, variables)
        grads_finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(grad)) for grad in grads if grad is not None])
        code = tf.where(tf.math.is_finite(loss), tf.where(grads_finite, 0.0, 2.0), 1.0)
        check = self.finite_check
        first = tf.where(check[0] > 0, check[:2], tf.stack([code, check[2]]))
        self.finite_check.assign(tf.concat([first, check[2:] + 1.0], axis=0))
        self.optimizer.apply(grads, variables)
        return self._logs(self._accumulate(loss, fit, batch))

    def test_step(self, batch):
        loss, fit = self._loss(batch)
        return self._logs(self._accumulate(loss, fit, batch))

    def call(self, inputs, offsets):
        return self.model(inputs, offsets)


# --------------------------------------------------------------------------------------------------
# schedule and history


class _SharedSchedule(keras.callbacks.Callback):
    """Every optimiser step's learning rate from `ptycholib.schedules.LearningRateSchedule`.

    Also each epoch's physics weight (`_Module.physics_weight`). The rate is assigned only when it
    changes: once per epoch for the constant and plateau schedules, every step for cosine and
    onecycle.
    """

    def __init__(self, optimizer, schedule):
        super().__init__()
        self.optimizer, self.schedule = optimizer, schedule
        self.epoch, self._assigned = 0, None

    def _set_rate(self, step):
        rate = self.schedule.learning_rate(self.epoch, step)
        if rate != self._assigned:
            self.optimizer.learning_rate.assign(rate)
            self._assigned = rate

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self._set_rate(0)
        self.model.physics_weight.assign(self.model.plan[epoch].physics_weight)

    def on_train_batch_begin(self, batch, logs=None):
        if self.schedule.varies_per_step and batch > 0:
            self._set_rate(batch)


class _History(keras.callbacks.Callback):
    """Build each epoch's record from what training actually used; log it and hand it on.

    It also feeds the epoch's monitored loss (validation loss, or training loss without validation
    groups) to the learning-rate schedule, and, with ``restore_best``, keeps a copy of the best
    epoch's weights in memory; `restore_best_weights` loads them when all stages are done. It stops
    early too: the stages are one ``fit`` each, and Keras's EarlyStopping would start afresh in
    every one.
    """

    def __init__(self, records, callback, *, restore_best=False, patience=None):
        super().__init__()
        self.records, self.callback, self.restore_best = records, callback, restore_best
        self.best_weights = None
        self.epoch_learning_rate = math.nan
        self.patience, self.best, self.waited, self.stopped = patience, math.inf, 0, False

    def on_epoch_begin(self, epoch, logs=None):
        # the rate of the epoch's first optimiser step is the one recorded
        self.epoch_learning_rate = self.model.lr_schedule.learning_rate(epoch, 0)

    def on_epoch_end(self, epoch, logs=None):
        module, logs = self.model, logs if logs is not None else {}
        entry = module.plan[epoch]
        means = {name: float(logs.get(name, math.nan)) for name in _EPOCH_MEANS}
        val_means = {f"val_{name}": float(logs.get(f"val_{name}", math.nan)) if module.has_validation else math.nan
                     for name in _EPOCH_MEANS}
        loss, val_loss = means["loss"], val_means["val_loss"]
        module.lr_schedule.record(val_loss if module.has_validation else loss)
        best_epoch = module.lr_schedule.best_epoch
        if self.restore_best and best_epoch == entry.epoch:
            self.best_weights = network.get_weights(module.model)
        record = {
            "epoch": entry.epoch,
            "stage": entry.stage,
            "learning_rate": float(self.epoch_learning_rate),
            "physics_weight": float(entry.physics_weight),
            "loss": loss,
            "val_loss": val_loss,
            "deviance": means["deviance"],
            "val_deviance": val_means["val_deviance"],
            "amplitude_mae": means["amplitude_mae"],
            "val_amplitude_mae": val_means["val_amplitude_mae"],
            "best_epoch": best_epoch,
        }
        # Later callbacks (CSVLogger, MLflow) see the whole record (Keras's CSVLogger adds the epoch itself).
        logs.update({key: value for key, value in record.items() if key != "epoch"})
        self.records.append(record)
        if self.callback is not None:
            self.callback(dict(record))
        if self.patience is not None and module.has_validation:
            if schedules.is_improvement(val_loss, self.best):
                self.best, self.waited = val_loss, 0
            else:
                self.waited += 1
                if self.waited >= self.patience:
                    self.stopped = module.stop_training = True

    def restore_best_weights(self):
        """Load the best epoch's weights (only kept with ``restore_best``)."""
        if self.best_weights is not None:
            network.set_weights(self.model.model, self.best_weights)


class _FiniteGuard(keras.callbacks.Callback):
    """Stop training after an epoch in which a loss or gradient was not finite, naming the first such batch.

    Every step is checked on the device (`_Module.finite_check`), and the result is read once per
    epoch: no synchronisation per step. At the end of that epoch (before its record and backup) it
    raises `ptycholib.batching.NonFiniteLossError`.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self.model.finite_check.assign(tf.zeros(3))

    def on_epoch_end(self, epoch, logs=None):
        code, batch, _ = (int(value) for value in self.model.finite_check.numpy())
        if code:
            raise batching.NonFiniteLossError(epoch, batch, "loss" if code == 1 else "gradient")


class _Backup(keras.callbacks.BackupAndRestore):
    """Keras's BackupAndRestore in ``log_dir/backup``, after every epoch, plus the rest of the run's state.

    ``latest.weights.h5`` (HDF5: weights, Adam's moments and step count) and
    ``training_metadata.json`` are Keras's; ``state.json`` adds the history, the schedule's losses
    and the early-stopping counters, ``best.npz`` (``allow_pickle=False``) the best epoch's weights
    when they are kept. None of them is a pickle. Restoring happens once, in `restore`, before the
    first stage's ``fit`` (the stages are one ``fit`` each; Keras's own restore in every
    ``on_train_begin`` would reload a stale backup).
    """

    def __init__(self, log_dir, history):
        super().__init__(backup_dir=_checkpoint_dir(log_dir), delete_checkpoint=False)
        self.history = history

    def on_train_begin(self, logs=None):
        pass

    def _save_model(self):
        # Keras's files, each written beside its place and renamed: a kill leaves the last epoch's backup whole.
        os.makedirs(self.backup_dir, exist_ok=True)
        history, module = self.history, self.model
        staged = os.path.join(self.backup_dir, "staged.weights.h5")
        module.save_weights(staged, overwrite=True)
        if history.best_weights is not None:
            with open(os.path.join(self.backup_dir, "staged.npz"), "wb") as handle:
                np.savez(handle, **history.best_weights)
        state = {
            "epoch": self._current_epoch,
            "records": history.records,
            "losses": list(module.lr_schedule.losses),
            "early_stopping": {"best": history.best, "waited": history.waited, "stopped": history.stopped},
            "best_weights": history.best_weights is not None,
        }
        for name, values in (("staged_metadata.json", {"epoch": self._current_epoch, "batch": 0}),
                             ("staged_state.json", state)):
            with open(os.path.join(self.backup_dir, name), "w") as handle:
                json.dump(values, handle)
        os.replace(staged, self._weights_path)
        if history.best_weights is not None:
            os.replace(os.path.join(self.backup_dir, "staged.npz"), os.path.join(self.backup_dir, "best.npz"))
        os.replace(os.path.join(self.backup_dir, "staged_metadata.json"), self._training_metadata_path)
        os.replace(os.path.join(self.backup_dir, "staged_state.json"), os.path.join(self.backup_dir, "state.json"))

    def restore(self, module, state):
        """Load the backup into ``module`` (compiled) and the history; return the first epoch to run."""
        try:
            module.load_weights(self._weights_path)
        except (OSError, ValueError) as error:
            raise ValueError(f"the backup {self._weights_path} cannot be read ({error}); train afresh.") from None
        history = self.history
        history.records[:] = [dict(record) for record in state["records"]]
        module.lr_schedule.losses = [float(loss) for loss in state["losses"]]
        stopping = state["early_stopping"]
        history.best, history.waited, history.stopped = float(stopping["best"]), int(stopping["waited"]), bool(stopping["stopped"])
        if state["best_weights"]:
            with np.load(os.path.join(self.backup_dir, "best.npz"), allow_pickle=False) as saved:
                history.best_weights = {name: saved[name] for name in saved.files}
        return int(state["epoch"])


def _checkpoint_dir(log_dir):
    return os.path.join(log_dir, "backup")


def _resume_from(log_dir):
    """The backup's ``state.json`` (a dict); ValueError when there is none or it does not match Keras's."""
    folder = _checkpoint_dir(log_dir)
    try:
        with open(os.path.join(folder, "state.json")) as handle:
            state = json.load(handle)
        with open(os.path.join(folder, "training_metadata.json")) as handle:
            epoch = json.load(handle)["epoch"]
    except FileNotFoundError:
        raise ValueError(f"nothing to resume in {log_dir}: no backup/ (no epoch of that run completed).") from None
    if epoch != state["epoch"] or not os.path.isfile(os.path.join(folder, "latest.weights.h5")):
        raise ValueError(f"the backup in {folder} is incomplete (interrupted while it was written); train afresh.")
    return state


# --------------------------------------------------------------------------------------------------
# set-up: devices, trainable parts, logging


def _strategy(training_config):
    """The tf.distribute strategy for the config's Lightning-style ``accelerator`` / ``devices`` / ``strategy``."""
    if distributed.is_multi_worker():  # TF_CONFIG lists several tasks: one replica per worker (docs/cluster.md)
        return distributed.multi_worker_strategy()
    name = str(training_config.strategy).lower()
    devices = int(training_config.devices)
    if name in ("auto", "default", "none", "single_device") and devices == 1:
        return tf.distribute.get_strategy()
    if name not in ("auto", "mirrored", "ddp", "ddp_spawn", "ddp_cpu", "ddp_find_unused_parameters_true"):
        raise ValueError(
            f"strategy={training_config.strategy!r} has no TensorFlow equivalent; use 'auto' (one device) or "
            "'mirrored' / 'ddp' (tf.distribute.MirroredStrategy over `devices` devices)."
        )
    accelerator = str(training_config.accelerator).lower()
    kind = {"cpu": "CPU", "gpu": "GPU", "cuda": "GPU"}.get(accelerator)
    if kind is None:
        kind = "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
    available = [d.name for d in tf.config.list_logical_devices(kind)]
    if len(available) < devices:
        raise ValueError(
            f"devices={devices} {kind} devices were requested for MirroredStrategy but TensorFlow sees "
            f"{len(available)} ({available}); lower `devices`, or for CPU replicas call "
            "tf.config.set_logical_device_configuration before TensorFlow starts."
        )
    return tf.distribute.MirroredStrategy(devices=available[:devices])


def _bad_pixels_mask(bad_pixels, size):
    """The (N, N) boolean mask, checked, or None when no pixel is bad."""
    if bad_pixels is None:
        return None
    mask = np.asarray(physics.to_numpy(bad_pixels))
    if mask.shape != (size, size) or mask.dtype.kind not in "biu":
        raise ValueError(f"bad_pixels must be a boolean ({size}, {size}) mask; got {mask.dtype} of shape {mask.shape}.")
    mask = mask.astype(bool)
    if mask.all():
        raise ValueError("bad_pixels marks every detector pixel; nothing is left to train on.")
    return mask if mask.any() else None


def _set_trainable(model, epochs, training_config, supervised):
    """Make trainable what trains in ``epochs`` (here: one stage, which Keras compiles as one ``fit``)."""
    for prefix, conv in network._named_convs(model.net).items():
        conv.trainable = not (epochs[0].freeze_encoder and prefix.startswith("encoder."))
    model.physics.probe.trainable = not supervised and any(entry.probe_trainable for entry in epochs)
    model.physics.log_intensity_scale.trainable = not supervised and training_config.intensity_scale_trainable


class _MlflowLogger(keras.callbacks.Callback):
    """Each epoch's record to an open `ptycholib.tracking.MlflowRun` (a Keras callback; the run has the configs)."""

    def __init__(self, run):
        super().__init__()
        self.run = run

    def on_epoch_end(self, epoch, logs=None):
        self.run.log_metrics(logs or {}, step=epoch)


@contextlib.contextmanager
def _logging(training_config, log_dir, model_config, mlflow_run=None):
    """Yield the run's Keras logging callbacks.

    A CSV log (``log_dir/metrics.csv``, one row per epoch, the same file as the torch backend's)
    unless ``logger='none'``, plus MLflow with ``logger='mlflow'``: ``mlflow_run``, or a run of
    `ptycholib.tracking.start_run` that lasts as long as the context.
    """
    callbacks = []
    if training_config.logger != "none" and log_dir is not None:
        os.makedirs(log_dir, exist_ok=True)
        csv_path = os.path.join(log_dir, "metrics.csv")
        if os.path.exists(csv_path):  # every stage appends to it
            os.remove(csv_path)
        callbacks.append(keras.callbacks.CSVLogger(csv_path, append=True))
    with contextlib.ExitStack() as stack:
        if training_config.logger == "mlflow":
            if mlflow_run is None:
                mlflow_run = stack.enter_context(tracking.start_run(model_config, training_config, log_dir))
            if mlflow_run is not None:  # None in the other processes of a multi-process run
                callbacks.append(_MlflowLogger(mlflow_run))
        yield callbacks


# --------------------------------------------------------------------------------------------------
# public


def train(
    model,
    inputs,
    offsets,
    amplitudes,
    training_config,
    *,
    target_patches=None,
    validation_fraction=None,
    log_dir=None,
    progress=True,
    callback=None,
    mlflow_run=None,
    bad_pixels=None,
    resume=False,
):
    """Train a model in place with the configured multi-stage schedule.

    Parameters
    ----------
    model : PhysicsModel
        From `ptycholib.tensorflow.network.build_model`; its weights are updated in place.
    inputs : ndarray or tensor of shape (B, C, N, N), float32
        Normalised amplitudes ``x = g * a`` of the training groups.
    offsets : ndarray or tensor of shape (B, C, 2)
        Position minus group mean in pixels, last axis ``(x, y)``.
    amplitudes : ndarray or tensor of shape (B, C, N, N), float32
        Measured amplitudes ``a`` (square roots of counts) that the loss compares against.
    training_config : ptycholib.config.TrainingConfig
        Uses ``batch_size`` (global, over all devices), ``learning_rate`` and ``lr_schedule`` with its
        parameters (`ptycholib.schedules`), ``nll_weight``, ``mae_weight``, the stages and
        physics-weight schedule (`ptycholib.batching.epoch_plan`), ``probe_trainable``,
        ``intensity_scale_trainable``, ``seed`` (validation split and each epoch's batch order, both
        from `ptycholib.batching`, so the two backends see the same batches),
        ``early_stopping_patience`` (on the validation loss) and ``early_stopping_restore_best`` (the
        model ends with the weights of the epoch of lowest validation loss, kept in memory),
        ``logger``, ``precision`` and ``accelerator`` / ``devices`` / ``strategy`` (see Notes).
    target_patches : ndarray of shape (B, K, N, N), complex64, optional
        Ground-truth patches (K = ``n_object_channels``: C, or one per group at the group's mean
        position when ``object_big=False``); required (and only used) when ``model_type='supervised'``.
    validation_fraction : float, optional
        Fraction of groups held out (`ptycholib.batching.split_validation`, seeded); default
        ``training_config.validation_fraction``.
    log_dir : str or path-like, optional
        Folder for ``metrics.csv`` (one row per epoch, the columns of the records; not with
        ``logger='none'``) and, with ``logger='mlflow'``, the MLflow file store ``mlruns/`` (unless
        ``MLFLOW_TRACKING_URI`` is set). None: no files.
    progress : bool
        Show a progress bar.
    callback : callable, optional
        Called after every epoch with that epoch's record (a dict, see Returns).
    mlflow_run : ptycholib.tracking.MlflowRun, optional
        With ``logger='mlflow'``, the open run that gets each epoch's record (what
        `ptycholib.workflow.train_model` passes); default: a new run for this call.
    bad_pixels : ndarray of shape (N, N), bool, optional
        Detector pixels left out of the loss (True = not measured; ``PtychoData.bad_pixels``).
    resume : bool
        Continue the run whose checkpoints are in ``log_dir`` from its last complete epoch (weights,
        optimiser, schedule position, batch order, history); the model's own weights are replaced.
        The config and data must be the run's.

    Returns
    -------
    list of dict
        One per epoch run, with the keys of `ptycholib.tracking.HISTORY_COLUMNS`: ``epoch, stage,
        learning_rate, physics_weight, loss, val_loss, deviance, val_deviance, amplitude_mae,
        val_amplitude_mae, best_epoch`` (``val_*`` are NaN without validation groups; ``deviance``
        and ``amplitude_mae`` are NaN for ``model_type='supervised'``), with the physics weight that
        the epoch used and the learning rate of its first optimiser step (``cosine`` and
        ``onecycle`` change it every step). ``deviance`` is the Poisson deviance per pixel
        (`ptycholib.metrics.poisson_deviance`, about 1 at the noise floor), the readable version of
        the loss, which it leaves unchanged. ``best_epoch`` is the epoch of lowest monitored loss so
        far (validation loss, or training loss without validation groups); after early stopping
        with ``early_stopping_restore_best`` the model holds that epoch's weights (the last record's
        ``best_epoch``). Shorter than ``nepochs`` only after early stopping.

    Notes
    -----
    Keras ``fit`` trains. ``strategy='auto'`` with one device uses the default strategy;
    ``'mirrored'`` / ``'ddp'`` or more than one device ``tf.distribute.MirroredStrategy`` over that
    many TensorFlow devices, with ``batch_size`` split over them and the last partial batch dropped.
    ``precision='bf16-mixed'`` makes the convolutions compute in bfloat16 during training (Keras
    ``mixed_bfloat16`` policy; weights, heads' activations and physics stay float32), about 3x
    faster on CPUs with AMX; the model predicts in float32 again afterwards. With ``log_dir``, every
    epoch is backed up in ``log_dir/backup`` (`_Backup`: Keras's BackupAndRestore, HDF5 and JSON,
    no pickles), which ``resume`` continues from. A non-finite loss or gradient raises
    `ptycholib.batching.NonFiniteLossError` (epoch and first bad batch) at the end of that epoch,
    before its record and backup.
    """
    if not isinstance(model, network.PhysicsModel):
        raise TypeError(f"train needs the model from build_model; got {type(model).__name__}.")
    inputs, offsets, amplitudes, target_patches = (
        values if values is None or batching.is_streamed(values) else physics.to_numpy(values)
        for values in (inputs, offsets, amplitudes, target_patches)
    )
    data = batching.prepare_training_arrays(
        model.model_config, training_config, inputs, offsets, amplitudes,
        target_patches=target_patches, validation_fraction=validation_fraction,
    )
    if resume and log_dir is None:
        raise ValueError("resume=True needs the log_dir of the run to continue.")
    bad_pixels = _bad_pixels_mask(bad_pixels, model.model_config.N)
    resumed = _resume_from(log_dir) if resume else None
    strategy = _strategy(training_config)
    replicas, batch_size = strategy.num_replicas_in_sync, training_config.batch_size
    if replicas > 1:
        # A partial batch would leave some replica an empty batch, which TensorFlow cannot train on.
        if batch_size % replicas:
            raise ValueError(f"batch_size={batch_size} must be a multiple of the {replicas} devices of the strategy.")
        if len(data.train_indices) < batch_size:
            raise ValueError(
                f"{len(data.train_indices)} training groups are fewer than one batch of {batch_size} on {replicas} devices."
            )
    if len(data.train_indices) == 0:
        fraction = training_config.validation_fraction if validation_fraction is None else validation_fraction
        raise ValueError(f"no training groups: {len(data.val_indices)} groups with validation_fraction={fraction}.")
    sampler = _BatchSampler(data.train_indices, batch_size, shuffle=True, seed=training_config.seed,
                            drop_remainder=replicas > 1)
    validation = _BatchSampler(data.val_indices, batch_size, shuffle=False, seed=training_config.seed,
                               drop_remainder=replicas > 1)
    lr_schedule = schedules.LearningRateSchedule(training_config, len(sampler))
    is_default = strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy()
    with strategy.scope():
        if is_default:
            work = model
        else:  # a copy whose variables the strategy creates (mirrored over its devices)
            work = network.build_model(model.model_config, physics.to_numpy(model.probe), 1.0)
            network.set_weights(work, network.get_weights(model))
        module = _Module(work, data.plan, training_config, lr_schedule, supervised=data.supervised,
                         has_validation=len(validation) > 0, bad_pixels=bad_pixels)
        # epsilon as torch.optim.Adam's default, so that both backends take the same steps.
        optimizer = keras.optimizers.Adam(learning_rate=data.plan[0].learning_rate, epsilon=1e-8)
        optimizer.build(list(network._canonical_parameters(work).values()))
    records = []
    early_stopping = training_config.early_stopping_patience is not None and module.has_validation
    history = _History(records, callback, restore_best=early_stopping and training_config.early_stopping_restore_best,
                       patience=training_config.early_stopping_patience)
    # The guard before the history: a broken epoch reaches neither the history nor a backup.
    callbacks = [_SharedSchedule(optimizer, lr_schedule), _FiniteGuard(), history]
    start = 0
    if log_dir is not None:
        backup = _Backup(log_dir, history)
        callbacks.append(backup)
        if resumed is not None:
            backup.set_model(module)
            with strategy.scope():
                module.compile(optimizer=optimizer, jit_compile=False)
            start = backup.restore(module, resumed)
    groups = _Groups(data.groups)
    val_data = groups.batches(validation, [0]) if module.has_validation else None
    with _logging(training_config, log_dir, model.model_config, mlflow_run) as loggers:
        module.set_precision(_PRECISIONS[data.precision])
        try:
            for stage in sorted({entry.stage for entry in data.plan}):
                epochs = [entry for entry in data.plan if entry.stage == stage and entry.epoch >= start]
                if not epochs or history.stopped:  # done before the interruption
                    continue
                _set_trainable(work, epochs, training_config, data.supervised)
                with strategy.scope():
                    module.compile(optimizer=optimizer, jit_compile=False)
                # Keras keeps one iterator over the stage's epochs because steps_per_epoch is given.
                module.fit(
                    groups.batches(sampler, [entry.epoch for entry in epochs]),
                    steps_per_epoch=len(sampler),
                    validation_data=val_data,
                    initial_epoch=epochs[0].epoch,
                    epochs=epochs[-1].epoch + 1,
                    callbacks=callbacks + loggers,
                    verbose=1 if progress else 0,
                    shuffle=False,  # the order comes from ptycholib.batching
                )
                if history.stopped:
                    break
            history.restore_best_weights()
        finally:
            module.set_precision("float32")  # prediction and parity run in float32
    if work is not model:
        network.set_weights(model, network.get_weights(work))
    return records


def _predict_function(model, precision="float32"):
    """One batch's illuminated patches through a ``tf.function`` traced once per model and precision."""
    cache = model.__dict__.setdefault("_ptycholib_predict", {})
    if precision not in cache:

        @tf.function(reduce_retracing=True, jit_compile=_INFERENCE_JIT)
        def compiled(x, offsets):
            patches = network.predict_object(model, x)
            return physics.group_views(model.model_config, patches, offsets, window=model.window)

        def function(x, offsets):
            # Keras reads the convolutions' dtype policy when tracing, so set it around every call.
            convs = network._named_convs(model.net).values()
            for conv in convs:
                conv.dtype_policy = _INFERENCE_POLICIES[precision]
            try:
                return compiled(x, offsets)
            finally:
                for conv in convs:
                    conv.dtype_policy = "float32"

        cache[precision] = function
    return cache[precision]


def predict_patches(model, inputs, offsets, *, batch_size, precision="float32", progress=False):
    """Predict the object patches of many groups in batches.

    Parameters
    ----------
    model : PhysicsModel
    inputs, offsets : ndarray or tensor
        As in `network.forward_model`, for any number of groups.
    batch_size : int
        Groups per forward pass (`ptycholib.workflow.inference_batch_size` picks one for throughput).
    precision : {"float32", "bfloat16"}
        The convolutions' precision (``inference.precision``); activations, physics and the
        returned patches are float32 / complex64.
    progress : bool
        Show a progress bar over the batches.

    Returns
    -------
    ndarray of shape (B, C, N, N), complex64
        The patches the physics model illuminates: group-canvas views (``object_big`` and C > 1),
        otherwise the network's patches (``forward_model(...)[0]``). Groups never mix (SPEC 4.7).
    """
    if not isinstance(model, network.PhysicsModel):
        raise TypeError(f"predict_patches needs the model from build_model; got {type(model).__name__}.")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer.")
    if precision not in _INFERENCE_POLICIES:
        raise ValueError(f"precision={precision!r} is not supported; allowed values: 'float32', 'bfloat16'.")
    cfg = model.model_config
    channels, size = cfg.n_channels, cfg.N
    inputs = batching.as_group_array("inputs", physics.to_numpy(inputs), (len(inputs), channels, size, size), np.float32)
    offsets = batching.as_group_array("offsets", physics.to_numpy(offsets), (len(inputs), channels, 2), np.float64)
    predict = _predict_function(model, precision)
    out = np.empty(inputs.shape, dtype=np.complex64)
    starts = range(0, len(inputs), int(batch_size))
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="predict", unit="batch")
    for start in starts:
        stop = start + int(batch_size)
        out[start:stop] = physics.to_numpy(predict(inputs[start:stop], offsets[start:stop]))
    return out


def loss_gradients(model, inputs, offsets, amplitudes, training_config, *, physics_weight=1.0, target_patches=None,
                   bad_pixels=None):
    """Return the gradient of one batch's training loss with respect to every canonical weight.

    Parameters
    ----------
    model : PhysicsModel
    inputs, offsets, amplitudes : ndarray
        One batch, shapes as in `train`.
    training_config : ptycholib.config.TrainingConfig
        ``nll_weight`` and ``mae_weight`` of the loss.
    physics_weight : float
        The schedule's ``p`` for this step.
    target_patches : ndarray, optional
        Ground truth for ``model_type='supervised'``.
    bad_pixels : ndarray of shape (N, N), bool, optional
        Detector pixels left out of the loss, as in `train`.

    Returns
    -------
    dict of str to ndarray
        Keys and layouts of `ptycholib.tensorflow.network.get_weights`; ``physics.probe`` is
        ``dL/dRe + i dL/dIm`` (torch's convention for complex parameters). Frozen parts included
        (zero where the loss does not depend on them). Used by the parity tests (SPEC section 8).
    """
    parameters = network._canonical_parameters(model)
    # Watched explicitly: a variable frozen by Keras's flag still gets its gradient.
    watched = [parameter.value for parameter in parameters.values()]
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(watched)
        x = physics.to_tensor(inputs)
        if model.model_config.model_type == "supervised":
            target_patches = physics.to_numpy(target_patches)
            loss = _supervised_loss(
                model.net, x, physics.to_tensor(np.abs(target_patches)),
                physics.to_tensor(np.angle(target_patches)),
            )
        else:
            loss = _pinn_loss(
                model, x, physics.to_tensor(offsets), physics.to_tensor(amplitudes),
                float(physics_weight), float(training_config.nll_weight), float(training_config.mae_weight),
                _bad_pixels_mask(bad_pixels, model.model_config.N),
            )
    grads = tape.gradient(loss, watched, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return {name: network._to_canonical(name, physics.to_numpy(grad)) for name, grad in zip(parameters, grads)}
