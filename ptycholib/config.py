"""One configuration schema for both backends (SPEC section 2, Q1/Q2).

`ModelConfig`, `TrainingConfig` and `InferenceConfig` are frozen dataclasses that validate themselves;
`Config` bundles the three and checks the rules that span them. Files are JSON or YAML with one section
per dataclass. PtychoPINN's flat ``params.cfg`` dict and PtychoPINN-Torch-style configs are *import and
export functions* in `ptycholib.interop`, never a second schema; the per-epoch plan of a
`TrainingConfig` is `ptycholib.batching.epoch_plan`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from ptycholib._io import atomic_write

__all__ = [
    "ConfigError",
    "ModelConfig",
    "Stage",
    "TrainingConfig",
    "InferenceConfig",
    "Config",
    "SUPPORTED_N",
    "load_config",
    "save_config",
    "config_to_dict",
    "config_from_dict",
    "apply_overrides",
    "field_table",
]

SUPPORTED_N = (64, 128, 256)
AMP_ACTIVATIONS = ("sigmoid", "swish", "softplus", "relu")
MODEL_TYPES = ("pinn", "supervised")
INPUT_TRANSFORMS = ("linear", "log")
BACKENDS = ("torch", "tensorflow")
SCHEDULES = ("constant", "linear", "cosine", "exponential")
LR_SCHEDULES = ("constant", "plateau", "cosine", "onecycle")
LOGGERS = ("csv", "mlflow", "none")
PRECISIONS = ("32", "bf16-mixed")
INFERENCE_PRECISIONS = ("float32", "bfloat16")
WEIGHTINGS = ("crop", "probe")
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
STRATEGIES = ("auto", "single_device", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "mirrored")
MAX_SEED = 2**32 - 1
_MAX_CONFIG_BYTES = 1 << 20


class ConfigError(ValueError):
    """A configuration value, key or file is invalid; the message names it and the allowed values."""


def _require(condition, message):
    if not condition:
        raise ConfigError(message)


def _check_choice(name, value, allowed):
    _require(
        isinstance(value, (str, int, float)) and value in allowed,
        f"{name}={_short(value)} is not supported; allowed values: {', '.join(map(repr, allowed))}.",
    )


def _check_positive_int(name, value):
    _require(
        isinstance(value, int) and not isinstance(value, bool) and value > 0,
        f"{name}={value!r} must be a positive integer.",
    )


def _check_bool(name, value):
    _require(isinstance(value, bool), f"{name}={value!r} must be true or false.")


def _check_path(name, value, *, optional=False):
    if value is None and optional:
        return
    _require(
        isinstance(value, str) and value.strip() and "\x00" not in value and len(value) <= 4096,
        f"{name}={_short(value)} must be a file path (a non-empty string){' or null' if optional else ''}.",
    )


def _short(value):
    """``repr`` of a value for messages, cut to 80 characters (values may come from hostile files)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True)
