"""The one simulator (SPEC Q5): objects, probes, scans and noisy far-field diffraction, all seeded.

Everything random takes ``rng`` (a ``np.random.Generator``, or an int seed) or ``seed``; the same
seed gives bit-identical output. The physics is that of `ptycholib.forward` (SPEC 4.5): the noiseless
pattern of position k is ``|fftshift(fft2(P * O_k))|**2 / N**2``, scaled so that the mean count per
pattern is ``nphotons``, then Poisson-sampled. Patterns are computed in batches with ``scipy.fft``
(optionally multi-threaded); no Python loop runs per pattern. Poisson counts are drawn by
`poisson_counts`: by default from ``rng`` itself, pattern after pattern (one stream: the data every
measurement in docs/results.md was made on); with ``poisson_chunk=K`` in chunks of K patterns, each
from its own child stream of one ``np.random.SeedSequence`` taken from ``rng`` and spread over
``workers`` threads. Both are bit-identical for a seed whatever the thread count or FFT batch size;
they are different draws of the same distribution.

Used in notebook 02, the ``ptycholib simulate`` command and the ``simulate`` benchmark.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from ptycholib import __version__, forward
from ptycholib.data import PtychoData

__all__ = [
    "OBJECT_KINDS",
    "PROBE_KINDS",
    "SCAN_KINDS",
    "make_object",
    "make_probe",
    "probe_diameter_px",
    "linear_overlap",
    "raster_positions",
    "spiral_positions",
    "scan_canvas_shape",
    "make_detector_mask",
    "far_field_intensity",
    "POISSON_CHUNK",
    "poisson_counts",
    "simulate_counts",
    "simulate_dataset",
    "simulate_train_test",
]

OBJECT_KINDS = ("lines", "grf", "dead_leaves")
PROBE_KINDS = ("disk", "gaussian", "fzp")
SCAN_KINDS = ("raster", "spiral")

_GOLDEN_ANGLE = np.pi * (3.0 - np.sqrt(5.0))

POISSON_CHUNK = 64
"""Patterns per Poisson chunk (one child random stream each); part of what fixes the draws of a seed."""


def _generator(rng):
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer, np.random.SeedSequence)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy Generator or an int seed; got {type(rng).__name__}.")


def _choice(value, allowed, name):
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not known; use one of {', '.join(repr(a) for a in allowed)}.")
    return value


def _normalise(texture):
    low, high = float(texture.min()), float(texture.max())
    return (texture - low) / (high - low) if high > low else np.zeros_like(texture)


# ----------------------------------------------------------------------------------------------
# objects


def _lines_texture(shape, rng, n_lines):
    """PtychoPINN's 'lines': random lines on a canvas twice as large, blurred at 1, 5 and 10 px."""
    rows, cols = shape
    big_rows, big_cols = 2 * rows, 2 * cols
    if n_lines is None:  # PtychoPINN draws 400 lines for a 392 x 392 object; keep that density
        n_lines = max(1, round(400 * rows * cols / 392**2))
    ends = rng.random((n_lines, 4)) * [big_rows - 1, big_cols - 1, big_rows - 1, big_cols - 1]
    lengths = np.ceil(np.hypot(ends[:, 2] - ends[:, 0], ends[:, 3] - ends[:, 1])).astype(np.int64) + 1
    line = np.repeat(np.arange(n_lines), lengths)
    step = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    t = step / np.maximum(lengths[line] - 1, 1)
    r = np.rint(ends[line, 0] + t * (ends[line, 2] - ends[line, 0])).astype(np.int64)
    c = np.rint(ends[line, 1] + t * (ends[line, 3] - ends[line, 1])).astype(np.int64)
    image = np.zeros((big_rows, big_cols))
    image[r, c] = 1.0
    blurred = sum(weight * ndimage.gaussian_filter(image, sigma) for sigma, weight in ((1, 1), (5, 2), (10, 5)))
    return _normalise(blurred[rows // 2 : rows // 2 + rows, cols // 2 : cols // 2 + cols])


def _grf_texture(shape, rng, feature_size_px):
    """Gaussian random field with spectrum ``(1 + (2 pi l k)^2)^(-3/2)``, correlation length ``l``."""
    rows, cols = shape
    noise = rng.standard_normal(shape)
    k2 = np.fft.fftfreq(rows)[:, None] ** 2 + np.fft.rfftfreq(cols)[None, :] ** 2
    amplitude_filter = (1.0 + (2 * np.pi * feature_size_px) ** 2 * k2) ** -0.75
    return _normalise(np.fft.irfft2(np.fft.rfft2(noise) * amplitude_filter, s=shape))


def _dead_leaves_texture(shape, rng, feature_size_px):
    """Occluding discs with radii ~ r^-3 between feature/4 and 4 * feature and uniform grey values."""
    rows, cols = shape
    r_min, r_max = max(1.0, feature_size_px / 4), 4.0 * feature_size_px
    mean_area = np.pi * 2 * np.log(r_max / r_min) / (r_min**-2 - r_max**-2)
    n_leaves = int(min(50_000, np.ceil(3 * rows * cols / mean_area)))
    u = rng.random(n_leaves)
    radii = (r_min**-2 - u * (r_min**-2 - r_max**-2)) ** -0.5
    centres = rng.random((n_leaves, 2)) * [rows, cols]
    values = rng.random(n_leaves)
    image = np.full(shape, rng.random())
    for (cy, cx), radius, value in zip(centres, radii, values):  # one leaf at a time: later leaves occlude
        r0, r1 = max(0, int(cy - radius)), min(rows, int(cy + radius) + 2)
        c0, c1 = max(0, int(cx - radius)), min(cols, int(cx + radius) + 2)
        yy = np.arange(r0, r1)[:, None] - cy
        xx = np.arange(c0, c1)[None, :] - cx
        image[r0:r1, c0:c1][yy**2 + xx**2 <= radius**2] = value
    return _normalise(image)


def make_object(
    kind,
    shape,
    rng,
    *,
    amplitude_range=(0.2, 1.0),
    phase_range=(-1.0, 1.0),
    amplitude_only=False,
    n_lines=None,
    feature_size_px=8.0,
):
    """Make a random complex object canvas.

    Parameters
    ----------
    kind : {"lines", "grf", "dead_leaves"}
        ``"lines"``: PtychoPINN's random lines (400 per 392 x 392 px), blurred by Gaussians of
        1, 5 and 10 px. ``"grf"``: a Gaussian random field with correlation length
        ``feature_size_px``. ``"dead_leaves"``: occluding discs of radii between
        ``feature_size_px / 4`` and ``4 * feature_size_px``.
    shape : tuple of int
        ``(rows, cols)``.
    rng : numpy.random.Generator or int
    amplitude_range, phase_range : tuple of float
        The texture (scaled to [0, 1]) maps linearly onto these ranges; phase in radians.
    amplitude_only : bool
        Zero phase, as in the 'lines' object of SPEC section 10's benchmark.
    n_lines : int, optional
        Number of lines (``kind="lines"`` only).
    feature_size_px : float
        Feature scale of ``"grf"`` and ``"dead_leaves"``.

    Returns
    -------
    ndarray of shape (rows, cols), complex64
        ``amplitude * exp(1j * phase)``; amplitude and phase come from two independent textures of
        the same kind (the amplitude texture is drawn first, so it does not depend on
        ``amplitude_only``).

    Examples
    --------
    >>> obj = make_object("grf", (40, 50), 0)
    >>> obj.shape, obj.dtype, bool(np.abs(obj).max() <= 1.0)
    ((40, 50), dtype('complex64'), True)
    """
    _choice(kind, OBJECT_KINDS, "kind")
    rows, cols = (int(s) for s in shape)
    if rows < 1 or cols < 1:
        raise ValueError(f"shape must be (rows, cols) with both >= 1; got {tuple(shape)}.")
    if n_lines is not None and kind != "lines":
        raise ValueError(f"n_lines applies only to kind='lines'; got kind={kind!r}.")
    if feature_size_px <= 0:
        raise ValueError(f"feature_size_px must be > 0; got {feature_size_px}.")
    rng = _generator(rng)

    def texture():
        if kind == "lines":
            return _lines_texture((rows, cols), rng, n_lines)
        if kind == "grf":
            return _grf_texture((rows, cols), rng, feature_size_px)
        return _dead_leaves_texture((rows, cols), rng, feature_size_px)

    amplitude = amplitude_range[0] + (amplitude_range[1] - amplitude_range[0]) * texture()
    if amplitude_only:
        return amplitude.astype(np.complex64)
    phase = phase_range[0] + (phase_range[1] - phase_range[0]) * texture()
    return (amplitude * np.exp(1j * phase)).astype(np.complex64)


# ----------------------------------------------------------------------------------------------
# probes


def make_probe(
    kind,
    patch_size,
    *,
    diameter_px=None,
    defocus_rad=None,
    central_stop=0.3,
    astigmatism_rad=0.0,
    coma_rad=0.0,
):
    """Make a probe on the object pixel grid, centred at index ``N // 2``, peak modulus 1.

    Parameters
    ----------
    kind : {"disk", "gaussian", "fzp"}
        ``"disk"``: the focus of an ideal lens, the far field of a circular (low-pass) aperture (an
        Airy pattern in focus). ``"gaussian"``: a Gaussian spot of FWHM ``diameter_px`` with a
        quadratic wavefront ``defocus_rad * (2 r / diameter_px)**2``. ``"fzp"``: a Fresnel zone
        plate, an annular aperture with a central stop, out of focus by default, with optional
        astigmatism and coma.
    patch_size : int
        N.
    diameter_px : float, optional
        Size of the in-focus spot: the diameter of the first dark ring for "disk" and "fzp", the
        FWHM for "gaussian". Default ``N / 3``, or ``N / 8`` for "fzp" (a high-NA lens, used out
        of focus).
    defocus_rad : float, optional
        Defocus phase at the aperture edge (rad). Default 0, or 6 for "fzp", which spreads its
        small focus into a ring-structured probe about ``N / 2`` across.
    central_stop : float
        Inner radius of the "fzp" aperture as a fraction of the outer radius.
    astigmatism_rad, coma_rad : float
        Aberrations at the aperture edge ("disk" and "fzp").

    Returns
    -------
    ndarray of shape (N, N), complex64

    Notes
    -----
    For the aperture kinds the pupil has radius ``R = 1.22 N / diameter_px`` frequency pixels
    (Airy's first zero at ``diameter_px / 2``). With normalised pupil coordinates ``(u, v)`` and
    ``rho**2 = u**2 + v**2`` its phase is ``defocus * rho**2 + astigmatism * (u**2 - v**2) +
    coma * (3 rho**2 - 2) u``, and the probe is its inverse Fourier transform.

    Every probe is multiplied by a radial raised-cosine taper that falls from 1 at radius
    ``3N/8`` to 0 at ``N/2``: the FFT treats the N x N window as periodic, and a probe cut off at
    the window's border would add streaks along the detector axes that no real measurement has.

    Examples
    --------
    >>> probe = make_probe("disk", 64)
    >>> probe.shape, [int(i) for i in np.unravel_index(np.argmax(np.abs(probe)), probe.shape)]
    ((64, 64), [32, 32])
    """
    _choice(kind, PROBE_KINDS, "kind")
    n = int(patch_size)
    if diameter_px is None:
        diameter_px = n / 8 if kind == "fzp" else n / 3
    diameter_px = float(diameter_px)
    if not 0 < diameter_px <= n:
        raise ValueError(f"diameter_px must be in (0, N={n}]; got {diameter_px}.")
    if defocus_rad is None:
        defocus_rad = 6.0 if kind == "fzp" else 0.0
    coords = np.arange(n) - n // 2
    radius_px = np.hypot(coords[:, None], coords[None, :])
    # a raised-cosine taper from 3/4 of the half width to the border: the periodic FFT would see
    # the cut-off tails of a probe as an edge (streaks along the detector axes)
    taper = np.clip((n / 2 - radius_px) / (n / 8), 0, 1)
    taper = 0.5 - 0.5 * np.cos(np.pi * taper)
    if kind == "gaussian":
        if astigmatism_rad or coma_rad:
            raise ValueError("astigmatism_rad and coma_rad apply to the aperture probes ('disk', 'fzp'), not 'gaussian'.")
        r2 = coords[:, None] ** 2 + coords[None, :] ** 2
        sigma = diameter_px / (2 * np.sqrt(2 * np.log(2)))
        probe = np.exp(-r2 / (2 * sigma**2)) * np.exp(1j * defocus_rad * r2 / (diameter_px / 2) ** 2) * taper
        return (probe / np.abs(probe).max()).astype(np.complex64)
    if not 0 <= central_stop < 1:
        raise ValueError(f"central_stop must be in [0, 1); got {central_stop}.")
    radius = 1.22 * n / diameter_px
    v, u = coords[:, None] / radius, coords[None, :] / radius
    rho = np.hypot(u, v)
    pupil = np.clip((1 - rho) * radius + 0.5, 0, 1)  # one-pixel soft edge
    if kind == "fzp":
        pupil = pupil * np.clip((rho - central_stop) * radius + 0.5, 0, 1)
    phase = defocus_rad * rho**2 + astigmatism_rad * (u**2 - v**2) + coma_rad * (3 * rho**2 - 2) * u
    field = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(pupil * np.exp(1j * phase)))) * taper
    return (field / np.abs(field).max()).astype(np.complex64)


