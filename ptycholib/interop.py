"""Import and export of foreign configurations: PtychoPINN's flat ``params.cfg`` dict and
PtychoPINN-Torch-style configs (SPEC section 2, Q1).

These are conversion functions onto the one schema of `ptycholib.config`, never a second schema:
every foreign key is either mapped to a ptycholib field or reported in an `ImportReport`.
`config_drift` lists, field by field, where two configs differ (notebook 01).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, fields

from ptycholib.config import (
    _SECTIONS,
    Config,
    ConfigError,
    ModelConfig,
    _field_index,
    _require,
    apply_overrides,
    config_from_dict,
    config_to_dict,
)

__all__ = [
    "LEGACY_KEY_RENAMES",
    "ImportReport",
    "Drift",
    "to_legacy_dict",
    "from_legacy_dict",
    "from_torch_style",
    "config_drift",
]


LEGACY_KEY_RENAMES = {
    "object_big": "object.big",
    "probe_big": "probe.big",
    "probe_mask": "probe.mask",
    "probe_trainable": "probe.trainable",
    "intensity_scale_trainable": "intensity_scale.trainable",
    "positions_provided": "positions.provided",
    "output_dir": "output_prefix",
    "train_data_file": "train_data_file_path",
    "test_data_file": "test_data_file_path",
}
"""PtychoPINN's nine renamed keys: ptycholib field -> key in its flat ``params.cfg`` dict."""

_INFERENCE_LEGACY_PREFIX = "inference."


@dataclass(frozen=True)
class ImportReport:
    """What an import mapped and what it could not.

    Attributes
    ----------
    mapped : dict
        Foreign key -> ptycholib key it became.
    unsupported : dict
        Foreign key -> its value, for keys ptycholib has no field for.
    """

    mapped: dict
    unsupported: dict

    def __str__(self):
        lines = [f"{len(self.mapped)} keys mapped, {len(self.unsupported)} unsupported"]
        lines += [f"  unsupported: {key} = {value!r}" for key, value in sorted(self.unsupported.items())]
        return "\n".join(lines)


def to_legacy_dict(config):
    """Export a config as PtychoPINN's flat ``params.cfg``-style dict.

    Model and training fields go to the top level, nine of them under PtychoPINN's renamed keys
    (`LEGACY_KEY_RENAMES`); inference fields go under ``inference.<name>``; the backend ``"torch"``
    is written as PtychoPINN's ``"pytorch"``. `from_legacy_dict` inverts it exactly.
    """
    values = config_to_dict(config)
    legacy = {}
    for section in ("model", "training"):
        for name, value in values[section].items():
            legacy[LEGACY_KEY_RENAMES.get(name, name)] = value
    legacy["backend"] = "pytorch" if config.training.backend == "torch" else "tensorflow"
    for name, value in values["inference"].items():
        legacy[_INFERENCE_LEGACY_PREFIX + name] = value
    return legacy


def _report_or_raise(report, strict, source):
    if report.unsupported and strict:
        keys = ", ".join(sorted(report.unsupported))
        raise ConfigError(f"{source} has keys ptycholib does not support: {keys}; pass strict=False to import the rest.")
    if report.unsupported:
        warnings.warn(f"{source}: ignored unsupported keys: {', '.join(sorted(report.unsupported))}", stacklevel=3)


def from_legacy_dict(legacy, *, strict=True):
    """Import PtychoPINN's flat ``params.cfg``-style dict.

    Parameters
    ----------
    legacy : dict
        Keys as in `to_legacy_dict`; unknown keys are reported.
    strict : bool
        Raise `ConfigError` listing unsupported keys (default); otherwise warn with the list.

    Returns
    -------
    config : Config
    report : ImportReport
    """
    reverse = {old: new for new, old in LEGACY_KEY_RENAMES.items()}
    index = _field_index()
    values = {name: {} for name in _SECTIONS}
    mapped, unsupported = {}, {}
    for key, value in legacy.items():
        if key.startswith(_INFERENCE_LEGACY_PREFIX) and key in index:
            section, f = index[key]
            target = key
        else:
            name = reverse.get(key, key)
            if name not in index or "." in name or index[name][0] == "inference":
                unsupported[key] = value
                continue
            section, f = index[name]
            target = f"{section}.{f.name}"
        if f.name == "backend" and section == "training":
            value = {"pytorch": "torch"}.get(value, value)
        if value is None and f.default is not None and f.default is not dataclasses.MISSING:
            continue  # PtychoPINN writes None for "unset": keep our default
        values[section][f.name] = value
        mapped[key] = target
    report = ImportReport(mapped=mapped, unsupported=unsupported)
    _report_or_raise(report, strict, "legacy dict")
    return config_from_dict(values, source="legacy dict"), report


