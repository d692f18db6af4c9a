"""ptycholib as a reconstructor library of ptychodus 1.7.0 (SPEC section 9).

ptychodus calls this module directly (SPEC Q3: no server, no subprocess of our own):

- `PtycholibReconstructorLibrary` is a ``ReconstructorLibrary`` named ``ptycholib`` that holds one
  `PtycholibReconstructor` (a ``TrainableReconstructor``) per installed backend and model type. Their
  ptychodus algorithm keys are ``ptycholib_torch``, ``ptycholib_tensorflow``,
  ``ptycholib_torch-supervised`` and ``ptycholib_tensorflow-supervised``.
- `PtycholibSettings` exposes our `ModelConfig`, `TrainingConfig` and `InferenceConfig` fields in
  ptychodus's settings registry (groups ``PtycholibModel``, ``PtycholibTraining``,
  ``PtycholibInference``, with our defaults), so they live in ``settings.ini`` and in the GUI.
- `injected` / `create_model_core` add the library to ptychodus's ``ModelCore``, whose list of
  libraries is hard-coded, by subclassing ``ptychodus.model.core.ProcessingCore``. This is the
  route until ptychodus lists ptycholib upstream.
- `run_batch` runs ptychodus's own batch mode (``reconstruct`` / ``train`` on a standard input
  folder) with the library injected, and turns ptychodus's silent outcomes (unknown algorithm,
  missing model, exit status 0 with no output) into errors. ``ptycholib ptychodus`` is its CLI.

Conversions (what ptychodus passes -> what ptycholib uses), see `ptycho_data_from_input`:

- counts ``(M, N, N)`` in any dtype -> amplitudes ``sqrt(counts)`` (float32). Negative counts
  (background-subtracted data) are clipped to 0 with a warning. Bad pixels are set to 0 in the
  amplitudes, i.e. in both the network input and the loss target, and the mask travels in
  ``PtychoData.bad_pixels``;
- probe ``(C_opr, I, N, N)`` -> ``probe[0, 0]``, incoherent mode 0 of the first OPR mode (the
  dominant mode; ptychodus orders modes by power). Its power fraction goes into the metadata;
- positions in metres -> object pixels through the input object's geometry
  (``map_probe_positions_to_object_x_px`` / ``_y_px``), then ``+0.5`` for even N to move from
  ptychodus's window centre at index ``(N - 1) / 2`` to ours at ``N // 2`` (SPEC section 10,
  `ptycholib.data.ptychodus_px_to_object_px`);
- object layer 0 gives the canvas: the output object has the input's shape, pixel geometry and
  centre (one layer; unreconstructed pixels are 0). Probe, positions and metadata pass through.
"""

from __future__ import annotations

import configparser
import contextlib
import csv
import dataclasses
import logging
import queue
import threading
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

try:
    import ptychodus.api.io as ptychodus_io
    from ptychodus.api.object import Object
    from ptychodus.api.product import LossValue, Product
    from ptychodus.api.reconstruct import (
        ReconstructorLibrary,
        ReconstructOutput,
        TrainableReconstructor,
        TrainOutput,
        prepare_reconstruct_input,
    )
except ModuleNotFoundError as _error:  # pragma: no cover - depends on the environment
    if _error.name is None or not _error.name.startswith("ptychodus"):
        raise
    raise ImportError(
        "ptycholib.ptychodus needs ptychodus 1.7.0: pip install -e '.[ptychodus]' (or pip install ptychodus==1.7.0)"
    ) from None

from ptycholib import archive, workflow
from ptycholib import config as config_module
from ptycholib import data as data_module
from ptycholib.backends import BACKENDS, is_available
from ptycholib.config import (
    Config,
    ConfigError,
    InferenceConfig,
    ModelConfig,
    TrainingConfig,
)

__all__ = [
    "LIBRARY_NAME",
    "MODEL_FILE_EXTENSION",
    "MODEL_FILE_FILTER",
    "SETTINGS_GROUPS",
    "TRAINING_DATA_FILE_FILTER",
    "TRAINING_DATA_NAME",
    "BatchResult",
    "PtychodusBatchError",
    "PtycholibReconstructor",
    "PtycholibReconstructorLibrary",
    "PtycholibSettings",
    "algorithm_keys",
    "create_model_core",
    "injected",
    "load_reconstruct_input",
    "product_from_object",
    "ptycho_data_from_input",
    "run_batch",
    "run_ptychodus",
    "write_settings",
]

