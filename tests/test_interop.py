"""ptycholib.interop: PtychoPINN's legacy dict and PtychoPINN-Torch-style configs, both ways, with reports."""

import dataclasses

import pytest

from ptycholib import config, interop
from ptycholib.config import Config, ConfigError, ModelConfig


def test_legacy_round_trip_exact():
    cfg = config.apply_overrides(Config(), {"gridsize": 2, "backend": "tensorflow", "train_data_file": "a.npz", "stages": [{"epochs": 50, "learning_rate_factor": 0.5}]})
    assert interop.from_legacy_dict(interop.to_legacy_dict(cfg))[0] == cfg


@pytest.mark.parametrize("field_name, legacy_key", sorted(interop.LEGACY_KEY_RENAMES.items()))
def test_every_renamed_legacy_key_both_ways(field_name, legacy_key):
    section = "model" if field_name in {f.name for f in dataclasses.fields(ModelConfig)} else "training"
    default = getattr(getattr(Config(), section), field_name)
    value = (not default) if isinstance(default, bool) else "some/path"
    if field_name == "positions_provided":
        value = True
    cfg = config.apply_overrides(Config(), {field_name: value})
    legacy = interop.to_legacy_dict(cfg)
    assert legacy[legacy_key] == value and field_name not in legacy
    back, report = interop.from_legacy_dict({legacy_key: value})
    assert getattr(getattr(back, section), field_name) == value
    assert report.mapped[legacy_key] == f"{section}.{field_name}"


def test_legacy_backend_names():
    assert interop.to_legacy_dict(Config())["backend"] == "pytorch"
    assert interop.from_legacy_dict({"backend": "pytorch"})[0].training.backend == "torch"


def test_legacy_unknown_keys_reported_not_dropped():
    legacy = {"N": 128, "offset": 4, "data_source": "lines"}
    with pytest.raises(ConfigError, match="data_source, offset"):
        interop.from_legacy_dict(legacy)
    with pytest.warns(UserWarning, match="data_source, offset"):
        cfg, report = interop.from_legacy_dict(legacy, strict=False)
    assert cfg.model.N == 128 and report.unsupported == {"offset": 4, "data_source": "lines"}


def test_legacy_none_keeps_default():
    cfg, _ = interop.from_legacy_dict({"n_groups": None})
    assert cfg.training.n_groups == 512


TORCH_STYLE = {
    "data": {"N": 64, "C": 4, "K": 6, "grid_size": (2, 2), "nphotons": 1e5, "probe_scale": 4.0},
    "model": {"mode": "Unsupervised", "amp_activation": "silu", "n_filters_scale": 2, "object_big": True,
              "probe_big": True, "intensity_scale_trainable": False, "probe_mask": None},
    "training": {"epochs": 50, "batch_size": 16, "learning_rate": 1e-3, "nll": True},
}


def test_torch_style_import_and_drift():
    cfg, report = interop.from_torch_style(TORCH_STYLE)
    assert not report.unsupported
    assert report.mapped["K"] == "training.neighbor_count" and report.mapped["epochs"] == "training.nepochs"
    drift = {d.key: (d.ours, d.theirs) for d in interop.config_drift(Config(), cfg)}
    assert drift == {
        "model.gridsize": (1, 2),
        "model.amp_activation": ("sigmoid", "swish"),
        "training.nphotons": (1e9, 1e5),
        "training.neighbor_count": (4, 6),
        "training.intensity_scale_trainable": (True, False),
    }


def test_torch_style_mappings_and_errors():
    cfg, _ = interop.from_torch_style({"mode": "Supervised", "nll": False, "grid_size": [1, 1], "K": 4})
    assert cfg.model.model_type == "supervised" and cfg.training.nll_weight == 0 and cfg.training.mae_weight == 1
    with pytest.raises(ConfigError, match="not square"):
        interop.from_torch_style({"grid_size": (2, 3)})
    with pytest.raises(ConfigError, match="C=9 disagrees"):
        interop.from_torch_style({"grid_size": (2, 2), "C": 9, "K": 9})
    with pytest.raises(ConfigError, match="cbam_encoder"):
        interop.from_torch_style({"cbam_encoder": True})
    with pytest.warns(UserWarning, match="cbam_encoder"):
        interop.from_torch_style({"cbam_encoder": True}, strict=False)
