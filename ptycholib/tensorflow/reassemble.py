"""Reassembly of object patches on the canvas with TensorFlow ``tensor_scatter_nd_add`` (SPEC section 7).

Same function, name and signature as `ptycholib.reassemble.reassemble_patches` (the NumPy reference,
which documents the formula) and as ``ptycholib.torch.reassemble``; they agree to 1e-5 relative
(SPEC section 8). Inputs may be tensors or NumPy arrays, patches ``(M, N, N)`` or ``(..., N, N)``;
outputs are tensors where TensorFlow places them, so predicted patches need not leave the accelerator.
Differentiable with respect to the patches. Reached as ``get_backend("tensorflow").reassemble``.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from .. import reassemble as _reference
from . import physics

__all__ = ["reassemble_patches"]


def _splat_tiles(planes, fx, fy):
    """Bilinear split of (P, B, S, S) regions over (P, B, S+1, S+1) tiles, rows then columns."""
    fx = fx[:, None, None]
    fy = fy[:, None, None]
    no, last, first = [0, 0], [0, 1], [1, 0]
    rows = tf.pad((1 - fy) * planes, [no, no, last, no]) + tf.pad(fy * planes, [no, no, first, no])
    return tf.pad((1 - fx) * rows, [no, no, no, last]) + tf.pad(fx * rows, [no, no, no, first])


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
    the per-pixel work (bilinear split, one ``tensor_scatter_nd_add`` per batch of positions of the
    real, imaginary and weight planes stacked along the flat index, division) runs in TensorFlow in
    the patches' precision. Eager only: positions are read on the host.
    """
    patches = tf.convert_to_tensor(object_patches)
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
    is_complex = patches.dtype.is_complex
    real_dtype = tf.float64 if patches.dtype in (tf.float64, tf.complex128) else tf.float32
    values = tf.reshape(patches, (-1, patch_size, patch_size))[:, start : start + size, start : start + size]
    weight = tf.constant(weights, dtype=real_dtype)
    base = tf.constant(layout.base)
    tile_offsets = tf.constant(layout.tile_offsets)
    fx = tf.constant(plan.fx, dtype=real_dtype)
    fy = tf.constant(plan.fy, dtype=real_dtype)
    n_bins = layout.padded_shape[0] * layout.padded_shape[1]
    n_planes = 3 if is_complex else 2
    plane_offsets = tf.constant(np.arange(n_planes)[:, None, None, None] * n_bins)
    canvas = tf.zeros((n_planes * n_bins,), dtype=real_dtype)
    for first in range(0, values.shape[0], plan.batch):
        part = slice(first, first + plan.batch)
        if is_complex:
            weighted = values[part] * tf.cast(weight, values.dtype)
            parts = [tf.math.real(weighted), tf.math.imag(weighted)]
        else:
            parts = [tf.cast(values[part], real_dtype) * weight]
        planes = tf.stack(parts + [tf.broadcast_to(weight, tf.shape(parts[0]))])
        tiles = _splat_tiles(planes, fx[part], fy[part])
        flat = tf.reshape(plane_offsets + (base[part, None, None] + tile_offsets), (-1, 1))
        canvas = tf.tensor_scatter_nd_add(canvas, flat, tf.reshape(tiles, (-1,)))
    rows, cols = layout.inside
    canvas = tf.reshape(canvas, (n_planes, *layout.padded_shape))[:, rows, cols]
    denominator = canvas[-1]
    covered = denominator > 0
    safe = tf.where(covered, denominator, tf.ones_like(denominator))
    if is_complex:
        numerator = tf.complex(canvas[0] / safe, canvas[1] / safe)
    else:
        numerator = canvas[0] / safe
    obj = tf.where(covered, numerator, tf.zeros_like(numerator))
    return obj, denominator