_TORCH_STYLE_RENAMES = {
    "K": "neighbor_count",
    "epochs": "nepochs",
    "n_filters_scale": "n_filters_scale",
    "N": "N",
    "object_big": "object_big",
    "probe_big": "probe_big",
    "pad_object": "pad_object",
    "probe_scale": "probe_scale",
    "gaussian_smoothing_sigma": "gaussian_smoothing_sigma",
    "batch_size": "batch_size",
    "nphotons": "nphotons",
    "learning_rate": "learning_rate",
    "n_groups": "n_groups",
    "intensity_scale_trainable": "intensity_scale_trainable",
    "probe_trainable": "probe_trainable",
    "plateau_factor": "lr_plateau_factor",
    "plateau_min_lr": "lr_min",
}


def from_torch_style(torch_config, *, strict=True):
    """Import a PtychoPINN-Torch-style config (flat, or sectioned as data/model/training).

    Mapping: ``grid_size (g, g)`` -> ``gridsize`` (non-square raises), ``C`` checked against g²,
    ``K`` -> ``neighbor_count``, ``epochs`` -> ``nepochs``, ``mode`` Unsupervised/Supervised ->
    ``model_type``, ``amp_activation 'silu'`` -> ``'swish'``, ``nll`` (bool) -> ``nll_weight``,
    ``probe_mask`` (bool), ``scheduler='ReduceLROnPlateau'`` -> ``lr_schedule='plateau'`` with
    ``plateau_factor``, ``plateau_patience`` (+1: torch's scheduler waits one epoch longer than
    ptycholib's Keras-style count), ``plateau_min_lr`` -> ``lr_min`` and ``plateau_threshold=0``,
    and the fields that share our names. Every other key (or value, e.g. another ``scheduler``)
    is reported.

    Returns
    -------
    config : Config
    report : ImportReport
    """
    flat = {}
    for key, value in torch_config.items():
        if key in ("data", "model", "training", "inference") and isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    updates, mapped, unsupported = {}, {}, {}
    for key, value in flat.items():
        if key == "grid_size":
            grid = tuple(value) if isinstance(value, (list, tuple)) else (value, value)
            _require(
                len(grid) == 2 and grid[0] == grid[1],
                f"grid_size={value!r} is not square; ptycholib groups are gridsize x gridsize.",
            )
            updates["gridsize"] = int(grid[0])
            mapped[key] = "model.gridsize"
        elif key == "C":
            mapped[key] = "model.gridsize (checked: C = gridsize**2)"
        elif key == "mode":
            modes = {"unsupervised": "pinn", "supervised": "supervised"}
            _require(str(value).lower() in modes, f"mode={value!r} must be 'Unsupervised' or 'Supervised'.")
            updates["model_type"] = modes[str(value).lower()]
            mapped[key] = "model.model_type"
        elif key == "amp_activation":
            updates["amp_activation"] = {"silu": "swish"}.get(str(value).lower(), str(value).lower())
            mapped[key] = "model.amp_activation"
        elif key == "nll":
            _require(isinstance(value, bool), f"nll={value!r} must be true or false.")
            updates["nll_weight"] = 1.0 if value else 0.0
            if not value:
                updates.setdefault("mae_weight", 1.0)
            mapped[key] = "training.nll_weight"
        elif key == "probe_mask":
            updates["probe_mask"] = bool(value) if isinstance(value, bool) else value is not None
            mapped[key] = "model.probe_mask"
        elif key == "scheduler" and value == "ReduceLROnPlateau":
            updates["lr_schedule"] = "plateau"
            mapped[key] = "training.lr_schedule"
        elif key == "plateau_patience" and value is not None:
            # torch's ReduceLROnPlateau reduces after patience + 1 bad epochs, Keras's (ours) after patience.
            _require(isinstance(value, int) and value >= 0, f"plateau_patience={value!r} must be an integer >= 0.")
            updates["lr_plateau_patience"] = value + 1
            mapped[key] = "training.lr_plateau_patience (+1: torch counts one more epoch)"
        elif key == "plateau_threshold" and value == 0:
            mapped[key] = "training.lr_schedule (threshold 0: any decrease is an improvement)"
        elif key in _TORCH_STYLE_RENAMES and value is not None:
            target = _TORCH_STYLE_RENAMES[key]
            updates[target] = value
            mapped[key] = ("model." if target in {f.name for f in fields(ModelConfig)} else "training.") + target
        elif key in _TORCH_STYLE_RENAMES:
            mapped[key] = "(None: default kept)"
        else:
            unsupported[key] = value
    if "C" in flat and "gridsize" in updates:
        _require(
            flat["C"] == updates["gridsize"] ** 2,
            f"C={flat['C']} disagrees with grid_size {updates['gridsize']}x{updates['gridsize']}.",
        )
    report = ImportReport(mapped=mapped, unsupported=unsupported)
    _report_or_raise(report, strict, "torch-style config")
    config = apply_overrides(Config(), updates)
    return config, report


@dataclass(frozen=True)
class Drift:
    """One field on which two configs disagree."""

    key: str
    ours: object
    theirs: object


def config_drift(ours, theirs):
    """List the fields (as ``section.name``) where two configs differ, in schema order."""
    a, b = config_to_dict(ours), config_to_dict(theirs)
    return [
        Drift(f"{section}.{name}", a[section][name], b[section][name])
        for section in _SECTIONS
        for name in a[section]
        if a[section][name] != b[section][name]
    ]
