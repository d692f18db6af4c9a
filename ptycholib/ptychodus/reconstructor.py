"""ptycholib's reconstructors as ptychodus sees them (SPEC section 9).

`PtycholibReconstructorLibrary` is a ptychodus ``ReconstructorLibrary`` named ``ptycholib`` that
holds one `PtycholibReconstructor` (a ``TrainableReconstructor``) per installed backend and model
type; their ptychodus algorithm keys are ``ptycholib_torch``, ``ptycholib_tensorflow``,
``ptycholib_torch-supervised`` and ``ptycholib_tensorflow-supervised`` (`algorithm_keys`).
ptychodus calls them directly (SPEC Q3: no server, no subprocess of our own); training runs
`ptycholib.workflow.train_model` in a thread and streams each epoch's data fit back to ptychodus.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from pathlib import Path

import numpy as np

from ptycholib import archive, refine, tracking, workflow
from ptycholib import data as data_module
from ptycholib.backends import BACKENDS, is_available
from ptycholib.ptychodus._upstream import (
    LossValue,
    ReconstructorLibrary,
    ReconstructOutput,
    TrainableReconstructor,
    TrainOutput,
)
from ptycholib.ptychodus.convert import product_from_object, ptycho_data_from_input
from ptycholib.ptychodus.files import load_training_data
from ptycholib.ptychodus.settings import PtycholibSettings

__all__ = [
    "LIBRARY_NAME",
    "MODEL_FILE_EXTENSION",
    "MODEL_FILE_FILTER",
    "TRAINING_DATA_FILE_FILTER",
    "PtycholibReconstructor",
    "PtycholibReconstructorLibrary",
    "algorithm_keys",
]

logger = logging.getLogger(__name__)

LIBRARY_NAME = "ptycholib"
"""The library's name in ptychodus; algorithm keys are ``ptycholib_<reconstructor>`` (no ``_`` inside)."""
MODEL_FILE_FILTER = "Zipped Archive (*.zip)"
MODEL_FILE_EXTENSION = ".zip"
TRAINING_DATA_FILE_FILTER = "NumPy Zipped Archive (*.npz)"

_LOGGER_NAME = "ptycholib.ptychodus"
"""The library's logger in ptychodus (its log level there governs every module of the adapter)."""

_RECONSTRUCTOR_NAMES = {
    ("torch", "pinn"): "Torch",
    ("tensorflow", "pinn"): "TensorFlow",
    ("torch", "supervised"): "Torch-Supervised",
    ("tensorflow", "supervised"): "TensorFlow-Supervised",
}


