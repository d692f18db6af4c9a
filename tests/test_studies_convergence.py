"""The convergence study's runner (issue 11): every recipe is a valid config; a tiny run scores and plots."""

import json

import pytest

from ptycholib import simulate
from ptycholib.studies import convergence


@pytest.mark.parametrize("name", sorted(convergence.RECIPES) + ["preset:cpu-quick", "preset:paper"])
def test_every_recipe_is_a_valid_config(name):
    cfg = convergence.recipe_config(name, nepochs=3)
    assert cfg.training.nepochs == 3


def test_recipes_differ_from_the_base_in_what_their_name_says():
    assert not convergence.recipe_config("single-object").model.object_big
    assert convergence.recipe_config("merged-patches").model.object_big
    assert convergence.recipe_config("single-object-plateau").training.lr_schedule == "plateau"
    assert convergence.recipe_config("gridsize1").model.gridsize == 1
    today = convergence.recipe_config("today", nepochs=24).training
    assert [s.epochs for s in today.stages] == [16, 8] and today.precision == "bf16-mixed"


def test_a_tiny_run_writes_scores_a_model_and_a_plot(tmp_path):
    pytest.importorskip("torch")
    train, test = simulate.simulate_train_test(n_train=64, n_test=36, step_px=4.0, seed=1)
    records = convergence.run_recipe(
        "single-object", train, test, tmp_path, nepochs=2, eval_every=0.0,
        extra={"n_groups": 24, "batch_size": 8, "logger": "none"}, log=lambda *_: None,
    )
    assert [r["epoch"] for r in records] == [0, 1]
    lines = [json.loads(line) for line in (tmp_path / "single-object.jsonl").read_text().splitlines()]
    assert lines == json.loads(json.dumps(records))
    assert all(0 <= r["amplitude_ssim"] <= 1 and r["train_seconds"] > 0 for r in records)
    assert (tmp_path / "single-object.wts.h5.zip").is_file()
    results = convergence.load_results(tmp_path)
    convergence.plot_results(results, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 0
