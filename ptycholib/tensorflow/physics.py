"""TensorFlow implementation of the physics forward model (SPEC section 4).

Every function mirrors the NumPy reference in `ptycholib.forward` formula for formula and agrees
with it to float32 precision (SPEC section 8); read that module for the conventions. Inputs may be
NumPy arrays or tensors; outputs are tensors (convert with `to_numpy`). Layout is channels-first,
``(..., N, N)`` on the last two axes, offsets and shifts with last axis ``(x, y)`` in pixels.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from .. import forward

__all__ = [
    "amplitude_mae",
    "assemble_group_canvas",
    "shared_object_views",
    "far_field_amplitude",
    "fft_amplitude_raw",
    "illuminate",
    "normalize_probe",
    "poisson_nll",
    "to_numpy",
    "to_tensor",
    "translate_bilinear",
]

_NLL_EPS = 1e-8


def to_tensor(array, device=None):
    """Convert an array to a tensor in the library's precision.

    Parameters
    ----------
    array : array_like or tf.Tensor
        Real floats become float32, complex values complex64; integers and booleans keep their dtype.
    device : str, optional
        TensorFlow device name (``"/CPU:0"``, ``"/GPU:0"``) to place the tensor on; default: TensorFlow's
        placement.

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


def to_numpy(tensor):
    """Return a tensor (or anything array-like) as a NumPy array."""
    if hasattr(tensor, "numpy"):
        return tensor.numpy()
    return np.asarray(tensor)


def _split_shift(shift):
    """Split float64 shifts into integer steps (int32) and float32 fractions (``0 <= f < 1``)."""
    whole = tf.floor(shift)
    return tf.cast(whole, tf.int32), tf.cast(shift - whole, tf.float32)


def _interpolation_matrix(shift, size):
    """Return ``S`` of shape (M, size, size) with ``(S @ v)[k] = (1-f) v[k-i] + f v[k-i-1]``, zeros outside.

    ``shift`` has shape (M,), float64, ``i = floor(shift)``, ``f = shift - i``. Row ``k`` holds the two
    bilinear weights of `ptycholib.forward.translate_bilinear` at source columns ``k - i`` and
    ``k - i - 1``; a source index outside ``[0, size)`` has no column (``tf.one_hot`` gives a zero
    row), which is the "zeros outside" rule.
    """
    whole, fraction = _split_shift(shift)
    source = tf.range(size, dtype=tf.int32)[None, :] - whole[:, None]  # (M, size): k - i
    fraction = fraction[:, None, None]
    return (1 - fraction) * tf.one_hot(source, size, dtype=tf.float32) + fraction * tf.one_hot(
        source - 1, size, dtype=tf.float32
    )


def _translate_planes(planes, shifts):
    """Translate real planes ``(M, P, H, W)`` by float64 shifts ``(M, 2)``, P planes per shift.

    ``out = S_y @ in @ S_x^T``: the bilinear formula of `translate_bilinear`, rows then columns, as
    two banded matrices per shift (shared by the P planes). On CPU this costs about a fifth of a
    gather with per-image indices, mostly because the matmul's gradient is again a matmul.
    """
    height, width = tf.shape(planes)[-2], tf.shape(planes)[-1]
    rows = _interpolation_matrix(shifts[:, 1], height)[:, None]  # (M, 1, H, H)
    cols = _interpolation_matrix(shifts[:, 0], width)[:, None]  # (M, 1, W, W)
    return _apply_matrices(rows, cols, planes)


