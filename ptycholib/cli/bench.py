"""``ptycholib bench [NAME ...] [--quick] [--threads N] [--json FILE]``."""

from __future__ import annotations

from pathlib import Path

from ptycholib import bench


def register(subparsers):
    parser = subparsers.add_parser(
        "bench",
        help="run named benchmarks and print figures and ratios",
        description="Run benchmarks (all when no NAME is given) with pinned threads and print a table; "
        "ratios are measured within one run so that a shared, noisy machine cancels out.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (see --list)")
    parser.add_argument("--list", action="store_true", help="list the available benchmarks and exit")
    parser.add_argument("--quick", action="store_true", help="small sizes: seconds, for tests")
    parser.add_argument("--threads", type=int, default=2, help="threads for numpy/torch/tensorflow (default 2)")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON to FILE ('-' for stdout only)")
    parser.set_defaults(func=_bench)


def _bench(args):
    if args.list:
        print("\n".join(bench.available()))
        return 0
    if args.threads < 1:
        raise ValueError(f"--threads={args.threads} must be >= 1.")
    rows = bench.run(args.names, quick=args.quick, threads=args.threads)
    if args.json == "-":
        print(bench.rows_to_json(rows))
        return 0
    print(bench.format_table(rows))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(bench.rows_to_json(rows) + "\n")
    return 0
