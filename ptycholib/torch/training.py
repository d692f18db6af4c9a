"""Training and batched prediction with Lightning (SPEC sections 4.6 and Q7).

`train` runs the multi-stage schedule of `ptycholib.batching.epoch_plan` with Adam on the arrays that
`ptycholib.batching.prepare_training_arrays` checks and splits: every epoch applies its physics weight
and trainable parts (encoder, probe), every optimiser step its learning rate from
`ptycholib.schedules`, and batches follow `ptycholib.batching.epoch_order`, so both backends see the
same batches. The loss of an epoch with physics weight ``p`` is
``p * (nll_weight * NLL + mae_weight * MAE) + (1 - p) * MAE`` on diffraction amplitudes
(``model_type='pinn'``), or ``mean|A - |Y|| + mean|phi - angle(Y)|`` against ground-truth patches
(``model_type='supervised'``). ``ptycholib.tensorflow.training`` is the same text with Keras ``fit``.
Beside the loss, each epoch's record holds the data fit a reader can interpret, computed per
batch from the same prediction without changing the objective: the Poisson deviance per pixel
(`_poisson_deviance`, as `ptycholib.metrics.poisson_deviance`) and the amplitude MAE, for the
training batches and the validation groups (`ptycholib.tracking.HISTORY_COLUMNS`).

Lightning: a LightningModule holds the loss, an ``LRScheduler`` stepped after every optimiser step
(``interval='step'``) sets the rates, and callbacks record each epoch. The groups stay in memory as
tensors and a batch is one ``index_select`` (no per-sample collation, no worker processes); epoch
losses are accumulated on the device and read once per epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import warnings

import lightning as L
import numpy as np
import torch

from .. import batching, schedules, tracking
from . import network, physics

__all__ = ["train", "predict_patches", "loss_gradients"]

_PRECISIONS = {"32": "32-true", "bf16-mixed": "bf16-mixed"}  # Lightning's names
_EPOCH_MEANS = ("loss", "deviance", "amplitude_mae")  # per-epoch means in the history, also as val_*
_INFERENCE_DTYPES = {"float32": None, "bfloat16": torch.bfloat16}  # inference.precision -> autocast dtype


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
    return loss, {"deviance": _poisson_deviance(predicted, amplitudes, bad_pixels), "amplitude_mae": mae.detach()}


def _poisson_deviance(predicted, measured, bad_pixels=None):
    """Poisson deviance per pixel of one batch, as `ptycholib.metrics.poisson_deviance` (float32, no gradient).

    ``2 mean(a^2 log(a^2 / a_hat^2) - (a^2 - a_hat^2))`` with ``0 log 0 = 0``; the log of the ratio
    keeps float32 accurate where ``a_hat^2`` is close to ``a^2``, which is where training ends up.
    ``bad_pixels`` (N, N) are left out of the mean, as from the loss.
    """
    predicted_intensity = predicted.detach().float().square()
    measured_intensity = measured.float().square()
    has_counts = measured_intensity > 0
    ratio = torch.where(has_counts, measured_intensity / predicted_intensity, torch.ones_like(measured_intensity))
    saturated = torch.where(has_counts, measured_intensity * torch.log(ratio), torch.zeros_like(measured_intensity))
    return 2.0 * physics._masked_mean(saturated - (measured_intensity - predicted_intensity), bad_pixels)


def _supervised_loss(net, x, target_amplitude, target_phase):
    amplitude, phase = net(x)
    amplitude, phase = amplitude.float(), phase.float()  # autocast may leave the heads in bfloat16
    return torch.mean(torch.abs(amplitude - target_amplitude)) + torch.mean(torch.abs(phase - target_phase))


# --------------------------------------------------------------------------------------------------
# data: whole groups in memory, batches gathered by index


class _Groups(torch.utils.data.Dataset):
    """The groups as tensors: ``groups[indices]`` is one batch (a dict of tensors, one ``index_select`` each)."""

    def __init__(self, groups):
        # groups read from a file batch by batch (ptycholib.stream.StreamedGroups): the same batches
        self.streamed = groups if batching.is_streamed(groups) else None
        self.tensors = {} if self.streamed is not None else {
            name: torch.as_tensor(np.ascontiguousarray(value)) for name, value in groups.items()}

    def __len__(self):
        return len(self.streamed) if self.streamed is not None else len(next(iter(self.tensors.values())))

    def __getitem__(self, indices):
        if self.streamed is not None:
            return {name: torch.as_tensor(value) for name, value in self.streamed.batch(indices.numpy()).items()}
        return {name: tensor.index_select(0, indices) for name, tensor in self.tensors.items()}


class _BatchSampler(torch.utils.data.Sampler):
    """Index batches of one epoch, in `ptycholib.batching.epoch_order` when shuffled (via ``set_epoch``).

    ``batch_size`` is global: with ``world`` processes each takes ``ceil(batch_size / world)``
    groups per step from its shard (every rank gets the same number of batches; the permutation is
    padded by wrapping around, as torch's DistributedSampler does), so a config means the same
    optimisation on one device or several, as TensorFlow's MirroredStrategy does.
    """

    def __init__(self, indices, batch_size, *, shuffle, seed, rank=0, world=1):
        super().__init__()
        self.indices = torch.as_tensor(indices, dtype=torch.int64)
        self.batch_size = max(1, math.ceil(batch_size / world))
        self.shuffle, self.seed, self.rank, self.world = shuffle, seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def order(self, epoch):
        """The indices in the order of ``epoch``: the same permutation as the TensorFlow backend's."""
        if not self.shuffle:
            return self.indices
        return self.indices[torch.as_tensor(batching.epoch_order(len(self.indices), self.seed, epoch))]

    def _per_rank(self):
        return math.ceil(len(self.indices) / self.world)

    def __len__(self):
        return math.ceil(self._per_rank() / self.batch_size)

    def __iter__(self):
        order = self.order(self.epoch)
        total = self._per_rank() * self.world
        order = torch.cat([order, order[: total - len(order)]]) if total > len(order) else order
        mine = order[self.rank :: self.world]
        return iter(mine.split(self.batch_size))


# --------------------------------------------------------------------------------------------------
# the training step


class _Module(L.LightningModule):
    """The physics-informed model, its loss and the per-epoch schedule (a LightningModule)."""

    def __init__(self, model, plan, training_config, groups, train_idx, val_idx, *, supervised, bad_pixels=None):
        super().__init__()
        self.model = model
        # Not persistent: checkpoints hold what trains, the mask comes with the data.
        self.register_buffer("bad_pixels", None if bad_pixels is None else torch.as_tensor(bad_pixels), persistent=False)
        self.last_loss = None
        self.plan = plan
        self.training_config = training_config
        self.supervised = supervised
        self.groups = groups
        self.train_idx, self.val_idx = train_idx, val_idx
        self.physics_weight = plan[0].physics_weight
        self._frozen = []
        self._sums = {}

    @property
    def has_validation(self):
        return len(self.val_idx) > 0

    # schedule -------------------------------------------------------------------------------------

    def configure_optimizers(self):
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(trainable, lr=self.plan[0].learning_rate)
        sampler = _BatchSampler(self.train_idx, self.training_config.batch_size, shuffle=False, seed=0,
                                rank=self.global_rank, world=self.trainer.world_size)
        self.lr_schedule = schedules.LearningRateSchedule(self.training_config, len(sampler))
        self.lr_scheduler = _SharedSchedule(optimizer, self.lr_schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.lr_scheduler, "interval": "step"}}

    def on_train_epoch_start(self):
        entry = self.plan[self.current_epoch]
        self.physics_weight = entry.physics_weight
        frozen = list(self.model.net.encoder.parameters()) if entry.freeze_encoder else []
        if not entry.probe_trainable:
            frozen.append(self.model.physics.probe)
        self._frozen = [p for p in frozen if p.requires_grad]

    def on_before_optimizer_step(self, optimizer):
        # Frozen this epoch: no gradient means Adam leaves the parameter and its moments alone. The
        # parameters keep requires_grad, so DDP's gradient buckets stay the same across stages.
        for parameter in self._frozen:
            parameter.grad = None

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

    def _accumulate(self, prefix, loss, fit, batch):
        count = batch["inputs"].shape[0]
        for name, value in {"loss": loss, **fit}.items():
            total, n = self._sums.get(prefix + name, (0.0, 0))
            self._sums[prefix + name] = (total + value.detach().float() * count, n + count)

    def _epoch_mean(self, key):
        total, n = self._sums.pop(key, (torch.zeros((), device=self.device), 0))
        values = torch.stack([torch.as_tensor(total, device=self.device, dtype=torch.float32).reshape(()),
                              torch.tensor(float(n), device=self.device)])
        values = self.trainer.strategy.reduce(values, reduce_op="sum")
        return float(values[0] / values[1]) if float(values[1]) > 0 else math.nan

    def training_step(self, batch, batch_idx):
        loss, fit = self._loss(batch)
        self.last_loss = loss.detach()
        self._accumulate("", loss, fit, batch)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, fit = self._loss(batch)
        self._accumulate("val_", loss, fit, batch)

    def on_validation_epoch_end(self):
        self.val_means = {f"val_{name}": self._epoch_mean(f"val_{name}") for name in _EPOCH_MEANS}
        self.val_loss = self.val_means["val_loss"]
        self.log("val_loss", self.val_loss, prog_bar=True, logger=False, sync_dist=False)

    def finish_train_epoch(self):
        """Return the epoch's mean training loss, deviance and amplitude MAE over all ranks (a dict; for `_History`).

        NaN where nothing was accumulated (the supervised baseline has no data fit).
        """
        means = {name: self._epoch_mean(name) for name in _EPOCH_MEANS}
        self.log("loss", means["loss"], prog_bar=True, logger=False, sync_dist=False)
        return means

    # data -----------------------------------------------------------------------------------------

    def _loader(self, indices, shuffle):
        sampler = _BatchSampler(
            indices,
            self.training_config.batch_size,
            shuffle=shuffle,
            seed=self.training_config.seed,
            rank=self.global_rank,
            world=self.trainer.world_size,
        )
        # Lightning draws the first batch before its own set_epoch; after a resume that epoch is not 0.
        sampler.set_epoch(self.trainer.fit_loop.epoch_progress.current.processed)
        return torch.utils.data.DataLoader(self.groups, batch_size=None, sampler=sampler, num_workers=0)

    def train_dataloader(self):
        return self._loader(self.train_idx, shuffle=True)

    def val_dataloader(self):
        return self._loader(self.val_idx, shuffle=False) if self.has_validation else []


