"""Benchmark "reassemble": reassembly time against network inference, and the ePIE baselines' time.

SPEC section 10 target: reassembly takes at most 0.1 of the network inference time for the same scan
(PtychoPINN TF measured 0.27-0.64). The scan is PtychoPINN's test scan: 33 x 33 = 1089 positions,
stride 10 px, N = 64 (``--quick``: 11 x 11). Inference is one pass of the torch network (default
ModelConfig, n_filters_scale 2) over the same patches; without torch only reassembly rates are reported.
"""

from __future__ import annotations

import numpy as np

from ptycholib import baseline, forward
from ptycholib.bench import Row, best_time, register
from ptycholib.reassemble import reassemble_patches

__all__ = ["reassemble_benchmark"]

_NAME = "reassemble"


def _scan(n_side, patch_size=64, stride=10):
    rng = np.random.default_rng(0)
    margin = patch_size // 2 + 2
    centres = margin + stride * np.arange(n_side, dtype=np.float64)
    x_px, y_px = (a.ravel() for a in np.meshgrid(centres, centres))
    # Sub-pixel jitter so the bilinear split does real work.
    x_px = x_px + rng.uniform(-0.5, 0.5, x_px.size)
    y_px = y_px + rng.uniform(-0.5, 0.5, y_px.size)
    side = int(centres[-1]) + margin + 1
    shape = (side, side)
    obj = np.exp(1j * rng.uniform(-1, 1, shape)) * rng.uniform(0.5, 1, shape)
    coords = np.arange(patch_size) - patch_size // 2
    probe = np.exp(-(coords[:, None] ** 2 + coords[None, :] ** 2) / (2 * 8.0**2)).astype(np.complex64)
    patches = forward.extract_patches(obj, x_px, y_px, patch_size).astype(np.complex64)
    return patches, x_px, y_px, shape, probe


def _torch_inference_seconds(n_positions, patch_size):
    """Seconds for one pass of the torch network over ``n_positions`` patterns, or None without torch.

    One timed pass after one warm-up: a pass takes far longer than reassembly, so its noise is small.
    """
    try:
        import torch

        from ptycholib.config import ModelConfig
        from ptycholib.torch import network
    except ImportError:
        return None
    net = network.build_network(ModelConfig(N=patch_size), seed=0)
    net.eval()
    inputs = torch.rand((n_positions, 1, patch_size, patch_size))

    def infer():
        with torch.no_grad():
            for start in range(0, n_positions, 256):
                network.predict_object(net, inputs[start : start + 256])

    return best_time(infer, repeats=1, warmup=1)


def _epie_rows(patches, x_px, y_px, shape, probe, n_iterations):
    amplitudes = forward.far_field_amplitude(patches * probe)
    rows = []
    numpy_seconds = baseline.epie_numpy(amplitudes, x_px, y_px, probe, shape, n_iterations=n_iterations).seconds
    rows.append(Row(_NAME, "numpy ePIE time per iteration", numpy_seconds / n_iterations, "s",
                    note=f"{len(x_px)} positions, sub-pixel, batch_size 16"))
    try:
        ptylab_seconds = baseline.epie_ptylab(amplitudes, x_px, y_px, probe, shape, n_iterations=n_iterations).seconds
    except ImportError:
        rows.append(Row(_NAME, "PtyLab ePIE time per iteration", float("nan"), "s", note="PtyLab not installed"))
        return rows
    rows.append(Row(_NAME, "PtyLab ePIE time per iteration", ptylab_seconds / n_iterations, "s",
                    note="positions rounded to whole pixels by PtyLab"))
    rows.append(Row(_NAME, "PtyLab / numpy ePIE time", ptylab_seconds / numpy_seconds, "ratio"))
    return rows


@register(_NAME)
def reassemble_benchmark(quick):
    """Reassembly time as a fraction of network inference; ePIE time per iteration (NumPy, PtyLab)."""
    n_side = 11 if quick else 33
    repeats = 2 if quick else 3
    patches, x_px, y_px, shape, probe = _scan(n_side)
    n_positions, patch_size = patches.shape[0], patches.shape[-1]
    scan = f"{n_positions} positions, N={patch_size}, canvas {shape[0]}x{shape[1]}"
    crop_seconds = best_time(lambda: reassemble_patches(patches, x_px, y_px, shape), repeats=repeats)
    probe_seconds = best_time(
        lambda: reassemble_patches(patches, x_px, y_px, shape, weighting="probe", probe=probe), repeats=repeats
    )
    rows = [
        Row(_NAME, "numpy reassembly rate (crop 20)", n_positions / crop_seconds, "patterns/s", note=scan),
        Row(_NAME, "numpy reassembly rate (probe weights)", n_positions / probe_seconds, "patterns/s", note=scan),
    ]
    inference_seconds = _torch_inference_seconds(n_positions, patch_size)
    if inference_seconds is None:
        rows.append(Row(_NAME, "reassembly / inference time", float("nan"), "ratio", "<= 0.1",
                        note="torch backend not importable: only reassembly rates are reported"))
    else:
        from ptycholib.torch.reassemble import reassemble_patches as torch_reassemble

        torch_seconds = best_time(lambda: torch_reassemble(patches, x_px, y_px, shape), repeats=repeats)
        note = "torch network, default ModelConfig (n_filters_scale 2), batch 256, CPU"
        rows += [
            Row(_NAME, "network inference rate", n_positions / inference_seconds, "patterns/s", note=note),
            Row(_NAME, "numpy reassembly (crop) / inference time", crop_seconds / inference_seconds, "ratio",
                "<= 0.1"),
            Row(_NAME, "numpy reassembly (probe) / inference time", probe_seconds / inference_seconds, "ratio",
                "<= 0.1"),
            Row(_NAME, "torch reassembly (crop) / inference time", torch_seconds / inference_seconds, "ratio",
                "<= 0.1"),
        ]
    rows += _epie_rows(patches, x_px, y_px, shape, probe, n_iterations=1 if quick else 2)
    return rows