def probe_diameter_px(probe, fraction=0.9):
    """Return the diameter of the disk (centred at ``N // 2``) that holds ``fraction`` of ``|P|**2``.

    Examples
    --------
    >>> round(probe_diameter_px(make_probe("gaussian", 64, diameter_px=16)), 1)  # 1.52 x FWHM
    20.6
    """
    probe = np.asarray(probe)
    n = probe.shape[-1]
    coords = np.arange(n) - n // 2
    radius = np.hypot(coords[:, None], coords[None, :]).ravel()
    order = np.argsort(radius, kind="stable")
    power = np.cumsum((np.abs(probe) ** 2).ravel()[order])
    return float(2 * radius[order][np.searchsorted(power, fraction * power[-1])])


def linear_overlap(step_px, diameter_px):
    """Return the linear overlap ``1 - step / diameter`` of neighbouring probe positions."""
    return 1.0 - float(step_px) / float(diameter_px)


# ----------------------------------------------------------------------------------------------
# scans


def _margin(jitter_px):
    return int(np.ceil(3 * jitter_px))


def _window_range(size, patch_size, margin):
    """First and last window centre that keep an N-pixel window inside ``size`` pixels."""
    return patch_size // 2 + margin, size - (patch_size - patch_size // 2) - margin


def _resolve_step(step_px, overlap, diameter_px):
    if overlap is None:
        step = 4.0 if step_px is None else float(step_px)
    else:
        if step_px is not None:
            raise ValueError("give either step_px or overlap, not both.")
        if diameter_px is None:
            raise ValueError("overlap needs probe_diameter_px (see probe_diameter_px()) to turn into a step.")
        if not 0 <= overlap < 1:
            raise ValueError(f"overlap must be in [0, 1); got {overlap}.")
        step = (1 - overlap) * float(diameter_px)
    if step <= 0:
        raise ValueError(f"step_px must be > 0; got {step}.")
    return step