# --------------------------------------------------------------------------------------------------
# schedule and history


class _SharedSchedule(torch.optim.lr_scheduler.LRScheduler):
    """Every optimiser step's learning rate from `ptycholib.schedules.LearningRateSchedule`.

    ``last_epoch`` counts the optimiser steps taken (torch's name): the next step is step
    ``last_epoch % S`` of epoch ``last_epoch // S``. The plateau schedule learns an epoch's loss only
    after Lightning has already stepped into the next epoch, so `_History` calls `refresh` then.
    """

    def __init__(self, optimizer, schedule):
        self.schedule = schedule
        super().__init__(optimizer)

    def _rate(self):
        last = len(self.schedule.factors) - 1
        epoch, step = divmod(self.last_epoch, self.schedule.steps_per_epoch)
        if epoch > last:  # stepped past the last optimiser step; nothing trains with it
            epoch, step = last, self.schedule.steps_per_epoch - 1
        return self.schedule.learning_rate(epoch, step)

    def get_lr(self):
        return [self._rate() for _ in self.optimizer.param_groups]

    def refresh(self):
        """Re-apply the current step's rate (after `ptycholib.schedules.LearningRateSchedule.record`)."""
        rate = self._rate()
        for group in self.optimizer.param_groups:
            group["lr"] = rate
        self._last_lr = [rate for _ in self.optimizer.param_groups]

    def state_dict(self):
        # Plain values only: checkpoints must not pickle the schedule object.
        return {"last_epoch": self.last_epoch, "_step_count": self._step_count, "losses": list(self.schedule.losses)}

    def load_state_dict(self, state_dict):
        self.last_epoch, self._step_count = state_dict["last_epoch"], state_dict["_step_count"]
        self.schedule.losses = list(state_dict["losses"])


