import dataclasses

import pytest

from ptycholib import config
from ptycholib.config import Config, ConfigError, ModelConfig, Stage, TrainingConfig


def test_defaults_are_ptychopinns():
    cfg = Config()
    assert (cfg.model.N, cfg.model.gridsize, cfg.model.n_filters_scale) == (64, 1, 2)
    assert cfg.model.model_type == "pinn" and cfg.model.amp_activation == "sigmoid"
    assert cfg.model.object_big and cfg.model.probe_big and not cfg.model.probe_mask and cfg.model.pad_object
    assert (cfg.model.probe_scale, cfg.model.gaussian_smoothing_sigma) == (4.0, 0.0)
    t = cfg.training
    assert (t.batch_size, t.nepochs, t.mae_weight, t.nll_weight, t.nphotons) == (16, 50, 0.0, 1.0, 1e9)
    assert (t.n_groups, t.neighbor_count, t.probe_trainable, t.intensity_scale_trainable) == (512, 4, False, True)
    assert (t.learning_rate, t.backend, t.stages) == (1e-3, "torch", ())


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelConfig().N = 128


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"model.N": 100}, "N=100 is not supported; allowed values: 64, 128, 256"),
        ({"gridsize": 0}, "gridsize=0 must be an integer >= 1"),
        ({"gridsize": 2, "neighbor_count": 3}, "neighbor_count=3 is smaller than gridsize**2=4"),
        ({"batch_size": 0}, "batch_size=0 must be a positive integer"),
        ({"nepochs": -1}, "nepochs=-1 must be a positive integer"),
        ({"nll_weight": 1.5}, "nll_weight=1.5 must be in [0, 1]"),
        ({"mae_weight": -0.1}, "mae_weight=-0.1 must be in [0, 1]"),
        ({"nll_weight": 0.0, "mae_weight": 0.0}, "both 0"),
        ({"amp_activation": "tanh"}, "amp_activation='tanh' is not supported"),
        ({"backend": "jax"}, "backend='jax' is not supported; allowed values: 'torch', 'tensorflow'"),
        ({"model_type": "gan"}, "model_type='gan'"),
        ({"nepochs": 5, "stages": [{"epochs": 2}]}, "stages add up to 2 epochs but nepochs=5"),
        ({"stages": [{"epochs": 0}]}, "stages[].epochs=0"),
        ({"stages": [{"epochs": 50, "learning_rate_factor": 0}]}, "learning_rate_factor=0"),
        ({"stages": [{"epochs": 50, "speed": 2}]}, "unknown keys ['speed']"),
        ({"probe_scale": 0}, "probe_scale=0.0 must be a positive number"),
        ({"gaussian_smoothing_sigma": -1.0}, "gaussian_smoothing_sigma=-1.0 must be >= 0"),
        ({"physics_weight_schedule": "step"}, "physics_weight_schedule='step'"),
        ({"positions_provided": False}, "positions_provided=False is not supported"),
        ({"crop_size": 80}, "crop_size=80 is larger than N=64"),
        ({"logger": "wandb"}, "logger='wandb'"),
        ({"precision": "16"}, "precision='16' is not supported"),
        ({"object_big": "yes"}, "object_big='yes' must be true or false"),
    ],
)
def test_validation_errors_name_field_and_allowed_values(overrides, fragment):
    with pytest.raises(ConfigError) as info:
        config.apply_overrides(Config(), overrides)
    assert fragment in str(info.value)


def test_unknown_override_key_suggests():
    with pytest.raises(ConfigError, match="did you mean 'nepochs'"):
        config.apply_overrides(Config(), ["nepoch=3"])
    with pytest.raises(ConfigError, match="must look like key=value"):
        config.apply_overrides(Config(), ["nepochs"])