logger = logging.getLogger(__name__)

LIBRARY_NAME = "ptycholib"
"""The library's name in ptychodus; algorithm keys are ``ptycholib_<reconstructor>`` (no ``_`` inside)."""
MODEL_FILE_FILTER = "Zipped Archive (*.zip)"
MODEL_FILE_EXTENSION = ".zip"
TRAINING_DATA_FILE_FILTER = "NumPy Zipped Archive (*.npz)"
TRAINING_DATA_NAME = "train_data.npz"
"""File `PtycholibReconstructor.train` looks for first in its input folder (PtychoPINN's name)."""

_TESTED_PTYCHODUS = "1.7"
_RECONSTRUCTOR_NAMES = {
    ("torch", "pinn"): "Torch",
    ("tensorflow", "pinn"): "TensorFlow",
    ("torch", "supervised"): "Torch-Supervised",
    ("tensorflow", "supervised"): "TensorFlow-Supervised",
}

# ptychodus group -> (our config section, ((ptychodus parameter, our field), ...)). N, model_type and
# backend come from the data and the chosen reconstructor; stages (a list of dataclasses) and the
# CLI's file defaults are not exposed (use `ptycholib train --config` for multi-stage training).
SETTINGS_GROUPS = {
    "PtycholibModel": ("model", (
        ("GridSize", "gridsize"),
        ("NumFiltersScale", "n_filters_scale"),
        ("AmpActivation", "amp_activation"),
        ("ObjectBig", "object_big"),
        ("ProbeBig", "probe_big"),
        ("ProbeMask", "probe_mask"),
        ("PadObject", "pad_object"),
        ("ProbeScale", "probe_scale"),
        ("GaussianSmoothingSigma", "gaussian_smoothing_sigma"),
    )),
    "PtycholibTraining": ("training", (
        ("BatchSize", "batch_size"),
        ("NumEpochs", "nepochs"),
        ("MAEWeight", "mae_weight"),
        ("NLLWeight", "nll_weight"),
        ("NumPhotons", "nphotons"),
        ("NumGroups", "n_groups"),
        ("NeighborCount", "neighbor_count"),
        ("ProbeTrainable", "probe_trainable"),
        ("IntensityScaleTrainable", "intensity_scale_trainable"),
        ("LearningRate", "learning_rate"),
        ("Seed", "seed"),
        ("PhysicsWeightSchedule", "physics_weight_schedule"),
        ("PhysicsWeightStart", "physics_weight_start"),
        ("ValidationFraction", "validation_fraction"),
        ("EarlyStoppingPatience", "early_stopping_patience"),
        ("SequentialSampling", "sequential_sampling"),
        ("Accelerator", "accelerator"),
        ("Devices", "devices"),
        ("Strategy", "strategy"),
        ("Logger", "logger"),
    )),
    "PtycholibInference": ("inference", (
        ("BatchSize", "batch_size"),
        ("CropSize", "crop_size"),
        ("Weighting", "weighting"),
    )),
}
"""ptychodus settings of ptycholib: group -> (config section, ((parameter, field), ...)).

``EarlyStoppingPatience = 0`` stands for ``early_stopping_patience=None`` (no early stopping)."""

_DEFAULT_SECTIONS = {"model": ModelConfig(), "training": TrainingConfig(), "inference": InferenceConfig()}
_NONE_AS_ZERO = {("training", "early_stopping_patience")}


def _check_ptychodus_version():
    try:
        found = version("ptychodus")
    except PackageNotFoundError:  # pragma: no cover - a source checkout
        return
    if not found.startswith(_TESTED_PTYCHODUS + "."):
        logger.warning(
            "ptycholib's ptychodus adapter is tested with ptychodus %s.x but %s is installed; the "
            "ModelCore injection relies on ptychodus internals that may have changed.", _TESTED_PTYCHODUS, found,
        )


_check_ptychodus_version()


# ----------------------------------------------------------------------------------------------
# settings