def raster_positions(
    shape,
    patch_size,
    *,
    step_px=None,
    overlap=None,
    probe_diameter_px=None,
    jitter_px=0.0,
    n_positions=None,
    rng=None,
):
    """Return a raster scan whose N x N windows stay on the canvas.

    Parameters
    ----------
    shape : tuple of int
        ``(rows, cols)`` of the object canvas.
    patch_size : int
        N.
    step_px : float, optional
        Distance between neighbouring positions (default 4 px). Integer steps give positions on
        whole pixels (when ``jitter_px = 0``).
    overlap, probe_diameter_px : float, optional
        Instead of ``step_px``: the linear overlap ``1 - step / diameter`` for a probe of this
        diameter.
    jitter_px : float
        Standard deviation of Gaussian position noise; the raster keeps a margin of
        ``ceil(3 * jitter_px)`` and jittered positions are clipped to the canvas.
    n_positions : int, optional
        Keep the first ``n_positions`` (row by row); an error if the canvas holds fewer.
    rng : numpy.random.Generator or int, optional
        Needed only with jitter.

    Returns
    -------
    x_px, y_px : ndarray of shape (n_positions,), float64
        Window centres, row-major (y outer, x inner).

    Examples
    --------
    >>> x, y = raster_positions((72, 80), 64, step_px=8)
    >>> x.tolist(), y.tolist()
    ([32.0, 40.0, 48.0, 32.0, 40.0, 48.0], [32.0, 32.0, 32.0, 40.0, 40.0, 40.0])
    """
    rows, cols = shape
    step = _resolve_step(step_px, overlap, probe_diameter_px)
    if jitter_px < 0:
        raise ValueError(f"jitter_px must be >= 0; got {jitter_px}.")
    margin = _margin(jitter_px)
    x_first, x_last = _window_range(cols, patch_size, margin)
    y_first, y_last = _window_range(rows, patch_size, margin)
    if x_last < x_first or y_last < y_first:
        raise ValueError(
            f"a canvas of {rows} x {cols} px cannot hold a {patch_size} px window"
            f"{f' with a {margin} px jitter margin' if margin else ''}; make it at least "
            f"{patch_size + 2 * margin} px on each side."
        )
    xs = x_first + step * np.arange(int(np.floor((x_last - x_first) / step + 1e-9)) + 1)
    ys = y_first + step * np.arange(int(np.floor((y_last - y_first) / step + 1e-9)) + 1)
    y_px, x_px = (grid.ravel() for grid in np.meshgrid(ys, xs, indexing="ij"))
    if n_positions is not None:
        if n_positions > x_px.size:
            raise ValueError(
                f"n_positions={n_positions} but a {rows} x {cols} canvas holds {x_px.size} raster positions "
                f"at step {step:g} px; enlarge the canvas (see scan_canvas_shape) or shrink the step."
            )
        x_px, y_px = x_px[:n_positions], y_px[:n_positions]
    if jitter_px > 0:
        rng = _generator(rng)
        jitter = rng.normal(scale=jitter_px, size=(2, x_px.size))
        x_px = np.clip(x_px + jitter[0], x_first - margin, x_last + margin)
        y_px = np.clip(y_px + jitter[1], y_first - margin, y_last + margin)
    return x_px.astype(np.float64), y_px.astype(np.float64)


