"""Image-quality metrics for complex reconstructions against a known object (SPEC sections 7 and 10),
and `poisson_deviance`, how well predicted diffraction fits measured counts (the training logs' readable loss).

scikit-image style: arrays first (the reconstruction, then the ground truth), options keyword-only,
and ``data_range`` required wherever scikit-image requires it. The ambiguities of ptychography are
removed before scoring: one global complex factor (phase offset and amplitude scale), optionally a
linear phase ramp, and, with registration, a global sub-pixel shift. Everything is computed over the
scanned region: the bounding box of a mask (see `scanned_region_mask`), averaged over the mask's pixels.

`evaluate_reconstruction` bundles it all into one dict of numbers; `align_to_truth` returns the aligned
arrays for error maps and FRC curves (notebook 04).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ptycholib import forward
from ptycholib.reassemble import scatter_add_patches

__all__ = [
    "FRCResult",
    "Alignment",
    "remove_global_factor",
    "remove_phase_ramp",
    "register_subpixel",
    "phase_rmse",
    "ssim",
    "psnr",
    "frc",
    "scanned_region_mask",
    "align_to_truth",
    "evaluate_reconstruction",
    "constant_object_baseline",
    "poisson_deviance",
    "DEFAULT_MAX_SHIFT_PX",
]

# van Heel & Schatz (2005), eq. 17: information threshold of 1/2 bit per ring.
_HALF_BIT = (0.2071, 1.9102, 1.2071, 0.9102)


def _as_image(image, name, *, complex_ok=True):
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"{name} must be a 2-dimensional image (rows, cols); got shape {image.shape}.")
    if not complex_ok and np.iscomplexobj(image):
        raise ValueError(f"{name} is complex; pass a real image (e.g. np.abs or np.angle of the object).")
    if not np.all(np.isfinite(image)):
        raise ValueError(f"{name} has {int(np.sum(~np.isfinite(image)))} NaN or infinite values.")
    return image


def _pair(recon, truth, *, complex_ok=True):
    recon = _as_image(recon, "recon", complex_ok=complex_ok)
    truth = _as_image(truth, "truth", complex_ok=complex_ok)
    if recon.shape != truth.shape:
        raise ValueError(
            f"recon has shape {recon.shape} but truth has shape {truth.shape}; both must be on the same "
            "object grid (SPEC section 3)."
        )
    return recon, truth


def _as_mask(mask, shape):
    if mask is None:
        return np.ones(shape, dtype=bool)
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise ValueError(f"mask has shape {mask.shape} but the images have shape {shape}.")
    mask = mask.astype(bool)
    if not mask.any():
        raise ValueError("mask selects no pixel; nothing to compare (is the scanned region off the canvas?).")
    return mask


def _check_data_range(data_range):
    if data_range is None or not np.isfinite(data_range) or data_range <= 0:
        raise ValueError(
            f"data_range={data_range!r} must be a positive finite number, e.g. the ground truth's "
            "max - min (SPEC section 10)."
        )
    return float(data_range)


def remove_global_factor(recon, truth, mask=None, *, return_factor=False):
    """Multiply a reconstruction by the complex factor that best matches it to the truth.

    Parameters
    ----------
    recon, truth : ndarray of shape (rows, cols), complex
    mask : ndarray of shape (rows, cols), bool, optional
        Pixels used for the fit (default: all).
    return_factor : bool
        Also return the factor.

    Returns
    -------
    ndarray of shape (rows, cols), complex
        ``c * recon`` with ``c = sum(conj(recon) truth) / sum(|recon|^2)`` over the mask: the
        least-squares global phase offset and amplitude scale. ``c = 0`` when ``recon`` is 0 there.
    complex
        ``c``, only with ``return_factor=True``.

    Examples
    --------
    >>> truth = np.array([[1.0, 2.0j]])
    >>> np.allclose(remove_global_factor(3j * truth, truth), truth)
    True
    """
    recon, truth = _pair(recon, truth)
    mask = _as_mask(mask, recon.shape)
    power = np.sum(np.abs(recon[mask]) ** 2)
    factor = complex(np.sum(np.conj(recon[mask]) * truth[mask]) / power) if power > 0 else 0j
    out = (factor * recon).astype(np.result_type(recon.dtype, np.complex64))
    return (out, factor) if return_factor else out


def remove_phase_ramp(recon, truth, mask=None, *, return_ramp=False):
    """Remove the linear phase ramp of a reconstruction relative to the truth.

    Parameters
    ----------
    recon, truth : ndarray of shape (rows, cols), complex
    mask : ndarray of shape (rows, cols), bool, optional
    return_ramp : bool
        Also return the slopes.

    Returns
    -------
    ndarray of shape (rows, cols), complex
        ``recon * exp(i (a_r r + a_c c))``; the constant phase offset is left for
        `remove_global_factor`.
    tuple of float
        ``(a_r, a_c)`` in rad per pixel along rows and columns, only with ``return_ramp=True``.

    Notes
    -----
    With ``z = truth * conj(recon)`` (0 outside the mask) the slopes are the phases of the mean
    neighbour products, ``a_c = angle(sum z[r, c+1] conj(z[r, c]))`` and likewise along rows: no phase
    unwrapping is needed as long as the ramp is below pi per pixel.
    """
    recon, truth = _pair(recon, truth)
    mask = _as_mask(mask, recon.shape)
    z = np.where(mask, truth * np.conj(recon), 0)
    slope_r = float(np.angle(np.sum(z[1:, :] * np.conj(z[:-1, :]))))
    slope_c = float(np.angle(np.sum(z[:, 1:] * np.conj(z[:, :-1]))))
    rows, cols = np.indices(recon.shape)
    out = (recon * np.exp(1j * (slope_r * rows + slope_c * cols))).astype(np.result_type(recon.dtype, np.complex64))
    return (out, (slope_r, slope_c)) if return_ramp else out


def _shift_image(image, shift_rc, method):
    if method == "fourier":
        from scipy.ndimage import fourier_shift

        shifted = np.fft.ifft2(fourier_shift(np.fft.fft2(image), shift_rc))
        return shifted if np.iscomplexobj(image) else shifted.real
    if method == "bilinear":
        return forward.translate_bilinear(image, np.array([shift_rc[1], shift_rc[0]]))
    raise ValueError(f"method={method!r} is not supported; allowed values: 'fourier', 'bilinear'.")


DEFAULT_MAX_SHIFT_PX = 3.0
"""Default cap on the registration shift (px): more than a few pixels is a wrong model, not a drift."""


def _check_max_shift(max_shift_px):
    if max_shift_px is None:
        return math.inf
    if isinstance(max_shift_px, bool) or not isinstance(max_shift_px, (int, float, np.integer, np.floating)):
        raise ValueError(f"max_shift_px={max_shift_px!r} must be a number of pixels >= 0 (or None for no cap).")
    if math.isnan(max_shift_px) or max_shift_px < 0:
        raise ValueError(
            f"max_shift_px={max_shift_px!r} must be >= 0 pixels (0 disables the shift, None removes the cap)."
        )
    return float(max_shift_px)


def _upsampled_dft(spectrum, region_size, upsample_factor, offsets):
    """Inverse DFT of ``spectrum`` sampled on a ``region_size`` grid of step ``1 / upsample_factor`` px.

    The grid starts at ``offsets`` (in upsampled pixels, per axis); what scikit-image's
    ``phase_cross_correlation`` does for its sub-pixel refinement (Guizar-Sicairos et al. 2008).
    """
    out = spectrum
    for axis in range(spectrum.ndim)[::-1]:  # columns first, then rows; keeps the result (region, region)
        samples = np.arange(region_size) - offsets[axis]
        kernel = np.exp(-2j * np.pi * samples[:, None] * np.fft.fftfreq(spectrum.shape[axis], upsample_factor))
        out = np.tensordot(kernel, out, axes=(1, -1))
    return out


def _estimate_shift(recon, truth, mask, upsample_factor, max_shift_px=math.inf):
    """Return ``(shift, capped)``: the registration shift inside the cap and whether the cap bound it."""
    if min(mask.shape) < 2:
        raise ValueError(f"registration needs images of at least 2 x 2 pixels; got {mask.shape}.")
    if int(upsample_factor) != upsample_factor or upsample_factor < 1:
        raise ValueError(f"upsample_factor={upsample_factor!r} must be a positive integer.")
    upsample_factor = int(upsample_factor)
    moving = np.where(mask, recon, 0)
    if not np.any(moving):  # nothing reconstructed: no shift to find
        return np.zeros(2), False
    # Plain (unwhitened) cross-correlation, as skimage's phase_cross_correlation with
    # normalization=None: phase correlation whitens the noise of a reconstruction too and returned
    # shifts of tens of pixels on noisy test images. The peak is searched only within the cap: an
    # unbounded search lets a poor reconstruction slide onto whatever part of the truth it
    # resembles most (an untrained model chose (58, -25) px) and flatters its scores.
    spectrum = np.fft.fft2(np.where(mask, truth, 0).astype(np.complex128)) * np.conj(np.fft.fft2(moving))
    correlation = np.abs(np.fft.ifft2(spectrum))
    shift_rows = np.fft.fftfreq(mask.shape[0]) * mask.shape[0]  # circular lags, wrapped to [-n/2, n/2)
    shift_cols = np.fft.fftfreq(mask.shape[1]) * mask.shape[1]
    inside = np.hypot(shift_rows[:, None], shift_cols[None, :]) <= max_shift_px
    best = np.unravel_index(np.argmax(np.where(inside, correlation, -np.inf)), correlation.shape)
    best_anywhere = np.unravel_index(np.argmax(correlation), correlation.shape)

    def refine(peak):
        shift = np.array([shift_rows[peak[0]], shift_cols[peak[1]]])
        if upsample_factor == 1:
            return shift
        # skimage's refinement, on a +-1 px square around the peak rather than +-0.75 px: at the cap
        # the best whole-pixel shift inside may be the corner of the true peak's pixel cell that lies
        # up to 1 px away from it
        region = 2 * upsample_factor + 1
        centre = float(upsample_factor)
        upsampled = np.abs(_upsampled_dft(np.conj(spectrum), region, upsample_factor, centre - shift * upsample_factor))
        fine = np.array(np.unravel_index(np.argmax(upsampled), upsampled.shape), dtype=np.float64)
        return shift + (fine - centre) / upsample_factor

    shift = refine(best)
    # Capped: the best shift overall, refined, lies outside the cap.
    capped = bool(not inside[best_anywhere] and np.hypot(*refine(best_anywhere)) > max_shift_px)
    norm = float(np.hypot(*shift))
    if norm > max_shift_px:  # the sub-pixel step may leave the disk by a fraction of a pixel
        shift = shift * (max_shift_px / norm)
        capped = True
    return shift.astype(np.float64), capped


def register_subpixel(
    recon, truth, *, upsample_factor=20, mask=None, method="fourier", max_shift_px=DEFAULT_MAX_SHIFT_PX
):
    """Shift a reconstruction onto the truth with sub-pixel accuracy, by at most ``max_shift_px``.

    Parameters
    ----------
    recon, truth : ndarray of shape (rows, cols), real or complex
    upsample_factor : int
        Registration precision is ``1 / upsample_factor`` pixel
        (`skimage.registration.phase_cross_correlation` with ``normalization=None``: plain
        cross-correlation, robust to the noise of a reconstruction).
    mask : ndarray of shape (rows, cols), bool, optional
        Pixels used to estimate the shift (both images are zeroed outside it); the shift is
        applied to the whole reconstruction.
    method : {"fourier", "bilinear"}
        How the shift is applied: Fourier phase ramp (exact for band-limited images, periodic at the
        borders) or `ptycholib.forward.translate_bilinear` (zeros enter at the borders).
    max_shift_px : float or None
        Largest shift (Euclidean norm, pixels) the registration may apply; default 3. The
        cross-correlation peak is searched only among the whole-pixel shifts inside this disk, then
        refined to sub-pixel precision, and a refined shift that leaves the disk is pulled back onto
        its edge. ``None`` searches every shift (what scikit-image does), ``0`` never shifts.

    Returns
    -------
    registered : ndarray of shape (rows, cols)
        ``recon`` moved by ``shift``.
    shift : ndarray of shape (2,), float64
        ``(rows, cols)`` shift in pixels applied to ``recon`` (scikit-image's order and sign:
        ``registered[r, c] = recon(r - shift[0], c - shift[1])``); its norm is at most
        ``max_shift_px``.

    Notes
    -----
    An unbounded search lets a poor reconstruction slide onto whatever part of the truth it
    resembles most and so flatters its scores: on an untrained model it chose a shift of
    (58, -25) px. Errors of a trained model's positions are a pixel or two, hence the cap.

    Examples
    --------
    >>> truth = np.zeros((32, 32)); truth[10:14, 12:20] = 1.0
    >>> near = np.roll(truth, (1, -2), axis=(0, 1))
    >>> register_subpixel(near, truth)[1].tolist()
    [-1.0, 2.0]
    >>> far = np.roll(truth, (0, 9), axis=(0, 1))  # beyond the cap: not undone
    >>> bool(np.hypot(*register_subpixel(far, truth)[1]) <= 3.0)
    True
    """
    recon, truth = _pair(recon, truth)
    cap = _check_max_shift(max_shift_px)
    shift, _ = _estimate_shift(recon, truth, _as_mask(mask, recon.shape), upsample_factor, cap)
    if not np.any(shift):
        return recon.copy(), shift
    return _shift_image(recon, shift, method).astype(recon.dtype, copy=False), shift


def _wrapped_phase_difference(recon, truth):
    """``angle(recon) - angle(truth)`` wrapped to (-pi, pi]; a pixel where recon is 0 has phase 0."""
    return np.angle(np.exp(1j * (np.angle(recon) - np.angle(truth))))


def phase_rmse(recon, truth, *, mask=None):
    """Root-mean-square phase error in radians, wrapped to (-pi, pi].

    Parameters
    ----------
    recon, truth : ndarray of shape (rows, cols), complex
        Remove the global factor first (`remove_global_factor`); no offset is removed here.
    mask : ndarray of shape (rows, cols), bool, optional

    Returns
    -------
    float
        ``sqrt(mean(wrap(angle(recon) - angle(truth))^2))`` over the mask. Where ``recon`` is exactly
        0 (nothing reconstructed) its phase counts as 0, never as a match.
    """
    recon, truth = _pair(recon, truth)
    mask = _as_mask(mask, recon.shape)
    difference = _wrapped_phase_difference(recon[mask], truth[mask])
    return float(np.sqrt(np.mean(difference**2)))


def ssim(recon, truth, *, data_range, mask=None):
    """Structural similarity (scikit-image) of two real images, averaged over a mask.

    Parameters
    ----------
    recon, truth : ndarray of shape (rows, cols), real
    data_range : float
        Required (as in scikit-image 2): the dynamic range of the images, normally the truth's
        ``max - min`` (SPEC section 10).
    mask : ndarray of shape (rows, cols), bool, optional
        Average the SSIM map over these pixels (default: scikit-image's mean over the image).

    Returns
    -------
    float
        In [-1, 1]; 1 for identical images.

    Notes
    -----
    `skimage.metrics.structural_similarity` with its defaults (7 x 7 uniform window, K1 = 0.01,
    K2 = 0.03); the window shrinks to the largest odd size that fits images smaller than 7 pixels.
    """
    from skimage.metrics import structural_similarity

    recon, truth = _pair(recon, truth, complex_ok=False)
    data_range = _check_data_range(data_range)
    smallest = min(recon.shape)
    if smallest < 3:
        raise ValueError(f"SSIM needs images of at least 3 x 3 pixels; got {recon.shape}.")
    win_size = min(7, smallest if smallest % 2 else smallest - 1)
    recon = recon.astype(np.float64)
    truth = truth.astype(np.float64)
    if mask is None:
        return float(structural_similarity(recon, truth, data_range=data_range, win_size=win_size))
    mask = _as_mask(mask, recon.shape)
    _, ssim_map = structural_similarity(recon, truth, data_range=data_range, win_size=win_size, full=True)
    return float(np.mean(ssim_map[mask]))


def psnr(recon, truth, *, data_range, mask=None):
    """Peak signal-to-noise ratio in dB with an explicit data range.

    Parameters
    ----------
    recon, truth : ndarray of shape (rows, cols), real
    data_range : float
        Required: the peak value the error is compared with, normally the truth's ``max - min``.
        (PtychoPINN scores on a 0-255 scale, which inflates dB; we never rescale.)
    mask : ndarray of shape (rows, cols), bool, optional

    Returns
    -------
    float
        ``10 log10(data_range^2 / mean((recon - truth)^2))`` over the mask; ``inf`` for identical
        images, as in scikit-image.
    """
    recon, truth = _pair(recon, truth, complex_ok=False)
    data_range = _check_data_range(data_range)
    mask = _as_mask(mask, recon.shape)
    mse = float(np.mean((recon[mask].astype(np.float64) - truth[mask]) ** 2))
    if mse == 0:
        return float("inf")
    return float(10 * np.log10(data_range**2 / mse))


@dataclass(frozen=True)
class FRCResult:
    """Fourier ring correlation of two images.

    Attributes
    ----------
    frequencies : ndarray of shape (n_rings,)
        Ring centres as a fraction of the Nyquist frequency (1 = 0.5 cycles per pixel).
    curve : ndarray of shape (n_rings,)
        Correlation per ring, ``Re sum(F1 conj F2) / sqrt(sum |F1|^2 sum |F2|^2)``; 0 in a ring where
        either image has no power.
    half_bit : ndarray of shape (n_rings,)
        The 1/2-bit threshold curve (van Heel & Schatz 2005) for the ring's pixel count.
    ring_pixels : ndarray of shape (n_rings,), int64
        Fourier pixels in each ring.
    resolution_half_bit, resolution_frc50 : float
        First crossing of the curve below the 1/2-bit threshold and below 0.5, linearly interpolated,
        as a fraction of Nyquist; 1.0 when the curve never crosses (saturated: report the curve), 0.0
        when it starts below.
    """

    frequencies: np.ndarray
    curve: np.ndarray
    half_bit: np.ndarray
    ring_pixels: np.ndarray
    resolution_half_bit: float
    resolution_frc50: float


def _first_crossing(frequencies, curve, threshold):
    below = np.flatnonzero(curve < threshold)
    if below.size == 0:
        return 1.0
    i = int(below[0])
    if i == 0:
        return 0.0
    gap_before = curve[i - 1] - threshold[i - 1]
    gap_after = curve[i] - threshold[i]
    t = gap_before / (gap_before - gap_after)
    return float(frequencies[i - 1] + t * (frequencies[i] - frequencies[i - 1]))


def frc(image_a, image_b, *, apodize=True):
    """Fourier ring correlation of two images, with the 0.5 and 1/2-bit resolutions.

    Parameters
    ----------
    image_a, image_b : ndarray of shape (rows, cols), real or complex
        Same shape; non-square images use elliptical rings in normalised frequency.
    apodize : bool
        Subtract each image's mean and taper the borders with a Tukey window (alpha 0.25) before the
        FFT, so that the edges do not correlate by themselves.

    Returns
    -------
    FRCResult

    Notes
    -----
    Ring ``k = 1 .. min(rows, cols) // 2`` holds the Fourier pixels whose radius, as a fraction of
    Nyquist, rounds to ``k / (min(rows, cols) // 2)``; the DC ring is left out. FRC at 0.5 saturates on
    Siemens-star-like objects (SPEC section 7): look at the whole curve.
    """
    from scipy.signal.windows import tukey

    image_a, image_b = _pair(image_a, image_b)
    rows, cols = image_a.shape
    n_rings = min(rows, cols) // 2
    if n_rings < 2:
        raise ValueError(f"FRC needs images of at least 4 x 4 pixels; got {image_a.shape}.")
    a = image_a.astype(np.complex128)
    b = image_b.astype(np.complex128)
    if apodize:
        window = np.outer(tukey(rows, 0.25), tukey(cols, 0.25))
        a = (a - a.mean()) * window
        b = (b - b.mean()) * window
    spectrum_a = np.fft.fft2(a)
    spectrum_b = np.fft.fft2(b)
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(rows), np.fft.fftfreq(cols), indexing="ij")) / 0.5
    ring = np.rint(radius * n_rings).astype(np.int64).ravel()
    keep = (ring >= 1) & (ring <= n_rings)
    ring = ring[keep]

    def ring_sum(values):
        return np.bincount(ring, weights=values.ravel()[keep], minlength=n_rings + 1)[1:]

    cross = ring_sum(np.real(spectrum_a * np.conj(spectrum_b)))
    power = ring_sum(np.abs(spectrum_a) ** 2) * ring_sum(np.abs(spectrum_b) ** 2)
    curve = np.zeros(n_rings)
    np.divide(cross, np.sqrt(power), out=curve, where=power > 0)
    ring_pixels = np.bincount(ring, minlength=n_rings + 1)[1:]
    root = np.sqrt(np.maximum(ring_pixels, 1))
    c0, c1, c2, c3 = _HALF_BIT
    half_bit = (c0 + c1 / root) / (c2 + c3 / root)
    frequencies = np.arange(1, n_rings + 1) / n_rings
    return FRCResult(
        frequencies=frequencies,
        curve=curve,
        half_bit=half_bit,
        ring_pixels=ring_pixels,
        resolution_half_bit=_first_crossing(frequencies, curve, half_bit),
        resolution_frc50=_first_crossing(frequencies, curve, np.full(n_rings, 0.5)),
    )


def scanned_region_mask(x_px, y_px, shape, window_size):
    """Pixels covered by at least one window of a scan: the region a reconstruction is scored on.

    Parameters
    ----------
    x_px, y_px : ndarray of shape (n_positions,)
        Window centres in object pixels (SPEC section 3).
    shape : tuple of int
        ``(rows, cols)`` of the object canvas.
    window_size : int
        Side of each window: the reassembly ``crop_size`` gives exactly the region where
        `ptycholib.reassemble.reassemble_patches` has weight; N gives the illuminated region.

    Returns
    -------
    ndarray of shape (rows, cols), bool

    Examples
    --------
    >>> scanned_region_mask(np.array([2.0]), np.array([1.0]), (3, 5), 2).astype(int).tolist()
    [[0, 1, 1, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 0, 0]]
    """
    if isinstance(window_size, bool) or not isinstance(window_size, (int, np.integer)) or window_size < 1:
        raise ValueError(f"window_size={window_size!r} must be a positive integer (pixels).")
    x_px = np.asarray(x_px, dtype=np.float64).ravel()
    ones = np.broadcast_to(np.float64(1.0), (x_px.size, int(window_size), int(window_size)))
    return scatter_add_patches(ones, x_px, np.asarray(y_px, dtype=np.float64).ravel(), shape) > 0


@dataclass(frozen=True)
class Alignment:
    """A reconstruction aligned to the truth and cut to the scanned region (`align_to_truth`).

    Attributes
    ----------
    recon, truth : ndarray of shape (h, w), complex
        Both cut to the bounding box of the mask; ``recon`` registered, ramp-corrected and
        multiplied by the global factor.
    mask : ndarray of shape (h, w), bool
        The mask inside the bounding box.
    bbox : tuple of int
        ``(row_start, row_stop, col_start, col_stop)`` on the full canvas.
    shift_px : tuple of float
        ``(rows, cols)`` shift applied to the reconstruction (0 without registration); its norm is
        at most ``max_shift_px``.
    phase_ramp_rad_per_px : tuple of float
        ``(rows, cols)`` slopes removed (0 without ramp removal).
    factor : complex
        Global factor the reconstruction was multiplied by.
    max_shift_px : float
        The cap on the shift's norm (``inf`` without a cap, 0 without registration).
    shift_capped : bool
        True when the cap bound the shift: the best whole-pixel shift overall lies outside it, or
        the sub-pixel refinement was pulled back onto its edge. Scores of such a reconstruction
        are those of its best placement within the cap, not the best overall.
    """

    recon: np.ndarray
    truth: np.ndarray
    mask: np.ndarray
    bbox: tuple
    shift_px: tuple
    phase_ramp_rad_per_px: tuple
    factor: complex
    max_shift_px: float = DEFAULT_MAX_SHIFT_PX
    shift_capped: bool = False

    def amplitudes(self):
        """Return ``(recon_amplitude, truth_amplitude)``."""
        return np.abs(self.recon), np.abs(self.truth)

    def phases(self):
        """Return ``(recon_phase, truth_phase)`` in rad, the reconstruction unwrapped against the truth.

        ``recon_phase = angle(truth) + wrap(angle(recon) - angle(truth))``, so a phase near +-pi
        never shows up as a 2 pi jump.
        """
        truth_phase = np.angle(self.truth)
        return truth_phase + _wrapped_phase_difference(self.recon, self.truth), truth_phase


def align_to_truth(
    recon, truth, *, mask=None, register=True, remove_ramp=False, upsample_factor=20,
    max_shift_px=DEFAULT_MAX_SHIFT_PX,
):  # fmt: skip
    """Cut to the scanned region and remove the ambiguities of a reconstruction: shift, ramp, factor.

    Parameters
    ----------
    recon, truth : ndarray of shape (rows, cols), complex
        Reconstruction and ground truth on the same object grid.
    mask : ndarray of shape (rows, cols), bool, optional
        Scanned region (see `scanned_region_mask`, or reassembly ``weight_canvas > 0``); default all.
    register : bool
        Estimate a global sub-pixel shift inside the region and apply it to the whole
        reconstruction (`register_subpixel`, Fourier method) before cutting.
    remove_ramp : bool
        Remove a linear phase ramp (`remove_phase_ramp`): estimated once before registration (a ramp
        moves the cross-correlation peak) and refined after it.
    upsample_factor : int
        Registration precision, ``1 / upsample_factor`` pixel.
    max_shift_px : float or None
        Largest registration shift (norm, pixels; default 3, ``None`` for no cap): see
        `register_subpixel`. ``Alignment.shift_capped`` says whether the cap bound it.

    Returns
    -------
    Alignment
    """
    recon, truth = _pair(recon, truth)
    cap = _check_max_shift(max_shift_px)
    mask = _as_mask(mask, recon.shape)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    bbox = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
    box = (slice(bbox[0], bbox[1]), slice(bbox[2], bbox[3]))
    box_mask = mask[box]
    truth_box = truth[box].astype(np.complex128)
    shift = np.zeros(2)
    capped = False
    ramp = np.zeros(2)
    if remove_ramp:
        # A phase ramp moves the cross-correlation peak: take it out before registering.
        ramp = np.array(remove_phase_ramp(recon[box], truth_box, box_mask, return_ramp=True)[1])
        row_index, col_index = np.indices(recon.shape)
        recon = recon * np.exp(1j * (ramp[0] * row_index + ramp[1] * col_index))
    if register:
        shift, capped = _estimate_shift(recon[box], truth_box, box_mask, upsample_factor, cap)
        if np.any(shift):
            recon = _shift_image(recon.astype(np.complex128), shift, "fourier")
    recon_box = recon[box].astype(np.complex128)
    if remove_ramp:
        recon_box, residual = remove_phase_ramp(recon_box, truth_box, box_mask, return_ramp=True)
        ramp = ramp + np.array(residual)
    recon_box, factor = remove_global_factor(recon_box, truth_box, box_mask, return_factor=True)
    return Alignment(
        recon=recon_box,
        truth=truth_box,
        mask=box_mask,
        bbox=bbox,
        shift_px=(float(shift[0]), float(shift[1])),
        phase_ramp_rad_per_px=(float(ramp[0]), float(ramp[1])),
        factor=factor,
        max_shift_px=cap if register else 0.0,
        shift_capped=capped,
    )


def _truth_range(image, fallback):
    spread = float(np.ptp(image))
    scale = float(np.max(np.abs(image)))
    return spread if spread > 1e-12 * max(scale, 1.0) else fallback


def evaluate_reconstruction(recon, truth, *, mask=None, register=True, remove_ramp=False, upsample_factor=20,
                            max_shift_px=DEFAULT_MAX_SHIFT_PX):
    """Score a complex reconstruction against the truth over the scanned region.

    Parameters
    ----------
    recon, truth : ndarray of shape (rows, cols), complex
        On the same object grid (SPEC section 3).
    mask : ndarray of shape (rows, cols), bool, optional
        Scanned region; the metrics use its bounding box and average over its pixels. Default: all.
    register, remove_ramp, upsample_factor, max_shift_px
        See `align_to_truth`; the global complex factor is always removed. The registration shift
        is capped at ``max_shift_px`` (default 3 px) so that a poor reconstruction cannot improve
        its scores by sliding onto another part of the truth.

    Returns
    -------
    dict of str
        Numbers, JSON-ready:

        - ``phase_rmse`` (rad), wrapped phase error (`phase_rmse`);
        - ``amplitude_ssim``, ``phase_ssim`` (`ssim`) and ``amplitude_psnr``, ``phase_psnr`` (dB,
          `psnr`; ``inf`` for a perfect match), both with the data ranges below;
        - ``amplitude_frc50``, ``phase_frc50``, ``amplitude_frc_half_bit``, ``phase_frc_half_bit``:
          FRC resolutions as a fraction of Nyquist (`frc` of the amplitude and phase images);
        - ``amplitude_data_range``, ``phase_data_range``: the truth's max - min over the mask (SPEC 10).
          A constant truth has no range, so the fallbacks keep every value finite: 2 pi for a constant
          phase (amplitude-only objects), the truth's maximum amplitude (or 1) for a constant amplitude;
        - ``shift_px`` ``[rows, cols]``, ``phase_ramp_rad_per_px`` ``[rows, cols]``, ``global_scale``,
          ``global_phase_rad``: what was removed; ``n_pixels`` and ``bbox`` (row start, stop, col start,
          stop): where it was scored;
        - ``max_shift_px``: the cap on the shift's norm (``None`` when uncapped, 0 without
          registration); ``shift_capped``: whether the cap bound the shift (then the scores are
          those of the best placement within the cap, and the reconstruction is probably poor).

    Notes
    -----
    The phase images compare ``angle(truth)`` with ``angle(truth) + wrap(angle(recon) - angle(truth))``
    (see `Alignment.phases`), so wrapping at +-pi does not count as error.

    Examples
    --------
    >>> truth = np.exp(1j * np.linspace(0, 1, 64 * 64)).reshape(64, 64) * (1 + np.eye(64))
    >>> scores = evaluate_reconstruction(0.5j * truth, truth)
    >>> round(scores["amplitude_ssim"], 6), round(scores["phase_rmse"], 6)
    (1.0, 0.0)
    """
    aligned = align_to_truth(
        recon, truth, mask=mask, register=register, remove_ramp=remove_ramp, upsample_factor=upsample_factor,
        max_shift_px=max_shift_px,
    )  # fmt: skip
    recon_amplitude, truth_amplitude = aligned.amplitudes()
    recon_phase, truth_phase = aligned.phases()
    inside = aligned.mask
    amplitude_fallback = float(truth_amplitude[inside].max()) or 1.0
    amplitude_range = _truth_range(truth_amplitude[inside], amplitude_fallback)
    phase_range = _truth_range(truth_phase[inside], 2 * np.pi)
    amplitude_frc = frc(recon_amplitude, truth_amplitude)
    phase_frc = frc(recon_phase, truth_phase)
    return {
        "phase_rmse": phase_rmse(aligned.recon, aligned.truth, mask=inside),
        "amplitude_ssim": ssim(recon_amplitude, truth_amplitude, data_range=amplitude_range, mask=inside),
        "phase_ssim": ssim(recon_phase, truth_phase, data_range=phase_range, mask=inside),
        "amplitude_psnr": psnr(recon_amplitude, truth_amplitude, data_range=amplitude_range, mask=inside),
        "phase_psnr": psnr(recon_phase, truth_phase, data_range=phase_range, mask=inside),
        "amplitude_frc50": amplitude_frc.resolution_frc50,
        "phase_frc50": phase_frc.resolution_frc50,
        "amplitude_frc_half_bit": amplitude_frc.resolution_half_bit,
        "phase_frc_half_bit": phase_frc.resolution_half_bit,
        "amplitude_data_range": amplitude_range,
        "phase_data_range": phase_range,
        "shift_px": list(aligned.shift_px),
        "max_shift_px": aligned.max_shift_px if math.isfinite(aligned.max_shift_px) else None,
        "shift_capped": aligned.shift_capped,
        "phase_ramp_rad_per_px": list(aligned.phase_ramp_rad_per_px),
        "global_scale": float(abs(aligned.factor)),
        "global_phase_rad": float(np.angle(aligned.factor)),
        "n_pixels": int(inside.sum()),
        "bbox": list(aligned.bbox),
    }


def constant_object_baseline(truth, *, mask=None, **options):
    """Score a constant object against the truth: the reference for "nothing learned".

    A reconstruction that learned nothing about the object is, at best, flat. Its scores are the
    floor that any quality claim must clear with a margin: SSIM does not start at 0 (a flat image
    keeps the luminance term and part of the contrast term), so "SSIM 0.3" alone says little.

    Parameters
    ----------
    truth : ndarray of shape (rows, cols), complex
        Ground-truth object.
    mask : ndarray of shape (rows, cols), bool, optional
        Scanned region, as given to `evaluate_reconstruction` (default: all).
    **options
        ``register``, ``remove_ramp``, ``upsample_factor``, ``max_shift_px``: passed to
        `evaluate_reconstruction`; use the same ones as for the reconstruction it is compared with.

    Returns
    -------
    dict of str
        `evaluate_reconstruction`'s scores of the object whose modulus is the truth's mean
        amplitude over the mask everywhere and whose phase is 0. The global complex factor is
        removed before scoring, so any other constant scores the same.

    Notes
    -----
    On the 'lines' test object (notebook 02's parameters) the amplitude SSIM of the constant is
    about 0.25 (tests/test_metrics.py checks that it stays below 0.35).

    Examples
    --------
    >>> r = np.arange(64)
    >>> truth = 1 + 0.5 * np.sin(r / 3)[:, None] * np.cos(r / 4)[None, :]
    >>> round(constant_object_baseline(truth)["amplitude_ssim"], 2)
    0.03
    """
    truth = _as_image(truth, "truth")
    region = _as_mask(mask, truth.shape)
    level = float(np.mean(np.abs(truth[region]))) or 1.0
    constant = np.full(truth.shape, level, dtype=np.complex128)
    return evaluate_reconstruction(constant, truth, mask=mask, **options)


def poisson_deviance(predicted_amplitudes, measured_amplitudes, *, mask=None):
    """Return the Poisson deviance per pixel of predicted diffraction against measured counts.

    The raw training objective (`ptycholib.forward.poisson_nll`, in count units) carries a constant
    that depends on the data, so its value says nothing on its own. The deviance is the NLL minus
    its value for a perfect fit (the saturated model), times two: 0 when the prediction equals the
    counts, and about 1 per pixel when the prediction is the true expected intensity and the counts
    are its Poisson draws (the noise floor). Train and validation values, and values of different
    data sets, are therefore comparable; the training history logs it per epoch as ``deviance`` and
    ``val_deviance``.

    Parameters
    ----------
    predicted_amplitudes : ndarray of shape (..., N, N), float
        Predicted diffraction amplitudes ``a_hat`` (the model's ``|F|``), so ``a_hat**2`` is the
        predicted intensity in counts.
    measured_amplitudes : ndarray of the same shape, float
        Measured amplitudes ``a`` (square roots of counts, as stored in the data contract), so
        ``a**2`` are the measured counts.
    mask : ndarray of bool, optional
        Pixels to include (broadcast against the arrays, e.g. ``(N, N)`` for a detector mask);
        default: all.

    Returns
    -------
    float
        ``2 * sum(a^2 log(a^2 / a_hat^2) - (a^2 - a_hat^2)) / n`` over the ``n`` pixels included.
        Infinite where some pixel has counts but a predicted intensity of exactly 0.

    Raises
    ------
    ValueError
        Shapes differ, values are complex, negative or not finite, or the mask leaves no pixel.

    Notes
    -----
    With measured counts :math:`y = a^2` and predicted intensity :math:`\\lambda = \\hat a^2`,

    .. math:: D = \\frac{2}{n} \\sum_i \\left[ y_i \\log \\frac{y_i}{\\lambda_i} - (y_i - \\lambda_i) \\right],

    with :math:`0 \\log 0 = 0`. Each term is non-negative and zero only at :math:`\\lambda_i = y_i`.
    For Poisson counts of mean :math:`\\lambda`, :math:`E[D] \\approx 1 + 1/(6\\lambda)` for large
    :math:`\\lambda`, and less than 1 for low counts (:math:`E[D] \\to 0` as :math:`\\lambda \\to 0`),
    so a well-trained model approaches a floor just under 1 on data with many dark pixels. Both
    backends compute the same per batch while training (their ``_poisson_deviance``).

    Examples
    --------
    >>> counts = np.array([[4.0, 9.0], [0.0, 1.0]])
    >>> poisson_deviance(np.sqrt(counts), np.sqrt(counts))
    0.0
    >>> round(poisson_deviance(np.sqrt([2.0, 6.0]), np.sqrt([4.0, 4.0])), 4)
    1.1507
    """
    predicted = np.asarray(predicted_amplitudes)
    measured = np.asarray(measured_amplitudes)
    if predicted.shape != measured.shape:
        raise ValueError(
            f"predicted_amplitudes has shape {predicted.shape} but measured_amplitudes has shape {measured.shape}; "
            "both must hold the same patterns."
        )
    for name, values in (("predicted_amplitudes", predicted), ("measured_amplitudes", measured)):
        if np.iscomplexobj(values):
            raise ValueError(f"{name} is complex; pass amplitudes (np.abs of the far field), not the complex field.")
        bad = int(np.sum(~np.isfinite(values) | (values < 0)))
        if bad:
            raise ValueError(f"{name} has {bad} negative, NaN or infinite values; amplitudes must be finite and >= 0.")
    predicted_intensity = predicted.astype(np.float64) ** 2
    measured_intensity = measured.astype(np.float64) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        saturated = np.where(measured_intensity > 0, measured_intensity * np.log(measured_intensity / predicted_intensity), 0.0)
    terms = saturated - (measured_intensity - predicted_intensity)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        try:
            mask = np.broadcast_to(mask, terms.shape)
        except ValueError:
            raise ValueError(f"mask of shape {mask.shape} does not broadcast to the patterns' shape {terms.shape}.") from None
        terms = terms[mask]
    if terms.size == 0:
        raise ValueError("no pixels to compare: the arrays are empty or the mask excludes every pixel.")
    return float(2.0 * np.mean(terms))
