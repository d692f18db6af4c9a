"""Training and batched prediction with Keras ``fit`` (SPEC section 4.6, Q7).

`train` runs the multi-stage schedule of `ptycholib.batching.epoch_plan` with Adam: a callback sets
each epoch's physics weight and every optimiser step's learning rate (`ptycholib.schedules`); each
stage is compiled anew because the trainable parts (encoder, probe) may change between stages, while the one Adam optimiser keeps its moments.
The loss of an epoch with physics weight ``p`` is
``p * (nll_weight * NLL + mae_weight * MAE) + (1 - p) * MAE`` on diffraction amplitudes
(``model_type='pinn'``), or ``mean|A - |Y|| + mean|phi - angle(Y)|`` against ground-truth patches
(``model_type='supervised'``).
"""

from __future__ import annotations

import dataclasses
import math
import os

import keras
import numpy as np
import tensorflow as tf

from .. import batching, schedules
from . import network, physics

__all__ = ["loss_gradients", "predict_patches", "train"]

_CSV_NAME = "metrics.csv"
_POLICIES = {"32": "float32", "32-true": "float32", "bf16-mixed": "mixed_bfloat16"}


# --------------------------------------------------------------------------------------------------
# losses


def _pinn_loss(model, x, offsets, amplitudes, physics_weight, nll_weight, mae_weight):
    _, predicted = model((x, offsets))
    mae = physics.amplitude_mae(predicted, amplitudes)
    nll = physics.poisson_nll(predicted, amplitudes)
    return physics_weight * (nll_weight * nll + mae_weight * mae) + (1.0 - physics_weight) * mae


def _supervised_loss(net, x, target_amplitude, target_phase):
    amplitude, phase = net(x)
    return tf.reduce_mean(tf.abs(amplitude - target_amplitude)) + tf.reduce_mean(tf.abs(phase - target_phase))


class _Trainer(keras.Model):
    """Keras wrapper that owns the loss, its schedule variable and the epoch-mean loss tracker."""

    def __init__(self, model, *, supervised, nll_weight, mae_weight):
        super().__init__(name="trainer")
        self.model_ = model
        self.supervised = supervised
        self.nll_weight = float(nll_weight)
        self.mae_weight = float(mae_weight)
        self.physics_weight = self.add_weight(
            shape=(), initializer="ones", trainable=False, name="physics_weight", dtype="float32"
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self):
        return [self.loss_tracker]

    def _loss(self, data):
        (x, offsets), target = data
        if self.supervised:
            return _supervised_loss(network._network_of(self.model_), x, target[0], target[1])
        return _pinn_loss(
            self.model_, x, offsets, target, self.physics_weight, self.nll_weight, self.mae_weight
        )

    def train_step(self, data):
        batch = tf.shape(data[0][0])[0]
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            loss = self._loss(data)
            # optimiser.apply sums gradients over replicas; dividing keeps the mean.
            scaled = loss / tf.distribute.get_strategy().num_replicas_in_sync
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        self.loss_tracker.update_state(loss, sample_weight=tf.cast(batch, tf.float32))
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        loss = self._loss(data)
        self.loss_tracker.update_state(loss, sample_weight=tf.cast(tf.shape(data[0][0])[0], tf.float32))
        return {"loss": self.loss_tracker.result()}

    def call(self, inputs):
        return self.model_(inputs)


# --------------------------------------------------------------------------------------------------
# callbacks