def spiral_positions(shape, patch_size, n_positions, *, step_px=4.0):
    """Return a Fermat-spiral scan of ``n_positions`` centred on the canvas.

    Position k sits at radius ``c sqrt(k)`` and angle ``k * golden_angle`` with
    ``c = step_px / sqrt(pi)``, so the mean distance between neighbours is about ``step_px`` and the
    density is uniform (no raster periodicity, which avoids raster grid artefacts).

    Returns
    -------
    x_px, y_px : ndarray of shape (n_positions,), float64

    Raises
    ------
    ValueError
        If a window would leave the canvas (see `scan_canvas_shape`).
    """
    rows, cols = shape
    if n_positions < 1:
        raise ValueError(f"n_positions must be >= 1; got {n_positions}.")
    k = np.arange(n_positions)
    radius = step_px / np.sqrt(np.pi) * np.sqrt(k)
    x_px = (cols - 1) / 2 + radius * np.cos(k * _GOLDEN_ANGLE)
    y_px = (rows - 1) / 2 + radius * np.sin(k * _GOLDEN_ANGLE)
    x_first, x_last = _window_range(cols, patch_size, 0)
    y_first, y_last = _window_range(rows, patch_size, 0)
    if x_px.min() < x_first or x_px.max() > x_last or y_px.min() < y_first or y_px.max() > y_last:
        raise ValueError(
            f"a spiral of {n_positions} positions at step {step_px:g} px needs a radius of {radius[-1]:.1f} px, "
            f"more than a {rows} x {cols} canvas allows for {patch_size} px windows; use "
            f"scan_canvas_shape({n_positions}, {patch_size}, step_px={step_px:g}, scan='spiral')."
        )
    return x_px, y_px


