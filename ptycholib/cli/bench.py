"""``ptycholib bench [NAME ...] [--quick] [--threads N] [--json FILE]``."""

from __future__ import annotations

from pathlib import Path

from ptycholib import bench
from ptycholib.cli._common import add_names, require_at_least_one

__all__ = ["register", "run"]


def register(subparsers):
    """Add ``ptycholib bench``, which runs benchmarks by name or lists them.

    The names are those of `ptycholib.bench.available`; ``--threads`` is passed to `ptycholib.bench.pin_threads`.
    """
    parser = subparsers.add_parser("bench", help="run named benchmarks and print figures and ratios",
                                   description="Run benchmarks (all when no NAME is given) with pinned threads and "
                                   "print a table; ratios are measured within one run so that a shared, noisy "
                                   "machine cancels out.")
    add_names(parser, "benchmarks to run (see --list)")
    parser.add_argument("--list", action="store_true", help="list the available benchmarks and exit")
    parser.add_argument("--quick", action="store_true", help="small sizes: seconds, for tests")
    parser.add_argument("--threads", type=int, default=2, help="threads for numpy/torch/tensorflow (default 2)")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON to FILE ('-' for stdout only)")
    parser.set_defaults(func=run)


def run(args):
    """Run the benchmarks named in ``args`` (or list them); return the exit status."""
    if args.list:
        print("\n".join(bench.available()))
        return 0
    require_at_least_one(args.threads, "--threads")
    rows = bench.run(args.names, quick=args.quick, threads=args.threads)
    if args.json == "-":
        print(bench.rows_to_json(rows))
        return 0
    print(bench.format_table(rows))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(bench.rows_to_json(rows) + "\n")
    return 0