class _Schedule(keras.callbacks.Callback):
    """Set the physics weight of each epoch and the learning rate of each step; record the epoch.

    The learning rates come from `ptycholib.schedules.LearningRateSchedule`, which gets each
    epoch's monitored loss (validation loss, or training loss without validation data). The
    callback spans the stages (one ``fit`` each), so it also does early stopping itself: Keras's
    EarlyStopping would start afresh in every ``fit``. With ``restore_best`` it keeps the best
    epoch's weights in memory; `restore_best_weights` loads them when all stages are done.
    """

    def __init__(self, plan, trainer, optimizer, records, callback, patience, *, lr_schedule, model,
                 monitor_validation, restore_best):
        super().__init__()
        self.plan, self.trainer, self.optimizer = plan, trainer, optimizer
        self.records, self.user_callback, self.patience = records, callback, patience
        self.lr_schedule, self.work, self.monitor_validation = lr_schedule, model, monitor_validation
        self.restore_best = restore_best
        self.best, self.waited, self.stopped = math.inf, 0, False
        self.best_weights = None
        self.epoch, self.epoch_learning_rate, self._assigned = 0, math.nan, None

    def _set_learning_rate(self, step):
        rate = self.lr_schedule.learning_rate(self.epoch, step)
        if rate != self._assigned:
            self.optimizer.learning_rate.assign(rate)
            self._assigned = rate
        return rate

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.epoch_learning_rate = self._set_learning_rate(0)
        self.trainer.physics_weight.assign(self.plan[epoch].physics_weight)

    def on_train_batch_begin(self, batch, logs=None):
        if self.lr_schedule.varies_per_step and batch > 0:
            self._set_learning_rate(batch)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        entry = self.plan[epoch]
        val_loss = logs.get("val_loss")
        loss = float(logs.get("loss", math.nan))
        val_loss = float(val_loss) if val_loss is not None else math.nan
        monitored = val_loss if self.monitor_validation else loss
        self.lr_schedule.record(monitored)
        best_epoch = self.lr_schedule.best_epoch
        if self.restore_best and best_epoch == entry.epoch:
            self.best_weights = network.get_weights(self.work)
        record = {
            "epoch": entry.epoch,
            "stage": entry.stage,
            "learning_rate": float(self.epoch_learning_rate),
            "physics_weight": float(entry.physics_weight),
            "loss": loss,
            "val_loss": val_loss,
            "best_epoch": best_epoch,
        }
        # Later callbacks (CSVLogger, MLflow) see the schedule next to the losses.
        logs.update({key: record[key] for key in ("stage", "learning_rate", "physics_weight", "best_epoch")})
        self.records.append(record)
        if self.user_callback is not None:
            self.user_callback(dict(record))
        if self.patience is not None and self.monitor_validation:
            if schedules.is_improvement(val_loss, self.best):
                self.best, self.waited = val_loss, 0
            else:
                self.waited += 1
                if self.waited >= self.patience:
                    self.stopped = True
                    self.trainer.stop_training = True

    def restore_best_weights(self):
        """Load the best epoch's weights (only kept with ``restore_best``)."""
        if self.best_weights is not None:
            network.set_weights(self.work, self.best_weights)


class _MLflowLogger(keras.callbacks.Callback):
    """Log the epoch records to MLflow (only used when ``logger='mlflow'``)."""

    def __init__(self, mlflow_module):
        super().__init__()
        self.mlflow = mlflow_module

    def on_epoch_end(self, epoch, logs=None):
        values = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float, np.floating))}
        self.mlflow.log_metrics(values, step=epoch)


def _start_mlflow(log_dir, model_config, training_config):
    try:
        import mlflow
    except ImportError as error:
        raise ValueError(
            "logger='mlflow' needs MLflow, which is not installed; `pip install ptycholib[mlflow]` or set logger='csv'."
        ) from error
    if "MLFLOW_TRACKING_URI" not in os.environ:
        # MLflow 3 keeps its plain-file store only on request; it needs no database package.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        if log_dir is not None:
            mlflow.set_tracking_uri(f"file:{os.path.abspath(os.path.join(log_dir, 'mlruns'))}")
    run = mlflow.start_run()
    params = {f"model.{k}": v for k, v in dataclasses.asdict(model_config).items()}
    params.update({f"training.{k}": v for k, v in dataclasses.asdict(training_config).items()})
    mlflow.log_params({k: str(v)[:250] for k, v in params.items()})
    return mlflow, run


