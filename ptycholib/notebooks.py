"""Run the paired notebooks headless with papermill (the main job, batch runs and the smoke tests).

The percent-format ``notebooks/NN_name.py`` files are the source of truth; they are read with jupytext
and executed in memory by papermill, so no ``.ipynb`` has to exist beforehand. Every notebook has one
``parameters`` cell with at least ``smoke`` and ``fig_dir``; figures go to ``fig_dir`` and each notebook
writes its numbers to ``{fig_dir}/{NN_name}[_suffix]_metrics.json`` (`save_metrics`; notebooks with a
``backend`` parameter add it as the suffix). `write_summary` gathers the runs into the main job's
report (Markdown + JSON).

Inside a notebook, `show` saves a figure under ``fig_dir`` and returns it, so that it is the cell's value
(shown inline in JupyterLab and stored in the executed notebook), and `show_table` does the same for a
table (a Markdown file under ``fig_dir``, an HTML/Markdown table in the notebook). Outside a notebook,
`run_notebooks` executes them, reports one line per notebook when it starts and ends, writes every
executed notebook also as HTML (nbconvert) beside the ``.ipynb``, and turns a failing cell into a
`NotebookError` that names the notebook, the cell and the end of its traceback.
"""

from __future__ import annotations

import html
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
    "show",
    "Table",
    "show_table",
    "NotebookError",
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

# Passed to every kernel papermill starts: ipykernel warns once per kernel that it runs "over TCP without
# encryption" (it listens on localhost only); the warning says nothing about the notebook and would be the
# only line a headless run prints per notebook. Errors still reach the terminal.
_KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _output_name(name, suffix):
    """``name`` with ``suffix`` unless it already ends so; no folders (everything goes flat into fig_dir)."""
    name = str(name)
    if not name or "/" in name or "\\" in name:
        raise ValueError(f"figure or table name {name!r} must be a plain file name such as '02_objects'.")
    return name if name.endswith(suffix) else name + suffix


def _display_figures_as_png():
    """Make IPython show a ``matplotlib.figure.Figure`` value as a PNG.

    ipykernel's inline backend registers this formatter only once pyplot creates a figure; ptycholib's
    figures never touch pyplot (`ptycholib.plotting`), so without this a returned Figure would display as
    ``<Figure size ...>``. A formatter the user chose (``%config InlineBackend.figure_formats``, ipympl)
    is left alone. Outside IPython this does nothing.
    """
    import sys

    if "IPython" not in sys.modules:
        return
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None or not hasattr(shell, "display_formatter"):
        return
    from matplotlib.figure import Figure

    formatters = shell.display_formatter.formatters
    chosen = [formatters.get(mime) for mime in ("image/png", "image/svg+xml", "image/jpeg", "application/pdf")]
    chosen.append(shell.display_formatter.ipython_display_formatter)
    if any(f is not None and Figure in f.type_printers for f in chosen):
        return
    from IPython.core.pylabtools import select_figure_formats

    select_figure_formats(shell, {"png"})


