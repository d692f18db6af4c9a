"""``ptycholib notebooks run [--smoke] [-p key=value ...] [NAME ...]``."""

from __future__ import annotations

from pathlib import Path

from ptycholib import notebooks
from ptycholib.cli._common import add_actions, add_names, require_at_least_one

__all__ = ["register", "run"]


def register(subparsers):
    """Add ``ptycholib notebooks run``, which executes the notebooks with papermill."""
    actions = add_actions(subparsers, "notebooks", run, help="run the notebooks headless with papermill")
    parser = actions.add_parser("run", help="execute notebooks (all when no NAME is given)",
                                description="Execute notebooks/NN_*.py through jupytext + papermill. A -p value with "
                                "commas (-p nphotons=1e4,1e6 -p backend=torch,tensorflow) runs the product of the "
                                "values; each run gets its own executed notebook and metrics file, and a combined "
                                "table is printed at the end.")
    add_names(parser, "notebook stems or number prefixes, e.g. 01 03")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: every notebook runs in seconds")
    parser.add_argument("-p", "--parameter", action="append", default=[], metavar="KEY=VALUE[,VALUE...]",
                        help="papermill parameter; commas make a grid")
    parser.add_argument("--out-dir", default="build/notebooks", help="executed notebooks (default build/notebooks)")
    parser.add_argument("--fig-dir", default="figures", help="figures and metrics (default figures)")
    parser.add_argument("--workers", type=int, default=1, help="parallel runs for a grid (default 1)")
    parser.add_argument("--report", metavar="FILE",
                        help="also write the summary report (Markdown FILE + JSON beside it)")


def run(args):
    """Execute the notebooks (the only action, ``run``) and print the combined table; return the exit status."""
    require_at_least_one(args.workers, "--workers")
    runs = notebooks.run_notebooks(
        args.names, grid=args.parameter, out_dir=args.out_dir, fig_dir=args.fig_dir, smoke=args.smoke,
        workers=args.workers,
    )
    for executed in runs:
        print(f"ran {executed.notebook}: {executed.output}")
    print(notebooks.combined_table(runs))
    if args.report:
        markdown, json_path = notebooks.write_summary(runs, Path(args.report))
        print(f"wrote {markdown} and {json_path}")
    return 0