def scan_canvas_shape(n_positions, patch_size, *, step_px=4.0, scan="raster", jitter_px=0.0):
    """Return the smallest ``(rows, cols)`` canvas that holds ``n_positions`` of a scan.

    A raster is ``ceil(sqrt(n))`` positions wide; its last row may be partly empty.

    Examples
    --------
    >>> scan_canvas_shape(40, 64, step_px=8)
    (104, 112)
    """
    _choice(scan, SCAN_KINDS, "scan")
    if n_positions < 1:
        raise ValueError(f"n_positions must be >= 1; got {n_positions}.")
    if step_px <= 0:
        raise ValueError(f"step_px must be > 0; got {step_px}.")
    if scan == "spiral":
        side = 2 * int(np.ceil(step_px / np.sqrt(np.pi) * np.sqrt(n_positions - 1))) + patch_size + 1
        return side, side
    n_cols = int(np.ceil(np.sqrt(n_positions)))
    n_rows = int(np.ceil(n_positions / n_cols))
    margin = 2 * _margin(jitter_px)
    return (
        int(np.ceil((n_rows - 1) * step_px)) + patch_size + margin,
        int(np.ceil((n_cols - 1) * step_px)) + patch_size + margin,
    )


# ----------------------------------------------------------------------------------------------
# diffraction


def make_detector_mask(patch_size, *, beamstop_radius_px=0.0, bad_pixel_fraction=0.0, rng=None):
    """Return a bad-pixel mask: a central beamstop disk plus randomly placed dead pixels.

    Parameters
    ----------
    patch_size : int
        N.
    beamstop_radius_px : float
        Pixels within this distance of the DC pixel ``(N//2, N//2)`` are blocked; 0 for none.
    bad_pixel_fraction : float
        Fraction of all pixels that are dead, chosen at random (needs ``rng``).
    rng : numpy.random.Generator or int, optional

    Returns
    -------
    ndarray of shape (N, N), bool
        ``True`` = not measured; such pixels read 0 counts.
    """
    if beamstop_radius_px < 0:
        raise ValueError(f"beamstop_radius_px must be >= 0; got {beamstop_radius_px}.")
    if not 0 <= bad_pixel_fraction < 1:
        raise ValueError(f"bad_pixel_fraction must be in [0, 1); got {bad_pixel_fraction}.")
    mask = np.zeros((patch_size, patch_size), dtype=bool)
    if beamstop_radius_px > 0:
        mask |= forward.disk_mask(patch_size, beamstop_radius_px).astype(bool)
    n_bad = int(round(bad_pixel_fraction * patch_size**2))
    if n_bad:
        mask.ravel()[_generator(rng).choice(patch_size**2, n_bad, replace=False)] = True
    return mask


def _batches(total, batch_size):
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}.")
    return [slice(start, min(start + batch_size, total)) for start in range(0, total, int(batch_size))]


def _views(obj, x_px, y_px, patch_size):
    """Object views at the positions: a plain gather for whole-pixel windows on the canvas, else bilinear."""
    rows, cols = obj.shape
    half = patch_size // 2
    top, left = y_px - half, x_px - half
    on_grid = np.all(top == np.floor(top)) and np.all(left == np.floor(left))
    inside = top.min() >= 0 and left.min() >= 0 and top.max() + patch_size <= rows and left.max() + patch_size <= cols
    if on_grid and inside:
        return sliding_window_view(obj, (patch_size, patch_size))[top.astype(np.int64), left.astype(np.int64)]
    return forward.extract_patches(obj, x_px, y_px, patch_size).astype(np.complex64, copy=False)


def far_field_intensity(obj, probe, x_px, y_px, *, batch_size=256, workers=None):
    """Return the noiseless patterns ``|fftshift(fft2(P * O_k))|**2 / N**2`` (SPEC 4.5 with s = 1).

    Parameters
    ----------
    obj : ndarray of shape (rows, cols), complex
    probe : ndarray of shape (N, N), complex
        Used as is (no normalisation: the photon scale is fitted afterwards).
    x_px, y_px : ndarray of shape (n_positions,)
        Window centres in object pixels.
    batch_size : int
        Patterns per FFT batch (bounds the temporary memory).
    workers : int, optional
        Threads for ``scipy.fft``; the result does not depend on it.

    Returns
    -------
    ndarray of shape (n_positions, N, N), float32
        Equal, within float32 rounding, to
        ``forward.far_field_amplitude(forward.extract_patches(obj, x_px, y_px, N) * probe) ** 2``.

    Notes
    -----
    For even N the ``fftshift`` is folded into the probe as a checkerboard ``(-1)**(r + c)``
    (the modulation theorem), which saves a copy per pattern.
    """
    obj = np.asarray(obj, dtype=np.complex64)
    probe = np.asarray(probe, dtype=np.complex64)
    x_px = np.asarray(x_px, dtype=np.float64)
    y_px = np.asarray(y_px, dtype=np.float64)
    n = probe.shape[-1]
    if probe.shape != (n, n) or obj.ndim != 2:
        raise ValueError(f"probe must be (N, N) and obj 2-D; got probe {probe.shape} and obj {obj.shape}.")
    if x_px.shape != y_px.shape or x_px.ndim != 1:
        raise ValueError(f"x_px and y_px must be 1-D of equal length; got {x_px.shape} and {y_px.shape}.")
    even = n % 2 == 0
    if even:
        checker = 1 - 2 * ((np.arange(n)[:, None] + np.arange(n)[None, :]) % 2)
        probe = (probe * checker).astype(np.complex64)
    out = np.empty((x_px.size, n, n), dtype=np.float32)
    for batch in _batches(x_px.size, batch_size):
        exit_wave = np.multiply(_views(obj, x_px[batch], y_px[batch], n), probe)
        spectrum = scipy.fft.fft2(exit_wave, workers=workers, overwrite_x=True)
        if not even:
            spectrum = scipy.fft.fftshift(spectrum, axes=(-2, -1))
        target = np.abs(spectrum, out=out[batch])
        np.square(target, out=target)
        target *= np.float32(1.0 / n**2)
    return out


