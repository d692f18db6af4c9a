"""Run the paired notebooks headless with papermill (the main job, batch runs and the smoke tests).

The percent-format ``notebooks/NN_name.py`` files are the source of truth; they are read with jupytext
and executed in memory by papermill, so no ``.ipynb`` has to exist beforehand. Every notebook has one
``parameters`` cell with at least ``smoke`` and ``fig_dir``; figures go to ``fig_dir`` and each notebook
writes its numbers to ``{fig_dir}/{NN_name}[_suffix]_metrics.json`` (`save_metrics`; notebooks with a
``backend`` parameter add it as the suffix). `write_summary` gathers the runs into the main job's
report (Markdown + JSON).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ptycholib import tracking

__all__ = [
    "NOTEBOOK_DIR",
    "NotebookRun",
    "notebook_paths",
    "parse_parameter",
    "expand_grid",
    "run_notebook",
    "run_notebooks",
    "metrics_path",
    "save_metrics",
    "load_metrics",
    "combined_table",
    "write_summary",
]

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"


def notebook_paths(names=(), notebook_dir=NOTEBOOK_DIR):
    """Return the notebooks to run, in number order.

    Parameters
    ----------
    names : sequence of str
        Full stems (``01_config_harmonization``) or number prefixes (``01``); empty means all.
    """
    notebook_dir = Path(notebook_dir)
    every = sorted(notebook_dir.glob("[0-9][0-9]_*.py"))
    if not names:
        return every
    chosen = []
    for name in names:
        matches = [p for p in every if p.stem == name or p.stem.startswith(f"{name}_") or p.name == name]
        if not matches:
            raise ValueError(f"no notebook named {name!r} in {notebook_dir}; available: {', '.join(p.stem for p in every)}.")
        chosen.extend(m for m in matches if m not in chosen)
    return chosen


def parse_parameter(text):
    """Parse a papermill value given as text: int, float (``1e4``), true/false, none, or string."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    return text


def expand_grid(items):
    """Turn ``["nphotons=1e4,1e6", "backend=torch,tensorflow"]`` into the product of dicts.

    Examples
    --------
    >>> expand_grid(["a=1,2", "b=x"])
    [{'a': 1, 'b': 'x'}, {'a': 2, 'b': 'x'}]
    """
    axes = []
    for text in items:
        key, sep, values = text.partition("=")
        if not sep or not key.strip() or not re.fullmatch(r"[A-Za-z_]\w*", key.strip()):
            raise ValueError(f"parameter {text!r} must look like name=value or name=v1,v2,...")
        axes.append([(key.strip(), parse_parameter(v.strip())) for v in values.split(",")])
    return [dict(combo) for combo in itertools.product(*axes)] if axes else [{}]


def metrics_path(fig_dir, notebook_stem):
    """Where a notebook writes its metrics: ``{fig_dir}/{notebook_stem}_metrics.json``."""
    return Path(fig_dir) / f"{notebook_stem}_metrics.json"


def save_metrics(metrics, fig_dir, notebook_stem):
    """Write a notebook's metrics dict as JSON (used at the end of every notebook)."""
    path = metrics_path(fig_dir, notebook_stem)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True, default=float) + "\n")
    return path


def load_metrics(fig_dir, notebook_stem):
    """Read what `save_metrics` wrote."""
    return json.loads(metrics_path(fig_dir, notebook_stem).read_text())


@dataclass
class NotebookRun:
    """One executed notebook."""

    notebook: str
    parameters: dict
    output: Path
    fig_dir: Path
    metrics: dict = field(default_factory=dict)


def _run_name(stem, parameters, grid_keys):
    suffix = "__".join(f"{k}-{parameters[k]}" for k in grid_keys)
    return f"{stem}__{suffix}" if suffix else stem