class PtycholibReconstructor(TrainableReconstructor):
    """A ptycholib model as a ptychodus ``TrainableReconstructor``.

    Parameters
    ----------
    backend : {"torch", "tensorflow"}
        Backend that trains and predicts (a model trained by either backend predicts with either).
    model_type : {"pinn", "supervised"}
        What `train` trains; ``"supervised"`` needs the product's object as ground truth.
    settings : PtycholibSettings
        Shared settings of the library.

    Notes
    -----
    - `reconstruct` needs a loaded model (`load_model_from_file`, ``IN/model.zip`` in batch mode,
      or a finished `train`); the network architecture comes from the model archive, batch size,
      crop size and weighting from the ``PtycholibInference`` settings. It yields one output.
    - `train` yields one ``TrainOutput`` per epoch, then saves ``OUT/wts.h5.zip`` and
      ``OUT/history.csv`` and keeps the model loaded. Its curves are the Poisson deviance per pixel
      (``deviance`` / ``val_deviance`` of the history: 0 for a perfect fit, about 1 at the noise
      floor, best read on a log axis); the supervised baseline, which has no data fit, streams its
      loss. With ``Logger=mlflow`` the MLflow run gets both files too.
    - `get_progress_goal` is 1 during a reconstruction and the number of epochs during training.
    """

    def __init__(self, backend, model_type, settings):
        if (backend, model_type) not in _RECONSTRUCTOR_NAMES:
            raise ValueError(f"no ptycholib reconstructor for backend={backend!r}, model_type={model_type!r}.")
        self.backend, self.model_type, self._settings = backend, model_type, settings
        self._archive = self._model_path = self._progress_goal = None  # loaded or trained model, its file, progress
        self.last_reconstruction = None
        """`ptycholib.workflow.Reconstruction` of the latest `reconstruct` (weights, timings)."""
        self.last_history = None
        """Per-epoch records of the latest `train`."""

    @property
    def name(self):
        return _RECONSTRUCTOR_NAMES[(self.backend, self.model_type)]

    @property
    def model_archive(self):
        """The loaded `ptycholib.archive.ModelArchive`, or None."""
        return self._archive

    def get_progress_goal(self):
        if self._progress_goal is not None:
            return self._progress_goal
        return int(self._settings.values()[("training", "nepochs")])

    def reconstruct(self, parameters):
        if self._archive is None:
            raise RuntimeError(
                f"{LIBRARY_NAME}_{self.name.lower()}: no model is loaded. Train one, load a model file "
                f"(*{MODEL_FILE_EXTENSION}, a ptycholib wts.h5.zip), or in batch mode put it at IN/model"
                f"{MODEL_FILE_EXTENSION} or pass --model to 'ptycholib ptychodus reconstruct'."
            )
        self._progress_goal = 1
        return self._reconstruct(parameters)

    def _reconstruct(self, parameters):
        dataset = ptycho_data_from_input(parameters)
        inference = self._settings.inference_config(self._archive.config, backend=self.backend)
        logger.info("ptycholib: reconstructing %d patterns with %s (model from %s)", dataset.n_positions,
                    self.backend, self._model_path or "training")
        result = workflow.reconstruct(self._archive, dataset, backend=self.backend, inference=inference)
        if inference.refine_iterations:
            start = refine.start_from_reconstruction(result, result.obj.shape)
            refined = refine.refine(None, dataset, initial_object=start, n_iterations=inference.refine_iterations,
                                    backend=result.backend, canvas_shape=result.obj.shape,
                                    alpha=inference.refine_alpha)
            logger.info("ptycholib: refined the network's object for %d sweeps in %.2f s",
                        inference.refine_iterations, refined.seconds)
            result = dataclasses.replace(result, obj=refined.obj)
        self.last_reconstruction = result
        yield ReconstructOutput(product=product_from_object(parameters, result.obj), progress=1)

    # model files ------------------------------------------------------------------------------

    def is_model_loaded(self):
        return self._archive is not None

    def get_model_file_filter(self):
        return MODEL_FILE_FILTER

    def get_model_file_extension(self):
        return MODEL_FILE_EXTENSION

    def load_model_from_file(self, file_path):
        """Load a ptycholib model archive (either backend's); raises `ArchiveError` for anything else."""
        self._archive = archive.load_model(file_path)
        self._model_path = Path(file_path)
        logger.info("ptycholib: loaded %s model from %s", self._archive.backend, file_path)

    def save_model(self, file_path):
        """Write the loaded model as a ptycholib archive (atomic)."""
        if self._archive is None:
            raise RuntimeError(f"{LIBRARY_NAME}_{self.name.lower()}: no model is loaded, so there is nothing to save.")
        archive.save_model(Path(file_path), self._archive)

    # training ---------------------------------------------------------------------------------

    def get_training_data_file_filter(self):
        return TRAINING_DATA_FILE_FILTER

    def export_training_data(self, file_path, parameters):
        """Write the input in ptycholib's NPZ contract (amplitudes, our pixel positions, mode-0 probe)."""
        data_module.save_npz(ptycho_data_from_input(parameters), Path(file_path))

    def train(self, input_path, output_path):
        """Train on ``input_path`` and save the model in ``output_path``; yields per-epoch losses.

        ``input_path`` holds ``train_data.npz`` (ptycholib's NPZ contract as written by
        `export_training_data`, or ptychodus's PtychoPINN export of counts) or, failing that, a
        ptychodus ``diffraction.h5`` + ``product.h5`` pair. The validation loss comes from the
        ``ValidationFraction`` of groups held out; a ``test_data.npz`` is not used.

        With a model loaded (from a file or an earlier training), training **fine-tunes** it
        (`ptycholib.workflow.fine_tuning_start`): the architecture is the loaded model's, the training
        settings are the current ones, the weights start from the model's, and the new archive records
        its parent. Without one it trains from scratch.
        """
        input_path, output_path = Path(input_path), Path(output_path)
        dataset, source = load_training_data(input_path)
        config = self._settings.to_config(N=dataset.patch_size, model_type=self.model_type, backend=self.backend)
        initial_weights, parent = None, None
        if self._archive is not None:
            config = dataclasses.replace(config, model=self._archive.config.model)
            config, initial_weights, parent = workflow.fine_tuning_start(self._archive, dataset, config,
                                                                         parent_path=self._model_path)
        self._progress_goal = config.training.nepochs
        return self._train(dataset, config, source, output_path, initial_weights=initial_weights, parent=parent)

    def _train(self, dataset, config, source, output_path, *, initial_weights=None, parent=None):
        output_path.mkdir(parents=True, exist_ok=True)
        logger.info("ptycholib: training %s (%s) on %s, %d epochs", self.backend, self.model_type, source,
                    config.training.nepochs)
        records = []
        trained = None
        for kind, item in _train_in_thread(dataset, config, output_path / "logs", initial_weights=initial_weights):
            if kind == "epoch":
                records.append(item)
                yield _train_output(records, progress=len(records))
            else:
                trained = item
        saved = dataclasses.replace(trained.archive, parent=parent)
        model_path = archive.save_model(output_path / archive.DEFAULT_NAME, saved)
        history_path = tracking.write_history(output_path / "history.csv", trained.history)
        if trained.run_id is not None:  # logger=mlflow: the run holds the files as written here
            tracking.log_files(trained.run_id, [model_path] + ([history_path] if history_path else []),
                               log_dir=output_path / "logs")
        self._archive = saved
        self._model_path = model_path
        self.last_history = list(trained.history)
        logger.info("ptycholib: saved %s", model_path)
        yield _train_output(list(trained.history) or records, progress=self._progress_goal)


