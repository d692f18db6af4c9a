"""Benchmark "scale": time and peak memory of ``reconstruct`` for scans of 10^3, 10^4 and 10^5 patterns.

Issue 15's targets: time grows linearly with the scan (per-pattern time within 1.3x across sizes) and
peak memory stays below 2 GiB at 10^5 patterns (N = 64; 1.6 GB of float32 amplitudes, so the scan must
stream). Each scan is simulated straight into an HDF5 file (`ptycholib.stream.H5PatternWriter`) chunk
by chunk, never whole in memory: a raster with 8 px steps over a smooth complex object, a disk probe,
no noise (speed is measured, not quality). The model is untrained (torch, default ModelConfig).

Each size is reconstructed in its own process, as ``ptycholib reconstruct`` does it (`ptycholib.stream.open_scan`
with ``--stream auto``, then `ptycholib.workflow.reconstruct` and `ptycholib.workflow.save_reconstruction`).
The time is from opening the scan to the written file (interpreter, framework import and model load
excluded: they do not grow with the scan); the peak RSS is the process's whole life. The peak comes
from ``resource.getrusage(RUSAGE_SELF)`` in the child: ``RUSAGE_CHILDREN`` in the parent is a running
maximum over every child so far, which would hide a smaller later size.

Sizes: 10^3 with ``--quick``; 10^3, 10^4, 10^5 otherwise; ``PTYCHOLIB_BENCH_SCALE_SIZES=1000,10000``
overrides both, and ``PTYCHOLIB_BENCH_SCALE_STREAM=on|off`` forces streaming or the in-memory path
(default ``auto``, as the command). Files go to a temporary folder (``TMPDIR``; about 1.7 GB at 10^5).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ptycholib import forward, simulate
from ptycholib.bench import Row, register

__all__ = ["scale_benchmark", "simulate_scan_file", "untrained_model_file", "measure_reconstruct"]

_NAME = "scale"
_PATCH = 64
_STEP_PX = 8
_CHUNK = 4096
_SIZES = (1_000, 10_000, 100_000)


def _raster(n_patterns, patch_size, step_px):
    side = math.ceil(math.sqrt(n_patterns))
    margin = patch_size // 2 + 1
    index = np.arange(n_patterns)
    x_px = margin + step_px * (index % side) + 0.25 * np.sin(index)  # sub-pixel, deterministic
    y_px = margin + step_px * (index // side) + 0.25 * np.cos(index)
    rows = int(np.ceil(y_px.max())) + margin + 1
    cols = int(np.ceil(x_px.max())) + margin + 1
    return x_px, y_px, (rows, cols)


def _smooth_object(shape):
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    amplitude = 0.75 + 0.2 * np.cos(rows / 13.0) * np.sin(cols / 17.0)
    phase = 0.6 * np.sin(rows / 23.0 + cols / 29.0)
    return (amplitude * np.exp(1j * phase)).astype(np.complex64)


def simulate_scan_file(path, n_patterns, *, patch_size=_PATCH, step_px=_STEP_PX, chunk=_CHUNK, intensity_scale=30.0):
    """Simulate a noiseless raster scan of ``n_patterns`` into an HDF5 file, ``chunk`` patterns at a time.

    Returns
    -------
    Path
        The file (HDF5 variant of the data contract, `ptycholib.stream`); its patterns never sit in
        memory all at once.
    """
    from ptycholib.stream import H5PatternWriter

    x_px, y_px, shape = _raster(n_patterns, patch_size, step_px)
    obj = _smooth_object(shape)
    probe = simulate.make_probe("disk", patch_size)
    metadata = {"generator": "ptycholib.bench.scale", "n_patterns": int(n_patterns), "step_px": step_px}
    with H5PatternWriter(path, x_px, y_px, probe, metadata=metadata, chunk_rows=256) as writer:
        for start in range(0, n_patterns, chunk):
            stop = min(start + chunk, n_patterns)
            patches = forward.extract_patches(obj, x_px[start:stop], y_px[start:stop], patch_size)
            exit_wave = forward.illuminate(patches, probe, probe_scale=4.0)
            writer.write(start, forward.far_field_amplitude(exit_wave, intensity_scale))
    return Path(path)


def untrained_model_file(path, data_path, *, backend="torch"):
    """Write an untrained model archive (default ModelConfig, N = 64) fitted to a scan file's first chunk."""
    from ptycholib import archive, grouping
    from ptycholib.archive import ModelArchive
    from ptycholib.backends import get_backend
    from ptycholib.config import Config, apply_overrides
    from ptycholib.stream import open_patterns

    config = apply_overrides(Config(), {"backend": backend})
    with open_patterns(data_path) as source:
        first = source.read(0, _CHUNK)
        probe = source.probe
    chosen = get_backend(backend)
    s0 = forward.initial_intensity_scale(first, probe, config.model.probe_scale)
    model = chosen.network.build_model(config.model, probe, s0, seed=0)
    saved = ModelArchive(config=config, weights=chosen.network.get_weights(model),
                         input_scale=grouping.input_scale(first), backend=backend)
    return archive.save_model(path, saved)