class _History(L.Callback):
    """Build each epoch's record from what training actually used; log it and hand it on.

    It also feeds the epoch's monitored loss (validation loss, or training loss without validation
    groups) to the learning-rate schedule, and, with ``restore_best``, keeps a copy of the best
    epoch's weights in memory and loads it when training ends. (Lightning's EarlyStopping stops.)
    """

    def __init__(self, records, callback, *, restore_best=False):
        self.records, self.callback, self.restore_best = records, callback, restore_best
        self.best_state = None
        self.epoch_learning_rate = math.nan

    def on_train_epoch_start(self, trainer, module):
        # the rate of the epoch's first optimiser step is the one recorded
        self.epoch_learning_rate = module.lr_schedule.learning_rate(trainer.current_epoch, 0)

    def on_train_epoch_end(self, trainer, module):
        entry = module.plan[trainer.current_epoch]
        means = module.finish_train_epoch()
        loss = means["loss"]
        val_means = getattr(module, "val_means", {}) if module.has_validation else {}
        val_loss = val_means.get("val_loss", math.nan)
        module.lr_schedule.record(val_loss if module.has_validation else loss)
        module.lr_scheduler.refresh()
        best_epoch = module.lr_schedule.best_epoch
        if self.restore_best and best_epoch == entry.epoch:
            self.best_state = {k: v.detach().clone() for k, v in module.model.state_dict().items()}
        record = {
            "epoch": entry.epoch,
            "stage": entry.stage,
            "learning_rate": float(self.epoch_learning_rate),
            "physics_weight": float(entry.physics_weight),
            "loss": loss,
            "val_loss": val_loss,
            "deviance": means["deviance"],
            "val_deviance": val_means.get("val_deviance", math.nan),
            "amplitude_mae": means["amplitude_mae"],
            "val_amplitude_mae": val_means.get("val_amplitude_mae", math.nan),
            "best_epoch": best_epoch,
        }
        self.records.append(record)
        for logger in trainer.loggers:
            logger.log_metrics(record, step=entry.epoch)
            logger.save()
        if self.callback is not None and trainer.is_global_zero:
            self.callback(dict(record))

    def on_train_end(self, trainer, module):
        if self.best_state is not None:
            module.model.load_state_dict(self.best_state)

    def state_dict(self):
        # Plain values and tensors only (checkpoints are loaded with weights_only=True).
        return {"records": [dict(record) for record in self.records], "best_state": self.best_state}

    def load_state_dict(self, state_dict):
        self.records[:] = [dict(record) for record in state_dict["records"]]
        self.best_state = state_dict["best_state"]


