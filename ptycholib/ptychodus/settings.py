"""ptycholib's configuration as ptychodus settings (``settings.ini`` and the GUI).

`SETTINGS_GROUPS` maps three ptychodus settings groups (``PtycholibModel``, ``PtycholibTraining``,
``PtycholibInference``) to the fields of `ModelConfig`, `TrainingConfig` and `InferenceConfig`,
with ptycholib's defaults. `PtycholibSettings` creates them in a running ptychodus's settings
registry and builds validated configs from them; `write_settings` writes a ``settings.ini`` for
batch mode; `read_algorithm` reads its ``[Processing] Algorithm``.

Nothing here imports ``ptychodus``: the registry is the caller's.
"""

from __future__ import annotations

import configparser
import dataclasses
from pathlib import Path

from ptycholib import config as config_module
from ptycholib.config import Config, ConfigError, InferenceConfig, ModelConfig, TrainingConfig

__all__ = [
    "SETTINGS_GROUPS",
    "PtycholibSettings",
    "read_algorithm",
    "write_settings",
]

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
        ("Precision", "precision"),
        ("CropSize", "crop_size"),
        ("Weighting", "weighting"),
        ("RefineIterations", "refine_iterations"),
        ("RefineAlpha", "refine_alpha"),
    )),
}
"""ptychodus settings of ptycholib: group -> (config section, ((parameter, field), ...)).

``EarlyStoppingPatience = 0`` stands for ``early_stopping_patience=None`` (no early stopping)."""

_DEFAULT_SECTIONS = {"model": ModelConfig(), "training": TrainingConfig(), "inference": InferenceConfig()}
_NONE_AS_ZERO = {("training", "early_stopping_patience")}


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


def read_algorithm(path):
    """Return ``[Processing] Algorithm`` of a ptychodus settings file, or None (no file, no entry).

    Parameters
    ----------
    path : str or Path or None
    """
    if path is None or not Path(path).is_file():
        return None
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path)
    value = parser.get("Processing", "Algorithm", fallback=None)
    return value.strip() if value else None
