"""Look for detector and scan defects in a data set before training or reconstructing on it.

`check_data` reports what `ptycholib.data.PtychoData` accepts (it is a valid data set) but a
physics-informed model would learn wrong: frames with no photons, detector pixels stuck at a
detector's ceiling (saturated), pixels far brighter than their neighbours in every frame (hot),
frames whose total count is far from the median frame's, and scan windows that leave the object
canvas. ``ptycholib check DATA`` prints the report; ``train`` and ``reconstruct`` run it first and
warn (``--strict`` makes findings fatal). NumPy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Finding", "check_data", "format_report", "SATURATION_LEVELS"]

SATURATION_LEVELS = tuple(2**bits - 1 for bits in (8, 10, 12, 14, 16, 20, 24, 32))
"""Counts at which common detectors' integer ranges end (255, ..., 65535, ..., 4294967295)."""

_DC_GUARD_PX = 2  # the central (DC) peak is bright in every frame by nature, not a hot pixel


@dataclass(frozen=True)
class Finding:
    """One kind of defect found in a data set.

    Attributes
    ----------
    kind : str
        ``"zero_frames"``, ``"saturated_pixels"``, ``"hot_pixels"``, ``"outlier_frames"`` or
        ``"positions_outside"``.
    message : str
        One readable line: what, how many, which, what to do.
    indices : tuple of int or of (row, col)
        The frames (or detector pixels, for hot pixels) concerned, at most 20.
    count : int
        How many frames, values or pixels are concerned in all.
    """

    kind: str
    message: str
    indices: tuple
    count: int


def _listed(indices, limit=8):
    shown = ", ".join(str(i) for i in indices[:limit])
    return shown + (", ..." if len(indices) > limit else "")


def _neighbour_median(image):
    """Median of each pixel's 8 neighbours (edges replicated)."""
    padded = np.pad(image, 1, mode="edge")
    rows, cols = image.shape
    shifts = [padded[1 + dr : 1 + dr + rows, 1 + dc : 1 + dc + cols]
              for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)]
    return np.median(np.stack(shifts), axis=0)


def _zero_frames(totals):
    frames = np.flatnonzero(totals == 0)
    if not frames.size:
        return None
    return Finding("zero_frames", f"{frames.size} of {totals.size} frames hold no photons at all (frames "
                   f"{_listed(frames.tolist())}); drop them (PtychoData.subset) or check the detector readout.",
                   tuple(frames[:20].tolist()), int(frames.size))


def _saturated(counts):
    peak = float(counts.max())
    level = next((level for level in SATURATION_LEVELS if abs(peak - level) <= 0.5), None)
    if level is None:
        return None
    at_level = np.abs(counts - level) <= 0.5
    values = int(at_level.sum())
    if values < 2:  # one pixel at the maximum can be chance; a ceiling reached twice is not
        return None
    frames = np.flatnonzero(at_level.any(axis=(-2, -1)))
    share = values / counts.size
    return Finding("saturated_pixels", f"{values} pixel values ({share:.1%}) in {frames.size} frames sit at "
                   f"{level} counts, an integer detector's ceiling: saturated pixels (frames "
                   f"{_listed(frames.tolist())}); mark them in bad_pixels or drop those frames.",
                   tuple(frames[:20].tolist()), values)


def _hot(counts, bad_pixels, hot_factor):
    typical = np.median(counts, axis=0)
    around = _neighbour_median(typical)
    hot = (typical >= 10.0) & (typical > hot_factor * np.maximum(around, 1.0))
    size = typical.shape[-1]
    centre = size // 2
    hot[centre - _DC_GUARD_PX : centre + _DC_GUARD_PX + 1, centre - _DC_GUARD_PX : centre + _DC_GUARD_PX + 1] = False
    if bad_pixels is not None:
        hot &= ~bad_pixels
    pixels = [tuple(int(v) for v in rc) for rc in np.argwhere(hot)]
    if not pixels:
        return None
    return Finding("hot_pixels", f"{len(pixels)} detector pixels are over {hot_factor:g}x brighter than their "
                   f"neighbours in the median frame (row, col: {_listed(pixels)}): hot pixels; mark them in "
                   "bad_pixels.", tuple(pixels[:20]), len(pixels))


