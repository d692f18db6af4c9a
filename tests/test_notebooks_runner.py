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
