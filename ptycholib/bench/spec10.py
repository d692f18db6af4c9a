"""Benchmark "spec10": SPEC section 10's table, measured on our backends beside PtychoPINN's figures.

For each backend and each configuration of the table (gridsize 1/2, n_filters_scale 1/2, N = 64, the
SPEC 10 'lines' scan at 1e9 photons) one fresh process measures: training groups/s (the second
epoch, so tracing and start-up are excluded), inference patterns/s (a warm pass over the 1089 test
groups at the default, automatic inference batch size), reassembly time / inference time, the end-to-end reconstruction rate over the bare network
rate (`workflow.reconstruct`, target >= 0.8), and the process's peak resident memory. The ratio to
PtychoPINN's figure is reported next to each; the targets are SPEC 10's (>= 1.5x the rates,
reassembly <= 0.1 of inference, <= half the memory).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from ptycholib.backends import BACKENDS, is_available
from ptycholib.bench import Row, register

__all__ = ["PTYCHOPINN", "measure", "spec10_benchmark"]

PTYCHOPINN = {
    # (gridsize, n_filters_scale): (train groups/s, inference patterns/s, reassembly / inference, peak GiB)
    (1, 2): (55.0, 213.0, 0.28, 2.7),
    (2, 2): (38.5, 777.0, 0.27, 4.1),
    (1, 1): (133.0, 505.0, 0.64, 2.6),
    (2, 1): (60.0, 1775.0, 0.63, 4.1),
}
"""SPEC section 10: PtychoPINN TF on a 2-core machine."""


def measure(backend, gridsize, n_filters_scale, *, quick=False, timing_groups=256):
    """Measure one backend and configuration in this process; return a dict of figures."""
    import resource

    from ptycholib import reassemble, workflow
    from ptycholib.bench.setting import simulate_benchmark
    from ptycholib.config import Config, apply_overrides

    bench = simulate_benchmark(gridsize, n_side=6 if quick else 33)
    cfg = apply_overrides(Config(), {
        "backend": backend, "gridsize": gridsize, "n_filters_scale": n_filters_scale, "batch_size": 16,
        "nepochs": 2, "validation_fraction": 0.0, "logger": "none", "neighbor_count": max(4, gridsize**2),
        "n_groups": min(timing_groups, bench.train.n_positions) if not quick else 16,
    })
    ends = []
    trained = workflow.train_model(bench.train, cfg, progress=False, callback=lambda record: ends.append(time.perf_counter()))
    train_rate = trained.n_groups / (ends[1] - ends[0])
    chosen, model = workflow.build_backend_model(trained.archive)
    test = bench.test
    grouped = workflow.group_data(test, bench.test_groups, trained.archive.input_scale,
                                  input_transform=trained.archive.config.model.input_transform)
    indices = grouped.indices
    batch = workflow.inference_batch_size(trained.archive.config.model)  # the default: chosen for throughput
    chosen.training.predict_patches(model, grouped.inputs[:32], grouped.offsets[:32], batch_size=batch)
    start = time.perf_counter()
    patches = chosen.training.predict_patches(model, grouped.inputs, grouped.offsets, batch_size=batch)
    inference = time.perf_counter() - start
    start = time.perf_counter()
    reassemble.reassemble_patches(patches, test.x_px[indices], test.y_px[indices], test.obj.shape, crop_size=20)
    reassembly = time.perf_counter() - start
    recon = workflow.reconstruct(trained.archive, test)
    return {
        "end_to_end_over_network": recon.inference_seconds / recon.total_seconds,
        "train_groups_per_s": train_rate,
        "inference_patterns_per_s": patches.shape[0] * patches.shape[1] / inference,
        "reassembly_over_inference": reassembly / inference,
        "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def _measure_in_subprocess(backend, gridsize, n_filters_scale, quick, threads):
    code = (
        "import json, sys; from ptycholib.bench.spec10 import measure; "
        f"print('RESULT' + json.dumps(measure({backend!r}, {gridsize}, {n_filters_scale}, quick={quick})))"
    )
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TF_NUM_INTRAOP_THREADS=str(threads),
               TF_NUM_INTEROP_THREADS="1", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    line = next((l for l in result.stdout.splitlines() if l.startswith("RESULT")), None)
    if result.returncode or line is None:
        raise RuntimeError(f"spec10 {backend} gridsize {gridsize}: {result.stderr.strip().splitlines()[-1:]}")
    return json.loads(line[len("RESULT"):])


@register("spec10")
def spec10_benchmark(quick):
    rows = []
    threads = int(os.environ.get("OMP_NUM_THREADS", "2"))
    for (gridsize, scale), reference in PTYCHOPINN.items():
        for backend in (b for b in BACKENDS if is_available(b)):
            figures = _measure_in_subprocess(backend, gridsize, scale, quick, threads)
            label = f"{backend} gridsize {gridsize} n_filters_scale {scale}"
            note = "quick sizes" if quick else f"PtychoPINN TF: {reference}"
            rows += [
                Row("spec10", f"{label}: train groups/s", figures["train_groups_per_s"], "groups/s",
                    f">= {1.5 * reference[0]:g}", note),
                Row("spec10", f"{label}: inference patterns/s", figures["inference_patterns_per_s"], "patterns/s",
                    f">= {1.5 * reference[1]:g}"),
                Row("spec10", f"{label}: reassembly / inference", figures["reassembly_over_inference"], "ratio", "<= 0.1"),
                Row("spec10", f"{label}: end-to-end / bare network rate", figures["end_to_end_over_network"], "ratio",
                    ">= 0.8", "reconstruct(): grouping + network + reassembly"),
                Row("spec10", f"{label}: peak memory", figures["peak_gib"], "GiB", f"<= {reference[3] / 2:g}"),
            ]
    return rows