# --------------------------------------------------------------------------------------------------
# helpers


def _strategy(training_config):
    """Map Lightning-style accelerator/devices/strategy to a tf.distribute strategy."""
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


def _as_array(name, value, shape, dtype):
    array = np.asarray(physics.to_numpy(value))
    if array.shape != shape:
        raise ValueError(f"{name} has shape {array.shape}; expected {shape} (channels-first, see docs/architecture.md).")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or Inf values; clean the data before training.")
    return array.astype(dtype, copy=False)


class _Arrays:
    """The training arrays as tensors, and tf.data pipelines that gather batches from index lists."""

    def __init__(self, inputs, offsets, target):
        self.inputs = tf.constant(inputs)
        self.offsets = tf.constant(offsets)
        self.target = tuple(tf.constant(t) for t in target) if isinstance(target, tuple) else tf.constant(target)

    def _gather(self, index):
        target = tf.nest.map_structure(lambda t: tf.gather(t, index), self.target)
        return (tf.gather(self.inputs, index), tf.gather(self.offsets, index)), target

    def epochs(self, orders, batch_size, drop_remainder):
        """Batches of the given per-epoch orders ``(epochs, n)``, epoch after epoch, in that order."""
        batches = tf.data.Dataset.from_tensor_slices(np.asarray(orders, dtype=np.int64)).flat_map(
            lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=drop_remainder)
        )
        return batches.map(self._gather).prefetch(2)

    def fixed(self, indices, batch_size, drop_remainder):
        """Batches of ``indices`` in the given order (validation)."""
        batches = tf.data.Dataset.from_tensor_slices(np.asarray(indices, dtype=np.int64))
        return batches.batch(batch_size, drop_remainder=drop_remainder).map(self._gather).prefetch(2)


def _set_trainable(model, *, freeze_encoder, probe_trainable, intensity_scale_trainable):
    net = network._network_of(model)
    for prefix, conv in net.convs.items():
        conv.trainable = not (freeze_encoder and prefix.startswith("encoder."))
    if isinstance(model, network.PhysicsModel):
        model.probe_real.trainable = probe_trainable
        model.probe_imag.trainable = probe_trainable
        model.log_intensity_scale.trainable = intensity_scale_trainable


def _set_precision(model, policy):
    """Give every convolution the Keras dtype policy ``policy`` (weights stay float32)."""
    for conv in network._network_of(model).convs.values():
        conv.dtype_policy = policy


