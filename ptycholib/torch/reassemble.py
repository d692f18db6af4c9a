"""Reassembly of object patches on the canvas with torch ``index_add`` (SPEC section 7).

Same function, name and signature as `ptycholib.reassemble.reassemble_patches` (the NumPy reference,
which documents the formula) and as ``ptycholib.tensorflow.reassemble``; they agree to 1e-5 relative
(SPEC section 8). Inputs may be tensors or NumPy arrays, patches ``(M, N, N)`` or ``(..., N, N)``;
outputs are tensors on the patches' device, so predicted patches need not leave the accelerator.
Differentiable with respect to the patches. Reached as ``get_backend("torch").reassemble``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .. import reassemble as _reference
from . import physics

__all__ = ["reassemble_patches"]


def _splat_tiles(planes, fx, fy):
    """Bilinear split of (P, B, S, S) regions over (P, B, S+1, S+1) tiles, rows then columns."""
    fx = fx[:, None, None]
    fy = fy[:, None, None]
    rows = F.pad((1 - fy) * planes, (0, 0, 0, 1)) + F.pad(fy * planes, (0, 0, 1, 0))
    return F.pad((1 - fx) * rows, (0, 1, 0, 0)) + F.pad(fx * rows, (1, 0, 0, 0))


def reassemble_patches(object_patches, x_px, y_px, canvas_shape, *, crop_size=20, weighting="crop", probe=None):
    """Place object patches at their absolute positions and average where they overlap.

    Parameters
    ----------
    object_patches : tensor or ndarray of shape (M, N, N) or (..., N, N), complex or real
    x_px, y_px : tensor or ndarray of shape (M,) or (...)
        Absolute window centres in object pixels; read on the host in float64.
    canvas_shape, crop_size, weighting, probe
        As in `ptycholib.reassemble.reassemble_patches` (``probe`` may be a tensor too).

    Returns
    -------
    obj : tensor of shape (rows, cols)
        complex64 (complex128 for double input, real for real input); 0 where no weight landed.
    weight_canvas : tensor of shape (rows, cols), float32 (float64 for double input)

    Notes
    -----
    Positions and the flat index layout are planned by the NumPy reference (``_plan``, ``_layout``);
    the per-pixel work (bilinear split, one ``index_add`` of the stacked real, imaginary and weight
    planes per batch of positions, division) runs on the patches' device in their precision.
    """
    patches = torch.as_tensor(object_patches)
    if patches.ndim < 3:
        raise ValueError(
            f"object_patches has shape {tuple(patches.shape)}; expected (M, N, N), one patch per position."
        )
    patch_size = int(patches.shape[-1])
    start, size, weights = _reference._region_and_weights(
        patch_size, crop_size=crop_size, weighting=weighting, probe=None if probe is None else physics.to_numpy(probe)
    )
    plan = _reference._plan(
        tuple(patches.shape), physics.to_numpy(x_px), physics.to_numpy(y_px), canvas_shape, region_start=start, region_size=size
    )
    layout = _reference._layout(plan)
    device = patches.device
    is_complex = patches.is_complex()
    real_dtype = torch.float64 if patches.dtype in (torch.float64, torch.complex128) else torch.float32
    values = patches.reshape(-1, patch_size, patch_size)[:, start : start + size, start : start + size]
    weight = torch.as_tensor(weights, dtype=real_dtype, device=device)
    base = torch.as_tensor(layout.base, device=device)
    tile_offsets = torch.as_tensor(layout.tile_offsets, device=device)
    fx = torch.as_tensor(plan.fx, dtype=real_dtype, device=device)
    fy = torch.as_tensor(plan.fy, dtype=real_dtype, device=device)
    n_bins = layout.padded_shape[0] * layout.padded_shape[1]
    n_planes = 3 if is_complex else 2
    canvas = torch.zeros((n_planes, n_bins), dtype=real_dtype, device=device)
    for first in range(0, values.shape[0], plan.batch):
        part = slice(first, first + plan.batch)
        weighted = values[part] * weight
        parts = [weighted.real, weighted.imag] if is_complex else [weighted.to(real_dtype)]
        planes = torch.stack(parts + [weight.expand_as(parts[0])])
        tiles = _splat_tiles(planes, fx[part], fy[part])
        flat = (base[part, None, None] + tile_offsets).reshape(-1)
        canvas = canvas.index_add(1, flat, tiles.reshape(n_planes, -1))
    rows, cols = layout.inside
    canvas = canvas.reshape(n_planes, *layout.padded_shape)[:, rows, cols]
    denominator = canvas[-1]
    covered = denominator > 0
    safe = torch.where(covered, denominator, torch.ones_like(denominator))
    numerator = torch.complex(canvas[0], canvas[1]) if is_complex else canvas[0]
    obj = torch.where(covered, numerator / safe, torch.zeros_like(numerator))
    return obj, denominator