_CHILD = """
import json, resource, sys, time
from ptycholib import archive, stream, workflow
model_path, data_path, out_path, mode = sys.argv[1:5]
model = archive.load_model(model_path)
workflow.build_backend_model(model)  # framework import and model build: not part of the scan's cost
start = time.perf_counter()
scan = stream.open_scan(data_path, mode=mode)
streamed = isinstance(scan, stream.PatternSource)
recon = workflow.reconstruct(model, scan)
workflow.save_reconstruction(recon, out_path)
seconds = time.perf_counter() - start
if streamed:
    scan.close()
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("RESULT " + json.dumps({"seconds": seconds, "peak_kib": peak_kib, "streamed": streamed,
                              "inference_seconds": recon.inference_seconds}))
"""


def measure_reconstruct(model_path, data_path, out_path, *, mode="auto"):
    """Run one reconstruction in a fresh process; return its ``seconds``, ``peak_kib``, ``streamed``.

    ``mode`` is ``reconstruct --stream``'s: ``"auto"``, ``"on"`` or ``"off"``.
    """
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p))
    result = subprocess.run([sys.executable, "-c", _CHILD, str(model_path), str(data_path), str(out_path), mode],
                            env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"reconstruct of {Path(data_path).name} failed: {result.stderr[-2000:]}")
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def _sizes(quick):
    override = os.environ.get("PTYCHOLIB_BENCH_SCALE_SIZES", "").strip()
    if override:
        try:
            sizes = tuple(int(size) for size in override.split(","))
        except ValueError:
            raise ValueError(f"PTYCHOLIB_BENCH_SCALE_SIZES={override!r} must be comma-separated integers.") from None
        if min(sizes) < 16:
            raise ValueError(f"PTYCHOLIB_BENCH_SCALE_SIZES={override!r}: every size must be >= 16 patterns.")
        return sizes
    return _SIZES[:1] if quick else _SIZES


@register(_NAME)
def scale_benchmark(quick):
    """Per-pattern time and peak RSS of a reconstruction for growing scans (see the module docstring)."""
    rows, per_pattern = [], {}
    mode = os.environ.get("PTYCHOLIB_BENCH_SCALE_STREAM", "auto")
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"PTYCHOLIB_BENCH_SCALE_STREAM={mode!r} must be auto, on or off.")
    with tempfile.TemporaryDirectory(prefix="ptycholib-scale-") as folder:
        folder = Path(folder)
        sizes = _sizes(quick)
        data_paths = {size: simulate_scan_file(folder / f"scan{size}.h5", size) for size in sizes}
        model_path = untrained_model_file(folder / "wts.h5.zip", data_paths[sizes[0]])
        for size in sizes:
            result = measure_reconstruct(model_path, data_paths[size], folder / f"recon{size}.npz", mode=mode)
            data_paths[size].unlink()
            per_pattern[size] = result["seconds"] / size
            path = "streamed" if result["streamed"] else "in memory"
            rows.append(Row(_NAME, f"reconstruct time per pattern, {size} patterns", 1e6 * per_pattern[size], "us",
                            note=f"{path}; network {result['inference_seconds']:.1f} s of {result['seconds']:.1f} s"))
            peak_gib = result["peak_kib"] / 2**20
            rows.append(Row(_NAME, f"peak RSS, {size} patterns", peak_gib, "GiB",
                            target="< 2" if size >= 100_000 else "", note=f"whole reconstruct process, {path}"))
    if len(per_pattern) > 1:
        spread = max(per_pattern.values()) / min(per_pattern.values())
        rows.append(Row(_NAME, "per-pattern time, slowest / fastest size", spread, "ratio", target="<= 1.3",
                        note=f"sizes {', '.join(str(size) for size in per_pattern)}"))
    return rows