def _candidate_variables(model):
    net = network._network_of(model)
    variables = [v for conv in net.convs.values() for v in (conv.kernel, conv.bias)]
    if isinstance(model, network.PhysicsModel):
        variables += [model.probe_real, model.probe_imag, model.log_intensity_scale]
    return variables


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
):
    """Train a model in place with Keras ``fit`` and the configured multi-stage schedule.

    Parameters
    ----------
    model : PhysicsModel
        From `ptycholib.tensorflow.network.build_model`; its weights are updated in place.
    inputs : ndarray of shape (B, C, N, N), float32
        Normalised amplitudes ``x = g * a`` of the training groups.
    offsets : ndarray of shape (B, C, 2)
        Position minus group mean in pixels, last axis ``(x, y)``.
    amplitudes : ndarray of shape (B, C, N, N), float32
        Measured amplitudes ``a`` (square roots of counts) that the loss compares against.
    training_config : ptycholib.config.TrainingConfig
        Batch size, learning rate and ``lr_schedule`` with its parameters (`ptycholib.schedules`),
        loss weights, stages and schedule (`ptycholib.batching.epoch_plan`), ``probe_trainable``,
        ``intensity_scale_trainable``, ``seed`` (validation split and each epoch's batch order,
        both from `ptycholib.batching`, so torch sees the same batches), ``early_stopping_patience``
        (on the validation loss) and ``early_stopping_restore_best`` (the model ends with the
        weights of the epoch of lowest validation loss, kept in memory), ``logger`` and
        ``accelerator``/``devices``/``strategy``
        (``'auto'`` with one device: the default strategy; ``'mirrored'``/``'ddp'`` or more than one
        device: ``tf.distribute.MirroredStrategy`` over that many TensorFlow devices, with
        ``batch_size`` split over them and the last partial batch dropped).
        ``precision``: ``"32"`` (default) or ``"bf16-mixed"``: the convolutions compute in
        bfloat16 during training (Keras ``mixed_bfloat16`` policy; weights, heads' activations and
        physics stay float32), about 3x faster on CPUs with AMX; the model predicts in float32 again
        afterwards.
    target_patches : ndarray of shape (B, K, N, N), complex64, optional
        Ground-truth patches (K = ``n_object_channels``: C, or one per group at the group's mean
        position when ``object_big=False``); required (and only used) when ``model_type='supervised'``.
    validation_fraction : float, optional
        Fraction of groups held out (`ptycholib.batching.split_validation`, seeded); default
        ``training_config.validation_fraction``.
    log_dir : str or path-like, optional
        Folder for ``metrics.csv`` (Keras CSVLogger: epoch, loss, val_loss, learning_rate,
        physics_weight, stage, best_epoch; not with ``logger='none'``) and, with
        ``logger='mlflow'``, the MLflow file store ``mlruns/`` (unless ``MLFLOW_TRACKING_URI`` is set).
    progress : bool
        Show Keras's progress bar.
    callback : callable, optional
        Called after every epoch with that epoch's record (a dict, see Returns).

    Returns
    -------
    list of dict
        One per epoch run: ``epoch, stage, learning_rate, physics_weight, loss, val_loss,
        best_epoch`` (``val_loss`` is NaN without validation groups), with the physics weight that
        the epoch used and the learning rate of its first optimiser step (``cosine`` and
        ``onecycle`` change it every step). ``best_epoch`` is the epoch of lowest monitored loss so
        far (validation loss, or training loss without validation data); after early stopping
        with ``early_stopping_restore_best`` the model holds that epoch's weights (the last record's
        ``best_epoch``). Shorter than ``nepochs`` only after early stopping.
    """
    if not isinstance(model, network.PhysicsModel):
        raise TypeError(f"train needs the model from build_model; got {type(model).__name__}.")
    cfg = model.model_config
    channels, size = cfg.gridsize**2, cfg.N
    inputs = _as_array("inputs", inputs, (len(inputs), channels, size, size), np.float32)
    n_groups = len(inputs)
    offsets = _as_array("offsets", offsets, (n_groups, channels, 2), np.float32)
    supervised = cfg.model_type == "supervised"
    if supervised:
        if target_patches is None:
            raise ValueError("model_type='supervised' needs target_patches (ground-truth patches, (B, K, N, N) complex).")
        target_shape = (n_groups, cfg.n_object_channels, size, size)
        target_patches = _as_array("target_patches", target_patches, target_shape, np.complex64)
        target = (np.abs(target_patches).astype(np.float32), np.angle(target_patches).astype(np.float32))
    else:
        target = _as_array("amplitudes", amplitudes, inputs.shape, np.float32)
        if np.any(target < 0):
            raise ValueError("amplitudes has negative values; pass sqrt(counts) (amplitudes are >= 0).")
    precision = str(getattr(training_config, "precision", "32"))
    if precision not in _POLICIES:
        raise ValueError(f"precision={precision!r} is not supported; allowed values: '32', 'bf16-mixed'.")
    plan = batching.epoch_plan(training_config)
    fraction = training_config.validation_fraction if validation_fraction is None else validation_fraction
    if not 0 <= fraction < 1:
        raise ValueError(f"validation_fraction={fraction!r} must be in [0, 1).")
    train_idx, val_idx = batching.split_validation(n_groups, fraction, training_config.seed)

    strategy = _strategy(training_config)
    is_default = strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy()
    with strategy.scope():
        if is_default:
            work = model
        else:
            work = network.build_model(cfg, np.asarray(model.probe.numpy()), 1.0)
            network.set_weights(work, network.get_weights(model))
        trainer = _Trainer(work, supervised=supervised, nll_weight=training_config.nll_weight, mae_weight=training_config.mae_weight)
        # epsilon as torch.optim.Adam's default, so that both backends take the same steps.
        optimizer = keras.optimizers.Adam(learning_rate=plan[0].learning_rate, epsilon=1e-8)
        optimizer.build(_candidate_variables(work))

    replicas = strategy.num_replicas_in_sync
    batch_size = training_config.batch_size
    if replicas > 1:
        # A partial batch would leave some replica an empty batch, which TensorFlow cannot train on.
        if batch_size % replicas:
            raise ValueError(f"batch_size={batch_size} must be a multiple of the {replicas} devices of the strategy.")
        if len(train_idx) < batch_size:
            raise ValueError(f"{len(train_idx)} training groups are fewer than one batch of {batch_size} on {replicas} devices.")
    if len(train_idx) == 0:
        raise ValueError(f"no training groups: {n_groups} groups with validation_fraction={fraction}.")
    drop_remainder = replicas > 1
    arrays = _Arrays(inputs, offsets, target)
    steps_per_epoch = len(train_idx) // batch_size if drop_remainder else -(-len(train_idx) // batch_size)
    val_data = None
    if len(val_idx) >= (batch_size if drop_remainder else 1):
        val_data = arrays.fixed(val_idx, batch_size, drop_remainder)

    records = []
    monitor_validation = val_data is not None
    restore_best = (
        training_config.early_stopping_patience is not None and monitor_validation
        and training_config.early_stopping_restore_best
    )
    schedule = _Schedule(
        plan, trainer, optimizer, records, callback, training_config.early_stopping_patience,
        lr_schedule=schedules.LearningRateSchedule(training_config, steps_per_epoch), model=work,
        monitor_validation=monitor_validation, restore_best=restore_best,
    )
    extra = []
    if log_dir is not None and training_config.logger != "none":
        os.makedirs(log_dir, exist_ok=True)
        csv_path = os.path.join(log_dir, _CSV_NAME)
        if os.path.exists(csv_path):
            os.remove(csv_path)
        extra.append(keras.callbacks.CSVLogger(csv_path, append=True))
    mlflow_run = None
    if training_config.logger == "mlflow":
        mlflow_module, mlflow_run = _start_mlflow(log_dir, cfg, training_config)
        extra.append(_MLflowLogger(mlflow_module))
    _set_precision(work, _POLICIES[precision])
    try:
        stages = sorted({entry.stage for entry in plan})
        for stage in stages:
            epochs = [entry for entry in plan if entry.stage == stage]
            first = epochs[0]
            _set_trainable(
                work,
                freeze_encoder=first.freeze_encoder,
                probe_trainable=first.probe_trainable and not supervised,
                intensity_scale_trainable=training_config.intensity_scale_trainable and not supervised,
            )
            with strategy.scope():
                trainer.compile(optimizer=optimizer, jit_compile=False)
            # Batch order from ptycholib.batching, the same in both backends; Keras keeps one iterator
            # over the stage's epochs because steps_per_epoch is given.
            orders = [train_idx[batching.epoch_order(len(train_idx), training_config.seed, e.epoch)] for e in epochs]
            trainer.fit(
                arrays.epochs(orders, batch_size, drop_remainder),
                steps_per_epoch=steps_per_epoch,
                validation_data=val_data,
                initial_epoch=first.epoch,
                epochs=epochs[-1].epoch + 1,
                callbacks=[schedule, *extra],
                verbose=1 if progress else 0,
                shuffle=False,  # the order comes from ptycholib.batching
            )
            if schedule.stopped:
                break
        schedule.restore_best_weights()
    finally:
        _set_precision(work, "float32")  # prediction and parity run in float32
        if mlflow_run is not None:
            mlflow_module.end_run()
    if work is not model:
        network.set_weights(model, network.get_weights(work))
    return records


