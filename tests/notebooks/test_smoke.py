"""Papermill smoke runs of every notebook (smoke=True), per backend where the notebook takes one."""

import math
from pathlib import Path

import pytest

pytest.importorskip("papermill")
pytest.importorskip("jupytext")

from ptycholib import notebooks  # noqa: E402

NOTEBOOKS = notebooks.notebook_paths()


def _cases():
    for path in NOTEBOOKS:
        source = path.read_text()
        if "\nbackend: str" in source:
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


@pytest.mark.notebook
@pytest.mark.parametrize("path, backend", list(_cases()))
def test_notebook_smoke(path: Path, backend, tmp_path):
    if backend:
        pytest.importorskip(backend)
    parameters = {"backend": backend} if backend else {}
    if "\ndata_dir: str" in path.read_text():
        parameters["data_dir"] = str(tmp_path / "data")
    if "\nmodel_dir: str" in path.read_text():
        parameters["model_dir"] = str(tmp_path / "model")
    run = notebooks.run_notebook(path, parameters=parameters, out_dir=tmp_path / "nb", fig_dir=tmp_path / "fig",
                                 smoke=True, timeout=600)
    assert run.output.exists()
    assert list(run.fig_dir.glob(f"{path.stem[:2]}_*.png")), "the notebook wrote no figure"
    assert run.metrics, "the notebook wrote no metrics file"
    assert _finite(run.metrics)