class ModelConfig:
    """Network and physics options; the names are the ones ptychodus sets.

    Attributes
    ----------
    N : int
        Diffraction pattern and patch side in pixels; one of 64, 128, 256.
    gridsize : int
        Groups hold ``gridsize**2`` neighbouring positions (channels C).
    n_filters_scale : int
        Multiplies every convolution width (``s`` in docs/architecture.md).
    model_type : str
        ``"pinn"`` (physics-informed, no ground truth) or ``"supervised"`` (MAE against true patches).
    amp_activation : str
        Amplitude head: ``"sigmoid"``, ``"swish"``, ``"softplus"`` or ``"relu"``.
    object_big : bool
        At gridsize > 1: True predicts C patches per group and merges them on one group canvas;
        False (PtychoPINN's meaning) predicts **one** object per group and cuts every member's view
        from it at the member's offset, the strongest overlap constraint (SPEC 4.4). No effect at
        gridsize 1.
    probe_big : bool
        Predict the outer ring of each patch with an extra branch.
    probe_mask : bool
        Multiply the normalised probe by the disk of radius N/4.
    pad_object : bool
        Predict only the central N/2 region (zero outside, plus the outer ring with ``probe_big``).
    probe_scale : float
        Probe normalisation divisor (SPEC 4.5).
    gaussian_smoothing_sigma : float
        Blur of the exit wave in pixels; 0 disables it.
    input_transform : str
        What the network sees of the measured amplitudes ``a`` (square roots of counts):
        ``"linear"`` is SPEC 4.2's ``x = g a`` (PtychoPINN); ``"log"`` is ``x = g log(1 + a)``, which
        compresses the diffraction pattern's dynamic range (10^4 between the central peak and the
        photon-level speckle at 1e9 photons) so the encoder sees the high-q detail. ``g`` normalises
        the mean per-pattern energy of ``x`` to ``(N/2)**2`` either way. The loss is unchanged.
    """

    N: int = 64
    gridsize: int = 1
    n_filters_scale: int = 2
    model_type: str = "pinn"
    amp_activation: str = "sigmoid"
    object_big: bool = True
    probe_big: bool = True
    probe_mask: bool = False
    pad_object: bool = True
    probe_scale: float = 4.0
    gaussian_smoothing_sigma: float = 0.0
    input_transform: str = "linear"

    def __post_init__(self):
        _check_choice("N", self.N, SUPPORTED_N)
        _check_choice("input_transform", self.input_transform, INPUT_TRANSFORMS)
        _require(
            isinstance(self.gridsize, int) and not isinstance(self.gridsize, bool) and self.gridsize >= 1,
            f"gridsize={self.gridsize!r} must be an integer >= 1.",
        )
        _check_positive_int("n_filters_scale", self.n_filters_scale)
        _check_choice("model_type", self.model_type, MODEL_TYPES)
        _check_choice("amp_activation", self.amp_activation, AMP_ACTIVATIONS)
        for name in ("object_big", "probe_big", "probe_mask", "pad_object"):
            _check_bool(name, getattr(self, name))
        _require(
            _is_real(self.probe_scale) and self.probe_scale > 0,
            f"probe_scale={self.probe_scale!r} must be a positive number.",
        )
        _require(
            _is_real(self.gaussian_smoothing_sigma) and self.gaussian_smoothing_sigma >= 0,
            f"gaussian_smoothing_sigma={self.gaussian_smoothing_sigma!r} must be >= 0.",
        )

    @property
    def n_channels(self):
        """C = gridsize**2, the number of patterns per group."""
        return self.gridsize**2

    @property
    def n_object_channels(self):
        """Objects the network predicts per group: C, or 1 when ``object_big=False`` (SPEC 4.4)."""
        return self.n_channels if self.object_big else 1


@dataclass(frozen=True)
class Stage:
    """One stage of a multi-stage training schedule (SPEC 4.6).

    Attributes
    ----------
    epochs : int
        Epochs in this stage.
    learning_rate_factor : float
        Multiplies ``TrainingConfig.learning_rate`` during the stage.
    freeze_encoder : bool
        Keep the encoder's weights fixed (fine-tune the decoders only).
    probe_trainable : bool or None
        Train the probe in this stage; None inherits ``TrainingConfig.probe_trainable``.
    """

    epochs: int
    learning_rate_factor: float = 1.0
    freeze_encoder: bool = False
    probe_trainable: bool | None = None

    def __post_init__(self):
        _check_positive_int("stages[].epochs", self.epochs)
        _require(
            _is_real(self.learning_rate_factor) and self.learning_rate_factor > 0,
            f"stages[].learning_rate_factor={self.learning_rate_factor!r} must be a positive number.",
        )
        _check_bool("stages[].freeze_encoder", self.freeze_encoder)
        _require(
            self.probe_trainable is None or isinstance(self.probe_trainable, bool),
            f"stages[].probe_trainable={self.probe_trainable!r} must be true, false or null.",
        )