def predict_patches(model, inputs, offsets, *, batch_size, progress=False):
    """Predict the object patches of many groups in batches.

    Parameters
    ----------
    model : PhysicsModel
    inputs : ndarray of shape (B, C, N, N), float32
        Normalised amplitudes ``x = g * a``.
    offsets : ndarray of shape (B, C, 2)
        Position minus group mean in pixels, last axis ``(x, y)``.
    batch_size : int
        Groups per forward pass.
    progress : bool
        Show a Keras progress bar over the batches.

    Returns
    -------
    ndarray of shape (B, C, N, N), complex64
        The patches the physics model illuminates: group-canvas views (``object_big`` and C > 1),
        otherwise the network's patches. Groups never mix (SPEC 4.7).
    """
    if not isinstance(model, network.PhysicsModel):
        raise TypeError(f"predict_patches needs the model from build_model; got {type(model).__name__}.")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer.")
    cfg = model.model_config
    channels, size = cfg.gridsize**2, cfg.N
    inputs = _as_array("inputs", inputs, (len(inputs), channels, size, size), np.float32)
    offsets = _as_array("offsets", offsets, (len(inputs), channels, 2), np.float32)
    predict = _predict_function(model)
    out = np.empty(inputs.shape, dtype=np.complex64)
    starts = range(0, len(inputs), int(batch_size))
    bar = keras.utils.Progbar(len(starts), unit_name="batch") if progress else None
    for step, start in enumerate(starts):
        stop = start + int(batch_size)
        out[start:stop] = predict(tf.constant(inputs[start:stop]), tf.constant(offsets[start:stop])).numpy()
        if bar is not None:
            bar.update(step + 1)
    return out