def _expected_counts(obj, probe, x_px, y_px, nphotons, detector_mask, batch_size, workers):
    if not nphotons > 0:
        raise ValueError(f"nphotons must be > 0 (mean counts per pattern); got {nphotons}.")
    if np.size(x_px) == 0:
        raise ValueError("x_px and y_px are empty; simulate at least one position.")
    expected = far_field_intensity(obj, probe, x_px, y_px, batch_size=batch_size, workers=workers)
    mean_energy = float(np.mean(expected.sum(axis=(-2, -1)), dtype=np.float64))
    if mean_energy <= 0:
        raise ValueError("every exit wave is zero (object or probe is zero at all positions); nothing to simulate.")
    scale = nphotons / mean_energy
    expected *= np.float32(scale)
    if detector_mask is not None:
        mask = np.asarray(detector_mask, dtype=bool)
        if mask.shape != expected.shape[-2:]:
            raise ValueError(f"detector_mask must have shape {expected.shape[-2:]}; got {mask.shape}.")
        expected[..., mask] = 0
    return expected, scale


def _chunk_seeds(rng, n_chunks):
    """One child ``SeedSequence`` per chunk, all spawned from a root drawn from ``rng`` (advances it once)."""
    root = np.random.SeedSequence(_generator(rng).integers(0, 2**63, size=4, dtype=np.uint64))
    return root.spawn(n_chunks)


def poisson_counts(expected, rng, *, workers=None, chunk_size=POISSON_CHUNK, out=None, amplitude=False):
    """Exact Poisson draws of ``expected`` (one pattern chunk per child random stream), over threads.

    Parameters
    ----------
    expected : ndarray of shape (n_patterns, ...), float, >= 0
        Poisson means.
    rng : numpy.random.Generator or int
        Advanced once (four 64-bit integers seed the root ``SeedSequence``).
    workers : int, optional
        Threads drawing chunks in parallel (NumPy's sampler releases the GIL); default 1. The
        result does not depend on it.
    chunk_size : int or None
        Patterns per chunk: chunk ``j`` is drawn by ``default_rng(root.spawn(n_chunks)[j])``, so the
        result depends on the seed and ``chunk_size`` only. ``None``: one stream, ``rng`` itself,
        pattern after pattern (no threads; what `simulate_counts` and `simulate_dataset` do by
        default).
    out : ndarray, optional
        Where to write (may be ``expected`` itself: each chunk is read before it is overwritten).
    amplitude : bool
        Write ``sqrt(counts)`` (float) instead of the counts.

    Returns
    -------
    ndarray of ``expected``'s shape
        int64 counts, or ``out``.

    Notes
    -----
    Each draw is ``numpy.random.Generator.poisson`` (exact: inversion for small means, Hörmann's
    transformed rejection PTRS for means >= 10), so the samples are exactly Poisson distributed;
    only the assignment of random streams to pixels differs from a single-stream draw. Bit-identity
    holds for the same seed, ``chunk_size``, NumPy version and input; thread count and FFT batch size
    do not matter.
    """
    expected = np.asarray(expected)
    if chunk_size is not None and (int(chunk_size) != chunk_size or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer or None; got {chunk_size!r}.")
    if out is None:
        out = np.empty(expected.shape, dtype=np.float32 if amplitude else np.int64)
    if chunk_size is None:  # one stream: rng's own draws in pattern order (batches only bound the memory)
        generator = _generator(rng)
        for batch in _batches(len(expected), 256):
            counts = generator.poisson(expected[batch])
            out[batch] = np.sqrt(counts) if amplitude else counts
        return out
    chunks = _batches(len(expected), chunk_size)
    seeds = _chunk_seeds(rng, len(chunks))

    def draw(index):
        chunk = chunks[index]
        counts = np.random.default_rng(seeds[index]).poisson(expected[chunk])
        if amplitude:
            out[chunk] = np.sqrt(counts)
        else:
            out[chunk] = counts

    threads = max(1, int(workers or 1))
    if threads == 1 or len(chunks) == 1:
        for index in range(len(chunks)):
            draw(index)
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(threads, len(chunks))) as pool:
            list(pool.map(draw, range(len(chunks))))
    return out