@dataclass(frozen=True)
class TrainingConfig:
    """Training options shared by both backends.

    The loss of an epoch with physics weight ``p`` (see `ptycholib.batching.epoch_plan`) is
    ``p * (nll_weight * NLL + mae_weight * MAE) + (1 - p) * MAE`` on diffraction amplitudes.

    Attributes
    ----------
    batch_size, nepochs : int
        Groups per optimiser step; total epochs (the sum of the stages' epochs when stages are given).
    mae_weight, nll_weight : float
        Weights in [0, 1] of the amplitude MAE and of the Poisson NLL; not both zero.
    nphotons : float
        Mean photons per pattern used by simulations (metadata of measured data wins).
    n_groups : int
        Groups drawn for training.
    neighbor_count : int
        K of the K-nearest-neighbour grouping; at least gridsize**2.
    probe_trainable, intensity_scale_trainable : bool
        Train the probe / the intensity scale ``s``.
    learning_rate : float
        Adam learning rate.
    seed : int
        Seeds grouping, initial weights, shuffling and the validation split; in [0, 2**32 - 1].
    backend : str
        ``"torch"`` or ``"tensorflow"``.
    stages : tuple of Stage
        Multi-stage schedule; empty means one stage of ``nepochs``.
    physics_weight_schedule : str
        ``"constant"``, ``"linear"``, ``"cosine"`` or ``"exponential"`` (quadratic ramp).
    physics_weight_start : float
        Physics weight of the first epoch; the schedule ends at 1.
    validation_fraction : float
        Fraction of groups held out for the validation loss.
    lr_schedule : str
        Learning-rate schedule: ``"constant"``, ``"plateau"`` (times ``lr_plateau_factor`` after
        ``lr_plateau_patience`` epochs without a lower monitored loss, PtychoPINN's
        ReduceLROnPlateau), ``"cosine"`` (per step from ``learning_rate`` down to ``lr_min`` over the
        run) or ``"onecycle"`` (per step, ``learning_rate/25`` up to ``learning_rate``, then down to
        ``learning_rate/2.5e5``, as torch's OneCycleLR); the stage's ``learning_rate_factor``
        multiplies it (`ptycholib.schedules`).
    lr_plateau_factor : float
        In (0, 1): ``"plateau"`` multiplies the learning rate by it on each plateau.
    lr_plateau_patience : int
        Epochs without a lower monitored loss (validation loss, or training loss without validation
        groups) before ``"plateau"`` reduces the learning rate.
    lr_min : float
        Floor of the ``"plateau"`` and ``"cosine"`` schedules (before the stage factor); must be
        below ``learning_rate`` for them.
    lr_onecycle_pct_start : float
        In (0, 1): fraction of the run's steps that ``"onecycle"`` spends rising to ``learning_rate``.
    early_stopping_patience : int or None
        Stop after this many epochs without a better validation loss; None disables it.
    early_stopping_restore_best : bool
        With early stopping, end training with the weights of the epoch of lowest validation loss
        (``best_epoch`` of the last history record), whether or not training stopped early.
    accelerator, devices, strategy : str, int, str
        Where training runs (Lightning names; the TF backend maps them to a tf.distribute strategy):
        accelerator ``"cpu"``, ``"gpu"``, ``"cuda"``, ``"mps"`` or ``"auto"``; strategy ``"auto"``,
        ``"single_device"``, ``"ddp"``, ``"ddp_spawn"``, ``"ddp_find_unused_parameters_true"`` or
        ``"mirrored"`` (TensorFlow's name for ``"ddp"``).
    num_nodes : int
        Machines training together (Lightning's ``num_nodes``; with TensorFlow, the workers that
        ``TF_CONFIG`` lists). ``devices`` is per node. See docs/cluster.md.
    logger : str
        ``"csv"``, ``"mlflow"`` (needs the mlflow extra) or ``"none"``.
    precision : str
        ``"32"`` (float32) or ``"bf16-mixed"`` (bfloat16 convolutions with float32 weights, heads and
        physics; about 3x faster training on CPUs with AMX; both backends).
    sequential_sampling : bool
        Take group seeds in scan order instead of at random.
    positions_provided : bool
        PtychoPINN's flag; ptycholib always uses the scan positions, so only True is accepted.
    train_data_file, test_data_file : str or None
        Default data files for the CLI and the legacy importer.
    output_dir : str
        Default output folder of ``ptycholib train``.
    """

    batch_size: int = 16
    nepochs: int = 50
    mae_weight: float = 0.0
    nll_weight: float = 1.0
    nphotons: float = 1e9
    n_groups: int = 512
    neighbor_count: int = 4
    probe_trainable: bool = False
    intensity_scale_trainable: bool = True
    learning_rate: float = 1e-3
    seed: int = 0
    backend: str = "torch"
    stages: tuple[Stage, ...] = ()
    physics_weight_schedule: str = "constant"
    physics_weight_start: float = 1.0
    validation_fraction: float = 0.05
    lr_schedule: str = "constant"
    lr_plateau_factor: float = 0.5
    lr_plateau_patience: int = 2
    lr_min: float = 1e-4
    lr_onecycle_pct_start: float = 0.3
    early_stopping_patience: int | None = None
    early_stopping_restore_best: bool = True
    accelerator: str = "cpu"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    logger: str = "csv"
    precision: str = "32"
    sequential_sampling: bool = False
    positions_provided: bool = True
    train_data_file: str | None = None
    test_data_file: str | None = None
    output_dir: str = "training_outputs"

    def __post_init__(self):
        object.__setattr__(self, "stages", tuple(_as_stage(s) for s in self.stages))
        _check_positive_int("batch_size", self.batch_size)
        _check_positive_int("nepochs", self.nepochs)
        for name in ("mae_weight", "nll_weight"):
            value = getattr(self, name)
            _require(_is_real(value) and 0 <= value <= 1, f"{name}={value!r} must be in [0, 1].")
        _require(
            self.mae_weight > 0 or self.nll_weight > 0,
            "mae_weight and nll_weight are both 0: the loss would be zero; set nll_weight=1 (Poisson) "
            "or mae_weight=1.",
        )
        _require(_is_real(self.nphotons) and self.nphotons > 0, f"nphotons={self.nphotons!r} must be > 0.")
        _check_positive_int("n_groups", self.n_groups)
        _check_positive_int("neighbor_count", self.neighbor_count)
        for name in ("probe_trainable", "intensity_scale_trainable", "sequential_sampling", "positions_provided"):
            _check_bool(name, getattr(self, name))
        _require(
            self.positions_provided,
            "positions_provided=False is not supported: ptycholib always needs the scan positions.",
        )
        _require(
            _is_real(self.learning_rate) and self.learning_rate > 0,
            f"learning_rate={self.learning_rate!r} must be a positive number.",
        )
        _require(
            isinstance(self.seed, int) and not isinstance(self.seed, bool) and 0 <= self.seed <= MAX_SEED,
            f"seed={_short(self.seed)} must be an integer in [0, 2**32 - 1].",
        )
        _check_choice("backend", self.backend, BACKENDS)
        _check_choice("physics_weight_schedule", self.physics_weight_schedule, SCHEDULES)
        _require(
            _is_real(self.physics_weight_start) and 0 <= self.physics_weight_start <= 1,
            f"physics_weight_start={self.physics_weight_start!r} must be in [0, 1].",
        )
        _require(
            _is_real(self.validation_fraction) and 0 <= self.validation_fraction < 1,
            f"validation_fraction={self.validation_fraction!r} must be in [0, 1).",
        )
        _check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _require(
            _is_real(self.lr_plateau_factor) and 0 < self.lr_plateau_factor < 1,
            f"lr_plateau_factor={self.lr_plateau_factor!r} must be in (0, 1); 0.5 halves the learning rate "
            "on a plateau.",
        )
        _check_positive_int("lr_plateau_patience", self.lr_plateau_patience)
        _require(_is_real(self.lr_min) and self.lr_min >= 0, f"lr_min={self.lr_min!r} must be a number >= 0.")
        if self.lr_schedule in ("plateau", "cosine"):
            _require(
                self.lr_min < self.learning_rate,
                f"lr_min={self.lr_min!r} must be below learning_rate={self.learning_rate!r} for "
                f"lr_schedule={self.lr_schedule!r}; lower lr_min (e.g. lr_min={self.learning_rate / 10:g}).",
            )
        _require(
            _is_real(self.lr_onecycle_pct_start) and 0 < self.lr_onecycle_pct_start < 1,
            f"lr_onecycle_pct_start={self.lr_onecycle_pct_start!r} must be in (0, 1).",
        )
        if self.early_stopping_patience is not None:
            _check_positive_int("early_stopping_patience", self.early_stopping_patience)
        _check_bool("early_stopping_restore_best", self.early_stopping_restore_best)
        _check_positive_int("devices", self.devices)
        _check_choice("accelerator", self.accelerator, ACCELERATORS)
        _check_choice("strategy", self.strategy, STRATEGIES)
        _check_positive_int("num_nodes", self.num_nodes)
        _check_path("train_data_file", self.train_data_file, optional=True)
        _check_path("test_data_file", self.test_data_file, optional=True)
        _check_path("output_dir", self.output_dir)
        _check_choice("logger", self.logger, LOGGERS)
        _check_choice("precision", self.precision, PRECISIONS)
        if self.stages:
            total = sum(stage.epochs for stage in self.stages)
            _require(
                total == self.nepochs,
                f"stages add up to {total} epochs but nepochs={self.nepochs}; make them equal.",
            )