class _FiniteGuard(L.Callback):
    """Stop training after an epoch in which a loss or gradient was not finite, naming the first such batch.

    Every step is checked on the device before its optimiser step, and the result is read once per
    epoch, as the epoch losses are: no synchronisation per step. At the end of that epoch (before
    its checkpoint is written) it raises `ptycholib.batching.NonFiniteLossError`.
    """

    def __init__(self):
        self.first = None  # on the device: (code, batch) of the first bad step; code 1 = loss, 2 = gradient
        self.batch = 0

    def on_train_epoch_start(self, trainer, module):
        self.first = torch.zeros(2, dtype=torch.int64, device=module.device)

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.batch = batch_idx

    def on_before_optimizer_step(self, trainer, module, optimizer):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        grads_finite = torch.stack([torch.isfinite(grad).all() for grad in grads]).all() if grads else True
        code = torch.where(torch.isfinite(module.last_loss).all(), torch.where(torch.as_tensor(grads_finite), 0, 2), 1)
        found = torch.stack([code, torch.full_like(code, self.batch)]).to(self.first.device)
        self.first = torch.where(self.first[0] > 0, self.first, found)

    def on_train_epoch_end(self, trainer, module):
        code, batch = self.first.tolist()
        if code:
            raise batching.NonFiniteLossError(trainer.current_epoch, batch, "loss" if code == 1 else "gradient")


