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


def _show_calls(tree):
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "notebooks"
            and node.func.attr in ("show", "show_table")]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_figures_and_tables_are_the_cells_value(path):
    """A plot or table cell ends with ``notebooks.show(...)`` / ``notebooks.show_table(...)``, once per cell, so
    the picture lands under the prose that explains it; nothing saves a figure behind the reader's back."""
    text = path.read_text()
    assert "matplotlib.use" not in text and ".savefig(" not in text and "table_figure" not in text
    nb = jupytext.read(path)
    shown = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source)
        calls = _show_calls(tree)
        if not calls:
            continue
        shown += 1
        last = tree.body[-1]
        assert len(calls) == 1, f"{path.name}: one figure or table per cell:\n{cell.source}"
        assert isinstance(last, ast.Expr) and last.value is calls[0], f"{path.name}: end with it:\n{cell.source}"
    assert shown, f"{path.name} shows no figure or table"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_parses_every_parameter_line(path, caplog):
    """papermill's inspector (used when it injects parameters and by --help-notebook) reads every line:
    no 'Unable to parse line' warning, every parameter with its type and help text."""
    translators = pytest.importorskip("papermill.translators")
    nb = jupytext.read(path)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    with caplog.at_level("WARNING", logger="papermill"):
        found = translators.PythonTranslator.inspect(cell)
    assert not [r.getMessage() for r in caplog.records], path.name
    declared = [node.target.id for node in ast.parse(cell.source).body]
    assert [p.name for p in found] == declared
    assert all(p.inferred_type_name != "None" and p.help for p in found)