@dataclass(frozen=True)
class InferenceConfig:
    """Inference and reassembly options.

    Attributes
    ----------
    batch_size : int
        Groups per prediction batch; 0 (the default) picks one for throughput, about
        ``32 / n_filters_scale`` patterns per network call (`ptycholib.workflow.inference_batch_size`).
    precision : str
        ``"float32"`` or ``"bfloat16"``: the network's convolutions in bfloat16 (physics, the
        heads' activations and reassembly stay float32); faster on CPUs with AMX and on GPUs, slower
        on CPUs without AMX.
    crop_size : int
        Side of the central crop of each patch placed on the canvas (SPEC 7: 20 at N = 64).
    weighting : str
        ``"crop"`` (uniform central crop) or ``"probe"`` (probe-intensity weights over the patch).
    backend : str or None
        Backend used for inference; None means the backend that trained the model.
    refine_iterations : int
        Sweeps of physics refinement after the network (`ptycholib.refine`); 0 = the network alone.
        Used by ptychodus's reconstructor and as ``ptycholib reconstruct --refine``'s default.
    refine_alpha : float
        rPIE step regulariser of that refinement, in (0, 1]; 1 is ePIE's step.
    """

    batch_size: int = 0
    precision: str = "float32"
    crop_size: int = 20
    weighting: str = "crop"
    backend: str | None = None
    refine_iterations: int = 0
    refine_alpha: float = 1.0

    def __post_init__(self):
        _require(not isinstance(self.batch_size, bool) and isinstance(self.batch_size, int) and self.batch_size >= 0,
                 f"inference.batch_size={self.batch_size!r} must be an integer >= 0 (0 = chosen for throughput).")
        _check_choice("inference.precision", self.precision, INFERENCE_PRECISIONS)
        _check_positive_int("crop_size", self.crop_size)
        _check_choice("weighting", self.weighting, WEIGHTINGS)
        _require(not isinstance(self.refine_iterations, bool) and isinstance(self.refine_iterations, int)
                 and self.refine_iterations >= 0, f"refine_iterations={self.refine_iterations!r} must be an integer >= 0.")
        _require(_is_real(self.refine_alpha) and 0 < self.refine_alpha <= 1,
                 f"refine_alpha={self.refine_alpha!r} must be a number in (0, 1].")
        if self.backend is not None:
            _check_choice("inference.backend", self.backend, BACKENDS)