class _Backup(L.pytorch.callbacks.ModelCheckpoint):
    """Checkpoints in ``log_dir/checkpoints``: ``last.ckpt`` after every epoch (what ``resume`` loads).

    Saved at the end of each training epoch, after `_History` has recorded it, so a checkpoint holds
    whole epochs: weights, Adam's moments, the schedule's step and losses, the loops' epoch (which
    sets the batch order) and the history so far. They hold tensors and plain Python values only,
    and `train` loads them with ``weights_only=True`` (torch's restricted unpickler).
    """

    def __init__(self, log_dir, *, monitor):
        super().__init__(dirpath=_checkpoint_dir(log_dir), monitor=monitor, save_last=True, save_on_train_epoch_end=True)


def _checkpoint_dir(log_dir):
    return os.path.join(log_dir, "checkpoints")


def _resume_from(log_dir):
    """The checkpoint to resume from: ``log_dir/checkpoints/last.ckpt``; ValueError when there is none."""
    path = os.path.join(_checkpoint_dir(log_dir), "last.ckpt")
    if not os.path.isfile(path):
        raise ValueError(f"nothing to resume in {log_dir}: no checkpoints/last.ckpt (no epoch of that run completed).")
    try:  # read once here: a damaged or code-carrying file is one clear error, not a traceback from Lightning
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  (torch raises RuntimeError, UnpicklingError, EOFError, ...)
        raise ValueError(f"the checkpoint {path} cannot be read safely ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''}); train afresh.") from None
    return path


# --------------------------------------------------------------------------------------------------
# set-up: devices, trainable parts, logging


def _strategy(training_config):
    """Lightning's strategy for the config's ``strategy`` (TensorFlow's ``'mirrored'`` is ``'ddp'`` here)."""
    name = str(training_config.strategy)
    return "ddp" if name.lower() == "mirrored" else name


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
    """Make trainable what trains in some of ``epochs`` (here: all of them), for the whole run.

    Parameters keep requires_grad=True even in epochs that freeze them (`_Module` drops their
    gradients instead), so DDP's gradient buckets never change.
    """
    model.physics.probe.requires_grad_(not supervised and any(entry.probe_trainable for entry in epochs))
    model.physics.log_intensity_scale.requires_grad_(not supervised and training_config.intensity_scale_trainable)
    for parameter in model.net.parameters():
        parameter.requires_grad_(True)


class _MlflowLogger(L.pytorch.loggers.Logger):
    """Each epoch's record to an open `ptycholib.tracking.MlflowRun` (a Lightning logger; the run has the configs)."""

    def __init__(self, run):
        super().__init__()
        self.run = run

    @property
    def name(self):
        return "mlflow"

    @property
    def version(self):
        return self.run.run_id

    def log_hyperparams(self, params, *args, **kwargs):
        pass  # `ptycholib.tracking.start_run` logged both configs

    def log_metrics(self, metrics, step=None):
        self.run.log_metrics(metrics, step=step)


