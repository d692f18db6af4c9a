"""Training and batched prediction with Keras ``fit`` (SPEC sections 4.6 and Q7).

`train` runs the multi-stage schedule of `ptycholib.batching.epoch_plan` with Adam on the arrays that
`ptycholib.batching.prepare_training_arrays` checks and splits: every epoch applies its physics weight
and trainable parts (encoder, probe), every optimiser step its learning rate from
`ptycholib.schedules`, and batches follow `ptycholib.batching.epoch_order`, so both backends see the
same batches. The loss of an epoch with physics weight ``p`` is
``p * (nll_weight * NLL + mae_weight * MAE) + (1 - p) * MAE`` on diffraction amplitudes
(``model_type='pinn'``), or ``mean|A - |Y|| + mean|phi - angle(Y)|`` against ground-truth patches
(``model_type='supervised'``). ``ptycholib.torch.training`` is the same text with Lightning.

Keras: a Keras model holds the loss and its ``train_step``, callbacks set the rates and record each
epoch, and every stage is one ``fit``, compiled anew because the trainable parts may change between
stages, while the one Adam optimiser keeps its moments. The groups stay in memory as tensors and a
``tf.data`` pipeline gathers each batch by index.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os

import keras
import numpy as np
import tensorflow as tf

from .. import batching, schedules
from . import network, physics

__all__ = ["train", "predict_patches", "loss_gradients"]

_PRECISIONS = {"32": "float32", "bf16-mixed": "mixed_bfloat16"}  # Keras's dtype policies
_INFERENCE_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}  # inference.precision -> policy
_INFERENCE_JIT = False  # XLA for prediction: measured by `ptycholib bench inference` (docs/results.md)


# --------------------------------------------------------------------------------------------------
# losses


def _pinn_loss(model, x, offsets, amplitudes, physics_weight, nll_weight, mae_weight):
    _, predicted = model(x, offsets)
    mae = physics.amplitude_mae(predicted, amplitudes)
    nll = physics.poisson_nll(predicted, amplitudes)
    return physics_weight * (nll_weight * nll + mae_weight * mae) + (1.0 - physics_weight) * mae


def _supervised_loss(net, x, target_amplitude, target_phase):
    amplitude, phase = net(x)
    return tf.reduce_mean(tf.abs(amplitude - target_amplitude)) + tf.reduce_mean(tf.abs(phase - target_phase))


# --------------------------------------------------------------------------------------------------
# data: whole groups in memory, batches gathered by index


class _Groups:
    """The groups as tensors: ``groups[indices]`` is one batch (a dict of tensors, one ``tf.gather`` each)."""

    def __init__(self, groups):
        self.tensors = {name: tf.constant(value) for name, value in groups.items()}

    def __len__(self):
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, indices):
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

    def __init__(self, model, plan, training_config, lr_schedule, *, supervised, has_validation):
        super().__init__()
        self.model = model
        self.plan = plan
        self.training_config = training_config
        self.supervised = supervised
        self.lr_schedule = lr_schedule
        self.has_validation = has_validation
        self.physics_weight = self.add_weight(
            shape=(), initializer="ones", trainable=False, name="physics_weight", dtype="float32"
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.built = True  # every variable exists: no symbolic build (MirroredStrategy would ask for one)

    @property
    def metrics(self):
        return [self.loss_tracker]

    def set_precision(self, policy):
        """Give every convolution the Keras dtype policy ``policy`` (weights stay float32)."""
        for conv in network._named_convs(self.model.net).values():
            conv.dtype_policy = policy

    # steps ----------------------------------------------------------------------------------------

    def _loss(self, batch):
        if self.supervised:
            return _supervised_loss(self.model.net, batch["inputs"], batch["amplitude"], batch["phase"])
        return _pinn_loss(
            self.model,
            batch["inputs"],
            batch["offsets"],
            batch["amplitudes"],
            self.physics_weight,
            self.training_config.nll_weight,
            self.training_config.mae_weight,
        )

    def _accumulate(self, loss, batch):
        self.loss_tracker.update_state(loss, sample_weight=tf.cast(tf.shape(batch["inputs"])[0], tf.float32))

    def train_step(self, batch):
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            loss = self._loss(batch)
            # optimiser.apply sums gradients over replicas; dividing keeps the mean.
            scaled = loss / tf.distribute.get_strategy().num_replicas_in_sync
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        self._accumulate(loss, batch)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, batch):
        self._accumulate(self._loss(batch), batch)
        return {"loss": self.loss_tracker.result()}

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
        loss = float(logs.get("loss", math.nan))
        val_loss = float(logs["val_loss"]) if module.has_validation and "val_loss" in logs else math.nan
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
            "best_epoch": best_epoch,
        }
        # Later callbacks (CSVLogger, MLflow) see the schedule next to the losses.
        logs.update({key: record[key] for key in ("stage", "learning_rate", "physics_weight", "best_epoch")})
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


# --------------------------------------------------------------------------------------------------
# set-up: devices, trainable parts, logging


def _strategy(training_config):
    """The tf.distribute strategy for the config's Lightning-style ``accelerator`` / ``devices`` / ``strategy``."""
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


