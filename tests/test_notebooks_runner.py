import json

import pytest

from ptycholib import notebooks
from ptycholib.notebooks import NotebookRun


def test_notebook_paths_by_prefix_and_errors():
    every = notebooks.notebook_paths()
    assert every and [p.stem[:2] for p in every] == sorted(p.stem[:2] for p in every)
    assert notebooks.notebook_paths(["01"])[0].stem == "01_config_harmonization"
    with pytest.raises(ValueError, match="no notebook named '99'"):
        notebooks.notebook_paths(["99"])


def test_expand_grid_product_and_types():
    grid = notebooks.expand_grid(["nphotons=1e4,1e6", "backend=torch,tensorflow", "smoke=true"])
    assert len(grid) == 4
    assert grid[0] == {"nphotons": 1e4, "backend": "torch", "smoke": True}
    assert notebooks.expand_grid([]) == [{}]
    with pytest.raises(ValueError, match="name=value"):
        notebooks.expand_grid(["oops"])


def test_combined_table(tmp_path):
    runs = [NotebookRun("01_x", {}, tmp_path / "01_x__a-1.ipynb", tmp_path, {"ssim": 0.5, "name": "x"}),
            NotebookRun("01_x", {}, tmp_path / "01_x__a-2.ipynb", tmp_path, {"ssim": 0.75})]
    table = notebooks.combined_table(runs)
    assert "| run | ssim |" in table and "| 01_x__a-2 | 0.75 |" in table


def test_write_summary_markdown_and_json(tmp_path):
    (tmp_path / "01_loss.png").write_bytes(b"")
    metrics = {"ssim": 0.123456, "backend": "torch", "missing": None,
               "stages": [{"stage": 1, "loss": 0.5}, {"stage": 2, "loss": None}]}
    runs = [NotebookRun("01_x", {}, tmp_path / "01_x.ipynb", tmp_path, metrics)]
    markdown, json_path = notebooks.write_summary(runs, tmp_path / "report" / "REPORT.md")
    text = markdown.read_text()
    assert "## 01_x" in text and "| ssim | 0.1235 |" in text and "| missing |  |" in text
    assert "**stages**" in text and "| 2 |  |" in text and "![01_loss](../01_loss.png)" in text
    assert "## All runs" in text
    assert json.loads(json_path.read_text()) == {"01_x": metrics}


def test_show_saves_the_figure_and_returns_it(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1])
    assert notebooks.show(fig, "01_line", tmp_path / "figs") is fig
    assert (tmp_path / "figs" / "01_line.png").stat().st_size > 0
    assert notebooks.show(fig, "01_again.png", tmp_path) is fig and (tmp_path / "01_again.png").exists()
    with pytest.raises(ValueError, match="plain file name"):
        notebooks.show(fig, "sub/01_line", tmp_path)


def test_table_renders_markdown_and_html_and_show_table_writes_it(tmp_path):
    table = notebooks.show_table([("torch", "0.52"), ("a<b", "x|y")], ["method", "SSIM"], "04_scores", tmp_path,
                                 title="Scores")
    assert isinstance(table, notebooks.Table)
    text = (tmp_path / "04_scores.md").read_text()
    assert text.startswith("**Scores**") and "| method | SSIM |" in text and "| a<b | x\\|y |" in text
    assert table._repr_markdown_() == text.rstrip("\n") == repr(table)
    html = table._repr_html_()
    assert html.count("<tr>") == 3 and "a&lt;b" in html and "<caption" in html
    with pytest.raises(ValueError, match="row 0 has 1 cells but there are 2 columns"):
        notebooks.Table([("only one",)], ["a", "b"])


def test_write_summary_links_html_and_tables(tmp_path):
    (tmp_path / "figs").mkdir()
    (tmp_path / "figs" / "01_table.md").write_text("| a |\n|---|\n| 1 |\n")
    (tmp_path / "nb").mkdir()
    (tmp_path / "nb" / "01_x.html").write_text("<html></html>")
    nb = tmp_path / "nb"
    runs = [NotebookRun("01_x", {}, nb / "01_x.ipynb", tmp_path / "figs", {}, nb / "01_x.html")]
    text = notebooks.write_summary(runs, tmp_path / "figs" / "REPORT.md")[0].read_text()
    assert "[01_x.html](../nb/01_x.html)" in text and "[.ipynb](../nb/01_x.ipynb)" in text
    assert "[01_table](01_table.md)" in text


