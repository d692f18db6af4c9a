"""NumPy reference of the physics forward model (SPEC section 4).

This module is the oracle: the simulator uses it to make diffraction patterns, and the parity tests
compare both backends' physics against it. Every function is vectorised over leading batch axes.

Conventions (SPEC section 3): a position ``(x, y)`` is in object pixels, ``x`` along columns and ``y``
along rows, and names the centre of the N x N window, which sits at index ``N // 2`` of the patch.
Offsets and shifts carry their last axis as ``(x, y)``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "translate_bilinear",
    "extract_patches",
    "assemble_group_canvas",
    "shared_object_views",
    "group_views",
    "window_weights",
    "normalize_probe",
    "disk_mask",
    "gaussian_kernel_1d",
    "smooth_gaussian",
    "illuminate",
    "far_field_amplitude",
    "forward_model",
    "poisson_nll",
    "amplitude_mae",
    "initial_intensity_scale",
    "check_physics_inputs",
]


def translate_bilinear(images, shifts):
    """Translate images by sub-pixel shifts with bilinear weights, zeros outside.

    Parameters
    ----------
    images : ndarray of shape (..., H, W), real or complex
        Images to move.
    shifts : ndarray of shape (..., 2)
        Shift ``(dx, dy)`` in pixels for each image; positive ``dx`` moves content towards higher
        column indices.

    Returns
    -------
    ndarray of shape (..., H, W)
        ``out[r, c] = in(r - dy, c - dx)``, read with bilinear interpolation; samples that fall
        outside the input contribute zero.

    Notes
    -----
    With ``dx = i + f`` (``i = floor(dx)``, ``0 <= f < 1``) and likewise ``dy = j + e``::

        out[r, c] = (1-f)(1-e) in[r-j, c-i] + f(1-e) in[r-j, c-i-1]
                  + (1-f) e   in[r-j-1, c-i] + f e    in[r-j-1, c-i-1]

    Both backends implement this same formula, so an integer shift is a zero-filled roll and a
    half-pixel shift is the average of two neighbours.

    Examples
    --------
    >>> out = translate_bilinear(np.eye(3), np.array([1.0, 0.0]))
    >>> out.astype(int).tolist()
    [[0, 1, 0], [0, 0, 1], [0, 0, 0]]
    """
    images = np.asarray(images)
    shifts = np.asarray(shifts, dtype=np.float64)
    height, width = images.shape[-2:]
    batch_shape = np.broadcast_shapes(images.shape[:-2], shifts.shape[:-1])
    images = np.broadcast_to(images, batch_shape + (height, width))
    dx = np.broadcast_to(shifts[..., 0], batch_shape)
    dy = np.broadcast_to(shifts[..., 1], batch_shape)
    ix, iy = np.floor(dx), np.floor(dy)
    fx = (dx - ix)[..., None, None]
    fy = (dy - iy)[..., None, None]
    rows = np.arange(height)
    cols = np.arange(width)
    src_r0 = rows - iy[..., None].astype(np.int64)  # (..., H)
    src_c0 = cols - ix[..., None].astype(np.int64)  # (..., W)

    def take(src_r, src_c):
        valid_r = (src_r >= 0) & (src_r < height)
        valid_c = (src_c >= 0) & (src_c < width)
        rr = np.clip(src_r, 0, height - 1)[..., :, None]
        cc = np.clip(src_c, 0, width - 1)[..., None, :]
        gathered = np.take_along_axis(
            np.take_along_axis(images, np.broadcast_to(rr, batch_shape + (height, 1)), axis=-2),
            np.broadcast_to(cc, batch_shape + (height, width)),
            axis=-1,
        )
        return gathered * (valid_r[..., :, None] & valid_c[..., None, :])

    out = (1 - fx) * (1 - fy) * take(src_r0, src_c0)
    out = out + fx * (1 - fy) * take(src_r0, src_c0 - 1)
    out = out + (1 - fx) * fy * take(src_r0 - 1, src_c0)
    out = out + fx * fy * take(src_r0 - 1, src_c0 - 1)
    return out.astype(np.result_type(images.dtype, np.float32), copy=False)


def extract_patches(obj, x_px, y_px, patch_size):
    """Cut N x N views of an object at absolute positions, bilinear for sub-pixel positions.

    Parameters
    ----------
    obj : ndarray of shape (rows, cols), complex or real
        Object canvas.
    x_px, y_px : ndarray of shape (n_positions,)
        Window centres in object pixels (x along columns, y along rows).
    patch_size : int
        N, the side of each view; the window centre is at index ``N // 2``.

    Returns
    -------
    ndarray of shape (n_positions, N, N)
        ``patch[k, r, c] = obj(y_k - N//2 + r, x_k - N//2 + c)``, bilinear, zeros outside.

    Examples
    --------
    >>> obj = np.arange(16.0).reshape(4, 4)
    >>> extract_patches(obj, np.array([2.0]), np.array([2.0]), 2)[0].tolist()
    [[5.0, 6.0], [9.0, 10.0]]
    """
    obj = np.asarray(obj)
    x_px = np.asarray(x_px, dtype=np.float64)
    y_px = np.asarray(y_px, dtype=np.float64)
    rows, cols = obj.shape
    half = patch_size // 2
    x0 = np.floor(x_px)
    y0 = np.floor(y_px)
    fx = (x_px - x0)[:, None, None]
    fy = (y_px - y0)[:, None, None]
    offsets = np.arange(patch_size) - half
    r0 = y0.astype(np.int64)[:, None] + offsets  # (M, N)
    c0 = x0.astype(np.int64)[:, None] + offsets

    def take(r, c):
        valid = ((r >= 0) & (r < rows))[:, :, None] & ((c >= 0) & (c < cols))[:, None, :]
        values = obj[np.clip(r, 0, rows - 1)[:, :, None], np.clip(c, 0, cols - 1)[:, None, :]]
        return values * valid

    out = (1 - fx) * (1 - fy) * take(r0, c0)
    out = out + fx * (1 - fy) * take(r0, c0 + 1)
    out = out + (1 - fx) * fy * take(r0 + 1, c0)
    out = out + fx * fy * take(r0 + 1, c0 + 1)
    return out.astype(np.result_type(obj.dtype, np.float32), copy=False)


def window_weights(patch_size, *, pad_object, probe_big):
    """Return the N x N weight of one predicted patch on the group canvas.

    With ``pad_object`` and without ``probe_big`` the network predicts only the central N/2 region,
    so only that region carries weight; otherwise the whole patch does.

    Returns
    -------
    ndarray of shape (N, N), float32
    """
    weights = np.ones((patch_size, patch_size), dtype=np.float32)
    if pad_object and not probe_big:
        weights[:] = 0.0
        quarter = patch_size // 4
        weights[quarter : patch_size - quarter, quarter : patch_size - quarter] = 1.0
    return weights


def assemble_group_canvas(object_patches, offsets, weights):
    """Merge each group's patches on a shared canvas and re-extract every member's view.

    Parameters
    ----------
    object_patches : ndarray of shape (B, C, N, N), complex
        Predicted patches of each group, channels-first.
    offsets : ndarray of shape (B, C, 2)
        Position minus group mean, in pixels, last axis ``(x, y)``.
    weights : ndarray of shape (N, N)
        Window weight of one patch (see `window_weights`).

    Returns
    -------
    ndarray of shape (B, C, N, N), complex
        View of the merged group canvas at each member's position.

    Notes
    -----
    The canvas is evaluated directly in each member's frame: patch ``i`` moves by
    ``offsets[i] - offsets[j]`` into member ``j``'s frame, so that one bilinear interpolation
    (not two) separates prediction and view::

        view_j = sum_i T(o_i - o_j)[w * O_i] / sum_i T(o_i - o_j)[w]

    where the denominator is replaced by 1 where it is zero (no patch covers the pixel).
    """
    object_patches = np.asarray(object_patches)
    offsets = np.asarray(offsets, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float32)
    relative = offsets[:, None, :, :] - offsets[:, :, None, :]  # (B, j, i, 2): o_i - o_j
    moved = translate_bilinear(object_patches[:, None] * weights, relative)  # (B, j, i, N, N)
    moved_weights = translate_bilinear(np.broadcast_to(weights, relative.shape[:-1] + weights.shape), relative)
    numerator = moved.sum(axis=2)
    denominator = moved_weights.sum(axis=2)
    return (numerator / np.where(denominator > 0, denominator, 1.0)).astype(object_patches.dtype)


def shared_object_views(group_objects, offsets):
    """Cut every member's view from the one object a group predicts (``object_big=False``).

    Parameters
    ----------
    group_objects : ndarray of shape (B, 1, N, N), complex
        One object per group, its window centre (index ``N // 2``) at the group's mean position.
    offsets : ndarray of shape (B, C, 2)
        Position minus group mean, in pixels, last axis ``(x, y)``.

    Returns
    -------
    ndarray of shape (B, C, N, N), complex
        ``view_j = T(-o_j)[O]``: member ``j`` sees the group object around its own position, so
        ``view_j[r, c] = O(r + o_j.y, c + o_j.x)`` (bilinear, zeros outside). This is PtychoPINN's
        ``object.big = False`` at gridsize > 1, the strongest form of the overlap constraint: all C
        patterns must be explained by one object.
    """
    group_objects = np.asarray(group_objects)
    offsets = np.asarray(offsets, dtype=np.float64)
    if group_objects.ndim != 4 or group_objects.shape[1] != 1:
        raise ValueError(f"group_objects must have shape (B, 1, N, N); got {group_objects.shape}.")
    return translate_bilinear(group_objects, -offsets).astype(group_objects.dtype, copy=False)


def group_views(model_config, object_patches, offsets):
    """Return the patches the probe illuminates, as the model configuration says (SPEC 4.4).

    Parameters
    ----------
    model_config : ptycholib.config.ModelConfig
        Uses ``gridsize``, ``object_big``, ``N``, ``pad_object`` and ``probe_big``.
    object_patches : ndarray of shape (B, K, N, N), complex
        The network's output: ``K = C`` patches per group, or ``K = 1`` object per group when
        ``object_big=False`` at gridsize > 1 (``model_config.n_object_channels``).
    offsets : ndarray of shape (B, C, 2)

    Returns
    -------
    ndarray of shape (B, C, N, N), complex
        `assemble_group_canvas` (``object_big``), `shared_object_views` (not ``object_big``), or the
        patches themselves at gridsize 1.
    """
    cfg = model_config
    if cfg.gridsize == 1:
        return np.asarray(object_patches)
    if cfg.object_big:
        weights = window_weights(cfg.N, pad_object=cfg.pad_object, probe_big=cfg.probe_big)
        return assemble_group_canvas(object_patches, offsets, weights)
    return shared_object_views(object_patches, offsets)


def disk_mask(patch_size, radius=None):
    """Return a float32 disk of radius ``N / 4`` (default) centred at index ``N // 2``."""
    radius = patch_size / 4 if radius is None else radius
    coords = np.arange(patch_size) - patch_size // 2
    return (coords[:, None] ** 2 + coords[None, :] ** 2 <= radius**2).astype(np.float32)


def normalize_probe(probe, probe_scale):
    """Scale a probe so that its mean modulus inside the disk of radius N/4 is ``1 / probe_scale``.

    Notes
    -----
    ``P_hat = P / (probe_scale * mean(|P| inside the disk of radius N/4))`` (SPEC 4.5).
    """
    probe = np.asarray(probe)
    mask = disk_mask(probe.shape[-1])
    mean_modulus = (np.abs(probe) * mask).sum(axis=(-2, -1), keepdims=True) / mask.sum()
    return (probe / (probe_scale * mean_modulus)).astype(np.complex64)


def gaussian_kernel_1d(sigma):
    """Return the normalised 1-D Gaussian of radius ``max(1, ceil(3 sigma))``, float64."""
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-(taps**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def smooth_gaussian(images, sigma):
    """Blur the last two axes with a separable Gaussian, zero padding ('same' size).

    ``sigma = 0`` returns the input unchanged.
    """
    images = np.asarray(images)
    if sigma <= 0:
        return images
    kernel = gaussian_kernel_1d(sigma)
    radius = kernel.size // 2
    height, width = images.shape[-2:]
    padded = np.pad(images, [(0, 0)] * (images.ndim - 2) + [(radius, radius), (radius, radius)])
    rows = sum(kernel[k] * padded[..., k : k + height, :] for k in range(kernel.size))
    out = sum(kernel[k] * rows[..., :, k : k + width] for k in range(kernel.size))
    return out.astype(images.dtype, copy=False)


def illuminate(object_patches, probe, *, probe_scale, probe_mask=False, gaussian_smoothing_sigma=0.0):
    """Return the exit wave ``psi = P_hat * O`` (optionally masked and smoothed).

    Parameters
    ----------
    object_patches : ndarray of shape (..., N, N), complex
    probe : ndarray of shape (N, N), complex
        Probe on the object pixel grid, before normalisation.
    probe_scale : float
        Divisor of the probe normalisation (SPEC 4.5).
    probe_mask : bool
        Multiply the normalised probe by the disk of radius N/4.
    gaussian_smoothing_sigma : float
        Blur the exit wave with this Gaussian (pixels); 0 disables it.
    """
    probe_hat = normalize_probe(probe, probe_scale)
    if probe_mask:
        probe_hat = probe_hat * disk_mask(probe_hat.shape[-1])
    exit_wave = np.asarray(object_patches) * probe_hat
    return smooth_gaussian(exit_wave, gaussian_smoothing_sigma).astype(np.complex64)


def far_field_amplitude(exit_wave, intensity_scale=1.0):
    """Return the predicted diffraction amplitude ``s * |fftshift(fft2(psi))| / N``, float32.

    Parameters
    ----------
    exit_wave : ndarray of shape (..., N, N), complex
    intensity_scale : float
        SPEC's ``s``: maps network units to measured counts.

    Notes
    -----
    The ``1 / N`` makes the step unitary up to ``s``: ``sum(a_hat**2) = s**2 * sum(|psi|**2)``
    (Parseval).
    """
    exit_wave = np.asarray(exit_wave)
    n = exit_wave.shape[-1]
    spectrum = np.fft.fftshift(np.fft.fft2(exit_wave, axes=(-2, -1)), axes=(-2, -1))
    return (intensity_scale * np.abs(spectrum) / n).astype(np.float32)


def forward_model(model_config, object_patches, offsets, probe, intensity_scale):
    """Run the physics of the physics-informed model on object patches (docs/architecture.md steps 2-4).

    Both backends' ``physics.forward_model`` compute these steps with the same arguments; their
    ``PhysicsModel`` runs it on the network's patches, and the parity tests compare it with this one.

    Parameters
    ----------
    model_config : ptycholib.config.ModelConfig
        Uses ``gridsize``, ``object_big``, ``N``, ``pad_object``, ``probe_big`` (`group_views`) and
        ``probe_scale``, ``probe_mask``, ``gaussian_smoothing_sigma`` (`illuminate`).
    object_patches : ndarray of shape (B, K, N, N), complex
        The network's patches, ``K = model_config.n_object_channels``.
    offsets : ndarray of shape (B, C, 2)
        Position minus group mean in pixels, last axis ``(x, y)``.
    probe : ndarray of shape (N, N), complex
        Probe on the object grid, before normalisation.
    intensity_scale : float
        SPEC's ``s``.

    Returns
    -------
    dict of str to ndarray
        ``views`` (B, C, N, N), complex: the patches the probe illuminates (`group_views`);
        ``exit_wave`` (B, C, N, N), complex64 (`illuminate`); ``amplitudes`` (B, C, N, N), float32,
        the predicted diffraction amplitudes (`far_field_amplitude`).

    Notes
    -----
    ``a_hat = s |fftshift(fft2(P_hat * V(O)))| / N`` with ``V`` = `group_views` and ``P_hat`` the
    normalised (optionally masked) probe; the exit wave is blurred first when
    ``gaussian_smoothing_sigma > 0``.

    Examples
    --------
    >>> from ptycholib.config import ModelConfig
    >>> cfg = ModelConfig(N=64, gridsize=1)
    >>> out = forward_model(cfg, np.ones((2, 1, 64, 64), np.complex64), np.zeros((2, 1, 2)),
    ...                     np.ones((64, 64), np.complex64), 1.0)
    >>> out["amplitudes"].shape, out["amplitudes"].dtype
    ((2, 1, 64, 64), dtype('float32'))
    """
    cfg = model_config
    views = group_views(cfg, object_patches, offsets)
    exit_wave = illuminate(
        views, probe, probe_scale=cfg.probe_scale, probe_mask=cfg.probe_mask,
        gaussian_smoothing_sigma=cfg.gaussian_smoothing_sigma,
    )
    return {"views": views, "exit_wave": exit_wave, "amplitudes": far_field_amplitude(exit_wave, intensity_scale)}


def _masked_mean(values, bad_pixels):
    """Mean of ``values`` (..., N, N) over the pixels that ``bad_pixels`` (N, N) does not mark."""
    if bad_pixels is None:
        return float(np.mean(values))
    good = ~np.asarray(bad_pixels, dtype=bool)
    return float(np.mean(values[..., good]))


def poisson_nll(predicted_amplitudes, measured_amplitudes, eps=1e-8, *, bad_pixels=None):
    """Poisson negative log-likelihood in count units, ``mean(a_hat^2 - a^2 log(a_hat^2 + eps))``.

    ``bad_pixels`` (an (N, N) boolean mask, True = not measured) leaves those pixels out of the
    mean: their measured values never change the loss.
    """
    predicted_intensity = np.asarray(predicted_amplitudes, dtype=np.float64) ** 2
    measured_intensity = np.asarray(measured_amplitudes, dtype=np.float64) ** 2
    return _masked_mean(predicted_intensity - measured_intensity * np.log(predicted_intensity + eps), bad_pixels)


def amplitude_mae(predicted_amplitudes, measured_amplitudes, *, bad_pixels=None):
    """Mean absolute error between predicted and measured amplitudes (over pixels not in ``bad_pixels``)."""
    return _masked_mean(np.abs(np.asarray(predicted_amplitudes) - np.asarray(measured_amplitudes)), bad_pixels)


def initial_intensity_scale(amplitudes, probe, probe_scale, object_amplitude=0.5, *, bad_pixels=None):
    """Return the starting intensity scale ``s0`` fitted from measured amplitudes.

    Parameters
    ----------
    amplitudes : ndarray of shape (n_positions, N, N)
        Measured diffraction amplitudes (sqrt of counts).
    probe : ndarray of shape (N, N), complex
        Probe on the object grid, before normalisation.
    probe_scale : float
    object_amplitude : float
        Object modulus at which the predicted energy matches the data. 0.5 is the untrained sigmoid
        head's output: the network starts at the energy of the data, in the middle of the sigmoid's
        range, instead of being pushed towards saturation.
    bad_pixels : ndarray of shape (N, N), bool, optional
        Detector pixels that were not measured (True): the fit compares the energy of the measured
        pixels with the far-field energy that the model puts on those same pixels.

    Returns
    -------
    float
        ``s0 = sqrt(mean_k sum(a_k**2) / sum(|object_amplitude * P_hat|**2))`` (Parseval). Fitted from
        the data, never from the probe's absolute size (SPEC section 10). The overall scale of object
        and ``s`` is not observable; ``s`` stays trainable by default.
    """
    amplitudes = np.asarray(amplitudes, dtype=np.float64)
    probe_hat = object_amplitude * normalize_probe(probe, probe_scale)
    if bad_pixels is None:
        mean_energy = float(np.mean(np.sum(amplitudes**2, axis=(-2, -1))))
        probe_energy = float(np.sum(np.abs(probe_hat) ** 2))
    else:
        good = ~np.asarray(bad_pixels, dtype=bool)
        mean_energy = float(np.mean(np.sum(amplitudes[..., good] ** 2, axis=-1)))
        probe_energy = float(np.sum(far_field_amplitude(probe_hat).astype(np.float64)[good] ** 2))
    return float(np.sqrt(mean_energy / probe_energy))


def check_physics_inputs(model_config, probe, intensity_scale):
    """Check the probe and intensity scale a physics-informed model is built with.

    Both backends' ``PhysicsModel`` call it before they create their parameters.

    Parameters
    ----------
    model_config : ptycholib.config.ModelConfig
        Uses ``N``.
    probe : array_like of shape (N, N), complex
        Probe on the object grid, before normalisation.
    intensity_scale : float
        Initial ``s``; must be positive and finite.

    Returns
    -------
    ndarray of shape (N, N), complex64
        The probe.

    Raises
    ------
    ValueError
        The probe has another shape or non-finite values, or ``intensity_scale`` is not positive.

    Examples
    --------
    >>> from ptycholib.config import ModelConfig
    >>> check_physics_inputs(ModelConfig(N=64), np.ones((64, 32)), 1.0)
    Traceback (most recent call last):
    ...
    ValueError: probe has shape (64, 32) but N=64; pass the (N, N) probe on the object grid.
    """
    probe = np.asarray(probe)
    size = model_config.N
    if probe.shape != (size, size):
        raise ValueError(f"probe has shape {probe.shape} but N={size}; pass the (N, N) probe on the object grid.")
    if not np.all(np.isfinite(probe)):
        raise ValueError("probe contains NaN or Inf values.")
    if not (np.isfinite(intensity_scale) and intensity_scale > 0):
        raise ValueError(f"intensity_scale={intensity_scale!r} must be a positive finite number.")
    return probe.astype(np.complex64)