def show(fig, name, fig_dir, *, dpi=110):
    """Save a figure as ``{fig_dir}/{name}.png`` and return it, so that it is the cell's value.

    End a notebook's plot cell with ``notebooks.show(fig, "02_objects", fig_dir)``: the figure then
    appears under the cell in JupyterLab and in the executed notebook (papermill, nbconvert's HTML),
    and the same picture is in ``fig_dir`` for the report. The figure is shown once: ptycholib's
    figures are built without pyplot, so no backend displays them a second time.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        Typically from `ptycholib.plotting`.
    name : str
        File name without folder; ``.png`` is added unless present. Start it with the notebook's
        number (``03_loss_torch``): the report gathers ``{NN}_*.png`` per notebook.
    fig_dir : str or Path
        The notebook's ``fig_dir`` parameter; created when missing.
    dpi : float
        Resolution of the saved PNG.

    Returns
    -------
    matplotlib.figure.Figure
        ``fig`` itself.

    Notes
    -----
    Tested in tests/test_notebooks_runner.py (a papermill run checks that the executed notebook holds the
    PNG) and tests/notebooks/test_smoke.py (one image output per saved figure in every notebook).
    """
    path = Path(fig_dir) / _output_name(name, ".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    _display_figures_as_png()
    return fig


class Table:
    """Rows of values that display as a table: HTML and Markdown in Jupyter, Markdown as text.

    Parameters
    ----------
    rows : sequence of sequence
        Cell values, converted with ``str`` (format numbers before, e.g. ``f"{x:.3f}"``).
    columns : sequence of str
        Column headers; every row must have as many cells.
    title : str, optional
        A bold line above the table.

    Examples
    --------
    >>> print(Table([("torch", 0.5), ("tensorflow", "a|b")], ["backend", "SSIM"]).to_markdown())
    | backend | SSIM |
    |---|---|
    | torch | 0.5 |
    | tensorflow | a\\|b |
    """

    def __init__(self, rows, columns, *, title=None):
        self.columns = [str(c) for c in columns]
        self.rows = [[str(value) for value in row] for row in rows]
        self.title = title
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(f"table row {i} has {len(row)} cells but there are {len(self.columns)} columns.")

    def to_markdown(self):
        """Return the table as GitHub-flavoured Markdown (``|`` in cells escaped)."""

        def line(cells):
            return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

        lines = [f"**{self.title}**", ""] if self.title else []
        lines += [line(self.columns), "|" + "---|" * len(self.columns)]
        lines += [line(row) for row in self.rows]
        return "\n".join(lines)

    def _repr_markdown_(self):
        return self.to_markdown()

    def _repr_html_(self):
        head = "".join(f"<th style='text-align:left'>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{html.escape(c)}</td>" for c in row) + "</tr>"
                       for row in self.rows)
        caption = f"<caption style='text-align:left'><b>{html.escape(self.title)}</b></caption>" if self.title else ""
        return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def __repr__(self):
        return self.to_markdown()


def show_table(rows, columns, name, fig_dir, *, title=None):
    """Write a table as ``{fig_dir}/{name}.md`` and return it as a `Table`, so that it is the cell's value.

    The table counterpart of `show`: the notebook shows a real table (text that wraps, no clipped
    columns), and the Markdown file keeps the numbers for the report and for readers without Jupyter.

    Parameters
    ----------
    rows, columns, title
        As for `Table`.
    name : str
        File name without folder; ``.md`` is added unless present (e.g. ``05_parity_table``).
    fig_dir : str or Path
        The notebook's ``fig_dir`` parameter; created when missing.

    Returns
    -------
    Table
    """
    table = Table(rows, columns, title=title)
    path = Path(fig_dir) / _output_name(name, ".md")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(table.to_markdown() + "\n")
    return table


class NotebookError(RuntimeError):
    """A notebook failed while it ran: the message names the notebook, the cell and the error."""


def notebook_paths(names=(), notebook_dir=NOTEBOOK_DIR):
    """Return the notebooks to run, in number order.

    Parameters
    ----------
    names : sequence of str
        Full stems (``01_config_harmonization``) or number prefixes (``01``); empty means all.
    """
    notebook_dir = Path(notebook_dir)
    every = sorted(notebook_dir.glob("[0-9][0-9]_*.py"))
    if not every:
        raise ValueError(f"no notebooks (NN_name.py) in {notebook_dir}.")
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
    """One executed notebook: its output (``.ipynb``, and ``.html`` when written) and the metrics it saved."""

    notebook: str
    parameters: dict
    output: Path
    fig_dir: Path
    metrics: dict = field(default_factory=dict)
    html: Path | None = None
    seconds: float = 0.0


def _run_name(stem, parameters, grid_keys):
    suffix = "__".join(f"{k}-{parameters[k]}" for k in grid_keys)
    return f"{stem}__{suffix}" if suffix else stem