@dataclass(frozen=True)
class Config:
    """The three sections together, plus the rules that span them."""

    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    def __post_init__(self):
        channels = self.model.gridsize**2
        _require(
            self.training.neighbor_count >= channels,
            f"neighbor_count={self.training.neighbor_count} is smaller than gridsize**2={channels}; "
            f"a group needs at least {channels} neighbours.",
        )
        _require(
            self.inference.crop_size <= self.model.N,
            f"crop_size={self.inference.crop_size} is larger than N={self.model.N}.",
        )


_SECTIONS = {"model": ModelConfig, "training": TrainingConfig, "inference": InferenceConfig}


def _is_real(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _as_stage(value):
    if isinstance(value, Stage):
        return value
    if isinstance(value, dict):
        unknown = set(value) - {f.name for f in fields(Stage)}
        _require(not unknown, f"stages[] has unknown keys {sorted(unknown)}; allowed: {[f.name for f in fields(Stage)]}.")
        return Stage(**value)
    raise ConfigError(f"stages[]={value!r} must be a mapping like {{epochs: 10, learning_rate_factor: 0.1}}.")


# --------------------------------------------------------------------------------------------------
# dicts, files and overrides


def config_to_dict(config):
    """Return ``{"model": {...}, "training": {...}, "inference": {...}}`` of plain Python values."""

    def plain(section):
        values = dataclasses.asdict(section)
        if "stages" in values:
            values["stages"] = [dict(stage) for stage in values["stages"]]
        return values

    return {name: plain(getattr(config, name)) for name in _SECTIONS}


def config_from_dict(values, *, source="config"):
    """Build a `Config` from a sectioned dict; unknown sections or keys raise `ConfigError`."""
    _require(isinstance(values, dict), f"{source} must hold a mapping with sections {list(_SECTIONS)}.")
    unknown_sections = set(values) - set(_SECTIONS)
    _require(
        not unknown_sections,
        f"{source} has unknown sections {sorted(unknown_sections)}; allowed: {list(_SECTIONS)}.",
    )
    built = {}
    for name, cls in _SECTIONS.items():
        section = values.get(name) or {}
        _require(isinstance(section, dict), f"section {name!r} of {source} must be a mapping.")
        known = {f.name for f in fields(cls)}
        for key in section:
            if key not in known:
                raise ConfigError(f"{source}: unknown key {name}.{key}{_suggest(key, known)}")
        try:
            built[name] = cls(**section)
        except TypeError as exc:  # wrong value types that __post_init__ could not name
            raise ConfigError(f"{source}: section {name}: {exc}") from None
    return Config(**built)


class _StrictLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` without aliases or anchors, and with duplicate keys reported.

    Aliases let a few hundred bytes expand into gigabytes ("billion laughs"); a config never needs
    them. A repeated key would silently keep the last value.
    """

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            mark = event.start_mark
            raise ConfigError(
                f"YAML anchors and aliases (&name, *name) are not allowed in a config (line {mark.line + 1}, "
                f"column {mark.column + 1}); write the values out."
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key; SafeLoader reports it below
                break
            if duplicate:
                mark = key_node.start_mark
                raise ConfigError(f"duplicate key {_short(key)} at line {mark.line + 1}, column {mark.column + 1}; "
                                  "each key may appear once.")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _load_yaml(text):
    """Parse YAML with `_StrictLoader` (no aliases, no duplicate keys)."""
    loader = _StrictLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _reject_duplicate_json_keys(pairs):
    keys = [key for key, _ in pairs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ConfigError(f"duplicate keys {duplicates}; each key may appear once.")
    return dict(pairs)


def load_config(path):
    """Read a config file (``.json``, ``.yaml`` or ``.yml``) into a validated `Config`.

    Files larger than 1 MiB are refused unread; YAML is parsed by a safe loader that refuses
    anchors and aliases; duplicate keys are errors in both formats.

    Raises
    ------
    FileNotFoundError
        No such file.
    ConfigError
        Too large, not UTF-8, not valid JSON/YAML, aliases, duplicate keys, or invalid values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist.")
    size = path.stat().st_size
    _require(size <= _MAX_CONFIG_BYTES, f"{path} is {size} bytes; a config file is at most {_MAX_CONFIG_BYTES} bytes.")
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        text = path.read_bytes().decode("utf-8")
        values = json.loads(text, object_pairs_hook=_reject_duplicate_json_keys) if kind == "JSON" else _load_yaml(text)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError, RecursionError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(f"{path} is not valid {kind}: {detail}") from None
    return config_from_dict(values if values is not None else {}, source=str(path))


def save_config(config, path):
    """Write a config as JSON or YAML (chosen by suffix), atomically."""
    path = Path(path)
    values = config_to_dict(config)
    text = json.dumps(values, indent=2) + "\n" if path.suffix == ".json" else yaml.safe_dump(values, sort_keys=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        handle.write(text)


def _field_index():
    """Map each bare and dotted key to (section, field)."""
    index = {}
    for section, cls in _SECTIONS.items():
        for f in fields(cls):
            index[f"{section}.{f.name}"] = (section, f)
            index.setdefault(f.name, (section, f))  # bare batch_size / backend mean the training ones
    return index


def _suggest(key, candidates):
    close = difflib.get_close_matches(key, list(candidates), n=1)
    return f"; did you mean {close[0]!r}?" if close else "."


def _parse_text(text):
    """Parse a ``key=value`` value: numbers (including ``1e9``), booleans, null, lists, strings."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    try:
        return _load_yaml(text)
    except (yaml.YAMLError, RecursionError):
        return text


def _coerce(key, value, annotation):
    hint = typing.get_type_hints(annotation[0])[annotation[1]]
    allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if int in allowed and isinstance(value, float) and value.is_integer() and float not in allowed:
        return int(value)
    if str in allowed and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if typing.get_origin(hint) is tuple:
        _require(isinstance(value, (list, tuple)), f"{key} must be a list, got {value!r}.")
        return tuple(value)
    return value


def apply_overrides(config, overrides):
    """Return a new config with values replaced.

    Parameters
    ----------
    config : Config
    overrides : dict or sequence of str
        ``{"nepochs": 5, "model.N": 128}`` or ``["nepochs=5", "model.N=128"]`` (what papermill
        parameters and the CLI pass). Bare names refer to their section (``batch_size`` and
        ``backend`` mean the training ones; use ``inference.batch_size`` for the other). Strings are
        converted to the field's type.

    Raises
    ------
    ConfigError
        Unknown key (with a suggestion), malformed ``key=value`` or an invalid value.
    """
    if isinstance(overrides, dict):
        items = list(overrides.items())
    else:
        items = []
        for text in overrides:
            key, sep, value = str(text).partition("=")
            _require(sep and key.strip(), f"override {text!r} must look like key=value.")
            items.append((key.strip(), _parse_text(value.strip())))
    index = _field_index()
    values = config_to_dict(config)
    for key, value in items:
        if key not in index:
            raise ConfigError(f"unknown config key {key!r}{_suggest(key, index)}")
        section, f = index[key]
        values[section][f.name] = _coerce(key, value, (_SECTIONS[section], f.name))
    return config_from_dict(values, source="overrides")


def field_table():
    """Return rows ``(section, name, default, description)`` of the whole schema (notebook 01)."""
    rows = []
    for section, cls in _SECTIONS.items():
        docs = _attribute_docs(cls)
        for f in fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rows.append((section, f.name, default, docs.get(f.name, "")))
    return rows


def _attribute_docs(cls):
    """Parse the numpydoc ``Attributes`` section into name -> first description line."""
    docs, current = {}, None
    for line in (cls.__doc__ or "").splitlines():
        stripped = line.strip()
        if line.startswith("    ") and not line.startswith("        ") and " : " in stripped:
            current = [name.strip() for name in stripped.split(" : ")[0].split(",")]
        elif current and stripped and line.startswith("        "):
            for name in current:
                docs.setdefault(name, stripped.replace("``", ""))
            current = None
    return docs