def _apply_matrices(rows, cols, planes):
    return tf.matmul(tf.matmul(rows, planes), cols, transpose_b=True)


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
    tf.Tensor of shape (..., H, W), same dtype as ``images``
        ``out[r, c] = in(r - dy, c - dx)`` read bilinearly; samples outside the input contribute 0.

    Notes
    -----
    The same explicit formula as `ptycholib.forward.translate_bilinear` (integer shift = zero-filled
    roll, half-pixel shift = neighbour average), applied separably, rows then columns, as
    ``S_y @ image @ S_x^T`` with banded interpolation matrices whose rows hold the two bilinear
    weights (a gather written as a matrix; no library warp and its border rules). Shifts are split
    into integer and fractional parts in float64.
    """
    images = to_tensor(images)
    shifts = tf.cast(tf.convert_to_tensor(shifts), tf.float64)
    if shifts.shape.rank is None or shifts.shape[-1] != 2:
        raise ValueError(f"shifts must have a last axis of length 2 (dx, dy); got shape {shifts.shape}.")
    if images.shape.rank is None or images.shape.rank < 2:
        raise ValueError(f"images must have at least 2 axes (..., H, W); got shape {images.shape}.")
    height, width = tf.shape(images)[-2], tf.shape(images)[-1]
    batch_shape = tf.broadcast_dynamic_shape(tf.shape(images)[:-2], tf.shape(shifts)[:-1])
    images = tf.broadcast_to(images, tf.concat([batch_shape, [height, width]], axis=0))
    shifts = tf.reshape(tf.broadcast_to(shifts, tf.concat([batch_shape, [2]], axis=0)), [-1, 2])
    flat = tf.reshape(images, [-1, height, width])
    if flat.dtype.is_complex:
        moved = _translate_planes(tf.stack([tf.math.real(flat), tf.math.imag(flat)], axis=1), shifts)
        moved = tf.complex(moved[:, 0], moved[:, 1])
    else:
        moved = _translate_planes(flat[:, None], shifts)[:, 0]
    return tf.reshape(moved, tf.shape(images))


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
    tf.Tensor of shape (B, C, N, N), complex64
        View of the merged group canvas at each member's position; groups never mix.

    Notes
    -----
    ``view_j = sum_i T(o_i - o_j)[w O_i] / sum_i T(o_i - o_j)[w]``, the denominator replaced by 1
    where it is zero (as in `ptycholib.forward.assemble_group_canvas`). Each of the C² shifts builds
    its two interpolation matrices once and applies them to the real part, the imaginary part and
    the weight.
    """
    object_patches = to_tensor(object_patches)
    offsets = tf.cast(tf.convert_to_tensor(offsets), tf.float64)
    weights = tf.cast(tf.convert_to_tensor(weights), tf.float32)
    if object_patches.shape.rank != 4:
        raise ValueError(f"object_patches must have shape (B, C, N, N); got {object_patches.shape}.")
    if offsets.shape.rank != 3 or offsets.shape[-1] != 2:
        raise ValueError(f"offsets must have shape (B, C, 2) with last axis (x, y); got {offsets.shape}.")
    shape = tf.shape(object_patches)
    batch, channels, size = shape[0], shape[1], shape[2]
    relative = offsets[:, None, :, :] - offsets[:, :, None, :]  # (B, j, i, 2): o_i - o_j
    weighted = object_patches * tf.complex(weights, tf.zeros_like(weights))
    pairs = tf.reshape(relative, [-1, 2])
    rows = _interpolation_matrix(pairs[:, 1], size)[:, None]  # (B*C*C, 1, N, N)
    cols = _interpolation_matrix(pairs[:, 0], size)[:, None]
    parts = tf.stack([tf.math.real(weighted), tf.math.imag(weighted)], axis=2)  # (B, i, 2, N, N)
    parts = tf.reshape(tf.broadcast_to(parts[:, None], [batch, channels, channels, 2, size, size]), [-1, 2, size, size])
    numerator = tf.reduce_sum(tf.reshape(_apply_matrices(rows, cols, parts), [batch, channels, channels, 2, size, size]), axis=2)
    # The weights depend on the offsets only: no gradient flows through them.
    # (A broadcast batch in tf.matmul crashes oneDNN here, so the weight is tiled explicitly.)
    tiled = tf.broadcast_to(weights, [batch * channels * channels, 1, size, size])
    denominator = tf.stop_gradient(
        tf.reduce_sum(tf.reshape(_apply_matrices(rows, cols, tiled), [batch, channels, channels, size, size]), axis=2)
    )
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
    tf.Tensor of shape (B, C, N, N), complex64
        ``view_j = T(-o_j)[O]`` with `translate_bilinear`, as `ptycholib.forward.shared_object_views`.
    """
    group_objects = to_tensor(group_objects)
    if group_objects.shape.rank != 4 or group_objects.shape[1] != 1:
        raise ValueError(f"group_objects must have shape (B, 1, N, N); got {group_objects.shape}.")
    return translate_bilinear(group_objects, -tf.cast(tf.convert_to_tensor(offsets), tf.float64))


def normalize_probe(probe, probe_scale):
    """Scale a probe so that its mean modulus inside the disk of radius N/4 is ``1 / probe_scale``.

    Parameters
    ----------
    probe : tensor or ndarray of shape (..., N, N), complex64
    probe_scale : float

    Returns
    -------
    tf.Tensor of shape (..., N, N), complex64

    Notes
    -----
    ``P_hat = P / (probe_scale * mean(|P| inside the disk of radius N/4))`` (SPEC 4.5).
    """
    probe = tf.cast(to_tensor(probe), tf.complex64)
    mask = forward.disk_mask(int(probe.shape[-1]))
    modulus_sum = tf.reduce_sum(tf.abs(probe) * mask, axis=(-2, -1), keepdims=True)
    divisor = float(probe_scale) * modulus_sum / float(mask.sum())
    return probe / tf.complex(divisor, tf.zeros_like(divisor))


def _smooth_gaussian(images, sigma):
    """Blur the last two axes with `ptycholib.forward.gaussian_kernel_1d`, zero padding, same size."""
    kernel = forward.gaussian_kernel_1d(sigma).astype(np.float32)
    radius = kernel.size // 2
    height, width = int(images.shape[-2]), int(images.shape[-1])
    pad = [[0, 0]] * (images.shape.rank - 2) + [[radius, radius], [radius, radius]]
    padded = tf.pad(images, pad)
    taps = [tf.cast(float(k), images.dtype) for k in kernel]
    rows = tf.add_n([taps[k] * padded[..., k : k + height, :] for k in range(kernel.size)])
    return tf.add_n([taps[k] * rows[..., :, k : k + width] for k in range(kernel.size)])


def illuminate(object_patches, probe, *, probe_scale, probe_mask=False, gaussian_smoothing_sigma=0.0):
    """Return the exit wave ``psi = P_hat * O`` (optionally masked and smoothed).

    Parameters
    ----------
    object_patches : tensor or ndarray of shape (..., N, N), complex64
    probe : tensor or ndarray of shape (N, N), complex64
        Probe on the object pixel grid, before normalisation.
    probe_scale : float
        Divisor of the probe normalisation (SPEC 4.5).
    probe_mask : bool
        Multiply the normalised probe by the disk of radius N/4.
    gaussian_smoothing_sigma : float
        Blur the exit wave with this Gaussian (pixels); 0 disables it.

    Returns
    -------
    tf.Tensor of shape (..., N, N), complex64
    """
    probe_hat = normalize_probe(probe, probe_scale)
    if probe_mask:
        probe_hat = probe_hat * forward.disk_mask(int(probe_hat.shape[-1])).astype(np.complex64)
    exit_wave = tf.cast(to_tensor(object_patches), tf.complex64) * probe_hat
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
    tf.Tensor of shape (..., N, N), float32
        DC at index ``N // 2`` (fftshifted). The gradient of ``|z|`` at ``z = 0`` is 0.
    """
    exit_wave = tf.cast(to_tensor(exit_wave), tf.complex64)
    size = int(exit_wave.shape[-1])
    spectrum = tf.signal.fftshift(tf.signal.fft2d(exit_wave), axes=(-2, -1))
    scale = tf.cast(intensity_scale, tf.float32) / size
    return scale * tf.abs(spectrum)