def simulate_counts(
    obj, probe, x_px, y_px, nphotons, rng, *, noise=True, detector_mask=None, batch_size=256, workers=None,
    poisson_chunk=None,
):
    """Simulate measured counts: far-field patterns at a mean of ``nphotons`` per pattern, Poisson noise.

    Parameters
    ----------
    obj : ndarray of shape (rows, cols), complex
    probe : ndarray of shape (N, N), complex
    x_px, y_px : ndarray of shape (n_positions,)
        Window centres in object pixels.
    nphotons : float
        Mean expected counts per pattern over the data set, summed over the whole detector before
        the ``detector_mask`` blocks pixels.
    rng : numpy.random.Generator or int
        Source of the Poisson noise.
    noise : bool
        ``False`` returns the expected counts (float32) instead of a Poisson draw.
    detector_mask : ndarray of shape (N, N), bool, optional
        Pixels that read 0 (beamstop, dead pixels; see `make_detector_mask`).
    batch_size : int
    workers : int, optional
        Threads for ``scipy.fft`` (and the Poisson draws with ``poisson_chunk``); results do not
        depend on it or on ``batch_size``.
    poisson_chunk : int, optional
        Draw the noise in chunks of this many patterns, one child random stream each, over
        ``workers`` threads (`poisson_counts`; faster on several cores, other draws of the same
        distribution). Default: one stream from ``rng``.

    Returns
    -------
    ndarray of shape (n_positions, N, N)
        int64 counts (``noise=True``) or float32 expected counts.

    Notes
    -----
    ``lambda_k = nphotons * I_k / mean_j(sum I_j)`` with ``I_k`` from `far_field_intensity`; counts
    are exact Poisson draws of `poisson_counts` (NumPy's sampler; bit-identical for a seed whatever
    ``workers`` and ``batch_size``).

    Examples
    --------
    >>> obj, probe = np.ones((80, 80), np.complex64), make_probe("gaussian", 64)
    >>> counts = simulate_counts(obj, probe, np.array([40.0]), np.array([40.0]), 1e6, rng=0)
    >>> counts.dtype, bool(abs(counts.sum() / 1e6 - 1) < 0.01)
    (dtype('int64'), True)
    """
    expected, _ = _expected_counts(obj, probe, x_px, y_px, nphotons, detector_mask, batch_size, workers)
    if not noise:
        return expected
    return poisson_counts(expected, rng, workers=workers, chunk_size=poisson_chunk)


def simulate_dataset(
    obj,
    probe,
    x_px,
    y_px,
    nphotons,
    rng,
    *,
    noise=True,
    detector_mask=None,
    batch_size=256,
    workers=None,
    metadata=None,
    poisson_chunk=None,
):
    """Simulate a `PtychoData`: amplitudes ``sqrt(counts)`` of `simulate_counts` plus everything else.

    Takes the same arguments as `simulate_counts` (with the same ``rng`` state the amplitudes are
    exactly ``sqrt`` of its counts), plus ``metadata`` merged into the data set's metadata
    (``measurement``, ``nphotons``, ``noise``, ``photon_scale``, ``generator``, ``version``).
    The detector mask becomes the data set's ``bad_pixels``.
    """
    expected, scale = _expected_counts(obj, probe, x_px, y_px, nphotons, detector_mask, batch_size, workers)
    amplitudes = expected  # converted in place
    if noise:
        poisson_counts(expected, rng, workers=workers, chunk_size=poisson_chunk, out=amplitudes, amplitude=True)
    else:
        np.sqrt(amplitudes, out=amplitudes)
    info = {
        "measurement": "amplitude",
        "nphotons": float(nphotons),
        "noise": "poisson" if noise else "none",
        "photon_scale": scale,
        "generator": "ptycholib.simulate",
        "version": __version__,
    }
    info.update(metadata or {})
    return PtychoData(
        amplitudes=amplitudes,
        x_px=x_px,
        y_px=y_px,
        probe=probe,
        obj=obj,
        bad_pixels=detector_mask,
        metadata=info,
    )