class PtycholibSettings:
    """ptycholib's configuration fields as ptychodus parameters (`SETTINGS_GROUPS`).

    Parameters
    ----------
    settings_registry : ptychodus.api.settings.SettingsRegistry
        The registry of the running ptychodus (``ModelCore.settings_registry``); the groups are
        created in it, so ``settings.ini`` files and the GUI read and write them.

    Notes
    -----
    Defaults are ptycholib's (`ModelConfig`, `TrainingConfig`, `InferenceConfig`), not
    PtychoPINN's. Values are validated when a config is built (`to_config`), with the ptychodus
    parameter named in the error.
    """

    def __init__(self, settings_registry):
        self.parameters = {}
        for group_name, (section, entries) in SETTINGS_GROUPS.items():
            group = settings_registry.create_group(group_name)
            defaults = _DEFAULT_SECTIONS[section]
            for parameter_name, field_name in entries:
                default = getattr(defaults, field_name)
                self.parameters[(group_name, parameter_name)] = _create_parameter(
                    group, parameter_name, default, (section, field_name) in _NONE_AS_ZERO
                )

    def values(self):
        """Return ``{(section, field): value}`` of the current settings, in ptycholib's units."""
        out = {}
        for group_name, (section, entries) in SETTINGS_GROUPS.items():
            for parameter_name, field_name in entries:
                value = self.parameters[(group_name, parameter_name)].get_value()
                if (section, field_name) in _NONE_AS_ZERO and value == 0:
                    value = None
                out[(section, field_name)] = value
        return out

    def to_config(self, *, N, model_type="pinn", backend="torch"):
        """Build a validated `Config` from the settings plus what the data and reconstructor fix.

        Parameters
        ----------
        N : int
            Pattern size of the data.
        model_type : {"pinn", "supervised"}
        backend : {"torch", "tensorflow"}

        Raises
        ------
        ConfigError
            A setting is invalid; the message names the ptychodus group and parameter.
        """
        values = config_module.config_to_dict(Config())
        for (section, field_name), value in self.values().items():
            values[section][field_name] = value
        values["model"].update(N=N, model_type=model_type)
        values["training"]["backend"] = backend
        try:
            return config_module.config_from_dict(values, source="ptychodus settings")
        except ConfigError as error:
            raise ConfigError(f"{error} {self._where(str(error))}") from None

    def inference_config(self, model_config, *, backend):
        """Return the ``PtycholibInference`` settings as an `InferenceConfig` checked against a model's config.

        Parameters
        ----------
        model_config : Config
            The loaded model's config (its N bounds the crop size).
        backend : {"torch", "tensorflow"}
        """
        values = {field_name: value for (section, field_name), value in self.values().items() if section == "inference"}
        try:
            inference = InferenceConfig(**values, backend=backend)
            return dataclasses.replace(model_config, inference=inference).inference
        except ConfigError as error:
            raise ConfigError(f"{error} {self._where(str(error))}") from None

    def _where(self, message):
        for qualified in (True, False):
            for group_name, (section, entries) in SETTINGS_GROUPS.items():
                for parameter_name, field_name in entries:
                    name = f"{section}.{field_name}" if qualified else field_name
                    if message.startswith(f"{name}=") or f" {name}=" in message:
                        return f"(ptychodus setting [{group_name}] {parameter_name})"
        return "(check the ptycholib groups of the ptychodus settings)"


def _create_parameter(group, name, default, none_as_zero):
    if none_as_zero:
        return group.create_integer_parameter(name, 0 if default is None else int(default), minimum=0)
    if isinstance(default, bool):
        return group.create_boolean_parameter(name, default)
    if isinstance(default, int):
        return group.create_integer_parameter(name, default)
    if isinstance(default, float):
        return group.create_real_parameter(name, default)
    return group.create_string_parameter(name, str(default))


