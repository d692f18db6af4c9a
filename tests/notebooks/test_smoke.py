"""Papermill smoke runs of every notebook (smoke=True), per backend where the notebook takes one.

The notebooks form a pipeline (02 writes the data, 03 the models, 04 reads both), so the runs share one
session folder and a notebook's prerequisites run first, once.
"""

import math
import re

import pytest

nbformat = pytest.importorskip("nbformat")

pytest.importorskip("papermill")
pytest.importorskip("jupytext")

from ptycholib import notebooks  # noqa: E402

NOTEBOOKS = notebooks.notebook_paths()
PREREQUISITES = {"03": ["02"], "04": ["02", "03"], "05": ["02"]}


def _declares(path, name):
    return re.search(rf"^{name}: ", path.read_text(), re.M) is not None


def _cases():
    for path in NOTEBOOKS:
        if _declares(path, "backend"):
            for backend in ("torch", "tensorflow"):
                yield pytest.param(path, backend, id=f"{path.stem}-{backend}")
        else:
            yield pytest.param(path, None, id=path.stem)


def _finite(value):
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, float):
        return math.isfinite(value)
    return True


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    runs = {}

    def run(number, backend=None):
        path = notebooks.notebook_paths([number])[0]
        backend = backend if _declares(path, "backend") else None
        key = (number, backend)
        if key not in runs:
            for prerequisite in PREREQUISITES.get(number, []):
                run(prerequisite, backend)
            shared = {"data_dir": str(root / "data"), "model_dir": str(root / "models"), "backend": backend}
            parameters = {k: v for k, v in shared.items() if v is not None and _declares(path, k)}
            name = f"{path.stem}-{backend}" if backend else path.stem
            runs[key] = notebooks.run_notebook(path, parameters=parameters, out_dir=root / "executed",
                                               fig_dir=root / "figures" / name, smoke=True, run_name=name,
                                               timeout=900)
        return runs[key]

    return run


def _assert_every_figure_is_shown(executed_path, figures):
    """The executed notebook holds one PNG output per figure written to fig_dir, each once, as the value
    of the cell that saved it (`ptycholib.notebooks.show`), so a reader sees it under its paragraph; a
    table (`show_table`) is its cell's value as an HTML table."""
    executed = nbformat.read(executed_path, as_version=4)
    shown = []
    for index, cell in enumerate(executed.cells):
        if cell.cell_type != "code":
            continue
        images = [o for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
        if "notebooks.show(" in cell.source:
            assert len(images) == 1 and images[0].output_type == "execute_result", (index, cell.source)
        if "notebooks.show_table(" in cell.source:
            values = [o for o in cell.get("outputs", []) if o.output_type == "execute_result"]
            assert len(values) == 1 and "<table>" in values[0].data.get("text/html", ""), (index, cell.source)
        shown += images
    names = [f.name for f in figures]
    assert len(shown) == len(figures), f"{len(figures)} figures written ({names}), {len(shown)} shown"


@pytest.mark.notebook
@pytest.mark.parametrize("path, backend", list(_cases()))
def test_notebook_smoke(path, backend, pipeline):
    if backend:
        pytest.importorskip(backend)
    result = pipeline(path.stem[:2], backend)
    assert result.output.exists()
    figures = sorted(result.fig_dir.glob(f"{path.stem[:2]}_*.png"))
    assert figures or list(result.fig_dir.glob(f"{path.stem[:2]}_*.md")), "the notebook wrote no figure or table"
    _assert_every_figure_is_shown(result.output, figures)
    assert result.html is not None and result.html.exists()
    assert result.metrics, "the notebook wrote no metrics file"
    assert _finite(result.metrics), result.metrics
    # At smoke sizes the trained-model rows compare two models after a few Adam steps, which amplify
    # float32 round-off (SPEC 8 targets trained models); test_trained_model_parity checks them at the
    # main job's size. Every other row must pass.
    failed = [row for row in result.metrics.get("parity_rows", [])
              if not row["passed"] and row["stage"] != "trained models"]
    assert not failed, failed


@pytest.mark.notebook
def test_grid_runner_two_by_one(tmp_path):
    runs = notebooks.run_notebooks(["01"], grid=["gridsize=1,2", "nepochs=3"], out_dir=tmp_path / "nb",
                                   fig_dir=tmp_path / "fig", smoke=True, workers=2)
    assert [run.output.name for run in runs] == ["01_config_harmonization__gridsize-1.ipynb",
                                                 "01_config_harmonization__gridsize-2.ipynb"]
    for run in runs:
        assert run.output.exists() and run.metrics["n_fields"] > 0
        assert run.fig_dir == (tmp_path / "fig" / "runs" / run.output.stem).resolve()
    table = notebooks.combined_table(runs)
    assert "01_config_harmonization__gridsize-2" in table