class _TrainingCancelled(Exception):
    pass


def _train_in_thread(dataset, config, log_dir, *, initial_weights=None):
    """Run `workflow.train_model` in a thread; yield ``("epoch", record)`` and finally ``("done", TrainedModel)``.

    Closing the generator early cancels training at the next epoch boundary.
    """
    messages = queue.Queue()
    cancel = threading.Event()

    def callback(record):
        messages.put(("epoch", dict(record)))
        if cancel.is_set():
            raise _TrainingCancelled()

    def run():
        try:
            trained = workflow.train_model(dataset, config, initial_weights=initial_weights, log_dir=log_dir,
                                           progress=False, callback=callback)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, re-raised there
            messages.put(("error", error))
        else:
            messages.put(("done", trained))

    thread = threading.Thread(target=run, name="ptycholib-train", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = messages.get()
            if kind == "error":
                raise item
            yield kind, item
            if kind == "done":
                return
    finally:
        cancel.set()
        thread.join()


def _loss_values(records, key):
    values = []
    for index, record in enumerate(records):
        value = record.get(key)
        if value is not None and np.isfinite(value):
            values.append(LossValue(epoch=int(record.get("epoch", index)), value=float(value)))
    return values


def _train_output(records, progress):
    """The curves ptychodus plots: the deviance per pixel (interpretable), or the loss when there is none."""
    has_deviance = any(np.isfinite(record.get("deviance", np.nan)) for record in records)
    train_key, val_key = ("deviance", "val_deviance") if has_deviance else ("loss", "val_loss")
    return TrainOutput(
        training_loss=_loss_values(records, train_key),
        validation_loss=_loss_values(records, val_key),
        progress=int(progress),
    )


class PtycholibReconstructorLibrary(ReconstructorLibrary):
    """ptycholib's reconstructors for ptychodus: one per installed backend and model type.

    Parameters
    ----------
    settings_registry : ptychodus.api.settings.SettingsRegistry
    is_developer_mode_enabled : bool
        Accepted for the signature ptychodus's own libraries have; unused.
    backends : sequence of str, optional
        Backends to offer; default: every installed one (found without importing it).

    Notes
    -----
    Algorithm keys: ``ptycholib_torch``, ``ptycholib_tensorflow``, ``ptycholib_torch-supervised``,
    ``ptycholib_tensorflow-supervised`` (`algorithm_keys`).
    """

    def __init__(self, settings_registry, is_developer_mode_enabled=False, *, backends=None):
        super().__init__(_LOGGER_NAME)
        self.settings = PtycholibSettings(settings_registry)
        chosen = [name for name in BACKENDS if is_available(name)] if backends is None else list(backends)
        self._reconstructors = [
            PtycholibReconstructor(backend, model_type, self.settings)
            for model_type in ("pinn", "supervised")
            for backend in chosen
        ]
        if not self._reconstructors:
            logger.warning("ptycholib: neither torch nor tensorflow is installed; no reconstructors offered.")

    @property
    def name(self):
        return LIBRARY_NAME

    def __iter__(self):
        return iter(self._reconstructors)

    def get(self, key):
        """Return the reconstructor with algorithm key ``key`` (e.g. ``"ptycholib_torch"``)."""
        for reconstructor in self._reconstructors:
            if _key(reconstructor.name) == key.strip().casefold():
                return reconstructor
        raise KeyError(f"{key!r} is not a ptycholib algorithm; available: {', '.join(_key(r.name) for r in self)}.")


def _key(reconstructor_name):
    return f"{LIBRARY_NAME}_{reconstructor_name}".casefold()


def algorithm_keys(backends=None):
    """Algorithm keys ptychodus will list for ptycholib (default: installed backends)."""
    chosen = [name for name in BACKENDS if is_available(name)] if backends is None else list(backends)
    return [_key(_RECONSTRUCTOR_NAMES[(backend, model_type)]) for model_type in ("pinn", "supervised") for backend in chosen]
