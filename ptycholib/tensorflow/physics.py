"""The physics forward model in TensorFlow (SPEC section 4).

Every function mirrors the NumPy reference in `ptycholib.forward` formula for formula and agrees with
it to float32 precision (SPEC section 8); read that module for the conventions. Inputs may be NumPy
arrays or tensors; outputs are tensors (convert with `to_numpy`). Layout is
channels-first, ``(..., N, N)`` on the last two axes; offsets and shifts carry their last axis as
``(x, y)`` in pixels. All operations are differentiable with respect to the images, patches and probe.
``ptycholib.torch.physics`` is the same text in PyTorch.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from .. import forward

__all__ = [
    "to_tensor",
    "to_numpy",
    "translate_bilinear",
    "assemble_group_canvas",
    "shared_object_views",
    "group_views",
    "normalize_probe",
    "illuminate",
    "far_field_amplitude",
    "forward_model",
    "poisson_nll",
    "amplitude_mae",
    "fft_amplitude_raw",
]

_NLL_EPS = 1e-8


# --------------------------------------------------------------------------------------------------
# conversion


def to_tensor(array, device=None):
    """Convert an array to a tensor in the library's precision.

    Parameters
    ----------
    array : array_like or tf.Tensor
        Real floats become float32, complex values complex64; integers and booleans keep their dtype.
    device : str, optional
        TensorFlow device name (``"/CPU:0"``, ``"/GPU:0"``); default: TensorFlow's placement.

    Returns
    -------
    tf.Tensor
    """
    if device is not None:
        with tf.device(device):
            return tf.identity(to_tensor(array))
    tensor = tf.convert_to_tensor(array if isinstance(array, (tf.Tensor, tf.Variable)) else np.asarray(array))
    if tensor.dtype.is_complex and tensor.dtype != tf.complex64:
        return tf.cast(tensor, tf.complex64)
    if tensor.dtype.is_floating and tensor.dtype != tf.float32:
        return tf.cast(tensor, tf.float32)
    return tensor


def _as_float64(values, device=None):
    """Shifts and offsets stay float64 until split into whole and fractional pixels."""
    if device is not None:
        with tf.device(device):
            return tf.identity(_as_float64(values))
    return tf.cast(tf.convert_to_tensor(values), tf.float64)


def to_numpy(tensor):
    """Return a tensor (or anything array-like) as a NumPy array, detached and on the host."""
    if hasattr(tensor, "numpy"):
        return tensor.numpy()
    return np.asarray(tensor)


# --------------------------------------------------------------------------------------------------
# translation


def _split_shift(shifts):
    """Split float64 shifts into integer steps (int32) and float32 fractions (``0 <= f < 1``)."""
    whole = tf.floor(shifts)
    return tf.cast(whole, tf.int32), tf.cast(shifts - whole, tf.float32)


def _interpolation_matrices(shifts, size):
    """Return ``R`` of shape ``shifts.shape + (size, size)``: ``(R @ v)[k] = (1-f) v[k-i] + f v[k-i-1]``.

    ``i = floor(shift)``, ``f = shift - i``; a source index outside ``[0, size)`` has no entry, which
    is the "zeros outside" rule. Row ``k`` holds the two bilinear weights at source columns ``k - i``
    and ``k - i - 1``, each a ``tf.one_hot`` row (all zeros for an index outside the image).
    """
    whole, fraction = _split_shift(shifts)
    source = tf.range(size, dtype=tf.int32) - whole[..., None]  # (..., size): k - i
    fraction = fraction[..., None, None]
    return (1 - fraction) * tf.one_hot(source, size, dtype=tf.float32) + fraction * tf.one_hot(
        source - 1, size, dtype=tf.float32
    )


def _shift_axis(planes, shifts, axis):
    """Translate real planes ``(M, P, H, W)`` along ``axis`` (-2: rows, -1: columns) by shifts ``(M,)``.

    ``out[k] = (1-f) in[k-i] + f in[k-i-1]`` (zeros outside), shared by the P planes of an image.
    A banded matrix product, not the gather of torch's twin: on CPU it costs about a fifth of a
    gather with per-image indices in TensorFlow, mostly because the matmul's gradient is again a
    matmul.
    """
    matrices = _interpolation_matrices(shifts, tf.shape(planes)[axis])[:, None]  # (M, 1, size, size)
    if axis == -2:
        return tf.matmul(matrices, planes)
    return tf.matmul(planes, matrices, transpose_b=True)


def _translate_planes(planes, shifts):
    """Translate real planes ``(M, P, H, W)`` by float64 shifts ``(M, 2)``, rows then columns."""
    return _shift_axis(_shift_axis(planes, shifts[:, 1], -2), shifts[:, 0], -1)


def translate_bilinear(images, shifts):
    """Translate images by sub-pixel shifts with bilinear weights, zeros outside.

    Parameters
    ----------
    images : tensor or ndarray of shape (..., H, W), float32 or complex64
        Images to move.
    shifts : tensor or ndarray of shape (..., 2)
        Shift ``(dx, dy)`` in pixels per image (broadcast against the leading axes of ``images``);
        positive ``dx`` moves content towards higher column indices.

    Returns
    -------
    tensor of shape (..., H, W), same dtype as ``images``
        ``out[r, c] = in(r - dy, c - dx)`` read bilinearly; samples outside the input contribute 0.

    Notes
    -----
    The explicit formula of `ptycholib.forward.translate_bilinear` (so an integer shift is a
    zero-filled roll and a half-pixel shift the neighbour average), applied separably, rows then
    columns; the four-tap formula factorises exactly into these two passes because both its weights
    and its zero-outside mask are products of a row and a column factor. Shifts are split into
    integer and fractional parts in float64. No library warp and its border rules.

    Examples
    --------
    >>> out = translate_bilinear(tf.eye(3), tf.constant([1.0, 0.0]))
    >>> out.numpy().astype(int).tolist()
    [[0, 1, 0], [0, 0, 1], [0, 0, 0]]
    """
    images = to_tensor(images)
    shifts = _as_float64(shifts)
    if images.shape.rank is None or images.shape.rank < 2:
        raise ValueError(f"images must have at least 2 axes (..., H, W); got shape {images.shape}.")
    if shifts.shape.rank is None or shifts.shape.rank < 1 or shifts.shape[-1] != 2:
        raise ValueError(f"shifts must have a last axis of length 2 (dx, dy); got shape {shifts.shape}.")
    height, width = tf.shape(images)[-2], tf.shape(images)[-1]
    batch_shape = tf.broadcast_dynamic_shape(tf.shape(images)[:-2], tf.shape(shifts)[:-1])
    images = tf.broadcast_to(images, tf.concat([batch_shape, [height, width]], axis=0))
    flat = tf.reshape(images, [-1, height, width])
    shifts = tf.reshape(tf.broadcast_to(shifts, tf.concat([batch_shape, [2]], axis=0)), [-1, 2])
    if flat.dtype.is_complex:
        moved = _translate_planes(tf.stack([tf.math.real(flat), tf.math.imag(flat)], axis=1), shifts)
        moved = tf.complex(moved[:, 0], moved[:, 1])
    else:
        moved = _translate_planes(flat[:, None], shifts)[:, 0]
    return tf.reshape(moved, tf.shape(images))


# --------------------------------------------------------------------------------------------------
# group views


def assemble_group_canvas(object_patches, offsets, weights):
    """Merge each group's patches on a shared canvas and re-extract every member's view.

    Parameters
    ----------
    object_patches : tensor or ndarray of shape (B, C, N, N), complex64
        Predicted patches of each group, channels-first.
    offsets : tensor or ndarray of shape (B, C, 2)
        Position minus group mean, in pixels, last axis ``(x, y)``.
    weights : tensor or ndarray of shape (N, N), float32
        Window weight of one patch (`ptycholib.forward.window_weights`).

    Returns
    -------
    tensor of shape (B, C, N, N), complex64
        View of the merged group canvas at each member's position; groups never mix (SPEC 4.7).

    Notes
    -----
    ``view_j = sum_i T(o_i - o_j)[w O_i] / sum_i T(o_i - o_j)[w]``, the denominator replaced by 1
    where it is zero (as in `ptycholib.forward.assemble_group_canvas`). Each translation is the
    two-tap bilinear formula of `translate_bilinear` written as ``T(d)[X] = R_y X R_x^T`` with
    banded interpolation matrices, so that forward and backward are batched matrix products (no
    per-pixel gathers or scatters). All C² pairs ``(j, i)`` form one batch: each builds its two
    matrices once and applies them to the real part, the imaginary part and the weight, and the
    sum over ``i`` follows. The weights are constants: no gradient flows into them.
    """
    object_patches = to_tensor(object_patches)
    offsets = _as_float64(offsets)
    weights = to_tensor(weights)
    if object_patches.shape.rank != 4 or not object_patches.dtype.is_complex:
        raise ValueError(
            f"object_patches must be complex with shape (B, C, N, N); got {object_patches.dtype.name} "
            f"{tuple(object_patches.shape)}."
        )
    if offsets.shape.rank != 3 or offsets.shape[-1] != 2:
        raise ValueError(f"offsets must have shape (B, C, 2) with last axis (x, y); got {tuple(offsets.shape)}.")
    shape = tf.shape(object_patches)
    batch, channels, size = shape[0], shape[1], shape[2]
    relative = offsets[:, None, :, :] - offsets[:, :, None, :]  # (B, j, i, 2): o_i - o_j
    pairs = tf.reshape(relative, [-1, 2])
    # One pair (j, i) per batch entry: R_x(o_i - o_j) and R_y(o_i - o_j), shared by the three planes.
    columns = _interpolation_matrices(pairs[:, 0], size)[:, None]  # (B*C*C, 1, N, N)
    rows = _interpolation_matrices(pairs[:, 1], size)[:, None]
    weighted = object_patches * tf.complex(weights, tf.zeros_like(weights))
    parts = tf.stack([tf.math.real(weighted), tf.math.imag(weighted)], axis=2)  # (B, i, 2, N, N)
    parts = tf.reshape(tf.broadcast_to(parts[:, None], [batch, channels, channels, 2, size, size]), [-1, 2, size, size])
    moved = tf.matmul(tf.matmul(rows, parts), columns, transpose_b=True)
    numerator = tf.reduce_sum(tf.reshape(moved, [batch, channels, channels, 2, size, size]), axis=2)
    # The window weights are constants. (A broadcast batch in tf.matmul crashes oneDNN here, so the
    # weight is tiled explicitly.)
    tiled = tf.broadcast_to(weights, [batch * channels * channels, 1, size, size])
    coverage = tf.matmul(tf.matmul(rows, tiled), columns, transpose_b=True)
    denominator = tf.stop_gradient(tf.reduce_sum(tf.reshape(coverage, [batch, channels, channels, size, size]), axis=2))
    denominator = tf.where(denominator > 0, denominator, tf.ones_like(denominator))
    return tf.complex(numerator[:, :, 0] / denominator, numerator[:, :, 1] / denominator)


def shared_object_views(group_objects, offsets):
    """Cut every member's view from its group's one object (``object_big=False``).

    Parameters
    ----------
    group_objects : tensor or ndarray of shape (B, 1, N, N), complex64
        One object per group, centred on the group's mean position.
    offsets : tensor or ndarray of shape (B, C, 2)
        Position minus group mean in pixels, last axis ``(x, y)``.

    Returns
    -------
    tensor of shape (B, C, N, N), complex64
        ``view_j = T(-o_j)[O]`` with `translate_bilinear`, as `ptycholib.forward.shared_object_views`.
    """
    group_objects = to_tensor(group_objects)
    if group_objects.shape.rank != 4 or group_objects.shape[1] != 1:
        raise ValueError(f"group_objects must have shape (B, 1, N, N); got {tuple(group_objects.shape)}.")
    return translate_bilinear(group_objects, -_as_float64(offsets))


def group_views(model_config, object_patches, offsets, *, window=None):
    """Return the patches the probe illuminates, as the model configuration says (SPEC 4.4).

    Parameters
    ----------
    model_config : ptycholib.config.ModelConfig
        Uses ``gridsize``, ``object_big``, ``N``, ``pad_object`` and ``probe_big``.
    object_patches : tensor or ndarray of shape (B, K, N, N), complex64
        The network's patches, ``K = model_config.n_object_channels``.
    offsets : tensor or ndarray of shape (B, C, 2)
        Position minus group mean in pixels, last axis ``(x, y)``.
    window : tensor or ndarray of shape (N, N), float32, optional
        `ptycholib.forward.window_weights` of the configuration, when the caller keeps it (the
        model holds it as a constant on its device); computed when not given.

    Returns
    -------
    tensor of shape (B, C, N, N), complex64
        `assemble_group_canvas` (``object_big``), `shared_object_views` (not ``object_big``), or the
        patches themselves at gridsize 1, as `ptycholib.forward.group_views`.
    """
    cfg = model_config
    if cfg.gridsize == 1:
        return to_tensor(object_patches)
    if cfg.object_big:
        if window is None:
            window = forward.window_weights(cfg.N, pad_object=cfg.pad_object, probe_big=cfg.probe_big)
        return assemble_group_canvas(object_patches, offsets, window)
    return shared_object_views(object_patches, offsets)


# --------------------------------------------------------------------------------------------------
# probe and far field


def _disk(size, device=None):
    """`ptycholib.forward.disk_mask` as a float32 tensor."""
    return to_tensor(forward.disk_mask(size), device=device)


def normalize_probe(probe, probe_scale):
    """Scale a probe so that its mean modulus inside the disk of radius N/4 is ``1 / probe_scale``.

    Parameters
    ----------
    probe : tensor or ndarray of shape (..., N, N), complex64
    probe_scale : float

    Returns
    -------
    tensor of shape (..., N, N), complex64

    Notes
    -----
    ``P_hat = P / (probe_scale * mean(|P| inside the disk of radius N/4))`` (SPEC 4.5).
    """
    probe = tf.cast(to_tensor(probe), tf.complex64)
    mask = _disk(int(probe.shape[-1]))
    modulus_sum = tf.reduce_sum(tf.abs(probe) * mask, axis=(-2, -1), keepdims=True)
    divisor = float(probe_scale) * modulus_sum / tf.reduce_sum(mask)
    return probe / tf.complex(divisor, tf.zeros_like(divisor))


def _smooth_gaussian(images, sigma):
    """Blur the last two axes with `ptycholib.forward.gaussian_kernel_1d`, zero padding, same size."""
    kernel = forward.gaussian_kernel_1d(sigma).astype(np.float32).tolist()
    radius = len(kernel) // 2
    height, width = int(images.shape[-2]), int(images.shape[-1])
    padded = tf.pad(images, [[0, 0]] * (images.shape.rank - 2) + [[radius, radius], [radius, radius]])
    taps = [tf.cast(tap, images.dtype) for tap in kernel]
    rows = tf.add_n([taps[k] * padded[..., k : k + height, :] for k in range(len(kernel))])
    return tf.add_n([taps[k] * rows[..., :, k : k + width] for k in range(len(kernel))])


def illuminate(object_patches, probe, *, probe_scale, probe_mask=False, gaussian_smoothing_sigma=0.0):
    """Return the exit wave ``psi = P_hat * O`` (optionally masked and smoothed).

    Parameters
    ----------
    object_patches : tensor or ndarray of shape (..., N, N), complex64
    probe : tensor or ndarray of shape (N, N), complex64
        Probe on the object pixel grid, before normalisation.
    probe_scale, probe_mask, gaussian_smoothing_sigma
        As in `ptycholib.forward.illuminate` (the NumPy reference).

    Returns
    -------
    tensor of shape (..., N, N), complex64
    """
    object_patches = tf.cast(to_tensor(object_patches), tf.complex64)
    probe_hat = normalize_probe(probe, probe_scale)
    if probe_mask:
        probe_hat = probe_hat * tf.cast(_disk(int(probe_hat.shape[-1])), tf.complex64)
    exit_wave = object_patches * probe_hat
    if gaussian_smoothing_sigma > 0:
        exit_wave = _smooth_gaussian(exit_wave, gaussian_smoothing_sigma)
    return exit_wave


def far_field_amplitude(exit_wave, intensity_scale=1.0):
    """Return the predicted diffraction amplitude ``s * |fftshift(fft2(psi))| / N``, float32.

    Parameters
    ----------
    exit_wave : tensor or ndarray of shape (..., N, N), complex64
    intensity_scale : float or scalar tensor
        SPEC's ``s`` (may be a trainable ``exp(log s)``).

    Returns
    -------
    tensor of shape (..., N, N), float32
        DC at index ``N // 2`` (fftshifted). The gradient of ``|z|`` at ``z = 0`` is 0.
    """
    exit_wave = tf.cast(to_tensor(exit_wave), tf.complex64)
    size = int(exit_wave.shape[-1])
    spectrum = tf.signal.fftshift(tf.signal.fft2d(exit_wave), axes=(-2, -1))
    return (tf.cast(intensity_scale, tf.float32) / size) * tf.abs(spectrum)


def forward_model(model_config, object_patches, offsets, probe, intensity_scale, *, window=None):
    """Run the physics on object patches: group views, exit wave and predicted amplitudes.

    Parameters
    ----------
    model_config, object_patches, offsets, probe, intensity_scale
        As in `ptycholib.forward.forward_model`, as tensors or arrays; ``intensity_scale`` may be a
        scalar tensor (the model's trainable ``exp(log s)``).
    window : tensor or ndarray of shape (N, N), float32, optional
        Passed to `group_views`.

    Returns
    -------
    dict of str to tensor
        ``views`` (B, C, N, N) complex64 (`group_views`), ``exit_wave`` (B, C, N, N) complex64
        (`illuminate`) and ``amplitudes`` (B, C, N, N) float32 (`far_field_amplitude`), the steps of
        `ptycholib.forward.forward_model`.
    """
    cfg = model_config
    views = group_views(cfg, object_patches, offsets, window=window)
    exit_wave = illuminate(
        views, probe, probe_scale=cfg.probe_scale, probe_mask=cfg.probe_mask,
        gaussian_smoothing_sigma=cfg.gaussian_smoothing_sigma,
    )
    return {"views": views, "exit_wave": exit_wave, "amplitudes": far_field_amplitude(exit_wave, intensity_scale)}


# --------------------------------------------------------------------------------------------------
# losses


def _masked_mean(values, bad_pixels):
    """Mean of ``values`` (..., N, N) over the pixels that ``bad_pixels`` (N, N, bool) does not mark."""
    if bad_pixels is None:
        return tf.reduce_mean(values)
    good = tf.cast(tf.logical_not(tf.cast(to_tensor(bad_pixels), tf.bool)), values.dtype)
    count = tf.cast(tf.size(values) // tf.size(good), values.dtype)
    return tf.reduce_sum(values * good) / (tf.reduce_sum(good) * count)


def poisson_nll(predicted, measured, *, bad_pixels=None):
    """Poisson negative log-likelihood in count units, ``mean(a_hat^2 - a^2 log(a_hat^2 + 1e-8))``.

    Parameters
    ----------
    predicted, measured : tensor or ndarray of the same shape, float32
        Predicted and measured diffraction amplitudes (square roots of counts).
    bad_pixels : tensor or ndarray of shape (N, N), bool, optional
        Detector pixels left out of the mean (True = not measured).

    Returns
    -------
    tensor, scalar float32
    """
    predicted_intensity = tf.square(to_tensor(predicted))
    measured_intensity = tf.square(to_tensor(measured))
    return _masked_mean(predicted_intensity - measured_intensity * tf.math.log(predicted_intensity + _NLL_EPS), bad_pixels)


def amplitude_mae(predicted, measured, *, bad_pixels=None):
    """Mean absolute error between predicted and measured amplitudes (scalar float32 tensor), bad pixels left out."""
    predicted = to_tensor(predicted)
    return _masked_mean(tf.abs(predicted - to_tensor(measured)), bad_pixels)


def fft_amplitude_raw(batch):
    """Return ``|fft2(batch)|`` over the last two axes, nothing else (the benchmarks' FFT baseline).

    Parameters
    ----------
    batch : tensor or ndarray of shape (..., N, N), complex64

    Returns
    -------
    tensor of shape (..., N, N), float32
    """
    return tf.abs(tf.signal.fft2d(tf.cast(to_tensor(batch), tf.complex64)))
