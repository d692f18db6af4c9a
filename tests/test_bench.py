"""The benchmark runner: registry, quick runs, table and JSON output (no timing asserts)."""

import json
import math

import pytest

from ptycholib import bench
from ptycholib.backends import is_available
from ptycholib.cli import main


def test_registered_benchmarks():
    names = bench.available()
    for name in ("simulate", "reassemble", "spec10"):
        assert name in names
    if is_available("torch"):
        assert {"backends", "training"} <= set(names)


def test_unknown_benchmark():
    with pytest.raises(ValueError, match="unknown benchmark"):
        bench.run(["nope"])


def test_quick_simulate_rows_and_cli_json(capsys):
    rows = bench.run(["simulate"], quick=True, threads=1)
    assert rows and all(math.isfinite(r.value) for r in rows)
    assert main(["bench", "simulate", "--quick", "--threads", "1", "--json", "-"]) == 0
    parsed = json.loads(capsys.readouterr().out)
    assert {"benchmark", "name", "value", "unit", "target", "note"} <= set(parsed[0])
    assert "benchmark" in bench.format_table(rows)


@pytest.mark.slow
@pytest.mark.skipif(not is_available("torch"), reason="needs torch")
def test_spec10_measure_quick():
    from ptycholib._bench_spec10 import measure

    figures = measure("torch", 2, 1, quick=True)
    assert set(figures) == {"train_groups_per_s", "inference_patterns_per_s", "reassembly_over_inference", "peak_gib",
                            "end_to_end_over_network"}
    assert all(value > 0 and math.isfinite(value) for value in figures.values())
