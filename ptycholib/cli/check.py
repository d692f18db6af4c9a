"""``ptycholib check DATA [--strict]``: report detector and scan defects in a data set (`ptycholib.datacheck`).

``train`` and ``reconstruct`` run the same check on their data first (`report_problems`): the
findings go to stderr as warnings, and with ``--strict`` they stop the command with exit 2 before
anything is written.
"""

from __future__ import annotations

import sys

from ptycholib import data, datacheck
from ptycholib.cli._common import add_measurement

__all__ = ["register", "run", "add_strict", "report_problems"]


def register(subparsers):
    """Add ``ptycholib check``."""
    parser = subparsers.add_parser("check", help="report all-zero frames, saturated or hot pixels, outlier frames "
                                   "and positions outside the object in a data set",
                                   description="Load a data set in ptycholib's NPZ contract and report defects that "
                                   "it accepts but a model would learn wrong. Exit 0, or 2 with --strict when "
                                   "something was found.")
    parser.add_argument("data", metavar="DATA", help="data set (.npz, SPEC section 5)")
    add_measurement(parser)
    add_strict(parser, "exit 2 when any problem is found")
    parser.set_defaults(func=run)


def add_strict(parser, help="stop (exit 2) when `ptycholib check` finds problems in the data; default: warn"):
    """Add ``--strict`` (``args.strict``)."""
    parser.add_argument("--strict", action="store_true", help=help)


def run(args):
    """Print the report of ``args.data``; return 2 with ``--strict`` when it found problems, else 0."""
    dataset = data.load_npz(args.data, measurement=args.measurement)
    findings = datacheck.check_data(dataset)
    print(datacheck.format_report(findings, str(args.data), dataset))
    return 2 if findings and args.strict else 0


def report_problems(dataset, source, *, strict):
    """Check ``dataset``: warn on stderr, one line per finding; with ``strict``, raise ValueError if any.

    A streamed scan (`ptycholib.stream.PatternSource`) is not checked here: its patterns are never all in
    memory, and each chunk's values are checked as it is read.
    """
    from ptycholib import stream

    if isinstance(dataset, stream.PatternSource):
        return []
    findings = datacheck.check_data(dataset)
    for finding in findings:
        print(f"ptycholib: warning: {source}: {finding.kind}: {finding.message}", file=sys.stderr)
    if findings and strict:
        kinds = ", ".join(finding.kind for finding in findings)
        raise ValueError(f"{source} has data problems ({kinds}; warnings above); fix them, see `ptycholib check "
                         f"{source}`, or drop --strict.")
    return findings