def poisson_nll(predicted, measured):
    """Poisson negative log-likelihood in count units, ``mean(a_hat^2 - a^2 log(a_hat^2 + 1e-8))``.

    Parameters
    ----------
    predicted, measured : tensor or ndarray of the same shape, float32
        Predicted and measured diffraction amplitudes (square roots of counts).

    Returns
    -------
    tf.Tensor, scalar float32
    """
    predicted_intensity = tf.square(to_tensor(predicted))
    measured_intensity = tf.square(to_tensor(measured))
    return tf.reduce_mean(predicted_intensity - measured_intensity * tf.math.log(predicted_intensity + _NLL_EPS))


def amplitude_mae(predicted, measured):
    """Mean absolute error between predicted and measured amplitudes (scalar float32 tensor)."""
    return tf.reduce_mean(tf.abs(to_tensor(predicted) - to_tensor(measured)))


def fft_amplitude_raw(batch):
    """Return ``|fft2(batch)|`` over the last two axes, nothing else (the benchmarks' FFT baseline).

    Parameters
    ----------
    batch : tensor or ndarray of shape (..., N, N), complex64

    Returns
    -------
    tf.Tensor of shape (..., N, N), float32
    """
    return tf.abs(tf.signal.fft2d(tf.cast(to_tensor(batch), tf.complex64)))

