"""The physics forward model in PyTorch (SPEC section 4).

Every function mirrors the NumPy reference in `ptycholib.forward` formula for formula and agrees with
it to float32 precision (SPEC section 8); read that module for the conventions. Inputs may be NumPy
arrays or tensors; outputs are tensors on the input's device (convert with `to_numpy`). Layout is
channels-first, ``(..., N, N)`` on the last two axes; offsets and shifts carry their last axis as
``(x, y)`` in pixels. All operations are differentiable with respect to the images, patches and probe.
``ptycholib.tensorflow.physics`` is the same text in TensorFlow.
"""

from __future__ import annotations

import numpy as np
import torch

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
    array : array_like or torch.Tensor
        Real floats become float32, complex values complex64; integers and booleans keep their dtype.
    device : torch.device or str, optional
        Where the tensor goes; default: where it is (CPU for NumPy input).

    Returns
    -------
    torch.Tensor
    """
    tensor = array if isinstance(array, torch.Tensor) else torch.as_tensor(np.asarray(array))
    if tensor.is_complex() and tensor.dtype != torch.complex64:
        tensor = tensor.to(torch.complex64)
    elif tensor.is_floating_point() and tensor.dtype != torch.float32:
        tensor = tensor.to(torch.float32)
    return tensor if device is None else tensor.to(device)


def _as_float64(values, device=None):
    """Shifts and offsets stay float64 until split into whole and fractional pixels."""
    if isinstance(values, torch.Tensor):
        return values.to(device=device, dtype=torch.float64)
    return torch.as_tensor(np.asarray(values, dtype=np.float64), device=device)


def to_numpy(tensor):
    """Return a tensor (or anything array-like) as a NumPy array, detached and on the host."""
    if isinstance(tensor, torch.Tensor):
        return tensor.detach().cpu().numpy()
    return np.asarray(tensor)


# --------------------------------------------------------------------------------------------------
# translation


def _split_shift(shifts):
    """Split float64 shifts into integer steps (int64) and float32 fractions (``0 <= f < 1``)."""
    whole = torch.floor(shifts)
    return whole.to(torch.int64), (shifts - whole).to(torch.float32)


def _interpolation_matrices(shifts, size):
    """Return ``R`` of shape ``shifts.shape + (size, size)``: ``(R @ v)[k] = (1-f) v[k-i] + f v[k-i-1]``.

    ``i = floor(shift)``, ``f = shift - i``; a source index outside ``[0, size)`` has no entry, which
    is the "zeros outside" rule. The two taps of each shift are scattered into a vector indexed by
    the distance ``d = k - k'`` (slots ``0`` and ``2 size`` park the taps beyond the image, and no
    entry reads them); one gather of ``[k - k' + size]`` then writes every (Toeplitz) matrix.
    """
    whole, fraction = _split_shift(shifts)
    whole, fraction = whole[..., None], fraction[..., None]
    taps = torch.zeros(shifts.shape + (2 * size + 1,), device=shifts.device)
    taps.scatter_(-1, whole.clamp(-size, size) + size, 1 - fraction)
    taps.scatter_add_(-1, (whole + 1).clamp(-size, size) + size, fraction)
    steps = torch.arange(size, device=shifts.device)
    distance = (steps[:, None] - steps[None, :] + size).expand(shifts.shape + (size, size))
    return torch.gather(taps[..., None, :].expand(shifts.shape + (size, 2 * size + 1)), -1, distance)


def _shift_axis(planes, shifts, axis):
    """Translate real planes ``(M, P, H, W)`` along ``axis`` (-2: rows, -1: columns) by shifts ``(M,)``.

    ``out[k] = (1-f) in[k-i] + f in[k-i-1]`` (zeros outside), shared by the P planes of an image.
    A gather, not the banded matrix of TensorFlow's twin: one gather of ``size + 1`` source indices
    ``k - i`` for ``k = -1 .. size - 1`` serves both taps, and the validity mask is folded into the
    two tap weights, so the full-size arrays see one gather, two products and one sum.
    """
    size = planes.shape[axis]
    whole, fraction = _split_shift(shifts)
    source = torch.arange(-1, size, device=planes.device)[None, :] - whole[:, None]  # (M, size + 1)
    valid = ((source >= 0) & (source < size)).to(planes.dtype)
    index = source.clamp(0, size - 1)
    fraction = fraction[:, None].to(planes.dtype)
    upper = (1 - fraction) * valid[:, 1:]  # multiplies in[k - i]
    lower = fraction * valid[:, :-1]  # multiplies in[k - i - 1]
    batch, count, height, width = planes.shape
    if axis == -2:
        taps = torch.gather(planes, 2, index[:, None, :, None].expand(batch, count, size + 1, width))
        return upper[:, None, :, None] * taps[:, :, 1:, :] + lower[:, None, :, None] * taps[:, :, :-1, :]
    taps = torch.gather(planes, 3, index[:, None, None, :].expand(batch, count, height, size + 1))
    return upper[:, None, None, :] * taps[..., 1:] + lower[:, None, None, :] * taps[..., :-1]


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
    >>> out = translate_bilinear(torch.eye(3), torch.tensor([1.0, 0.0]))
    >>> out.int().tolist()
    [[0, 1, 0], [0, 0, 1], [0, 0, 0]]
    """
    images = to_tensor(images)
    shifts = _as_float64(shifts, images.device)
    if images.ndim < 2:
        raise ValueError(f"images must have at least 2 axes (..., H, W); got shape {tuple(images.shape)}.")
    if shifts.ndim < 1 or shifts.shape[-1] != 2:
        raise ValueError(f"shifts must have a last axis of length 2 (dx, dy); got shape {tuple(shifts.shape)}.")
    height, width = images.shape[-2:]
    batch_shape = torch.broadcast_shapes(images.shape[:-2], shifts.shape[:-1])
    flat = images.expand(*batch_shape, height, width).reshape(-1, height, width)
    shifts = shifts.expand(*batch_shape, 2).reshape(-1, 2)
    if flat.is_complex():
        moved = _translate_planes(torch.stack([flat.real, flat.imag], dim=1), shifts)
        moved = torch.complex(moved[:, 0], moved[:, 1])
    else:
        moved = _translate_planes(flat[:, None], shifts)[:, 0]
    return moved.reshape(*batch_shape, height, width)


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
    per-pixel gathers or scatters). The blocks of all members ``j`` sit side by side, so the column
    pass of patch ``i`` is one product for all ``j`` and the row pass of member ``j`` one product
    that also sums over the patches ``i``: on a CPU core 2.5x (forward) and 3.5x (forward +
    backward) faster than translating all C² pairs. The weights are constants: no gradient flows
    into them.
    """
    object_patches = to_tensor(object_patches)
    device = object_patches.device
    offsets = _as_float64(offsets, device)
    weights = to_tensor(weights, device=device)
    if object_patches.ndim != 4 or not object_patches.is_complex():
        raise ValueError(
            f"object_patches must be complex with shape (B, C, N, N); got {object_patches.dtype} "
            f"{tuple(object_patches.shape)}."
        )
    batch, channels, height, width = object_patches.shape
    if tuple(offsets.shape) != (batch, channels, 2):
        raise ValueError(
            f"offsets must have shape ({batch}, {channels}, 2) with last axis (x, y); got {tuple(offsets.shape)}."
        )
    if tuple(weights.shape) != (height, width):
        raise ValueError(f"weights must have shape ({height}, {width}); got {tuple(weights.shape)}.")
    relative = offsets[:, None, :, :] - offsets[:, :, None, :]  # (B, j, i, 2): o_i - o_j
    # columns_t[b, i, k', j*W + k] = R_x(o_i - o_j)[k, k']: one product per patch serves all members j.
    columns_t = _interpolation_matrices(relative[..., 0].transpose(1, 2), width)  # (B, i, j, W, W)
    columns_t = columns_t.permute(0, 1, 4, 2, 3).reshape(batch, channels, width, channels * width)
    # rows[b, j, k, i*H + k'] = R_y(o_i - o_j)[k, k']: one product per member sums over the patches i.
    rows = _interpolation_matrices(relative[..., 1], height)  # (B, j, i, H, H)
    rows = rows.permute(0, 1, 3, 2, 4).reshape(batch, channels, height, channels * height)
    parts = torch.stack([object_patches.real * weights, object_patches.imag * weights], dim=2)
    moved = parts.reshape(batch, channels, 2 * height, width) @ columns_t  # (B, i, [part, r], [j, c])
    moved = moved.reshape(batch, channels, 2, height, channels, width).permute(0, 4, 1, 3, 2, 5)
    numerator = rows @ moved.reshape(batch, channels, channels * height, 2 * width)  # (B, j, H, [part, c])
    with torch.no_grad():  # the window weights are constants
        coverage = (weights @ columns_t).reshape(batch, channels, height, channels, width).permute(0, 3, 1, 2, 4)
        denominator = rows @ coverage.reshape(batch, channels, channels * height, width)
    denominator = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    return torch.complex(numerator[..., :width] / denominator, numerator[..., width:] / denominator)


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
    if group_objects.ndim != 4 or group_objects.shape[1] != 1:
        raise ValueError(f"group_objects must have shape (B, 1, N, N); got {tuple(group_objects.shape)}.")
    return translate_bilinear(group_objects, -_as_float64(offsets, group_objects.device))


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
    probe = to_tensor(probe).to(torch.complex64)
    mask = _disk(probe.shape[-1], probe.device)
    modulus_sum = (probe.abs() * mask).sum(dim=(-2, -1), keepdim=True)
    return probe / (float(probe_scale) * modulus_sum / mask.sum())


def _smooth_gaussian(images, sigma):
    """Blur the last two axes with `ptycholib.forward.gaussian_kernel_1d`, zero padding, same size."""
    kernel = forward.gaussian_kernel_1d(sigma).astype(np.float32).tolist()
    radius = len(kernel) // 2
    height, width = images.shape[-2:]
    padded = torch.nn.functional.pad(images, (radius, radius, radius, radius))
    rows = sum(kernel[k] * padded[..., k : k + height, :] for k in range(len(kernel)))
    return sum(kernel[k] * rows[..., :, k : k + width] for k in range(len(kernel)))


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
    object_patches = to_tensor(object_patches).to(torch.complex64)
    probe_hat = normalize_probe(to_tensor(probe, device=object_patches.device), probe_scale)
    if probe_mask:
        probe_hat = probe_hat * _disk(probe_hat.shape[-1], probe_hat.device)
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
    exit_wave = to_tensor(exit_wave).to(torch.complex64)
    size = exit_wave.shape[-1]
    spectrum = torch.fft.fftshift(torch.fft.fft2(exit_wave), dim=(-2, -1))
    return spectrum.abs() * (intensity_scale / size)


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
        return torch.mean(values)
    good = torch.logical_not(to_tensor(bad_pixels, device=values.device).to(torch.bool)).to(values.dtype)
    return torch.sum(values * good) / (good.sum() * (values.numel() // good.numel()))


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
    predicted_intensity = to_tensor(predicted).square()
    measured_intensity = to_tensor(measured, device=predicted_intensity.device).square()
    return _masked_mean(predicted_intensity - measured_intensity * torch.log(predicted_intensity + _NLL_EPS), bad_pixels)


def amplitude_mae(predicted, measured, *, bad_pixels=None):
    """Mean absolute error between predicted and measured amplitudes (scalar float32 tensor), bad pixels left out."""
    predicted = to_tensor(predicted)
    return _masked_mean(torch.abs(predicted - to_tensor(measured, device=predicted.device)), bad_pixels)


def fft_amplitude_raw(batch):
    """Return ``|fft2(batch)|`` over the last two axes, nothing else (the benchmarks' FFT baseline).

    Parameters
    ----------
    batch : tensor or ndarray of shape (..., N, N), complex64

    Returns
    -------
    tensor of shape (..., N, N), float32
    """
    return torch.fft.fft2(to_tensor(batch).to(torch.complex64)).abs()