def _shown(path):
    """``path`` relative to the working folder when it lies inside it (shorter progress lines)."""
    try:
        return Path(path).relative_to(Path.cwd())
    except ValueError:
        return Path(path)


def _write_html(notebook, path):
    """Render an executed notebook (a NotebookNode) as a standalone HTML page with nbconvert."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(notebook)
    path.write_text(body, encoding="utf-8")
    return path


def _error_tail(lines, n=12):
    """The last ``n`` non-empty lines of a traceback given as a list of (ANSI-coloured) strings."""
    text = _ANSI.sub("", "\n".join(lines))
    return [line for line in text.splitlines() if line.strip()][-n:]


def _failure(label, error, output):
    """The `NotebookError` for a papermill execution error: notebook, cell, error and its traceback's end."""
    source_lines = [line for line in (error.source or "").splitlines() if line.strip()]
    first = source_lines[0].strip() if source_lines else ""
    first = first if len(first) <= 80 else first[:77] + "..."
    lines = [f"{label} failed in cell {error.cell_index} (In [{error.exec_count}]: {first}): {error.ename}: "
             f"{error.evalue}"]
    lines += ["  " + line for line in _error_tail(error.traceback or [])]
    lines.append(f"  executed notebook with the error: {_shown(output)}")
    return NotebookError("\n".join(lines))


