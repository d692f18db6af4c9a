"""The data contract: `PtychoData` and its NPZ format (SPEC section 5).

A data set holds diffraction **amplitudes** ``a = sqrt(counts)`` (float32, DC at the array centre),
absolute scan positions in object pixels (SPEC section 3), the probe on the object pixel grid and,
for simulations, the ground-truth object. Everything that reads a file ends in a `PtychoData`, whose
constructor validates shapes, sizes and values, so a data set that exists is a valid one.

Measurement domain (SPEC 4.1): integer arrays are counts by definition; a float array is read as
``"amplitude"`` or ``"intensity"`` (counts) from the file's metadata or the caller's
``measurement=`` argument, never guessed. ptychodus always stores counts; its files are read by
`ptycholib.ptychodus.files`.

Files are read with ``allow_pickle=False`` after `ptycholib._io.open_npz` has checked the zip directory
and every array header (no duplicate members, no object arrays, declared sizes within bounds), and
written atomically (temporary file, then rename).

Several objects in one file (``simulate --n-objects K``): the K objects are tiles of one mosaic canvas
``objectGuess``, side by side with a gap of vacuum (modulus 1, phase 0) so that no N x N window
touches two tiles; positions are absolute on the mosaic, and the optional key ``object_index``
``(M,)`` int64 names each position's tile (absent: every position belongs to object 0). Grouping
never mixes objects (`ptycholib.grouping.group_neighbors`). Readers that ignore ``object_index`` see
one large object, which is what reconstruction and evaluation use.

HDF5 variant (``.h5``, for scans larger than memory): the same keys as HDF5 datasets, ``diff3d``
chunked along the patterns, and ``metadata`` as a JSON root attribute; `ptycholib.stream` reads and
writes it (and memory-maps the stored members of an NPZ). docs/cluster.md describes both.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ptycholib._checks import check_finite, check_nonnegative, check_same_length, check_shape, describe
from ptycholib._io import atomic_write, open_npz

__all__ = [
    "PtychoData",
    "SUPPORTED_PATTERN_SIZES",
    "counts_to_amplitudes",
    "amplitudes_to_counts",
    "load_npz",
    "save_npz",
]

SUPPORTED_PATTERN_SIZES = (64, 128, 256)
"""Pattern sizes N the network supports (SPEC section 3)."""

_MEASUREMENTS = ("amplitude", "intensity")

# field name -> NPZ key; messages name both so that a user finds the array in either world
_NPZ_KEYS = {
    "amplitudes": "diff3d",
    "x_px": "xcoords",
    "y_px": "ycoords",
    "probe": "probeGuess",
    "obj": "objectGuess",
    "scan_index": "scan_index",
    "object_index": "object_index",
    "bad_pixels": "bad_pixels",
    "metadata": "metadata",
}

_COUNTS_HINT = (
    'If the array holds counts (intensities), convert it with counts_to_amplitudes or load the file '
    'with measurement="intensity".'
)


def _label(field_name):
    key = _NPZ_KEYS[field_name]
    return field_name if key == field_name else f"{field_name} ({key})"


def _json_default(value):
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _as_real(values, dtype, field_name):
    array = np.asarray(values)
    if array.dtype.kind == "c":
        raise ValueError(
            f"{_label(field_name)} is complex ({array.dtype}); it must be real. Pass the modulus "
            f"(np.abs) if the array holds complex far fields."
        )
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{_label(field_name)} must be numeric; got dtype {array.dtype}.")
    return array.astype(dtype, copy=False)


def _as_complex(values, field_name):
    array = np.asarray(values)
    if array.dtype.kind not in "biufc":
        raise ValueError(f"{_label(field_name)} must be numeric; got dtype {array.dtype}.")
    return array.astype(np.complex64, copy=False)


@dataclass(frozen=True, eq=False)
class PtychoData:
    """A ptychography data set: diffraction amplitudes, positions, probe and optional object.

    Construction validates everything (see Raises); arrays are converted to the dtypes below.
    Treat the arrays as read-only: derive new data sets with `subset` or `dataclasses.replace`.

    Parameters
    ----------
    amplitudes : ndarray of shape (n_positions, N, N), float32
        Diffraction amplitudes ``sqrt(counts)``, DC at index ``N // 2`` (fftshifted), >= 0.
        N must be one of `SUPPORTED_PATTERN_SIZES`.
    x_px, y_px : ndarray of shape (n_positions,), float64
        Absolute window centres in object pixels, x along columns and y along rows (SPEC 3).
    probe : ndarray of shape (N, N), complex64
        Probe on the object pixel grid.
    obj : ndarray of shape (rows, cols), complex64, optional
        Object canvas (ground truth for simulations). When given, every window centre must lie on
        the canvas: ``0 <= x_px <= cols - 1`` and ``0 <= y_px <= rows - 1``.
    scan_index : ndarray of shape (n_positions,), int64, optional
        Which object each pattern belongs to (PtychoPINN's convention); zeros when omitted.
        Carried through files, not used by ptycholib (see ``object_index``).
    bad_pixels : ndarray of shape (N, N), bool, optional
        ``True`` marks detector pixels that were not measured (dead pixels, beamstop, hot pixels).
        Their amplitudes are set to 0 here (whatever the file held never reaches the network), and
        training leaves them out of the loss and of the intensity-scale fit.
    metadata : dict
        JSON-serialisable provenance (``nphotons``, ``generator``, ``seed``, ...). NumPy scalars are
        converted to Python numbers.
    object_index : ndarray of shape (n_positions,), int64, optional
        Which object (tile of the mosaic ``obj``) each position belongs to, >= 0; groups of
        neighbours never mix objects. ``None`` (the NPZ key absent) means one object: all 0.

    Raises
    ------
    ValueError
        When shapes disagree, N is not supported, values are NaN/Inf, amplitudes are negative,
        positions fall outside the object canvas, the probe is zero or the metadata is not JSON.
        The message names the field and its NPZ key (for example ``amplitudes (diff3d)``).

    Examples
    --------
    >>> data = PtychoData(np.ones((2, 64, 64)), [32.0, 40.0], [32.0, 32.0], np.ones((64, 64)))
    >>> data.n_positions, data.patch_size, data.positions.tolist()
    (2, 64, [[32.0, 32.0], [40.0, 32.0]])
    """

    amplitudes: np.ndarray
    x_px: np.ndarray
    y_px: np.ndarray
    probe: np.ndarray
    obj: np.ndarray | None = None
    scan_index: np.ndarray | None = None
    bad_pixels: np.ndarray | None = None
    metadata: dict = field(default_factory=dict)
    object_index: np.ndarray | None = None

    def __post_init__(self):
        put = object.__setattr__
        amplitudes = _as_real(self.amplitudes, np.float32, "amplitudes")
        sizes = check_shape(amplitudes, ("n_positions", "N", "N"), _label("amplitudes"))
        n_positions, patch_size = sizes["n_positions"], sizes["N"]
        if n_positions == 0:
            raise ValueError(f"{_label('amplitudes')} holds no patterns; a data set needs at least one.")
        if patch_size not in SUPPORTED_PATTERN_SIZES:
            supported = ", ".join(str(n) for n in SUPPORTED_PATTERN_SIZES)
            raise ValueError(
                f"{_label('amplitudes')} has patterns of {patch_size} x {patch_size} pixels; supported "
                f"sizes N are {supported}. Crop or pad the patterns around the DC pixel to one of them."
            )
        check_finite(amplitudes, _label("amplitudes"))
        check_nonnegative(amplitudes, _label("amplitudes"), quantity="amplitudes", hint=_COUNTS_HINT)
        put(self, "amplitudes", amplitudes)

        for name in ("x_px", "y_px"):
            coords = _as_real(getattr(self, name), np.float64, name)
            check_shape(coords, ("n_positions",), _label(name))
            check_same_length(coords, _label(name), amplitudes, f"{_label('amplitudes')} ({n_positions} patterns)")
            check_finite(coords, _label(name))
            put(self, name, coords)

        probe = _as_complex(self.probe, "probe")
        if probe.ndim == 3:
            raise ValueError(
                f"{_label('probe')} has shape {probe.shape}, a leading modes axis; PtychoData takes one "
                f"(N, N) probe. Pass probe[0] (the dominant mode) or load the file with load_npz, which "
                f"keeps mode 0."
            )
        check_shape(probe, ("N", "N"), _label("probe"), sizes={"N": patch_size})
        check_finite(probe, _label("probe"))
        if not np.any(probe):
            raise ValueError(f"{_label('probe')} is zero everywhere; a data set needs an illuminating probe.")
        put(self, "probe", probe)

        if self.obj is not None:
            obj = _as_complex(self.obj, "obj")
            check_shape(obj, ("rows", "cols"), _label("obj"))
            check_finite(obj, _label("obj"))
            put(self, "obj", obj)
            self._check_positions_on_canvas()

        if self.scan_index is None:
            put(self, "scan_index", np.zeros(n_positions, dtype=np.int64))
        else:
            scan_index = np.asarray(self.scan_index)
            if scan_index.dtype.kind not in "iub":
                raise ValueError(f"{_label('scan_index')} must hold integers; got dtype {scan_index.dtype}.")
            check_shape(scan_index, ("n_positions",), _label("scan_index"))
            check_same_length(scan_index, _label("scan_index"), amplitudes, f"{_label('amplitudes')} ({n_positions} patterns)")
            put(self, "scan_index", scan_index.astype(np.int64, copy=False))

        if self.object_index is not None:
            object_index = np.asarray(self.object_index)
            if object_index.dtype.kind not in "iu":
                raise ValueError(
                    f"{_label('object_index')} must hold integers (the object of each position); got dtype "
                    f"{object_index.dtype}."
                )
            check_shape(object_index, ("n_positions",), _label("object_index"))
            check_same_length(
                object_index, _label("object_index"), amplitudes, f"{_label('amplitudes')} ({n_positions} patterns)"
            )
            negative = int(np.sum(object_index < 0))
            if negative:
                raise ValueError(
                    f"{_label('object_index')} has {negative} negative values; object numbers must be >= 0."
                )
            put(self, "object_index", object_index.astype(np.int64, copy=False))

        if self.bad_pixels is not None:
            bad_pixels = np.asarray(self.bad_pixels)
            if bad_pixels.dtype.kind not in "biu" or not np.isin(bad_pixels, (0, 1)).all():
                raise ValueError(
                    f"{_label('bad_pixels')} must be a boolean mask (True = not measured); got dtype "
                    f"{bad_pixels.dtype}."
                )
            check_shape(bad_pixels, ("N", "N"), _label("bad_pixels"), sizes={"N": patch_size})
            bad_pixels = bad_pixels.astype(bool, copy=False)
            put(self, "bad_pixels", bad_pixels)
            if np.any(self.amplitudes[:, bad_pixels]):
                cleaned = self.amplitudes.copy()
                cleaned[:, bad_pixels] = 0.0
                put(self, "amplitudes", cleaned)

        if not isinstance(self.metadata, dict):
            raise ValueError(f"metadata must be a dict; got {type(self.metadata).__name__}.")
        try:
            metadata = json.loads(json.dumps(self.metadata, default=_json_default, allow_nan=False))
        except (TypeError, ValueError) as error:
            raise ValueError(f"metadata must be JSON-serialisable (it is stored as a JSON string): {error}.") from None
        put(self, "metadata", metadata)

    def _check_positions_on_canvas(self):
        rows, cols = self.obj.shape
        outside = (self.x_px < 0) | (self.x_px > cols - 1) | (self.y_px < 0) | (self.y_px > rows - 1)
        count = int(outside.sum())
        if count:
            first = int(np.argmax(outside))
            raise ValueError(
                f"{_label('x_px')}/{_label('y_px')}: {count} of {outside.size} window centres lie outside "
                f"the object canvas ({_label('obj')} has {rows} rows and {cols} cols, so 0 <= x <= "
                f"{cols - 1} and 0 <= y <= {rows - 1}); the first is pattern {first} at "
                f"(x={self.x_px[first]:g}, y={self.y_px[first]:g}). Check that positions are in object "
                f"pixels (not metres) and that x and y are not swapped."
            )

    @property
    def n_positions(self):
        """Number of patterns (and positions)."""
        return self.amplitudes.shape[0]

    @property
    def patch_size(self):
        """N, the side of each pattern and of the probe."""
        return self.amplitudes.shape[-1]

    @property
    def positions(self):
        """Positions as an ``(n_positions, 2)`` float64 array, last axis ``(x, y)``."""
        return np.stack([self.x_px, self.y_px], axis=1)

    def subset(self, indices):
        """Return a data set with the patterns ``indices`` (an index array or boolean mask).

        Probe, object, bad pixels and metadata are shared with this data set.
        """
        indices = np.asarray(indices)
        return dataclasses.replace(
            self,
            amplitudes=self.amplitudes[indices],
            x_px=self.x_px[indices],
            y_px=self.y_px[indices],
            scan_index=self.scan_index[indices],
            object_index=None if self.object_index is None else self.object_index[indices],
        )


def counts_to_amplitudes(counts, *, name="counts", where=""):
    """Convert measured counts to amplitudes ``sqrt(counts)``.

    Parameters
    ----------
    counts : ndarray of shape (..., N, N), integer or float
        Photon counts, >= 0.
    name, where : str
        Used in error messages (the array's key and file).

    Returns
    -------
    ndarray of shape (..., N, N), float32

    Raises
    ------
    ValueError
        If counts are complex, NaN/Inf or negative.

    Examples
    --------
    >>> counts_to_amplitudes(np.array([0, 4, 9])).tolist()
    [0.0, 2.0, 3.0]
    """
    counts = np.asarray(counts)
    if counts.dtype.kind not in "biuf":
        raise ValueError(f"{describe(name, where)} must hold real counts; got dtype {counts.dtype}.")
    check_finite(counts, name, where=where)
    check_nonnegative(
        counts,
        name,
        where=where,
        quantity="counts",
        hint="Clip background-subtracted data at 0 or mark those pixels in bad_pixels.",
    )
    amplitudes = counts.astype(np.float32)
    return np.sqrt(amplitudes, out=amplitudes)


def amplitudes_to_counts(amplitudes):
    """Convert amplitudes back to counts ``a**2`` (float32; round for integer counts).

    Examples
    --------
    >>> amplitudes_to_counts(np.array([0.0, 2.0, 3.0])).tolist()
    [0.0, 4.0, 9.0]
    """
    amplitudes = np.asarray(amplitudes, dtype=np.float32)
    check_nonnegative(amplitudes, "amplitudes", quantity="amplitudes")
    return np.square(amplitudes)


# ----------------------------------------------------------------------------------------------
# NPZ contract


def _construct(where, **fields):
    try:
        return PtychoData(**fields)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


def _first_mode(probe, where, key):
    probe = np.asarray(probe)
    if probe.ndim == 3:
        return probe[0], probe.shape[0]
    if probe.ndim != 2:
        raise ValueError(f"{key} in {where} has shape {probe.shape}; expected (N, N) or (modes, N, N).")
    return probe, 1


def _mode_power_fraction(probe_modes):
    power = np.sum(np.abs(np.asarray(probe_modes)) ** 2, axis=(-2, -1))
    return float(power.reshape(-1)[0] / power.sum()) if power.sum() > 0 else 1.0


def _read_key(npz, key, where):
    try:
        return npz[key]
    except ValueError as error:  # an object array refused by allow_pickle=False
        raise ValueError(
            f"{key} in {where} is a pickled object array ({error}); ptycholib never unpickles. Re-save "
            f"the file with plain arrays (metadata as a JSON string)."
        ) from None


def _check_real(array, key, where):
    """Refuse a pattern array that is not real numbers (strings, complex) before any arithmetic on it."""
    if array.dtype.kind not in "biuf":
        kind = "complex" if array.dtype.kind == "c" else "not numeric"
        raise ValueError(f"{key} in {where} has dtype {array.dtype} ({kind}); patterns must be real numbers (counts or amplitudes).")
    return array


def _require(npz, key, where, why):
    if key not in npz.files:
        found = ", ".join(sorted(npz.files)) or "nothing"
        raise ValueError(f"{where} has no '{key}' array (found: {found}); {why}.")
    return _read_key(npz, key, where)


def _resolve_measurement(patterns, key, where, measurement, file_measurement):
    for value, origin in ((measurement, "measurement"), (file_measurement, f"metadata 'measurement' in {where}")):
        if value is not None and value not in _MEASUREMENTS:
            raise ValueError(f'{origin} is {value!r}; use "amplitude" or "intensity" (counts).')
    if patterns.dtype.kind in "biu":
        if measurement == "amplitude":
            raise ValueError(
                f'{key} in {where} is {patterns.dtype}, so it holds counts by definition (SPEC 4.1); '
                f'drop measurement="amplitude" (or pass measurement="intensity").'
            )
        return "intensity"
    if measurement is not None and file_measurement is not None and measurement != file_measurement:
        warnings.warn(
            f'{where} says its {key} holds {file_measurement}s but the caller passed '
            f'measurement="{measurement}"; using the caller\'s choice.',
            stacklevel=3,
        )
    chosen = measurement or file_measurement
    if chosen is None:
        raise ValueError(
            f'{key} in {where} is {patterns.dtype} and the file does not say whether it holds amplitudes '
            f'(sqrt of counts, the PtychoPINN convention) or intensities (counts, what ptychodus exports). '
            f'Pass measurement="amplitude" or measurement="intensity".'
        )
    if chosen == "amplitude":
        sample = patterns[:16]
        if sample.size and float(sample.max()) > 1 and np.array_equal(sample, np.round(sample)):
            warnings.warn(
                f"{key} in {where} is read as amplitudes but holds whole numbers only (max "
                f"{float(sample.max()):g}), which looks like counts; if so, pass "
                f'measurement="intensity".',
                stacklevel=3,
            )
    return chosen


def _read_metadata(npz, where):
    if "metadata" not in npz.files:
        return {}
    raw = _read_key(npz, "metadata", where)
    try:
        metadata = json.loads(str(raw[()]))
    except json.JSONDecodeError as error:
        raise ValueError(f"metadata in {where} is not a JSON string ({error}).") from None
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata in {where} must be a JSON object; got {type(metadata).__name__}.")
    return metadata


def load_npz(path, *, measurement=None):
    """Load a data set in the NPZ contract of SPEC section 5.

    Parameters
    ----------
    path : str or Path
        NPZ file with ``diff3d`` (or ``diffraction``), ``xcoords``, ``ycoords``, ``probeGuess`` and
        optionally ``objectGuess``, ``scan_index``, ``object_index``, ``bad_pixels`` and a JSON
        ``metadata`` string.
    measurement : {"amplitude", "intensity"}, optional
        How to read a float pattern array; overrides the file's metadata (with a warning when they
        disagree). Integer arrays are counts and need no argument.

    Returns
    -------
    PtychoData
        With amplitudes; ``metadata["measurement"]`` is ``"amplitude"`` and
        ``metadata["converted_from"]`` is ``"intensity"`` when counts were converted.

    Notes
    -----
    A probe with a leading modes axis ``(modes, N, N)`` keeps **mode 0**, the dominant mode of an
    orthogonalised mode set (ptychodus and pty-chi order modes by power); the number of modes and
    mode 0's share of the power go into the metadata. The file is opened with
    ``allow_pickle=False``: a pickled ``metadata`` is an error, and PtychoPINN's pickled
    ``_metadata`` is skipped with a warning.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        For a file that is empty, truncated, not an NPZ or refused by `ptycholib._io.open_npz`
        (duplicate members, pickled arrays, declared sizes beyond the limit), a missing key, a
        pattern array that is not real numbers, an unknown measurement domain, or any validation
        failure of `PtychoData`; the message names the key and the file.
    """
    path = Path(path)
    where = path.name
    with open_npz(path, what="data file", unread=("_metadata",)) as npz:
        keys = set(npz.files)
        if {"diff3d", "diffraction"} <= keys:
            raise ValueError(f"{where} has both 'diff3d' and 'diffraction'; keep one pattern array.")
        pattern_key = "diffraction" if "diffraction" in keys else "diff3d"
        patterns = _check_real(_require(npz, pattern_key, where, "it holds the diffraction patterns"), pattern_key, where)
        metadata = _read_metadata(npz, where)
        if "_metadata" in keys:
            warnings.warn(f"skipping _metadata in {where}: a pickled object array, which ptycholib never reads.", stacklevel=2)
        fields = {
            "x_px": _require(npz, "xcoords", where, "every pattern needs a position"),
            "y_px": _require(npz, "ycoords", where, "every pattern needs a position"),
        }
        probe, n_modes = _first_mode(_require(npz, "probeGuess", where, "the probe is part of the data contract"), where, "probeGuess")
        if n_modes > 1:
            metadata["probe_modes"] = n_modes
            metadata["probe_mode0_power_fraction"] = _mode_power_fraction(npz["probeGuess"])
        for key, name in (
            ("objectGuess", "obj"), ("scan_index", "scan_index"), ("object_index", "object_index"),
            ("bad_pixels", "bad_pixels"),
        ):  # fmt: skip
            if key in keys:
                fields[name] = _read_key(npz, key, where)
    domain = _resolve_measurement(patterns, pattern_key, where, measurement, metadata.get("measurement"))
    if domain == "intensity":
        patterns = counts_to_amplitudes(patterns, name=pattern_key, where=where)
        metadata["converted_from"] = "intensity"
    metadata["measurement"] = "amplitude"
    return _construct(where, amplitudes=patterns, probe=probe, metadata=metadata, **fields)


def save_npz(data, path):
    """Write a data set in the NPZ contract, atomically (temporary file in the same folder, then rename).

    Keys: ``diff3d`` (amplitudes), ``xcoords``, ``ycoords`` (plus ``xcoords_start`` and
    ``ycoords_start``, equal to them, which PtychoPINN readers expect), ``probeGuess``,
    ``scan_index``, ``objectGuess``, ``object_index`` and ``bad_pixels`` when present, and ``metadata`` as a JSON
    string with ``measurement="amplitude"``. No pickles. If writing fails, an existing file at
    ``path`` is left untouched and no partial file remains.

    Parameters
    ----------
    data : PtychoData
    path : str or Path
        Destination; written exactly there (no ``.npz`` is appended).

    Returns
    -------
    Path
        ``path``.
    """
    if not isinstance(data, PtychoData):
        raise TypeError(f"save_npz takes a PtychoData; got {type(data).__name__}.")
    path = Path(path)
    metadata = dict(data.metadata, measurement="amplitude")
    arrays = {
        "diff3d": data.amplitudes,
        "xcoords": data.x_px,
        "ycoords": data.y_px,
        "xcoords_start": data.x_px,
        "ycoords_start": data.y_px,
        "probeGuess": data.probe,
        "scan_index": data.scan_index,
        "metadata": np.array(json.dumps(metadata, allow_nan=False)),
    }
    if data.obj is not None:
        arrays["objectGuess"] = data.obj
    if data.bad_pixels is not None:
        arrays["bad_pixels"] = data.bad_pixels
    if data.object_index is not None:
        arrays["object_index"] = data.object_index
    with atomic_write(path, "wb") as handle:
        np.savez(handle, **arrays)
    return path
