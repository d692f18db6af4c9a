"""The benchmark package: registry, quick runs, table and JSON output (no timing asserts), SPEC 10 setting."""

import json
import math

import numpy as np
import pytest

from ptycholib import bench
from ptycholib.backends import is_available
from ptycholib.bench import setting
from ptycholib.cli import main


def test_registered_benchmarks():
    names = bench.available()
    for name in ("simulate", "reassemble", "spec10"):
        assert name in names
    if is_available("torch"):
        assert {"backends", "training", "inference"} <= set(names)


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


@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_inference_variants_quick(backend):
    if not is_available(backend):
        pytest.skip(f"needs {backend}")
    from ptycholib.bench import backends

    rows = backends.inference_rows(backend, backends._backend_modules()[backend], 2, 1, quick=True)
    labels = [row.name.split(": ", 1)[1] for row in rows]
    assert any("256 groups/call" in label for label in labels) and any("bfloat16" in label for label in labels)
    assert any(("inference_mode" if backend == "torch" else "XLA") in label for label in labels)
    assert rows[-1].unit == "ratio" and rows[-1].target == ">= 1.5"
    assert all(row.value > 0 and math.isfinite(row.value) for row in rows)


@pytest.mark.slow
@pytest.mark.skipif(not is_available("torch"), reason="needs torch")
def test_spec10_measure_quick():
    from ptycholib.bench.spec10 import measure

    figures = measure("torch", 2, 1, quick=True)
    assert set(figures) == {"train_groups_per_s", "inference_patterns_per_s", "reassembly_over_inference", "peak_gib",
                            "end_to_end_over_network"}
    assert all(value > 0 and math.isfinite(value) for value in figures.values())


# ------------------------------------------------------------------------------------------------
# SPEC 10 setting and the simulate benchmark


def test_benchmark_setting_matches_spec_10():
    shape, x_px, y_px, group_indices = setting.benchmark_scan(2)
    assert shape == (392, 392) and x_px.size == 1089 * 4 and group_indices.shape == (1089, 4)
    corners = np.stack([x_px - 32, y_px - 32], 1)  # top-left of each 64 x 64 window
    assert corners.min() >= 0 and (corners + 64).max() <= shape[0]
    assert np.array_equal(x_px, np.round(x_px))
    members = np.stack([x_px[group_indices[0]], y_px[group_indices[0]]], 1)
    assert (members - members.mean(0)).tolist() == [[-2, -2], [2, -2], [-2, 2], [2, 2]]
    anchors = x_px[group_indices[:, 0]]
    assert np.diff(np.unique(anchors)).tolist() == [10.0] * 32
    shape1, x1, _, groups1 = setting.benchmark_scan(1)
    assert x1.size == 1089 and groups1.shape == (1089, 1) and shape1[0] <= shape[0]


def test_simulate_benchmark_small():
    data = setting.simulate_benchmark(2, n_side=3, nphotons=1e6, seed=0)
    assert data.train.n_positions == 36 and data.train_groups.indices.shape == (9, 4)
    assert not np.angle(data.train.obj).any() and not np.array_equal(data.train.obj, data.test.obj)
    np.testing.assert_allclose(data.train_groups.offsets.mean(axis=1), 0, atol=1e-6)


def test_simulate_benchmark_reports_ratios(monkeypatch):
    from ptycholib.bench import simulate as bench_simulate

    monkeypatch.setattr(bench_simulate, "benchmark_scan",
                        lambda gridsize, n_side, _scan=setting.benchmark_scan: _scan(gridsize, n_side=4))  # fmt: skip
    rows = {row.name: row for row in bench_simulate.bench_simulate(quick=True)}
    assert rows["simulation / FFT"].target == ">= 0.5" and rows["simulation / FFT"].value > 0
    assert 0 < rows["Poisson share of simulation time"].value < 1