def run_notebook(path, *, parameters=None, out_dir="build/notebooks", fig_dir="figures", smoke=False, run_name=None,
                 timeout=None):
    """Execute one percent-format notebook with papermill and return its `NotebookRun`.

    The executed notebook goes to ``{out_dir}/{run_name}.ipynb`` (also when a cell fails, with the
    error banner papermill adds); the kernel runs in the notebook's folder with ``kernel_name="python3"``,
    i.e. in this Python environment.
    Training runs with ``logger='mlflow'`` in the kernel are tagged with the notebook and its
    parameters (`ptycholib.tracking.run_tags_env`): one MLflow run per grid point.
    """
    import jupytext
    import papermill

    path = Path(path).resolve()
    out_dir = Path(out_dir).resolve()
    fig_dir = Path(fig_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    fig_dir.mkdir(parents=True, exist_ok=True)
    values = {"smoke": bool(smoke), "fig_dir": str(fig_dir), **(parameters or {})}
    output = out_dir / f"{run_name or path.stem}.ipynb"
    started = time.time() - 1.0  # file systems with coarse mtimes
    # MLflow runs started in the kernel (logger=mlflow) are tagged with this grid point's parameters.
    tags = {"notebook": path.stem, "mlflow.runName": output.stem, "smoke": bool(smoke), **(parameters or {})}
    with tracking.run_tags_env(tags):
        papermill.execute_notebook(
            jupytext.read(path),
            str(output),
            parameters=values,
            kernel_name="python3",
            language="python",
            cwd=str(path.parent),
            progress_bar=False,
            execution_timeout=timeout,
        )
    metrics = {}
    for metrics_file in sorted(fig_dir.glob(f"{path.stem}*_metrics.json")):
        if metrics_file.stat().st_mtime >= started:  # written by this run (a backend may suffix the name)
            metrics.update(json.loads(metrics_file.read_text()))
    return NotebookRun(path.stem, values, output, fig_dir, metrics)


def _run_one(job):
    path, params, out_dir, fig_dir, smoke, run_name = job
    return run_notebook(path, parameters=params, out_dir=out_dir, fig_dir=fig_dir, smoke=smoke, run_name=run_name)


def run_notebooks(names=(), *, grid=(), out_dir="build/notebooks", fig_dir="figures", smoke=False, workers=1,
                  notebook_dir=NOTEBOOK_DIR):
    """Run notebooks (all when ``names`` is empty) over a parameter grid; return the runs in order.

    A grid of more than one combination gives each run its own figure folder
    ``{fig_dir}/runs/{run_name}`` so that runs do not overwrite each other.
    """
    paths = notebook_paths(names, notebook_dir)
    combos = expand_grid(list(grid))
    grid_keys = [k for k in combos[0] if len({repr(c[k]) for c in combos}) > 1]
    jobs = []
    for path in paths:
        for params in combos:
            name = _run_name(path.stem, params, grid_keys)
            run_fig_dir = Path(fig_dir) / "runs" / name if grid_keys else Path(fig_dir)
            jobs.append((path, params, out_dir, run_fig_dir, smoke, name))
    if workers <= 1 or len(jobs) == 1:
        return [_run_one(job) for job in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_run_one, jobs))


def combined_table(runs):
    """Return a Markdown table: one row per run, one column per scalar metric."""
    keys = sorted({k for run in runs for k, v in run.metrics.items() if isinstance(v, (int, float))})
    header = ["run", *keys]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in runs:
        cells = [run.output.stem] + [_fmt(run.metrics.get(k)) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value):
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_summary(runs, markdown_path):
    """Write the main job's summary: a Markdown report and the same numbers as JSON beside it.

    Parameters
    ----------
    runs : sequence of NotebookRun
    markdown_path : path
        The JSON goes to the same path with suffix ``.json``; figures are linked relative to it.

    Returns
    -------
    (Path, Path)
        The Markdown and JSON files written.
    """
    markdown_path = Path(markdown_path)
    markdown_path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# ptycholib main job: summary", "", "Generated by `make run` (all notebooks, headless).", ""]
    for run in runs:
        lines += [f"## {run.output.stem}", ""]
        scalars = {k: v for k, v in sorted(run.metrics.items()) if not isinstance(v, (dict, list))}
        if scalars:
            lines += ["| metric | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in scalars.items()]
            lines.append("")
        for table_name, table in sorted((k, v) for k, v in run.metrics.items() if isinstance(v, list) and v and isinstance(v[0], dict)):
            columns = list(table[0])
            lines += [f"**{table_name}**", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in table]
            lines.append("")
        stem = run.notebook[:2]
        for figure in sorted(run.fig_dir.glob(f"{stem}_*.png")):
            rel = os.path.relpath(figure, markdown_path.parent)
            lines.append(f"![{figure.stem}]({rel})")
        lines.append("")
    lines += ["## All runs", "", combined_table(runs), ""]
    markdown_path.write_text("\n".join(lines))
    json_path = markdown_path.with_suffix(".json")
    json_path.write_text(json.dumps({run.output.stem: run.metrics for run in runs}, indent=2, default=float) + "\n")
    return markdown_path, json_path
