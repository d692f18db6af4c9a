"""MLflow for real (ptycholib.tracking): a run per training with the archive as artifact, runs:/ models, tags."""

import csv
import json
import os

import numpy as np
import pytest

from ptycholib import notebooks, tracking
from ptycholib.backends import is_available
from ptycholib.cli import main

needs_torch = pytest.mark.skipif(not is_available("torch"), reason="needs the torch backend")


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A local MLflow file store in tmp_path, as MLFLOW_TRACKING_URI; returns its client."""
    mlflow = pytest.importorskip("mlflow")
    uri = (tmp_path / "store").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.delenv(tracking.RUN_TAGS_ENV, raising=False)
    return mlflow.MlflowClient(uri)


def _only_run(client):
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT_NAME)
    (run,) = client.search_runs([experiment.experiment_id])
    return run


@needs_torch
def test_train_with_mlflow_then_reconstruct_from_the_run(store, tiny_data_dir, tmp_path, capsys):
    out = tmp_path / "model"
    with tracking.run_tags_env({"nphotons": 1e6, "notebook": "03_training"}):
        assert main(["train", "--data", str(tiny_data_dir / "train.npz"), "--backend", "torch", "--out", str(out),
                     "--no-progress", "gridsize=2", "n_filters_scale=1", "n_groups=12", "nepochs=1", "batch_size=8",
                     "logger=mlflow"]) == 0
    run = _only_run(store)
    assert f"runs:/{run.info.run_id}/wts.h5.zip" in capsys.readouterr().out
    assert run.info.status == "FINISHED"
    assert {"nphotons": "1000000.0", "notebook": "03_training"}.items() <= run.data.tags.items()
    assert run.data.params["training.nepochs"] == "1" and run.data.params["model.gridsize"] == "2"
    assert {"loss", "val_loss", "deviance", "val_deviance", "amplitude_mae", "learning_rate"} <= set(run.data.metrics)
    assert {a.path for a in store.list_artifacts(run.info.run_id)} == {"wts.h5.zip", "history.csv"}
    with (out / "history.csv").open() as handle:
        assert list(csv.DictReader(handle).fieldnames) == list(tracking.HISTORY_COLUMNS)

    recons = {}
    for name, model in (("file", str(out / "wts.h5.zip")), ("run", f"runs:/{run.info.run_id}/wts.h5.zip"),
                        ("run folder", f"runs:/{run.info.run_id}")):
        recons[name] = tmp_path / f"{name}.npz"
        assert main(["reconstruct", "--model", model, "--data", str(tiny_data_dir / "test.npz"),
                     "--out", str(recons[name])]) == 0
    with np.load(recons["file"]) as a, np.load(recons["run"]) as b, np.load(recons["run folder"]) as c:
        np.testing.assert_array_equal(a["object"], b["object"])
        np.testing.assert_array_equal(a["object"], c["object"])


def test_a_bad_run_exits_2_with_one_line(store, tiny_data_dir, tmp_path, capsys):
    for model in ("runs:/0123456789abcdef/wts.h5.zip", "runs:/"):
        assert main(["reconstruct", "--model", model, "--data", str(tiny_data_dir / "test.npz"),
                     "--out", str(tmp_path / "r.npz")]) == 2
        err = capsys.readouterr().err.strip()
        assert "cannot download" in err and model in err and len(err.splitlines()) == 1


def test_local_model_passes_paths_through(tmp_path):
    with tracking.local_model(tmp_path / "wts.h5.zip") as path:
        assert path == tmp_path / "wts.h5.zip"
    assert not tracking.is_run_uri(tmp_path)


def test_run_tags_from_the_environment(monkeypatch):
    monkeypatch.delenv(tracking.RUN_TAGS_ENV, raising=False)
    assert tracking.run_tags() == {}
    with tracking.run_tags_env({"a": 1, "backend": "torch"}):
        assert tracking.run_tags() == {"a": "1", "backend": "torch"}
        with tracking.run_tags_env({"b": True}):
            assert tracking.run_tags() == {"b": "True"}
        assert tracking.run_tags() == {"a": "1", "backend": "torch"}
    assert tracking.RUN_TAGS_ENV not in os.environ
    for text in ("not json", "[1, 2]"):
        monkeypatch.setenv(tracking.RUN_TAGS_ENV, text)
        with pytest.raises(ValueError, match=tracking.RUN_TAGS_ENV):
            tracking.run_tags()


def test_start_run_tags_and_closes_runs(store, monkeypatch):
    from ptycholib.config import ModelConfig, TrainingConfig

    monkeypatch.setenv(tracking.RUN_TAGS_ENV, json.dumps({"grid": "a-1"}))
    with pytest.raises(RuntimeError), tracking.start_run(ModelConfig(), TrainingConfig()) as run:
        run.log_metrics({"loss": 2.0, "stage": 0, "note": "skipped", "flag": True}, step=3)
        raise RuntimeError("training failed")
    logged = _only_run(store)
    assert logged.info.status == "FAILED" and logged.data.tags["grid"] == "a-1"
    assert logged.data.metrics == {"loss": 2.0, "stage": 0.0}
    monkeypatch.setenv("LOCAL_RANK", "1")  # another process of a multi-process run logs nothing
    with tracking.start_run(ModelConfig(), TrainingConfig()) as run:
        assert run is None


def test_notebook_runs_carry_their_grid_point_as_tags(tmp_path, monkeypatch):
    """`notebooks.run_notebook` exports the parameters, which the kernel's training runs read as tags."""
    papermill = pytest.importorskip("papermill")
    pytest.importorskip("jupytext")
    monkeypatch.delenv(tracking.RUN_TAGS_ENV, raising=False)
    seen = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda *args, **kwargs: seen.append(tracking.run_tags()))
    notebook = tmp_path / "07_grid.py"
    notebook.write_text('# %% tags=["parameters"]\nsmoke = False\nfig_dir = "."\na = 0\n')
    runs = notebooks.run_notebooks(["07"], grid=["a=1,2"], out_dir=tmp_path / "out", fig_dir=tmp_path / "fig",
                                   notebook_dir=tmp_path, html=False)
    assert len(runs) == 2
    assert [tags["a"] for tags in seen] == ["1", "2"]
    assert seen[0]["notebook"] == "07_grid" and seen[0]["mlflow.runName"] == "07_grid__a-1"
    assert tracking.RUN_TAGS_ENV not in os.environ


def test_history_columns_are_written_in_order(tmp_path):
    records = [{key: index for key in tracking.HISTORY_COLUMNS} for index in range(2)]
    path = tracking.write_history(tmp_path / "history.csv", records)
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(tracking.HISTORY_COLUMNS) and rows[1]["deviance"] == "1"
    assert tracking.write_history(tmp_path / "empty.csv", []) is None and not (tmp_path / "empty.csv").exists()