@contextlib.contextmanager
def _logging(training_config, log_dir, model_config, mlflow_run=None):
    """Yield the run's Lightning loggers; meanwhile Lightning's start-up banners and advice stay quiet.

    A CSV log (``log_dir/metrics.csv``, one row per epoch, the same file as the TensorFlow
    backend's, with the configs in ``hparams.yaml``) unless ``logger='none'``, plus MLflow with
    ``logger='mlflow'``: ``mlflow_run``, or a run of `ptycholib.tracking.start_run` that lasts as
    long as the context.
    """
    names = ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda", "lightning.fabric")
    saved = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.ExitStack() as stack:
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*number of training batches.*smaller than the logging interval.*")
            warnings.filterwarnings("ignore", message=".*logs directory .* exists and is not empty.*")
            # Epoch losses are reduced over ranks before they are logged.
            warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed setting.*")
            warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
            warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
            loggers = []
            if training_config.logger != "none" and log_dir is not None:
                loggers.append(L.pytorch.loggers.CSVLogger(save_dir=log_dir, name="", version=""))
            if training_config.logger == "mlflow":
                if mlflow_run is None:
                    mlflow_run = stack.enter_context(tracking.start_run(model_config, training_config, log_dir))
                if mlflow_run is not None:  # None in the other processes of a multi-process run
                    loggers.append(_MlflowLogger(mlflow_run))
            hyperparameters = {f"model.{k}": v for k, v in dataclasses.asdict(model_config).items()}
            hyperparameters.update({f"training.{k}": v for k, v in dataclasses.asdict(training_config).items()})
            hyperparameters = {k: str(v) if isinstance(v, (tuple, list)) else v for k, v in hyperparameters.items()}
            for logger in loggers:
                logger.log_hyperparams(hyperparameters)
            yield loggers
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


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
        From `ptycholib.torch.network.build_model`; its weights are updated in place.
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
    Lightning trains. ``accelerator`` / ``devices`` / ``strategy`` are Lightning's names
    (``'mirrored'`` means ``'ddp'``); ``strategy='ddp'`` with several devices runs one process per
    device, CPU included, and the spawning strategies are refused because they lose the history.
    ``precision='bf16-mixed'`` runs the network in bfloat16 autocast, physics and weights in
    float32. ``log_dir`` also gets Lightning's ``hparams.yaml`` and checkpoints in ``checkpoints/``
    (``last.ckpt`` after every epoch, and the best validation loss): torch pickles that hold only
    tensors and plain values, loaded with ``weights_only=True``. The callback runs on rank 0 only.
    A non-finite loss or gradient raises `ptycholib.batching.NonFiniteLossError` (epoch and first
    bad batch) at the end of that epoch, before its record and checkpoint.
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
    _set_trainable(model, data.plan, training_config, data.supervised)
    if resume and log_dir is None:
        raise ValueError("resume=True needs the log_dir of the run to continue.")
    bad_pixels = _bad_pixels_mask(bad_pixels, model.model_config.N)
    module = _Module(model, data.plan, training_config, _Groups(data.groups), data.train_indices, data.val_indices,
                     supervised=data.supervised, bad_pixels=bad_pixels)
    records = []
    early_stopping = training_config.early_stopping_patience is not None and module.has_validation
    callbacks = [_FiniteGuard(),  # first: a broken epoch reaches neither the history nor a checkpoint
                 _History(records, callback, restore_best=early_stopping and training_config.early_stopping_restore_best)]
    if early_stopping:
        callbacks.append(
            L.pytorch.callbacks.EarlyStopping(monitor="val_loss", patience=training_config.early_stopping_patience, mode="min")
        )
    if log_dir is not None:
        os.makedirs(log_dir, exist_ok=True)
        callbacks.append(_Backup(log_dir, monitor="val_loss" if module.has_validation else None))
    with _logging(training_config, log_dir, model.model_config, mlflow_run) as loggers:
        trainer = L.Trainer(
            accelerator=training_config.accelerator,
            devices=training_config.devices,
            num_nodes=training_config.num_nodes,
            strategy=_strategy(training_config),
            precision=_PRECISIONS[data.precision],
            max_epochs=len(data.plan),
            logger=loggers,
            callbacks=callbacks,
            enable_checkpointing=log_dir is not None,
            enable_progress_bar=bool(progress),
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=1.0 if module.has_validation else 0,
            use_distributed_sampler=False,
            default_root_dir=log_dir,
        )
        if getattr(trainer.strategy, "_start_method", "popen") != "popen":
            raise ValueError(
                f"strategy={training_config.strategy!r} with devices={training_config.devices} would train in spawned "
                "or forked processes, whose history cannot be returned; use strategy='ddp' from a script or "
                "`python -m ptycholib train` (one process per device, CPU included)."
            )
        trainer.fit(module, ckpt_path=_resume_from(log_dir) if resume else None, weights_only=True)
    return records