def test_failure_names_notebook_cell_and_error_tail(tmp_path):
    from papermill.exceptions import PapermillExecutionError

    traceback = ["\x1b[0;31m---------\x1b[0m", "Traceback (most recent call last):"]
    traceback += [f"  frame {i}" for i in range(20)] + ["\x1b[0;31mValueError\x1b[0m: boom"]
    error = PapermillExecutionError(4, 3, "\nx = 1\nraise ValueError('boom')", "ValueError", "boom", traceback)
    message = str(notebooks._failure("[2/5] 02_x", error, tmp_path / "02_x.ipynb"))
    first = message.splitlines()[0]
    assert first == "[2/5] 02_x failed in cell 4 (In [3]: x = 1): ValueError: boom"
    assert "  ValueError: boom" in message and "frame 19" in message and "frame 2\n" not in message
    assert "\x1b" not in message and message.endswith("02_x.ipynb")


def test_no_notebooks_in_folder(tmp_path):
    with pytest.raises(ValueError, match="no notebooks"):
        notebooks.notebook_paths(notebook_dir=tmp_path)


_TINY = '''# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Tiny

# %% tags=["parameters"]
smoke: bool = False  # tiny sizes
fig_dir: str = "."  # where figures go

# %%
from matplotlib.figure import Figure

from ptycholib import notebooks

fig = Figure(figsize=(2, 2))
fig.subplots().plot([0, 1])
print("a line above the figure")
notebooks.show(fig, "01_line", fig_dir)

# %%
notebooks.show_table([("a", 1)], ["name", "value"], "01_table", fig_dir)

# %%
notebooks.save_metrics({"answer": 42}, fig_dir, "01_tiny")
'''


@pytest.mark.notebook
def test_cli_run_talks_writes_html_and_shows_figures_inline(tmp_path, capfd, caplog):
    pytest.importorskip("papermill")
    pytest.importorskip("nbconvert")
    import nbformat

    from ptycholib.cli import main

    (tmp_path / "nbs").mkdir()
    (tmp_path / "nbs" / "01_tiny.py").write_text(_TINY)
    report = tmp_path / "figs" / "REPORT.md"
    status = main(["notebooks", "run", "--notebook-dir", str(tmp_path / "nbs"), "--out-dir", str(tmp_path / "out"),
                   "--fig-dir", str(tmp_path / "figs"), "--report", str(report)])
    out, err = capfd.readouterr()
    assert status == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == "[1/1] 01_tiny: started"
    assert lines[1].startswith("[1/1] 01_tiny: done in ") and lines[1].endswith("01_tiny.ipynb and .html")
    assert lines[-1].startswith(f"report: {report}")
    logged = " ".join(record.getMessage() for record in caplog.records if record.levelname != "DEBUG")
    assert "without encryption" not in out + err + logged and "Unable to parse" not in logged, err + logged
    executed = nbformat.read(tmp_path / "out" / "01_tiny.ipynb", as_version=4)
    outputs = [o for cell in executed.cells if cell.cell_type == "code" for o in cell.outputs]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1 and images[0].output_type == "execute_result"  # the cell's value, shown once
    assert any("<table>" in o.get("data", {}).get("text/html", "") for o in outputs)
    assert (tmp_path / "figs" / "01_line.png").exists() and (tmp_path / "figs" / "01_table.md").exists()
    page = (tmp_path / "out" / "01_tiny.html").read_text()
    assert "<html" in page and "data:image/png;base64" in page and "a line above the figure" in page
    text = report.read_text()
    assert "[01_tiny.html](../out/01_tiny.html)" in text and "| answer | 42 |" in text


@pytest.mark.notebook
def test_cli_run_failure_names_notebook_and_cell(tmp_path, capfd):
    pytest.importorskip("papermill")
    from ptycholib.cli import main

    (tmp_path / "nbs").mkdir()
    broken = _TINY.replace('print("a line above the figure")', 'raise ValueError("boom in the tiny notebook")')
    (tmp_path / "nbs" / "01_tiny.py").write_text(broken)
    status = main(["notebooks", "run", "--notebook-dir", str(tmp_path / "nbs"), "--out-dir", str(tmp_path / "out"),
                   "--fig-dir", str(tmp_path / "figs")])
    out, err = capfd.readouterr()
    assert status == 1
    assert "[1/1] 01_tiny: FAILED after" in out
    first = err.splitlines()[0]
    assert first.startswith("ptycholib notebooks: error: [1/1] 01_tiny failed in cell 3 (In [")
    assert first.endswith("from matplotlib.figure import Figure): ValueError: boom in the tiny notebook")
    assert "ValueError: boom in the tiny notebook" in err.splitlines()[-2]
    assert (tmp_path / "out" / "01_tiny.html").exists()
