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


def test_field_table_documents_every_field():
    rows = config.field_table()
    assert len(rows) == sum(len(dataclasses.fields(c)) for c in (ModelConfig, TrainingConfig, config.InferenceConfig))
    undocumented = [name for _, name, _, text in rows if not text]
    assert not undocumented


@pytest.mark.parametrize(
    "override, message",
    [
        ("accelerator=quantum", "accelerator='quantum' is not supported; allowed values: 'cpu'"),
        ("strategy=evil", "strategy='evil' is not supported"),
        ("accelerator=[1, 2]", "accelerator=.* is not supported"),
        ("seed=-1", r"seed=-1 must be an integer in \[0, 2\*\*32 - 1\]"),
        ("seed=4294967296", "seed=4294967296 must be"),
        ("output_dir=[1]", r"output_dir=\[1\] must be a file path"),
        ("output_dir=''", "output_dir='' must be a file path"),
        ("train_data_file={a: 1}", "train_data_file=.* must be a file path"),
    ],
)
def test_free_typed_fields_are_validated(override, message):
    with pytest.raises(ConfigError, match=message):
        config.apply_overrides(Config(), [override])


def test_known_devices_and_paths_pass():
    cfg = config.apply_overrides(Config(), ["accelerator=gpu", "strategy=ddp", "seed=4294967295", "train_data_file=a.npz"])
    assert (cfg.training.accelerator, cfg.training.strategy, cfg.training.seed) == ("gpu", "ddp", 2**32 - 1)
    assert config.apply_overrides(Config(), ["strategy=mirrored", "train_data_file=null"]).training.train_data_file is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("training: &t {nepochs: 3}\ninference: *t\n", r"anchors and aliases .*line 1, column 11"),
        ("a: &a [1, 2]\ntraining: {stages: *a}\n", "anchors and aliases"),
        ("training:\n  nepochs: 3\n  nepochs: 4\n", "duplicate key 'nepochs' at line 3"),
        ("model: {}\nmodel: {}\n", "duplicate key 'model' at line 2"),
        ("training:\n  <<: {nepochs: 3}\n", "not valid YAML"),
    ],
)
def test_yaml_refuses_aliases_and_duplicate_keys(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        config.load_config(path)


def test_json_duplicates_size_and_depth_are_refused(tmp_path):
    dup = tmp_path / "dup.json"
    dup.write_text('{"training": {"seed": 1, "seed": 2}}')
    with pytest.raises(ConfigError, match=r"duplicate keys \['seed'\]"):
        config.load_config(dup)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 50000 + "]" * 50000)
    with pytest.raises(ConfigError, match="not valid JSON"):
        config.load_config(deep)
    big = tmp_path / "big.yaml"
    big.write_text("#" * (2**20 + 1))
    with pytest.raises(ConfigError, match="a config file is at most 1048576 bytes"):
        config.load_config(big)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load_config(binary)
