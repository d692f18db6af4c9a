"""Static notebook conventions: no kernel needed."""

import ast
import re
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("[0-9][0-9]_*.py"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_parameters_cell_with_smoke_and_fig_dir(path):
    nb = jupytext.read(path)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    source = tagged[0].source
    assert re.search(r"^smoke: bool = False\b", source, re.M)
    assert re.search(r"^fig_dir: str = ", source, re.M)
    for node in ast.parse(source).body:  # literals only, so papermill --help-notebook works
        assert isinstance(node, ast.AnnAssign) and isinstance(node.value, ast.Constant), ast.dump(node)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_thin_cells_and_kernelspec(path):
    nb = jupytext.read(path)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                assert node.end_lineno - node.lineno < 3, f"{path.name}: move {node.name} into ptycholib"
        assert not any(o.get("output_type") for o in cell.get("outputs", []))


def test_notebooks_are_numbered_and_unique():
    numbers = [p.stem[:2] for p in NOTEBOOKS]
    assert numbers == sorted(set(numbers))