def _set_trainable(model, epochs, training_config, supervised):
    """Make trainable what trains in ``epochs`` (here: one stage, which Keras compiles as one ``fit``)."""
    for prefix, conv in network._named_convs(model.net).items():
        conv.trainable = not (epochs[0].freeze_encoder and prefix.startswith("encoder."))
    model.physics.probe.trainable = not supervised and any(entry.probe_trainable for entry in epochs)
    model.physics.log_intensity_scale.trainable = not supervised and training_config.intensity_scale_trainable


@contextlib.contextmanager
def _logging(training_config, log_dir, model_config):
    """Yield the run's Keras logging callbacks; an MLflow run lasts as long as the context.

    A CSV log (``log_dir/metrics.csv``, one row per epoch, the same file as the torch backend's)
    unless ``logger='none'``, plus MLflow with ``logger='mlflow'``, which gets the configs as
    parameters.
    """
    callbacks = []
    if training_config.logger != "none" and log_dir is not None:
        os.makedirs(log_dir, exist_ok=True)
        csv_path = os.path.join(log_dir, "metrics.csv")
        if os.path.exists(csv_path):  # every stage appends to it
            os.remove(csv_path)
        callbacks.append(keras.callbacks.CSVLogger(csv_path, append=True))
    if training_config.logger != "mlflow":
        yield callbacks
        return
    try:
        import mlflow
    except ImportError as error:
        raise ValueError(
            "logger='mlflow' needs MLflow, which is not installed; `pip install ptycholib[mlflow]` or set "
            "logger='csv'."
        ) from error
    if "MLFLOW_TRACKING_URI" not in os.environ:
        # MLflow 3 keeps its plain-file store only on request; it needs no database package.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        if log_dir is not None:
            mlflow.set_tracking_uri(f"file:{os.path.abspath(os.path.join(log_dir, 'mlruns'))}")
    with mlflow.start_run():
        hyperparameters = {f"model.{k}": v for k, v in dataclasses.asdict(model_config).items()}
        hyperparameters.update({f"training.{k}": v for k, v in dataclasses.asdict(training_config).items()})
        mlflow.log_params({k: str(v)[:250] for k, v in hyperparameters.items()})

        def log_epoch(epoch, logs):
            values = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float, np.floating))}
            mlflow.log_metrics(values, step=epoch)

        yield callbacks + [keras.callbacks.LambdaCallback(on_epoch_end=log_epoch)]


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
        Folder for ``metrics.csv`` (one row per epoch: epoch, stage, learning_rate, physics_weight,
        loss, val_loss, best_epoch; not with ``logger='none'``) and, with ``logger='mlflow'``, the
        MLflow file store ``mlruns/`` (unless ``MLFLOW_TRACKING_URI`` is set). None: no files.
    progress : bool
        Show a progress bar.
    callback : callable, optional
        Called after every epoch with that epoch's record (a dict, see Returns).

    Returns
    -------
    list of dict
        One per epoch run: ``epoch, stage, learning_rate, physics_weight, loss, val_loss,
        best_epoch`` (``val_loss`` is NaN without validation groups), with the physics weight that
        the epoch used and the learning rate of its first optimiser step (``cosine`` and
        ``onecycle`` change it every step). ``best_epoch`` is the epoch of lowest monitored loss so
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
    faster on CPUs with AMX; the model predicts in float32 again afterwards.
    """
    if not isinstance(model, network.PhysicsModel):
        raise TypeError(f"train needs the model from build_model; got {type(model).__name__}.")
    inputs, offsets, amplitudes, target_patches = (
        None if values is None else physics.to_numpy(values) for values in (inputs, offsets, amplitudes, target_patches)
    )
    data = batching.prepare_training_arrays(
        model.model_config, training_config, inputs, offsets, amplitudes,
        target_patches=target_patches, validation_fraction=validation_fraction,
    )
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
        raise ValueError(f"no training groups: {len(data.groups['inputs'])} groups with validation_fraction={fraction}.")
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
                         has_validation=len(validation) > 0)
        # epsilon as torch.optim.Adam's default, so that both backends take the same steps.
        optimizer = keras.optimizers.Adam(learning_rate=data.plan[0].learning_rate, epsilon=1e-8)
        optimizer.build(list(network._canonical_parameters(work).values()))
    records = []
    early_stopping = training_config.early_stopping_patience is not None and module.has_validation
    history = _History(records, callback, restore_best=early_stopping and training_config.early_stopping_restore_best,
                       patience=training_config.early_stopping_patience)
    callbacks = [_SharedSchedule(optimizer, lr_schedule), history]
    groups = _Groups(data.groups)
    val_data = groups.batches(validation, [0]) if module.has_validation else None
    with _logging(training_config, log_dir, model.model_config) as loggers:
        module.set_precision(_PRECISIONS[data.precision])
        try:
            for stage in sorted({entry.stage for entry in data.plan}):
                epochs = [entry for entry in data.plan if entry.stage == stage]
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
            )
    grads = tape.gradient(loss, watched, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return {name: network._to_canonical(name, physics.to_numpy(grad)) for name, grad in zip(parameters, grads)}
