"""``ptycholib notebooks run [--smoke] [-p key=value ...] [NAME ...]``."""

from __future__ import annotations

from pathlib import Path

from ptycholib import notebooks, report


def register(subparsers):
    parser = subparsers.add_parser("notebooks", help="run the notebooks headless with papermill")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    run = actions.add_parser(
        "run",
        help="execute notebooks (all when no NAME is given)",
        description="Execute notebooks/NN_*.py through jupytext + papermill. A -p value with commas "
        "(-p nphotons=1e4,1e6 -p backend=torch,tensorflow) runs the product of the values; each run "
        "gets its own executed notebook and metrics file, and a combined table is printed at the end.",
    )
    run.add_argument("names", nargs="*", metavar="NAME", help="notebook stems or number prefixes, e.g. 01 03")
    run.add_argument("--smoke", action="store_true", help="tiny sizes: every notebook runs in seconds")
    run.add_argument("-p", "--parameter", action="append", default=[], metavar="KEY=VALUE[,VALUE...]",
                     help="papermill parameter; commas make a grid")
    run.add_argument("--out-dir", default="build/notebooks", help="executed notebooks (default build/notebooks)")
    run.add_argument("--fig-dir", default="figures", help="figures and metrics (default figures)")
    run.add_argument("--workers", type=int, default=1, help="parallel runs for a grid (default 1)")
    run.add_argument("--report", metavar="FILE", help="also write the summary report (Markdown FILE + JSON beside it)")
    run.set_defaults(func=_run)


def _run(args):
    if args.workers < 1:
        raise ValueError(f"--workers={args.workers} must be >= 1.")
    runs = notebooks.run_notebooks(
        args.names, grid=args.parameter, out_dir=args.out_dir, fig_dir=args.fig_dir, smoke=args.smoke,
        workers=args.workers,
    )
    for run in runs:
        print(f"ran {run.notebook}: {run.output}")
    print(notebooks.combined_table(runs))
    if args.report:
        markdown, json_path = report.write_summary(runs, Path(args.report))
        print(f"wrote {markdown} and {json_path}")
    return 0