def write_settings(path, *, algorithm="ptycholib_torch", overrides=None):
    """Write a ``settings.ini`` with ``[Processing] Algorithm`` and ptycholib's groups at our defaults.

    Parameters
    ----------
    path : str or Path
        Destination (``IN/settings.ini`` for batch mode).
    algorithm : str
        ptychodus algorithm key, e.g. ``ptycholib_torch``.
    overrides : dict, optional
        ``{"GroupName.Parameter": value}`` (e.g. ``{"PtycholibTraining.NumEpochs": 5}``).

    Returns
    -------
    Path
    """
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser["Processing"] = {"Algorithm": algorithm}
    known = {}
    for group_name, (section, entries) in SETTINGS_GROUPS.items():
        parser[group_name] = {}
        for parameter_name, field_name in entries:
            value = getattr(_DEFAULT_SECTIONS[section], field_name)
            if value is None:
                value = 0
            parser[group_name][parameter_name] = str(value)
            known[f"{group_name}.{parameter_name}"] = (group_name, parameter_name)
    for key, value in (overrides or {}).items():
        if key not in known:
            raise ValueError(f"unknown ptychodus setting {key!r}; known: {', '.join(sorted(known))}.")
        group_name, parameter_name = known[key]
        parser[group_name][parameter_name] = str(value)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        parser.write(handle)
    return path


# ----------------------------------------------------------------------------------------------
# conversions


