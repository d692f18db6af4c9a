"""The named presets in configs/ (issue 11): they load, validate and say what their docs say."""

from pathlib import Path

import pytest

from ptycholib.cli import main
from ptycholib.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_both_presets_exist_and_validate():
    names = sorted(path.stem for path in CONFIGS.glob("*.yaml"))
    assert {"cpu-quick", "paper"} <= set(names)
    for name in names:
        load_config(CONFIGS / f"{name}.yaml")  # raises on any unknown key or invalid value


def test_paper_preset_is_ptychopinns_published_recipe():
    cfg = load_config(CONFIGS / "paper.yaml")
    model, training = cfg.model, cfg.training
    assert (model.N, model.gridsize, model.n_filters_scale, model.object_big) == (64, 2, 2, False)
    assert model.n_object_channels == 1  # one object per group
    assert (training.batch_size, training.nepochs, training.learning_rate) == (16, 60, 1e-3)
    assert (training.lr_schedule, training.lr_plateau_factor, training.lr_plateau_patience, training.lr_min) == (
        "plateau", 0.5, 2, 1e-4)
    assert training.early_stopping_patience == 3 and training.early_stopping_restore_best
    assert training.validation_fraction == 0.05 and training.nll_weight == 1.0


def test_cpu_quick_preset_is_what_notebook_03_trains():
    cfg = load_config(CONFIGS / "cpu-quick.yaml")
    assert cfg.model.gridsize == 2 and not cfg.model.object_big
    notebook = (CONFIGS.parent / "notebooks" / "03_training.py").read_text()
    assert "configs/cpu-quick.yaml" in notebook


@pytest.mark.parametrize("name", ["cpu-quick", "paper"])
def test_presets_load_from_the_command_line(name, capsys):
    assert main(["config", "show", str(CONFIGS / f"{name}.yaml"), "nepochs=3"]) == 0
    assert "nepochs: 3" in capsys.readouterr().out