def _predict_function(model, precision="float32"):
    """One batch's illuminated patches under ``torch.inference_mode``; the convolutions in ``precision``."""
    device = next(model.parameters()).device.type
    low = _INFERENCE_DTYPES[precision]

    @torch.inference_mode()
    def function(x, offsets):
        with torch.autocast(device, dtype=low or torch.bfloat16, enabled=low is not None):
            patches = network.predict_object(model, x)
        return physics.group_views(model.model_config, patches, offsets, window=model.window)

    return function


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

    Notes
    -----
    On a CPU with ``torch.get_num_threads() > 1`` the batches are spread over that many Python
    threads running one torch thread each (batch-level instead of per-operation parallelism); the
    result is identical, batch by batch, to a serial pass.
    """
    if not isinstance(model, network.PhysicsModel):
        raise TypeError(f"predict_patches needs the model from build_model; got {type(model).__name__}.")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer.")
    if precision not in _INFERENCE_DTYPES:
        raise ValueError(f"precision={precision!r} is not supported; allowed values: 'float32', 'bfloat16'.")
    cfg = model.model_config
    channels, size = cfg.n_channels, cfg.N
    inputs = batching.as_group_array("inputs", physics.to_numpy(inputs), (len(inputs), channels, size, size), np.float32)
    offsets = batching.as_group_array("offsets", physics.to_numpy(offsets), (len(inputs), channels, 2), np.float64)
    predict = _predict_function(model, precision)
    out = np.empty(inputs.shape, dtype=np.complex64)
    starts = range(0, len(inputs), int(batch_size))
    threads = torch.get_num_threads()
    pooled = threads > 1 and len(starts) > 1 and next(model.parameters()).device.type == "cpu"
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(starts), desc="predict", unit="batch")

    def run(start):
        if pooled:
            torch.set_num_threads(1)  # this worker's intra-op threads
        stop = start + int(batch_size)
        out[start:stop] = physics.to_numpy(predict(inputs[start:stop], offsets[start:stop]))
        if bar is not None:
            bar.update()  # tqdm's counter is thread-safe

    if not pooled:
        for start in starts:
            run(start)
        if bar is not None:
            bar.close()
        return out
    # On CPUs, batches run side by side, one intra-op thread each: no OpenMP barrier per operation,
    # and a worker that the OS deschedules just takes fewer batches (2x faster on a busy 2-core machine).
    from concurrent.futures import ThreadPoolExecutor

    try:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, starts))
    finally:
        torch.set_num_threads(threads)
        if bar is not None:
            bar.close()
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
        Keys and layouts of `ptycholib.torch.network.get_weights`; ``physics.probe`` is
        ``dL/dRe + i dL/dIm`` (torch's convention for complex parameters). Frozen parts included
        (zero where the loss does not depend on them). Used by the parity tests (SPEC section 8).
    """
    parameters = network._canonical_parameters(model)
    saved = {name: parameter.requires_grad for name, parameter in parameters.items()}
    device = next(model.parameters()).device
    try:
        for parameter in parameters.values():
            parameter.requires_grad_(True)
        x = physics.to_tensor(inputs, device=device)
        if model.model_config.model_type == "supervised":
            target_patches = physics.to_numpy(target_patches)
            loss = _supervised_loss(
                model.net, x, physics.to_tensor(np.abs(target_patches), device=device),
                physics.to_tensor(np.angle(target_patches), device=device),
            )
        else:
            loss = _pinn_loss(
                model, x, physics.to_tensor(offsets, device=device), physics.to_tensor(amplitudes, device=device),
                float(physics_weight), float(training_config.nll_weight), float(training_config.mae_weight),
                _bad_pixels_mask(bad_pixels, model.model_config.N),
            )
        grads = torch.autograd.grad(loss, list(parameters.values()), allow_unused=True)
    finally:
        for name, parameter in parameters.items():
            parameter.requires_grad_(saved[name])
    grads = [torch.zeros_like(parameter) if grad is None else grad for parameter, grad in zip(parameters.values(), grads)]
    return {name: network._to_canonical(name, physics.to_numpy(grad)) for name, grad in zip(parameters, grads)}