def load_reconstruct_input(folder):
    """Read a standard ptychodus folder (``diffraction.h5`` + ``product.h5``) into a ``ReconstructInput``.

    Uses ptychodus's own readers and ``prepare_reconstruct_input`` (patterns paired with positions
    by scan index), i.e. exactly what ptychodus hands a reconstructor.
    """
    folder = Path(folder)
    missing = [name for name in ("diffraction.h5", "product.h5") if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {' and '.join(missing)}; a ptychodus input folder holds diffraction.h5 and product.h5.")
    assembled = ptychodus_io.load_diffraction_data(folder / "diffraction.h5")
    product = ptychodus_io.load_product(folder / "product.h5")
    return prepare_reconstruct_input(assembled, product)


def ptycho_data_from_input(reconstruct_input):
    """Convert what ptychodus passes a reconstructor into a `ptycholib.data.PtychoData`.

    Parameters
    ----------
    reconstruct_input : ptychodus.api.reconstruct.ReconstructInput
        Counts ``(M, N, N)`` in the file's dtype, bad-pixel mask ``(N, N)``, and a product with the
        probe ``(C_opr, I, N, N)``, the object ``(L, rows, cols)`` and positions in metres.

    Returns
    -------
    PtychoData
        Amplitudes ``sqrt(counts)`` with bad pixels set to 0, positions in our object pixels, probe
        ``[0, 0]`` and object layer 0 (which fixes the canvas); see the module docstring.

    Raises
    ------
    ValueError
        Non-square or unsupported pattern size, a probe that does not match the patterns, a
        near-field product, or any `PtychoData` validation failure.
    """
    product = reconstruct_input.product
    counts = np.asarray(reconstruct_input.diffraction_patterns)
    if counts.ndim != 3 or counts.shape[-1] != counts.shape[-2]:
        raise ValueError(
            f"ptychodus passed diffraction patterns of shape {counts.shape}; ptycholib needs square "
            f"(M, N, N) patterns with N in {data_module.SUPPORTED_PATTERN_SIZES}. Crop the patterns in "
            f"ptychodus (diffraction settings) around the DC pixel."
        )
    if not product.metadata.far_field:
        raise ValueError(
            f"product {product.metadata.name!r} declares near-field propagation; ptycholib models "
            f"far-field diffraction only."
        )
    n = counts.shape[-1]
    n_negative = int(np.count_nonzero(counts < 0)) if counts.dtype.kind in "if" else 0
    if n_negative:
        logger.warning("%d negative counts (background-subtracted data?) are clipped to 0.", n_negative)
        counts = np.clip(counts, 0, None)
    amplitudes = data_module.counts_to_amplitudes(counts, name="diffraction patterns", where="ptychodus input")
    bad_pixels = np.asarray(reconstruct_input.bad_pixels, dtype=bool)
    if bad_pixels.shape != (n, n):
        raise ValueError(f"ptychodus passed a bad-pixel mask of shape {bad_pixels.shape}; the patterns are {n} x {n}.")
    amplitudes[:, bad_pixels] = 0.0

    probe_modes = np.asarray(product.probes.get_array())
    probe_modes = probe_modes.reshape((-1,) + probe_modes.shape[-2:])
    if probe_modes.shape[-2:] != (n, n):
        raise ValueError(
            f"the probe is {probe_modes.shape[-2]} x {probe_modes.shape[-1]} px but the patterns are {n} x {n}; "
            f"ptycholib needs the probe on the object grid with the patterns' size (far field)."
        )
    power = np.sum(np.abs(probe_modes) ** 2, axis=(-2, -1))
    mode0_fraction = float(power[0] / power.sum()) if power.sum() > 0 else 1.0
    if probe_modes.shape[0] > 1:
        logger.info("ptycholib uses probe mode 0 of %d (%.1f%% of the power).", probe_modes.shape[0], 100 * mode0_fraction)

    obj = product.object_
    geometry = obj.get_geometry()
    probe_pixels = product.probes.get_pixel_geometry()
    if not np.allclose((probe_pixels.width_m, probe_pixels.height_m), (geometry.pixel_width_m, geometry.pixel_height_m), rtol=1e-6):
        logger.warning(
            "probe pixels (%g x %g m) differ from object pixels (%g x %g m); ptycholib assumes both on one grid.",
            probe_pixels.width_m, probe_pixels.height_m, geometry.pixel_width_m, geometry.pixel_height_m,
        )
    positions = product.probe_positions
    x_px, y_px = data_module.ptychodus_px_to_object_px(
        geometry.map_probe_positions_to_object_x_px(positions),
        geometry.map_probe_positions_to_object_y_px(positions),
        n,
    )
    metadata = {
        "source": "ptychodus",
        "product_name": product.metadata.name,
        "photon_energy_eV": float(product.metadata.photon_energy_eV),
        "detector_distance_m": float(product.metadata.detector_distance_m),
        "object_pixel_size_m": [float(geometry.pixel_width_m), float(geometry.pixel_height_m)],
        "object_center_m": [float(geometry.center_x_m), float(geometry.center_y_m)],
        "object_layers": int(obj.num_layers),
        "probe_modes": int(probe_modes.shape[0]),
        "probe_mode0_power_fraction": mode0_fraction,
        "n_bad_pixels": int(bad_pixels.sum()),
        "measurement": "amplitude",
        "converted_from": "intensity",
    }
    try:
        return data_module.PtychoData(
            amplitudes=amplitudes,
            x_px=x_px,
            y_px=y_px,
            probe=probe_modes[0],
            obj=obj.get_layer(0),
            scan_index=np.asarray(positions.get_indexes(), dtype=np.int64),
            bad_pixels=bad_pixels,
            metadata=metadata,
        )
    except ValueError as error:
        raise ValueError(f"ptychodus input: {error}") from None


def product_from_object(reconstruct_input, obj):
    """Wrap a reconstructed object in a ptychodus ``Product`` on the input object's grid.

    Parameters
    ----------
    reconstruct_input : ReconstructInput
    obj : ndarray of shape (rows, cols), complex
        Object on the input object's canvas (same shape).

    Returns
    -------
    ptychodus.api.product.Product
        One object layer with the input's pixel geometry and centre (dtype of the input object);
        metadata, positions and probes passed through; no losses.
    """
    source = reconstruct_input.product
    obj_in = source.object_
    obj = np.asarray(obj)
    if obj.shape != (obj_in.height_px, obj_in.width_px):
        raise ValueError(f"the object has shape {obj.shape} but the input object is {(obj_in.height_px, obj_in.width_px)}.")
    if obj_in.num_layers > 1:
        logger.info("ptycholib reconstructs one layer; the input object had %d.", obj_in.num_layers)
    dtype = obj_in.dtype if np.iscomplexobj(obj_in.get_array()) else np.complex64
    object_out = Object(
        array=obj[np.newaxis].astype(dtype),
        pixel_geometry=obj_in.get_pixel_geometry(),
        center=obj_in.get_center(),
        layer_spacing_m=[],
    )
    return Product(
        metadata=source.metadata,
        probe_positions=source.probe_positions,
        probes=source.probes,
        object_=object_out,
        losses=[],
    )


def _load_training_data(folder):
    """Training data of `PtycholibReconstructor.train`: train_data.npz, else diffraction.h5 + product.h5."""
    folder = Path(folder)
    npz_path = folder / TRAINING_DATA_NAME
    if npz_path.is_file():
        with np.load(npz_path, allow_pickle=False) as npz:
            keys = set(npz.files)
        if "metadata" not in keys and "bad_pixels" in keys:
            return data_module.load_ptychodus_npz(npz_path), npz_path  # ptychodus's PtychoPINN export: counts
        return data_module.load_npz(npz_path), npz_path
    if (folder / "diffraction.h5").is_file() and (folder / "product.h5").is_file():
        return ptycho_data_from_input(load_reconstruct_input(folder)), folder / "diffraction.h5"
    raise FileNotFoundError(
        f"no training data in {folder}: expected {TRAINING_DATA_NAME} (ptycholib's NPZ contract, what "
        f"'export training data' writes) or diffraction.h5 + product.h5 (a ptychodus input folder)."
    )


# ----------------------------------------------------------------------------------------------
# reconstructors


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
    - `train` yields one ``TrainOutput`` per epoch (training and validation loss curves), then saves
      ``OUT/wts.h5.zip`` and ``OUT/history.csv`` and keeps the model loaded.
    - `get_progress_goal` is 1 during a reconstruction and the number of epochs during training.
    """

    def __init__(self, backend, model_type, settings):
        if (backend, model_type) not in _RECONSTRUCTOR_NAMES:
            raise ValueError(f"no ptycholib reconstructor for backend={backend!r}, model_type={model_type!r}.")
        self.backend = backend
        self.model_type = model_type
        self._settings = settings
        self._archive = None
        self._model_path = None
        self._progress_goal = None
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
        """
        input_path, output_path = Path(input_path), Path(output_path)
        dataset, source = _load_training_data(input_path)
        config = self._settings.to_config(N=dataset.patch_size, model_type=self.model_type, backend=self.backend)
        self._progress_goal = config.training.nepochs
        return self._train(dataset, config, source, output_path)

    def _train(self, dataset, config, source, output_path):
        output_path.mkdir(parents=True, exist_ok=True)
        logger.info("ptycholib: training %s (%s) on %s, %d epochs", self.backend, self.model_type, source,
                    config.training.nepochs)
        records = []
        trained = None
        for kind, item in _train_in_thread(dataset, config, output_path / "logs"):
            if kind == "epoch":
                records.append(item)
                yield _train_output(records, progress=len(records))
            else:
                trained = item
        model_path = archive.save_model(output_path / archive.DEFAULT_NAME, trained.archive)
        _write_history(output_path / "history.csv", trained.history)
        self._archive = trained.archive
        self._model_path = model_path
        self.last_history = list(trained.history)
        logger.info("ptycholib: saved %s", model_path)
        yield _train_output(list(trained.history) or records, progress=self._progress_goal)


class _TrainingCancelled(Exception):
    pass


def _train_in_thread(dataset, config, log_dir):
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
            trained = workflow.train_model(dataset, config, log_dir=log_dir, progress=False, callback=callback)
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
    return TrainOutput(
        training_loss=_loss_values(records, "loss"),
        validation_loss=_loss_values(records, "val_loss"),
        progress=int(progress),
    )


def _write_history(path, history):
    if not history:
        return
    names = list(dict.fromkeys(key for record in history for key in record))
    with Path(path).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        writer.writerows(history)


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
        super().__init__(__name__)
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


# ----------------------------------------------------------------------------------------------
# ModelCore injection and batch mode


def _processing_core_class(base):
    class ProcessingCoreWithPtycholib(base):
        """ptychodus's ProcessingCore with `PtycholibReconstructorLibrary` appended to its libraries."""

        def __init__(self, task_manager, settings_registry, product_api, algorithm_libraries):
            libraries = list(algorithm_libraries)
            found = [lib for lib in libraries if isinstance(lib, PtycholibReconstructorLibrary)]
            if found:
                self.ptycholib_library = found[0]
            else:
                self.ptycholib_library = PtycholibReconstructorLibrary(settings_registry)
                libraries.append(self.ptycholib_library)
            super().__init__(task_manager, settings_registry, product_api, libraries)

    ProcessingCoreWithPtycholib.ptycholib_base = base
    return ProcessingCoreWithPtycholib


@contextlib.contextmanager
def injected():
    """Add ptycholib to every ``ptychodus.model.core.ModelCore`` built inside this block.

    ptychodus 1.7.0 hard-codes its reconstructor libraries in ``ModelCore.__init__`` and passes them
    to ``ProcessingCore``; this swaps ``ptychodus.model.core.ProcessingCore`` for a subclass that
    appends `PtycholibReconstructorLibrary`, and restores it on exit. The processing core of a
    ModelCore built here has the library as ``processing_core.ptycholib_library``.

    Examples
    --------
    >>> with injected():                                  # doctest: +SKIP
    ...     model = ModelCore()
    >>> "ptycholib_torch" in model.processing_core.processing_api.available_reconstructors()  # doctest: +SKIP
    True
    """
    from ptychodus.model import core

    original = core.ProcessingCore
    if hasattr(original, "ptycholib_base"):  # already injected by an enclosing block
        yield
        return
    core.ProcessingCore = _processing_core_class(original)
    try:
        yield
    finally:
        core.ProcessingCore = original


def create_model_core(settings_file=None, *, log_level=logging.WARNING):
    """Build a ptychodus ``ModelCore`` with ptycholib's library in it (see `injected`).

    Use it as a context manager (``with create_model_core() as model: ...``) like ``ModelCore``.
    """
    from ptychodus.model import core

    with injected():
        return core.ModelCore(None if settings_file is None else Path(settings_file), log_level=log_level)


def run_ptychodus(argv):
    """Run the ``ptychodus`` program itself (GUI, or ``-b`` batch mode) with ptycholib injected.

    Parameters
    ----------
    argv : sequence of str
        ptychodus's command-line arguments, e.g. ``["-b", "reconstruct", "-i", IN, "-o", OUT]``; the
        GUI needs PyQt5 (``pip install ptychodus[gui]``).

    Returns
    -------
    int
        ptychodus's exit status. Unlike `run_batch` nothing is checked: an unknown algorithm still
        exits 0 without output, as in plain ptychodus.
    """
    import sys

    import ptychodus.__main__ as application

    saved = sys.argv
    sys.argv = ["ptychodus", *map(str, argv)]
    try:
        with injected():
            return int(application.main())
    finally:
        sys.argv = saved


class PtychodusBatchError(RuntimeError):
    """ptychodus's batch mode ran but failed or produced nothing; the message says why."""


@dataclasses.dataclass(frozen=True)
class BatchResult:
    """What `run_batch` did.

    Attributes
    ----------
    action : str
        ``"reconstruct"`` or ``"train"``.
    algorithm : str
        Algorithm key that ran.
    output_dir : Path
    products : list of Path
        ``product.NNNNNN.h5`` files written by this run (reconstruct); the last is the result.
    model_path : Path or None
        ``wts.h5.zip`` written by a ptycholib training run.
    seconds : float
        Wall-clock time of the ptychodus run.
    """

    action: str
    algorithm: str
    output_dir: Path
    products: list
    model_path: Path | None
    seconds: float


def _algorithm_in_settings(path):
    if path is None or not Path(path).is_file():
        return None
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path)
    value = parser.get("Processing", "Algorithm", fallback=None)
    return value.strip() if value else None