def simulate_train_test(
    *,
    n_train=2500,
    n_test=900,
    object_kind="lines",
    probe_kind="disk",
    patch_size=64,
    nphotons=1e9,
    step_px=4.0,
    scan="raster",
    jitter_px=0.0,
    amplitude_only=False,
    beamstop_radius_px=0.0,
    bad_pixel_fraction=0.0,
    noise=True,
    seed=0,
    workers=None,
    n_objects=1,
):
    """Simulate a training set and a test set on different objects of one kind, with one probe.

    Each set's canvas is the smallest that holds its scan (`scan_canvas_shape`). Randomness comes
    from independent streams of ``np.random.SeedSequence(seed)``: detector mask, then per set the
    object, the scan jitter and the noise. The training set therefore does not change when only
    ``n_test`` changes, and the same arguments give bit-identical data.

    With ``n_objects = K > 1`` the training set scans K independent objects, so that a model sees
    more than one sample. They are tiles of one mosaic canvas ``obj``, side by side along the
    columns with a gap of ``N // 2`` px of vacuum (modulus 1, phase 0) between them; each tile is
    the canvas of a scan of ``ceil(n_train / K)`` positions, tile k holds ``n_train // K`` or one
    more positions (the total stays ``n_train``, so the cost does not change), every N x N window
    lies inside its own tile, and positions are absolute on the mosaic.
    ``train.object_index`` names each position's tile (0 .. K-1, tile by tile, scan order within
    a tile); grouping never mixes tiles. The test set is always one held-out object (notebook 04
    evaluates on one object), and ``n_objects=1`` gives exactly the data of earlier versions
    (``object_index`` is ``None``).

    Parameters
    ----------
    n_train, n_test : int
        Number of patterns in each set.
    object_kind : {"lines", "grf", "dead_leaves"}
    probe_kind : {"disk", "gaussian", "fzp"}
        Default arguments of `make_probe`.
    patch_size : int
        N (64, 128 or 256).
    nphotons : float
        Mean counts per pattern (each set is scaled to it on its own object).
    step_px : float
        Scan step; integer steps of a raster without jitter keep positions on whole pixels.
    scan : {"raster", "spiral"}
    jitter_px : float
        Gaussian position noise (raster only).
    amplitude_only : bool
        Objects without phase.
    beamstop_radius_px, bad_pixel_fraction : float
        Detector mask (`make_detector_mask`), shared by both sets.
    noise : bool
        Poisson noise on (default) or off.
    seed : int
    workers : int, optional
        Threads for ``scipy.fft`` and the Poisson draws (the result does not depend on it).
    n_objects : int
        K, the number of independent objects of the training set (1 to ``n_train``).

    Returns
    -------
    train, test : PtychoData
        Each with its own ground-truth object (the training set's a mosaic when ``n_objects > 1``);
        metadata records every argument and the set's own ``n_objects``.

    Examples
    --------
    >>> train, test = simulate_train_test(n_train=9, n_test=4, nphotons=1e6, seed=1)
    >>> train.n_positions, test.n_positions, train.obj.shape != test.obj.shape
    (9, 4, True)
    >>> train, _ = simulate_train_test(n_train=9, n_test=4, nphotons=1e6, seed=1, n_objects=3)
    >>> train.object_index.tolist(), train.obj.shape
    ([0, 0, 0, 1, 1, 1, 2, 2, 2], (68, 268))
    """
    _choice(object_kind, OBJECT_KINDS, "object_kind")
    _choice(scan, SCAN_KINDS, "scan")
    if jitter_px and scan != "raster":
        raise ValueError("jitter_px applies to scan='raster' only; the spiral is already aperiodic.")
    for name, count in (("n_train", n_train), ("n_test", n_test), ("n_objects", n_objects)):
        if isinstance(count, bool) or int(count) != count or count < 1:
            raise ValueError(f"{name} must be a positive integer; got {count!r}.")
    if n_objects > n_train:
        raise ValueError(
            f"n_objects={n_objects} exceeds n_train={n_train}; every training object needs at least one position "
            f"(for gridsize g, at least neighbor_count of them)."
        )
    arguments = {
        "object_kind": object_kind, "probe_kind": probe_kind, "patch_size": patch_size, "nphotons": float(nphotons),
        "step_px": float(step_px), "scan": scan, "jitter_px": float(jitter_px), "amplitude_only": bool(amplitude_only),
        "beamstop_radius_px": float(beamstop_radius_px), "bad_pixel_fraction": float(bad_pixel_fraction),
        "seed": int(seed),
    }  # fmt: skip
    mask_stream, *set_streams = np.random.SeedSequence(seed).spawn(3)
    probe = make_probe(probe_kind, patch_size)
    mask = make_detector_mask(
        patch_size,
        beamstop_radius_px=beamstop_radius_px,
        bad_pixel_fraction=bad_pixel_fraction,
        rng=np.random.default_rng(mask_stream),
    )
    datasets = []
    splits = (("train", n_train, set_streams[0], int(n_objects)), ("test", n_test, set_streams[1], 1))
    for split, count, stream, k in splits:
        object_rng, scan_rng, noise_rng = (np.random.default_rng(s) for s in stream.spawn(3))
        shares = [count // k + (i < count % k) for i in range(k)]
        shape = scan_canvas_shape(shares[0], patch_size, step_px=step_px, scan=scan, jitter_px=jitter_px)
        gap = patch_size // 2
        obj = np.ones((shape[0], k * shape[1] + (k - 1) * gap), dtype=np.complex64)  # vacuum between tiles
        x_parts, y_parts = [], []
        for tile, share in enumerate(shares):
            left = tile * (shape[1] + gap)
            obj[:, left : left + shape[1]] = make_object(object_kind, shape, object_rng, amplitude_only=amplitude_only)
            if scan == "raster":
                x_px, y_px = raster_positions(
                    shape, patch_size, step_px=step_px, jitter_px=jitter_px, n_positions=share, rng=scan_rng
                )
            else:
                x_px, y_px = spiral_positions(shape, patch_size, share, step_px=step_px)
            x_parts.append(x_px + left)
            y_parts.append(y_px)
        dataset = simulate_dataset(
            obj, probe, np.concatenate(x_parts), np.concatenate(y_parts), nphotons, noise_rng,
            noise=noise, detector_mask=mask if mask.any() else None, workers=workers,
            metadata=dict(arguments, split=split, n_positions=int(count), n_objects=k),
        )  # fmt: skip
        if k > 1:
            object_index = np.repeat(np.arange(k, dtype=np.int64), shares)
            dataset = dataclasses.replace(dataset, object_index=object_index)
        datasets.append(dataset)
    return datasets[0], datasets[1]
