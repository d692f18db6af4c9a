"""Reassemble predicted object patches on the object canvas (SPEC section 7), NumPy reference.

Each patch is placed at its **absolute** scan position (SPEC section 3: ``(x, y)`` in object pixels
is the centre of the N x N window, at index ``N // 2``), split over the four neighbouring pixels with
bilinear weights, accumulated with one scatter-add on flat indices and divided by the accumulated
weights. There is no re-centring on the scan's centre of mass, so a reconstruction lands on the
ground truth's pixel grid. The scatter is the exact adjoint of `ptycholib.forward.extract_patches`.

The backend-native versions ``ptycholib.torch.reassemble`` and ``ptycholib.tensorflow.reassemble``
implement the same formula with ``index_add_`` / ``tensor_scatter_nd_add`` and agree with this module
to 1e-5 relative (SPEC section 8). Used in notebook 04.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["reassemble_patches", "scatter_add_patches", "WEIGHTINGS"]

WEIGHTINGS = ("crop", "probe")

# Entries of one bincount pass: bounds the temporary index and value arrays (about 50 MB at 2**21).
_ENTRIES_PER_BATCH = 2**21


@dataclass(frozen=True)
class _Plan:
    """Where each position's weighted region lands on the canvas (shared with the backend versions).

    ``row0``/``col0`` are the canvas indices of the region's first pixel before the bilinear split,
    ``fx``/``fy`` the fractional parts of the positions, ``start``/``size`` the region inside the patch.
    """

    row0: np.ndarray
    col0: np.ndarray
    fx: np.ndarray
    fy: np.ndarray
    start: int
    size: int
    shape: tuple
    batch: int


def _as_positions(x_px, y_px, leading_shape):
    x_px = np.asarray(x_px, dtype=np.float64)
    y_px = np.asarray(y_px, dtype=np.float64)
    for name, values in (("x_px", x_px), ("y_px", y_px)):
        if values.shape != leading_shape:
            raise ValueError(
                f"{name} has shape {values.shape} but the patches need one position each, shape {leading_shape}; "
                "pass absolute positions in object pixels (flatten groups together with their patches)."
            )
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{name} has {int(np.sum(~np.isfinite(values)))} NaN or infinite values.")
    return x_px.reshape(-1), y_px.reshape(-1)


def _canvas_shape(canvas_shape):
    shape = tuple(int(s) for s in np.atleast_1d(canvas_shape))
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"canvas_shape={tuple(canvas_shape)!r} must be (rows, cols) with both >= 1.")
    return shape


def _plan(patch_shape, x_px, y_px, canvas_shape, *, region_start, region_size):
    """Validate positions and return the placement of each patch's region (see `_Plan`)."""
    if len(patch_shape) < 2 or patch_shape[-1] != patch_shape[-2]:
        raise ValueError(f"object_patches has shape {tuple(patch_shape)}; expected (..., N, N) with square patches.")
    patch_size = int(patch_shape[-1])
    x_flat, y_flat = _as_positions(x_px, y_px, tuple(patch_shape[:-2]))
    shape = _canvas_shape(canvas_shape)
    x0 = np.floor(x_flat)
    y0 = np.floor(y_flat)
    offset = region_start - patch_size // 2
    batch = max(1, _ENTRIES_PER_BATCH // (region_size + 1) ** 2)
    return _Plan(
        row0=y0.astype(np.int64) + offset,
        col0=x0.astype(np.int64) + offset,
        fx=x_flat - x0,
        fy=y_flat - y0,
        start=region_start,
        size=region_size,
        shape=shape,
        batch=batch,
    )


def _region_and_weights(patch_size, *, crop_size, weighting, probe):
    """Return ``(start, size, weights)``: the weighted square inside each patch and its float64 weights."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting={weighting!r} is not supported; allowed values: 'crop', 'probe'.")
    if weighting == "crop":
        is_int = isinstance(crop_size, (int, np.integer)) and not isinstance(crop_size, bool)
        if not is_int or not 1 <= crop_size <= patch_size:
            raise ValueError(f"crop_size={crop_size!r} must be an integer between 1 and the patch size N={patch_size}.")
        start = patch_size // 2 - int(crop_size) // 2
        return start, int(crop_size), np.ones((int(crop_size), int(crop_size)))
    if probe is None:
        raise ValueError("weighting='probe' needs the probe: pass probe=<(N, N) complex array>.")
    probe = np.asarray(probe)
    if probe.shape[-2:] != (patch_size, patch_size) or probe.ndim not in (2, 3):
        raise ValueError(
            f"probe has shape {probe.shape}; weighting='probe' needs (N, N) or (modes, N, N) with N={patch_size}."
        )
    intensity = np.abs(probe.astype(np.complex128)) ** 2
    if probe.ndim == 3:  # incoherent modes: their intensities add
        intensity = intensity.sum(axis=0)
    peak = intensity.max()
    if not np.isfinite(peak) or peak <= 0:
        raise ValueError("probe is zero or not finite everywhere; weighting='probe' needs a non-zero probe.")
    return 0, patch_size, intensity / peak


def _splat_tiles(values, fx, fy):
    """Split each (S, S) region over an (S+1, S+1) tile with bilinear weights (adjoint of interpolation)."""
    fx = fx[:, None, None]
    fy = fy[:, None, None]
    batch, size = values.shape[0], values.shape[-1]
    tile = np.zeros((batch, size + 1, size + 1), dtype=values.dtype)
    tile[:, :-1, :-1] += (1 - fx) * (1 - fy) * values
    tile[:, :-1, 1:] += fx * (1 - fy) * values
    tile[:, 1:, :-1] += (1 - fx) * fy * values
    tile[:, 1:, 1:] += fx * fy * values
    return tile


@dataclass(frozen=True)
class _Layout:
    """Flat indexing on the canvas padded by ``S + 1`` on each side (shared with the backend versions).

    The flat index of tile pixel ``(i, j)`` of position ``k`` is ``base[k] + tile_offsets[i, j]``. Tiles
    wholly off the canvas are clamped into the padding, so no index leaves the padded canvas and no
    validity mask is needed; ``inside`` cuts the padding off afterwards.
    """

    base: np.ndarray
    tile_offsets: np.ndarray
    padded_shape: tuple
    inside: tuple


def _layout(plan):
    rows, cols = plan.shape
    pad = plan.size + 1
    padded_cols = cols + 2 * pad
    row0 = np.clip(plan.row0, -pad, rows) + pad
    col0 = np.clip(plan.col0, -pad, cols) + pad
    steps = np.arange(plan.size + 1)
    return _Layout(
        base=row0 * padded_cols + col0,
        tile_offsets=steps[:, None] * padded_cols + steps[None, :],
        padded_shape=(rows + 2 * pad, padded_cols),
        inside=(slice(pad, pad + rows), slice(pad, pad + cols)),
    )


def _accumulate(values, plan, weights=None):
    """Scatter-add ``weights * values`` (flattened (M, S, S)) and, if given, the weights alone.

    Tiles are formed in the input's precision (complex64 stays single: it is 3x faster and adds
    ~1e-7 relative error); the sums are accumulated in float64 by ``np.bincount``.
    """
    layout = _layout(plan)
    n_bins = layout.padded_shape[0] * layout.padded_shape[1]
    real_dtype = np.float32 if values.dtype in (np.float32, np.complex64) else np.float64
    is_complex = np.iscomplexobj(values)
    numerator = np.zeros(n_bins, dtype=np.complex128 if is_complex else np.float64)
    denominator = np.zeros(n_bins) if weights is not None else None
    if weights is not None:
        weights = weights.astype(real_dtype)
    for first in range(0, values.shape[0], plan.batch):
        part = slice(first, first + plan.batch)
        flat = (layout.base[part, None, None] + layout.tile_offsets).ravel()
        fx = plan.fx[part].astype(real_dtype)
        fy = plan.fy[part].astype(real_dtype)
        weighted = values[part] if weights is None else values[part] * weights
        tile = _splat_tiles(weighted, fx, fy).ravel()
        if is_complex:
            numerator.real += np.bincount(flat, weights=tile.real, minlength=n_bins)
            numerator.imag += np.bincount(flat, weights=tile.imag, minlength=n_bins)
        else:
            numerator += np.bincount(flat, weights=tile, minlength=n_bins)
        if weights is not None:
            weight_tile = _splat_tiles(np.broadcast_to(weights, weighted.shape), fx, fy)
            denominator += np.bincount(flat, weights=weight_tile.ravel(), minlength=n_bins)
    numerator = numerator.reshape(layout.padded_shape)[layout.inside]
    if denominator is None:
        return numerator, None
    return numerator, denominator.reshape(layout.padded_shape)[layout.inside]


def _region_values(object_patches, start, size):
    patches = object_patches.reshape((-1,) + object_patches.shape[-2:])
    return patches[:, start : start + size, start : start + size]


def scatter_add_patches(patches, x_px, y_px, canvas_shape):
    """Add patches onto a zero canvas at absolute positions, bilinear: the adjoint of `extract_patches`.

    Parameters
    ----------
    patches : ndarray of shape (..., N, N), real or complex
        Values to add; ``patches[..., r, c]`` belongs to object point
        ``(y - N//2 + r, x - N//2 + c)``.
    x_px, y_px : ndarray of shape (...)
        Window centres in object pixels (x along columns, y along rows).
    canvas_shape : tuple of int
        ``(rows, cols)`` of the canvas.

    Returns
    -------
    ndarray of shape (rows, cols), float64 or complex128
        The sum of all patches; contributions that fall off the canvas are dropped.

    Notes
    -----
    For every patch ``k`` with ``x_k = i + f`` and ``y_k = j + e`` (integer and fractional parts), the
    value at patch pixel ``(r, c)`` goes to canvas pixels ``(j - N//2 + r + a, i - N//2 + c + b)``,
    ``a, b in {0, 1}``, with weights ``(1-e or e) (1-f or f)``. This is the transpose of
    `ptycholib.forward.extract_patches`, so ``<extract(O), v> = <O, scatter(v)>``; the sub-pixel ePIE
    of `ptycholib.baseline` uses it for its object update.

    Examples
    --------
    >>> canvas = scatter_add_patches(np.ones((1, 2, 2)), np.array([1.5]), np.array([1.0]), (3, 4))
    >>> canvas.tolist()
    [[0.5, 1.0, 0.5, 0.0], [0.5, 1.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0]]
    """
    patches = np.asarray(patches)
    plan = _plan(patches.shape, x_px, y_px, canvas_shape, region_start=0, region_size=patches.shape[-1])
    values = _region_values(patches, 0, plan.size)
    values = values.astype(np.complex128 if np.iscomplexobj(values) else np.float64, copy=False)
    return _accumulate(values, plan)[0]


def reassemble_patches(object_patches, x_px, y_px, canvas_shape, *, crop_size=20, weighting="crop", probe=None):
    """Place object patches at their absolute positions and average where they overlap.

    Parameters
    ----------
    object_patches : ndarray of shape (M, N, N) or (..., N, N), complex or real
        One patch per scan position (groups ``(B, C, N, N)`` may be passed as they are, with positions
        of shape ``(B, C)``).
    x_px, y_px : ndarray of shape (M,) or (...)
        Absolute window centres in object pixels (SPEC section 3): x along columns, y along rows, the
        window centre at index ``N // 2`` of each patch. No re-centring is applied.
    canvas_shape : tuple of int
        ``(rows, cols)`` of the object canvas (the data's object grid).
    crop_size : int
        With ``weighting="crop"``: side of the central square of each patch that is placed (SPEC 7:
        20 at N = 64), starting at index ``N//2 - crop_size//2``. Not used with ``"probe"``.
    weighting : {"crop", "probe"}
        ``"crop"``: uniform weight 1 on the central crop. ``"probe"``: weights ``|P|^2 / max |P|^2``
        over the whole patch (a modes axis is summed incoherently).
    probe : ndarray of shape (N, N) or (modes, N, N), complex, optional
        Needed by ``weighting="probe"``; not used with ``"crop"``.

    Returns
    -------
    obj : ndarray of shape (rows, cols)
        Weighted average of the patches; 0 where no weight landed. complex64 for complex64 input
        (``result_type(patches, float32)`` in general).
    weight_canvas : ndarray of shape (rows, cols), float32 or float64
        The accumulated weights (number of full-weight covers of each pixel); ``weight_canvas > 0``
        marks the reconstructed region.

    Notes
    -----
    With ``w`` the weights of a patch region and ``S_k`` the bilinear scatter of patch ``k`` (see
    `scatter_add_patches`)::

        obj = sum_k S_k[w * O_k] / sum_k S_k[w]     (0 where the denominator is 0)

    All positions are handled by one ``np.bincount`` on flat indices per batch of about
    ``2**21 / (S+1)**2`` positions (accumulated in float64), never a Python loop over patches. At integer
    positions the result reproduces an object that the patches were cut from; at sub-pixel positions
    it is that object seen through a bilinear blur of at most one pixel.

    Examples
    --------
    >>> from ptycholib.forward import extract_patches
    >>> obj = np.arange(64.0).reshape(8, 8)
    >>> x = y = np.array([3.0, 4.0])
    >>> out, weight = reassemble_patches(extract_patches(obj, x, y, 4), x, y, (8, 8), crop_size=2)
    >>> bool(np.allclose(out[weight > 0], obj[weight > 0])), int((weight > 0).sum())
    (True, 7)
    """
    object_patches = np.asarray(object_patches)
    if object_patches.ndim < 3:
        raise ValueError(
            f"object_patches has shape {object_patches.shape}; expected (M, N, N), one patch per position."
        )
    start, size, weights = _region_and_weights(
        object_patches.shape[-1], crop_size=crop_size, weighting=weighting, probe=probe
    )
    plan = _plan(object_patches.shape, x_px, y_px, canvas_shape, region_start=start, region_size=size)
    values = _region_values(object_patches, start, size)
    numerator, denominator = _accumulate(values, plan, weights)
    covered = denominator > 0
    obj = np.zeros(plan.shape, dtype=numerator.dtype)
    np.divide(numerator, denominator, out=obj, where=covered)
    out_dtype = np.result_type(object_patches.dtype, np.float32)
    weight_dtype = np.float32 if out_dtype in (np.float32, np.complex64) else np.float64
    return obj.astype(out_dtype), denominator.astype(weight_dtype)