def run_notebook(path, *, parameters=None, out_dir="build/notebooks", fig_dir="figures", smoke=False, run_name=None,
                 timeout=None, html=True, echo=None, label=None):
    """Execute one percent-format notebook with papermill and return its `NotebookRun`.

    The executed notebook goes to ``{out_dir}/{run_name}.ipynb`` (also when a cell fails, with the
    error banner papermill adds) and, with ``html``, to ``{out_dir}/{run_name}.html`` (nbconvert); the
    kernel runs in the notebook's folder with ``kernel_name="python3"``, i.e. in this Python environment.
    Training runs with ``logger='mlflow'`` in the kernel are tagged with the notebook and its
    parameters (`ptycholib.tracking.run_tags_env`): one MLflow run per grid point.

    Parameters
    ----------
    echo : callable, optional
        Called with one line when the notebook starts and one when it ends (seconds, output path),
        e.g. ``print``; None is silent.
    label : str, optional
        How ``echo`` names the run (default: ``run_name`` or the notebook's stem).

    Raises
    ------
    NotebookError
        When a cell raises: the message names the notebook, the cell (index in the executed notebook,
        execution count, first line) and the error, and ends with the last lines of its traceback.
    """
    import jupytext
    import papermill
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    path = Path(path).resolve()
    out_dir = Path(out_dir).resolve()
    fig_dir = Path(fig_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    fig_dir.mkdir(parents=True, exist_ok=True)
    values = {"smoke": bool(smoke), "fig_dir": str(fig_dir), **(parameters or {})}
    output = out_dir / f"{run_name or path.stem}.ipynb"
    html_path = output.with_suffix(".html") if html else None
    label = label or run_name or path.stem
    say = echo or (lambda line: None)
    say(f"{label}: started{' (smoke)' if smoke else ''}")
    started = time.time() - 1.0  # file systems with coarse mtimes
    clock = time.perf_counter()
    # MLflow runs started in the kernel (logger=mlflow) are tagged with this grid point's parameters.
    tags = {"notebook": path.stem, "mlflow.runName": output.stem, "smoke": bool(smoke), **(parameters or {})}
    try:
        with tracking.run_tags_env(tags):
            executed = papermill.execute_notebook(
                jupytext.read(path),
                str(output),
                parameters=values,
                kernel_name="python3",
                language="python",
                cwd=str(path.parent),
                progress_bar=False,
                execution_timeout=timeout,
                extra_arguments=list(_KERNEL_ARGUMENTS),
            )
    except (papermill.PapermillExecutionError, CellTimeoutError, DeadKernelError) as error:
        say(f"{label}: FAILED after {time.perf_counter() - clock:.1f} s")
        if html_path is not None and output.exists():
            import nbformat

            _write_html(nbformat.read(output, as_version=4), html_path)
        if isinstance(error, papermill.PapermillExecutionError):
            raise _failure(label, error, output) from None
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise NotebookError(f"{label} failed: {type(error).__name__}: {first}\n"
                            f"  executed notebook so far: {_shown(output)}") from None
    if html_path is not None:
        _write_html(executed, html_path)
    seconds = time.perf_counter() - clock
    written = f"{_shown(output)}" + (" and .html" if html_path is not None else "")
    say(f"{label}: done in {seconds:.1f} s -> {written}")
    metrics = {}
    for metrics_file in sorted(fig_dir.glob(f"{path.stem}*_metrics.json")):
        if metrics_file.stat().st_mtime >= started:  # written by this run (a backend may suffix the name)
            metrics.update(json.loads(metrics_file.read_text()))
    return NotebookRun(path.stem, values, output, fig_dir, metrics, html_path, seconds)


def _run_one(job):
    path, params, out_dir, fig_dir, smoke, run_name, html, echo, label = job
    return run_notebook(path, parameters=params, out_dir=out_dir, fig_dir=fig_dir, smoke=smoke, run_name=run_name,
                        html=html, echo=echo, label=label)


def run_notebooks(names=(), *, grid=(), out_dir="build/notebooks", fig_dir="figures", smoke=False, workers=1,
                  notebook_dir=NOTEBOOK_DIR, html=True, echo=None):
    """Run notebooks (all when ``names`` is empty) over a parameter grid; return the runs in order.

    A grid of more than one combination gives each run its own figure folder
    ``{fig_dir}/runs/{run_name}`` so that runs do not overwrite each other. ``html`` and ``echo`` are
    passed to `run_notebook`; progress lines are numbered ``[i/n]``. The first failing run raises its
    `NotebookError` (later notebooks read what earlier ones wrote).
    """
    paths = notebook_paths(names, notebook_dir)
    combos = expand_grid(list(grid))
    grid_keys = [k for k in combos[0] if len({repr(c[k]) for c in combos}) > 1]
    jobs = []
    total = len(paths) * len(combos)
    for path in paths:
        for params in combos:
            name = _run_name(path.stem, params, grid_keys)
            run_fig_dir = Path(fig_dir) / "runs" / name if grid_keys else Path(fig_dir)
            label = f"[{len(jobs) + 1}/{total}] {name}"
            jobs.append((path, params, out_dir, run_fig_dir, smoke, name, html, echo, label))
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
        The JSON goes to the same path with suffix ``.json``; figures, tables (`show_table`'s ``.md``
        files) and each run's executed notebook (``.html`` and ``.ipynb``) are linked relative to it.

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
        if run.html is not None and Path(run.html).exists():
            html_rel = os.path.relpath(run.html, markdown_path.parent)
            ipynb_rel = os.path.relpath(run.output, markdown_path.parent)
            lines += [f"Executed notebook: [{Path(run.html).name}]({html_rel}) (read in a browser; "
                      f"[.ipynb]({ipynb_rel}) for Jupyter)", ""]
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
        tables = sorted(run.fig_dir.glob(f"{stem}_*.md"))
        if tables:
            links = ", ".join(f"[{t.stem}]({os.path.relpath(t, markdown_path.parent)})" for t in tables)
            lines += [f"Tables: {links}", ""]
        for figure in sorted(run.fig_dir.glob(f"{stem}_*.png")):
            rel = os.path.relpath(figure, markdown_path.parent)
            lines.append(f"![{figure.stem}]({rel})")
        lines.append("")
    lines += ["## All runs", "", combined_table(runs), ""]
    markdown_path.write_text("\n".join(lines))
    json_path = markdown_path.with_suffix(".json")
    json_path.write_text(json.dumps({run.output.stem: run.metrics for run in runs}, indent=2, default=float) + "\n")
    return markdown_path, json_path