def _predict_function(model):
    function = getattr(model, "_ptycholib_predict", None)
    if function is None:

        @tf.function(reduce_retracing=True)
        def function(x, offsets):
            return model.illuminated_patches(network.predict_object(model, x), offsets)

        model._ptycholib_predict = function
    return function


def loss_gradients(model, inputs, offsets, amplitudes, training_config, *, physics_weight=1.0, target_patches=None):
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

    Returns
    -------
    dict of str to ndarray
        Keys and layouts of `ptycholib.tensorflow.network.get_weights`; ``physics.probe`` is
        ``dL/dRe + i dL/dIm`` (torch's convention for complex parameters). Frozen parts included.
        Used by the parity tests (SPEC section 8).
    """
    inputs = physics.to_tensor(inputs)
    offsets = physics.to_tensor(offsets)
    variables = network._canonical_variables(model)
    flat = []
    for variable, kind in variables.values():
        flat.extend(variable if kind == "probe" else [variable])
    flat = [variable.value for variable in flat]
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(flat)
        if model.model_config.model_type == "supervised":
            target_patches = np.asarray(target_patches)
            loss = _supervised_loss(
                model.net, inputs, tf.constant(np.abs(target_patches), tf.float32), tf.constant(np.angle(target_patches), tf.float32)
            )
        else:
            loss = _pinn_loss(
                model, inputs, offsets, physics.to_tensor(amplitudes), float(physics_weight),
                float(training_config.nll_weight), float(training_config.mae_weight),
            )
    grads = dict(zip([id(v) for v in flat], tape.gradient(loss, flat, unconnected_gradients=tf.UnconnectedGradients.ZERO)))
    out = {}
    for name, (variable, kind) in variables.items():
        if kind == "probe":
            real, imag = (np.asarray(grads[id(v.value)].numpy(), dtype=np.float32) for v in variable)
            out[name] = (real + 1j * imag).astype(np.complex64)
        else:
            out[name] = network._to_canonical(grads[id(variable.value)].numpy(), kind)
    return out
