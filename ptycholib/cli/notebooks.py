"""``ptycholib notebooks run [--smoke] [-p key=value ...] [NAME ...]``."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from ptycholib import notebooks
from ptycholib.cli._common import add_actions, add_names, require_at_least_one

__all__ = ["register", "run"]


def register(subparsers):
    """Add ``ptycholib notebooks run``, which executes the notebooks with papermill."""
    actions = add_actions(subparsers, "notebooks", run, help="run the notebooks headless with papermill")
    parser = actions.add_parser("run", help="execute notebooks (all when no NAME is given)",
                                description="Execute notebooks/NN_*.py through jupytext + papermill, one line per "
                                "notebook when it starts and when it ends. A -p value with commas (-p nphotons=1e4,1e6 "
                                "-p backend=torch,tensorflow) runs the product of the values; each run gets its own "
                                "executed notebook (.ipynb and .html) and metrics file, and a combined table is "
                                "printed at the end. A failing cell stops the run with exit status 1 and names the "
                                "notebook, the cell and the error.")
    add_names(parser, "notebook stems or number prefixes, e.g. 01 03")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: every notebook runs in seconds")
    parser.add_argument("-p", "--parameter", action="append", default=[], metavar="KEY=VALUE[,VALUE...]",
                        help="papermill parameter; commas make a grid")
    parser.add_argument("--out-dir", default="build/notebooks",
                        help="executed notebooks, .ipynb and .html (default build/notebooks)")
    parser.add_argument("--fig-dir", default="figures", help="figures, tables and metrics (default figures)")
    parser.add_argument("--notebook-dir", default=str(notebooks.NOTEBOOK_DIR),
                        help="where the NN_name.py notebooks are (default: the repository's notebooks/)")
    parser.add_argument("--no-html", dest="html", action="store_false",
                        help="do not also write each executed notebook as HTML")
    parser.add_argument("--workers", type=int, default=1, help="parallel runs for a grid (default 1)")
    parser.add_argument("--report", metavar="FILE",
                        help="also write the summary report (Markdown FILE + JSON beside it)")


def run(args):
    """Execute the notebooks (the only action, ``run``) and print the combined table; return the exit status."""
    require_at_least_one(args.workers, "--workers")
    echo = functools.partial(print, flush=True)
    try:
        runs = notebooks.run_notebooks(
            args.names, grid=args.parameter, out_dir=args.out_dir, fig_dir=args.fig_dir, smoke=args.smoke,
            workers=args.workers, notebook_dir=Path(args.notebook_dir), html=args.html, echo=echo,
        )
    except notebooks.NotebookError as error:
        print(f"ptycholib notebooks: error: {error}", file=sys.stderr, flush=True)
        return 1
    print(notebooks.combined_table(runs), flush=True)
    total = sum(executed.seconds for executed in runs)
    print(f"{len(runs)} notebook run(s) in {total:.1f} s", flush=True)
    if args.report:
        markdown, json_path = notebooks.write_summary(runs, Path(args.report))
        print(f"report: {markdown} (numbers also in {json_path})", flush=True)
    return 0