def _outlier_frames(totals, total_factor):
    lit = totals > 0
    if not lit.any():
        return None
    median = float(np.median(totals[lit]))
    outliers = np.flatnonzero(lit & ((totals > total_factor * median) | (totals < median / total_factor)))
    if not outliers.size:
        return None
    ratios = totals[outliers] / median
    return Finding("outlier_frames", f"{outliers.size} frames have a total count more than {total_factor:g}x away "
                   f"from the median frame's {median:.4g} (frames {_listed(outliers.tolist())}, "
                   f"{ratios.min():.3g}x to {ratios.max():.3g}x the median): beam dropouts or glitches?",
                   tuple(outliers[:20].tolist()), int(outliers.size))


def _outside(data):
    half = data.patch_size // 2
    outside = (data.x_px < half) | (data.y_px < half)
    where = "the canvas's top or left edge"
    if data.obj is not None:
        rows, cols = data.obj.shape
        outside |= (data.x_px + half > cols) | (data.y_px + half > rows)
        where = f"the object ({rows} x {cols} pixels)"
    frames = np.flatnonzero(outside)
    if not frames.size:
        return None
    return Finding("positions_outside", f"{frames.size} of {outside.size} scan windows ({data.patch_size} px "
                   f"around the position) reach beyond {where} (positions {_listed(frames.tolist())}); check "
                   "that the positions are in object pixels and that objectGuess covers the scan.",
                   tuple(frames[:20].tolist()), int(frames.size))


def check_data(data, *, total_factor=10.0, hot_factor=50.0):
    """Return the defects found in a data set, an empty list when there are none.

    Parameters
    ----------
    data : ptycholib.data.PtychoData
    total_factor : float
        A frame is an outlier when its total count is more than this factor above or below the
        median of the frames that hold photons.
    hot_factor : float
        A pixel is hot when its median over the frames is at least 10 counts and this factor above
        the median of its 8 neighbours' medians. The central 5 x 5 pixels (the DC peak) and the
        pixels already in ``bad_pixels`` are not tested.

    Returns
    -------
    list of Finding
        In the order: zero frames, saturated pixels, hot pixels, outlier frames, positions outside.

    Notes
    -----
    Counts are ``amplitudes**2``. A value is saturated when the data's maximum is one of
    `SATURATION_LEVELS` (within 0.5 counts) and at least two values reach it. Positions are
    window centres; a window reaches ``N // 2`` pixels on each side.

    Examples
    --------
    >>> from ptycholib.data import PtychoData
    >>> amplitudes = np.ones((3, 64, 64), dtype=np.float32)
    >>> amplitudes[1] = 0
    >>> data = PtychoData(amplitudes, [40.0, 48.0, 56.0], [40.0, 40.0, 40.0], np.ones((64, 64)))
    >>> [finding.kind for finding in check_data(data)]
    ['zero_frames']
    """
    if not (total_factor > 1 and hot_factor > 1):
        raise ValueError(f"total_factor={total_factor!r} and hot_factor={hot_factor!r} must be > 1.")
    counts = np.square(data.amplitudes, dtype=np.float64)
    totals = counts.sum(axis=(-2, -1))
    checks = (_zero_frames(totals), _saturated(counts), _hot(counts, data.bad_pixels, hot_factor),
              _outlier_frames(totals, total_factor), _outside(data))
    return [finding for finding in checks if finding is not None]


def format_report(findings, source, data=None):
    """Return a readable report: one line naming ``source`` and the summary, then one line per finding.

    Parameters
    ----------
    findings : list of Finding
    source : str
        The file name shown.
    data : ptycholib.data.PtychoData, optional
        Adds the data set's size and bad-pixel count to the first line.
    """
    size = ""
    if data is not None:
        n = data.patch_size
        bad = 0 if data.bad_pixels is None else int(data.bad_pixels.sum())
        size = f" ({data.n_positions} frames of {n} x {n}, {bad} bad pixels masked)"
    if not findings:
        return f"{source}{size}: no problems found."
    lines = [f"{source}{size}: {len(findings)} kind{'s' if len(findings) > 1 else ''} of problem found:"]
    lines += [f"  - {finding.kind}: {finding.message}" for finding in findings]
    return "\n".join(lines)