def test_string_overrides_are_converted():
    cfg = config.apply_overrides(
        Config(),
        ["nepochs=5", "model.N=128", "nphotons=1e6", "probe_trainable=true", "learning_rate=3e-4",
         "inference.batch_size=64", "early_stopping_patience=null", "stages=[{epochs: 2}, {epochs: 3}]"],
    )
    assert cfg.training.nepochs == 5 and cfg.model.N == 128 and cfg.training.nphotons == 1e6
    assert cfg.training.probe_trainable is True and cfg.training.learning_rate == 3e-4
    assert cfg.inference.batch_size == 64 and cfg.training.batch_size == 16
    assert cfg.training.stages == (Stage(2), Stage(3))


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_file_round_trip(tmp_path, suffix):
    cfg = config.apply_overrides(Config(), {"gridsize": 2, "nepochs": 4, "stages": [{"epochs": 1, "freeze_encoder": True}, {"epochs": 3, "probe_trainable": True}]})
    path = tmp_path / f"c{suffix}"
    config.save_config(cfg, path)
    assert config.load_config(path) == cfg
    assert not list(tmp_path.glob(".*tmp"))


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        config.load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        config.load_config(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("model:\n  gridsise: 2\n")
    with pytest.raises(ConfigError, match="unknown key model.gridsise; did you mean 'gridsize'"):
        config.load_config(typo)
    section = tmp_path / "section.yaml"
    section.write_text("optimizer: {}\n")
    with pytest.raises(ConfigError, match="unknown sections"):
        config.load_config(section)


def test_legacy_round_trip_exact():
    cfg = config.apply_overrides(Config(), {"gridsize": 2, "backend": "tensorflow", "train_data_file": "a.npz", "stages": [{"epochs": 50, "learning_rate_factor": 0.5}]})
    assert config.from_legacy_dict(config.to_legacy_dict(cfg))[0] == cfg


@pytest.mark.parametrize("field_name, legacy_key", sorted(config.LEGACY_KEY_RENAMES.items()))
def test_every_renamed_legacy_key_both_ways(field_name, legacy_key):
    section = "model" if field_name in {f.name for f in dataclasses.fields(ModelConfig)} else "training"
    default = getattr(getattr(Config(), section), field_name)
    value = (not default) if isinstance(default, bool) else "some/path"
    if field_name == "positions_provided":
        value = True
    cfg = config.apply_overrides(Config(), {field_name: value})
    legacy = config.to_legacy_dict(cfg)
    assert legacy[legacy_key] == value and field_name not in legacy
    back, report = config.from_legacy_dict({legacy_key: value})
    assert getattr(getattr(back, section), field_name) == value
    assert report.mapped[legacy_key] == f"{section}.{field_name}"


def test_legacy_backend_names():
    assert config.to_legacy_dict(Config())["backend"] == "pytorch"
    assert config.from_legacy_dict({"backend": "pytorch"})[0].training.backend == "torch"


def test_legacy_unknown_keys_reported_not_dropped():
    legacy = {"N": 128, "offset": 4, "data_source": "lines"}
    with pytest.raises(ConfigError, match="data_source, offset"):
        config.from_legacy_dict(legacy)
    with pytest.warns(UserWarning, match="data_source, offset"):
        cfg, report = config.from_legacy_dict(legacy, strict=False)
    assert cfg.model.N == 128 and report.unsupported == {"offset": 4, "data_source": "lines"}


def test_legacy_none_keeps_default():
    cfg, _ = config.from_legacy_dict({"n_groups": None})
    assert cfg.training.n_groups == 512


TORCH_STYLE = {
    "data": {"N": 64, "C": 4, "K": 6, "grid_size": (2, 2), "nphotons": 1e5, "probe_scale": 4.0},
    "model": {"mode": "Unsupervised", "amp_activation": "silu", "n_filters_scale": 2, "object_big": True,
              "probe_big": True, "intensity_scale_trainable": False, "probe_mask": None},
    "training": {"epochs": 50, "batch_size": 16, "learning_rate": 1e-3, "nll": True},
}


def test_torch_style_import_and_drift():
    cfg, report = config.from_torch_style(TORCH_STYLE)
    assert not report.unsupported
    assert report.mapped["K"] == "training.neighbor_count" and report.mapped["epochs"] == "training.nepochs"
    drift = {d.key: (d.ours, d.theirs) for d in config.config_drift(Config(), cfg)}
    assert drift == {
        "model.gridsize": (1, 2),
        "model.amp_activation": ("sigmoid", "swish"),
        "training.nphotons": (1e9, 1e5),
        "training.neighbor_count": (4, 6),
        "training.intensity_scale_trainable": (True, False),
    }


def test_torch_style_mappings_and_errors():
    cfg, _ = config.from_torch_style({"mode": "Supervised", "nll": False, "grid_size": [1, 1], "K": 4})
    assert cfg.model.model_type == "supervised" and cfg.training.nll_weight == 0 and cfg.training.mae_weight == 1
    with pytest.raises(ConfigError, match="not square"):
        config.from_torch_style({"grid_size": (2, 3)})
    with pytest.raises(ConfigError, match="C=9 disagrees"):
        config.from_torch_style({"grid_size": (2, 2), "C": 9, "K": 9})
    with pytest.raises(ConfigError, match="cbam_encoder"):
        config.from_torch_style({"cbam_encoder": True})
    with pytest.warns(UserWarning, match="cbam_encoder"):
        config.from_torch_style({"cbam_encoder": True}, strict=False)


@pytest.mark.parametrize(
    "schedule, expected",
    [
        ("constant", [0.2, 0.2, 0.2]),
        ("linear", [0.2, 0.6, 1.0]),
        ("cosine", [0.2, 0.6, 1.0]),
        ("exponential", [0.2, 0.4, 1.0]),
    ],
)
def test_epoch_plan_physics_weight(schedule, expected):
    plan = config.epoch_plan(TrainingConfig(nepochs=3, physics_weight_schedule=schedule, physics_weight_start=0.2))
    assert [p.physics_weight for p in plan] == pytest.approx(expected)


def test_epoch_plan_stages():
    training = TrainingConfig(
        nepochs=5, learning_rate=1e-3, probe_trainable=False,
        stages=(Stage(2), Stage(2, learning_rate_factor=0.1, probe_trainable=True), Stage(1, 0.01, freeze_encoder=True)),
    )
    plan = config.epoch_plan(training)
    assert [p.stage for p in plan] == [0, 0, 1, 1, 2]
    assert [p.learning_rate for p in plan] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-5])
    assert [p.probe_trainable for p in plan] == [False, False, True, True, False]
    assert [p.freeze_encoder for p in plan] == [False, False, False, False, True]


def test_field_table_documents_every_field():
    rows = config.field_table()
    assert len(rows) == sum(len(dataclasses.fields(c)) for c in (ModelConfig, TrainingConfig, config.InferenceConfig))
    undocumented = [name for _, name, _, text in rows if not text]
    assert not undocumented