def run_batch(action, input_dir, output_dir, *, algorithm=None, model_path=None, settings_file=None,
              log_level=logging.WARNING):
    """Run ptychodus's batch mode (``ptychodus -b ACTION -i IN -o OUT``) with ptycholib injected.

    Parameters
    ----------
    action : {"reconstruct", "train"}
    input_dir : str or Path
        Standard ptychodus folder: ``diffraction.h5``, ``product.h5``, optional ``settings.ini`` and,
        for reconstruct, ``model.zip``.
    output_dir : str or Path
        Where ptychodus writes ``product.NNNNNN.h5`` (reconstruct) or the model (train).
    algorithm : str, optional
        Algorithm key; overrides ``[Processing] Algorithm`` of the settings. Default: the settings'
        value (``IN/settings.ini``, then ``settings_file``), else ``ptycholib_torch``.
    model_path : str or Path, optional
        Model to reconstruct with instead of ``IN/model.zip``.
    settings_file : str or Path, optional
        Settings read before ``IN/settings.ini`` (which ptychodus reads last), like ``ptychodus -s``.
    log_level : int
        Python logging level for ptychodus's console log.

    Returns
    -------
    BatchResult

    Raises
    ------
    ValueError
        Unknown action or algorithm (ptychodus would silently run nothing and exit 0), or both
        ``model_path`` and ``IN/model.zip``.
    FileNotFoundError
        Missing input files, or no model for a ptycholib reconstruction.
    PtychodusBatchError
        ptychodus returned a non-zero status, or a successful run wrote no output.
    """
    action = str(action).lower()
    if action not in ("reconstruct", "train"):
        raise ValueError(f"action={action!r}; ptychodus's batch mode knows 'reconstruct' and 'train'.")
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"input folder {input_dir} does not exist.")
    missing = [name for name in ("diffraction.h5", "product.h5") if not (input_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{input_dir} lacks {' and '.join(missing)}; ptychodus's batch mode needs both.")
    if settings_file is not None and not Path(settings_file).is_file():
        raise FileNotFoundError(f"settings file {settings_file} does not exist.")
    chosen = (algorithm or _algorithm_in_settings(input_dir / "settings.ini")
              or _algorithm_in_settings(settings_file) or f"{LIBRARY_NAME}_torch").strip()
    default_model = input_dir / f"model{MODEL_FILE_EXTENSION}"
    if model_path is not None:
        model_path = Path(model_path)
        if not model_path.exists():
            raise FileNotFoundError(f"model {model_path} does not exist.")
        if default_model.exists() and default_model.resolve() != model_path.resolve():
            raise ValueError(
                f"both --model {model_path} and {default_model} exist, and ptychodus's batch mode always loads "
                f"{default_model.name} from the input folder; remove one of them."
            )

    model = create_model_core(settings_file, log_level=log_level)
    with model:
        processing_api = model.processing_core.processing_api
        available = list(processing_api.available_reconstructors())
        key = chosen.casefold()
        if key not in available:
            ours = [k for k in available if k.startswith(LIBRARY_NAME + "_")]
            hint = "" if ours else " (no ptycholib backend is installed: pip install -e '.[torch]' or '.[tf]')"
            raise ValueError(
                f"unknown ptychodus algorithm {chosen!r}; available here: {', '.join(available) or 'none'}{hint}."
            )
        processing_api.set_reconstructor_if_provided(key)
        is_ours = key.startswith(LIBRARY_NAME + "_")
        if action == "reconstruct" and is_ours:
            if model_path is not None:
                processing_api.load_model_from_file(model_path)
            elif not default_model.is_file():
                raise FileNotFoundError(
                    f"no model to reconstruct with: put a ptycholib model archive at {default_model} or pass "
                    f"model_path (--model). Train one with 'ptycholib ptychodus train' or 'ptycholib train'."
                )
        registry = model.settings_registry
        open_settings = registry.open_settings

        def open_settings_then_choose(path):
            open_settings(path)
            processing_api.set_reconstructor_if_provided(key)  # the explicit choice wins over IN/settings.ini

        registry.open_settings = open_settings_then_choose
        started = time.time()
        tic = time.perf_counter()
        try:
            status = model.batch_mode_execute(action, input_dir, output_dir)
        finally:
            registry.open_settings = open_settings
        seconds = time.perf_counter() - tic
        last_error = processing_api.task_monitor.get_last_error()

    if int(status) != 0:
        reason = f": {type(last_error).__name__}: {last_error}" if last_error is not None else "; see ptychodus's log above"
        raise PtychodusBatchError(f"ptychodus batch {action} with {key} failed (exit status {int(status)}){reason}")
    products, model_out = [], None
    if action == "reconstruct":
        products = sorted(p for p in output_dir.glob("product.*.h5") if p.stat().st_mtime >= started - 1)
        if not products:
            raise PtychodusBatchError(
                f"ptychodus batch reconstruct with {key} exited 0 but wrote no product.NNNNNN.h5 in {output_dir}."
            )
    elif is_ours:
        model_out = output_dir / archive.DEFAULT_NAME
        if not model_out.is_file():
            raise PtychodusBatchError(f"ptychodus batch train with {key} exited 0 but wrote no {model_out}.")
    return BatchResult(action=action, algorithm=key, output_dir=output_dir, products=products,
                       model_path=model_out, seconds=seconds)
