"""Readers and writers of ptychodus's files (SPEC section 10).

Two ways to read a standard ptychodus folder (``diffraction.h5`` + ``product.h5``):

- `load_ptychodus_h5` / `iter_ptychodus_h5` read the pair with h5py alone (the ``ptychodus``
  package is not needed) into `ptycholib.data.PtychoData`, in one piece or in batches;
- `load_reconstruct_input` uses ptychodus's own readers and ``prepare_reconstruct_input``, i.e.
  exactly what ptychodus hands a reconstructor (needs ptychodus 1.7; converted by
  `ptycholib.ptychodus.convert.ptycho_data_from_input`).

`load_ptychodus_npz` reads ptychodus's PtychoPINN training-data export (counts), and
`load_training_data` finds the training data of a ``train`` input folder. `write_history` writes
the ``history.csv`` that ptychodus's ``train`` leaves beside the model.

Pixel convention: ptychodus puts a window's centre at index ``(N - 1) / 2`` of the probe array, we
at ``N // 2`` (SPEC 3), so positions move by ``+0.5`` for even N (`ptychodus_px_to_object_px`).

Every HDF5 dataset is checked before it is read (`ptycholib._io.check_h5_dataset`): no soft or
external links, no external storage, no virtual datasets, plain numeric dtypes, and a declared size
within `ptycholib._io.max_array_bytes`; a truncated or foreign file is one `ValueError` line naming it.

Only numpy and h5py are imported here (h5py when a file is opened); ``ptychodus`` is imported by
`load_reconstruct_input` and, for an HDF5 folder, `load_training_data`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ptycholib._io import check_h5_dataset, format_bytes, max_array_bytes, one_line, open_h5, open_npz
from ptycholib.data import (
    _check_real,
    _construct,
    _first_mode,
    _mode_power_fraction,
    _read_key,
    _require,
    counts_to_amplitudes,
    load_npz,
)
from ptycholib.tracking import write_history  # noqa: F401 - re-exported: the history.csv beside a model

__all__ = [
    "TRAINING_DATA_NAME",
    "check_ptychodus_pair",
    "iter_ptychodus_h5",
    "load_ptychodus_h5",
    "load_ptychodus_npz",
    "load_reconstruct_input",
    "load_training_data",
    "ptychodus_positions_to_px",
    "ptychodus_px_to_object_px",
    "write_history",
]

TRAINING_DATA_NAME = "train_data.npz"
"""File `load_training_data` looks for first in a ``train`` input folder (PtychoPINN's name)."""


# ----------------------------------------------------------------------------------------------
# pixel convention


def ptychodus_px_to_object_px(x_px, y_px, patch_size):
    """Move positions from ptychodus's pixel convention to ours (SPEC section 10).

    ptychodus puts a window's centre at index ``(N - 1) / 2`` of the probe array; we put it at
    ``N // 2`` (SPEC 3). The same object pixel therefore sits ``N // 2 - (N - 1) / 2`` further
    along in our numbers: ``+0.5`` for even N, ``0`` for odd N.

    Parameters
    ----------
    x_px, y_px : ndarray of shape (n_positions,)
        Positions from ``ObjectGeometry.map_probe_positions_to_object_x_px`` / ``_y_px`` (or the
        ``xcoords``/``ycoords`` of ptychodus's training-data NPZ).
    patch_size : int
        N, the side of the diffraction patterns and probe.

    Returns
    -------
    tuple of ndarray of shape (n_positions,), float64

    Examples
    --------
    >>> ptychodus_px_to_object_px(np.array([31.5]), np.array([40.0]), 64)
    (array([32.]), array([40.5]))
    """
    shift = patch_size // 2 - (patch_size - 1) / 2
    return np.asarray(x_px, dtype=np.float64) + shift, np.asarray(y_px, dtype=np.float64) + shift


def ptychodus_positions_to_px(x_m, y_m, *, object_shape, center_m, pixel_size_m, patch_size):
    """Convert ptychodus positions in metres to our object pixels.

    Parameters
    ----------
    x_m, y_m : ndarray of shape (n_positions,)
        Probe positions in metres (world frame).
    object_shape : tuple of int
        ``(rows, cols)`` of the object canvas.
    center_m : tuple of float
        ``(center_x_m, center_y_m)`` of the object.
    pixel_size_m : tuple of float
        ``(pixel_width_m, pixel_height_m)`` of the object.
    patch_size : int
        N.

    Returns
    -------
    tuple of ndarray of shape (n_positions,), float64

    Notes
    -----
    ``x_px = (x_m - center_x_m) / pixel_width_m + (cols - 1) / 2 + (N // 2 - (N - 1) / 2)``: the
    first two terms are ptychodus's ``map_probe_positions_to_object_x_px``, the last moves to our
    window-centre convention (`ptychodus_px_to_object_px`).
    """
    rows, cols = object_shape
    center_x_m, center_y_m = center_m
    pixel_width_m, pixel_height_m = pixel_size_m
    x_px = (np.asarray(x_m, dtype=np.float64) - center_x_m) / pixel_width_m + (cols - 1) / 2
    y_px = (np.asarray(y_m, dtype=np.float64) - center_y_m) / pixel_height_m + (rows - 1) / 2
    return ptychodus_px_to_object_px(x_px, y_px, patch_size)


# ----------------------------------------------------------------------------------------------
# ptychodus's PtychoPINN training-data export


def load_ptychodus_npz(path):
    """Load ptychodus's PtychoPINN training-data export (``save_ptychopinn_training_data``).

    The file holds **counts** under ``diff3d`` (bad pixels inpainted, source dtype), the mask under
    ``bad_pixels``, a ``(modes, h, w)`` probe under ``probeGuess``, object layer 0 under
    ``objectGuess`` and positions in ptychodus's pixel convention under ``xcoords``/``ycoords``.

    Returns
    -------
    PtychoData
        Amplitudes ``sqrt(counts)``; positions moved by `ptychodus_px_to_object_px` (+0.5 for even
        N); probe mode 0 (see `ptycholib.data.load_npz` for why); ``bad_pixels`` kept.
    """
    path = Path(path)
    where = path.name
    metadata = {"source": "ptychodus training-data NPZ", "converted_from": "intensity"}
    with open_npz(path, what="ptychodus training-data file") as npz:
        counts = _check_real(_require(npz, "diff3d", where, "it holds the diffraction counts"), "diff3d", where)
        x_px = _require(npz, "xcoords", where, "every pattern needs a position")
        y_px = _require(npz, "ycoords", where, "every pattern needs a position")
        probe_modes = _require(npz, "probeGuess", where, "ptychodus always exports the probe")
        probe, n_modes = _first_mode(probe_modes, where, "probeGuess")
        metadata["probe_modes"] = n_modes
        metadata["probe_mode0_power_fraction"] = _mode_power_fraction(probe_modes)
        fields = {key: _read_key(npz, key, where) for key in ("bad_pixels", "scan_index") if key in npz.files}
        if "objectGuess" in npz.files:
            fields["obj"] = _read_key(npz, "objectGuess", where)
    amplitudes = counts_to_amplitudes(counts, name="diff3d", where=where)
    x_px, y_px = ptychodus_px_to_object_px(x_px, y_px, counts.shape[-1])
    metadata["measurement"] = "amplitude"
    return _construct(where, amplitudes=amplitudes, x_px=x_px, y_px=y_px, probe=probe, metadata=metadata, **fields)


# ----------------------------------------------------------------------------------------------
# diffraction.h5 + product.h5 with h5py


def _h5_dataset(h5file, key, where, *, kinds="biufc", optional=False):
    import h5py

    link = h5file.get(key, getlink=True)
    if link is None and optional:
        return None
    if isinstance(link, (h5py.SoftLink, h5py.ExternalLink)):
        kind, target = ("a soft link", link.path) if isinstance(link, h5py.SoftLink) else ("an external link", f"{link.filename}:{link.path}")
        raise ValueError(f"'{key}' in {where} is {kind} (to {target}); ptycholib reads only datasets stored in the file.")
    item = h5file.get(key)
    if not isinstance(item, h5py.Dataset):
        found = ", ".join(sorted(h5file.keys())) or "nothing"
        raise ValueError(f"{where} has no '{key}' dataset (found: {found}); is this a ptychodus file?")
    check_h5_dataset(item, where, kinds=kinds)
    n_bytes = int(np.prod(item.shape, dtype=np.float64)) * item.dtype.itemsize
    limit = max_array_bytes()
    if n_bytes > limit:
        raise ValueError(f"'{key}' in {where} declares shape {item.shape} ({format_bytes(n_bytes)}), more than the "
                         f"{format_bytes(limit)} one array may take here (PTYCHOLIB_MAX_ARRAY_BYTES).")
    return item


def _h5_attr(dataset, key, where):
    if key not in dataset.attrs:
        raise ValueError(f"'{dataset.name}' in {where} lacks the attribute '{key}'; is this a ptychodus file?")
    return float(dataset.attrs[key])


def _read_product(product_path, patch_size):
    """Read probe, object, positions (our pixels) and metadata from a ptychodus ``product.h5``."""
    where = Path(product_path).name
    try:
        return _read_product_file(product_path, where, patch_size)
    except OSError as exc:  # a corrupt dataset: h5py's message does not name the file
        if isinstance(exc, (FileNotFoundError, PermissionError)):
            raise
        raise ValueError(f"{where} is corrupt ({one_line(exc)}).") from None


def _read_product_file(product_path, where, patch_size):
    with open_h5(product_path, where, what="ptychodus product file") as h5file:
        obj_dataset = _h5_dataset(h5file, "object", where)
        layers = np.asarray(obj_dataset[()])
        obj = layers if layers.ndim == 2 else layers.reshape((-1,) + layers.shape[-2:])[0]
        center_m = (_h5_attr(obj_dataset, "center_x_m", where), _h5_attr(obj_dataset, "center_y_m", where))
        pixel_size_m = (_h5_attr(obj_dataset, "pixel_width_m", where), _h5_attr(obj_dataset, "pixel_height_m", where))
        probe_dataset = _h5_dataset(h5file, "probe", where)
        probe_modes = np.asarray(probe_dataset[()])
        probe_pixel_m = tuple(
            float(probe_dataset.attrs.get(key, default)) for key, default in zip(("pixel_width_m", "pixel_height_m"), pixel_size_m)
        )
        indexes = np.asarray(_h5_dataset(h5file, "probe_position_indexes", where, kinds="iu")[()])
        x_m = np.asarray(_h5_dataset(h5file, "probe_position_x_m", where, kinds="iuf")[()], dtype=np.float64)
        y_m = np.asarray(_h5_dataset(h5file, "probe_position_y_m", where, kinds="iuf")[()], dtype=np.float64)
        attributes = {key: h5file.attrs[key] for key in ("name", "photon_energy_eV", "detector_object_distance_m") if key in h5file.attrs}
    if not np.allclose(probe_pixel_m, pixel_size_m, rtol=1e-6, atol=0):
        raise ValueError(
            f"probe pixels in {where} are {probe_pixel_m[0]:g} x {probe_pixel_m[1]:g} m but object pixels are "
            f"{pixel_size_m[0]:g} x {pixel_size_m[1]:g} m; resample the probe onto the object grid first."
        )
    # (opr, incoherent, h, w) -> OPR mode 0, incoherent mode 0
    flat_modes = probe_modes.reshape((-1,) + probe_modes.shape[-2:])
    x_px, y_px = ptychodus_positions_to_px(
        x_m, y_m, object_shape=obj.shape, center_m=center_m, pixel_size_m=pixel_size_m, patch_size=patch_size
    )
    metadata = {key: (value.decode() if isinstance(value, bytes) else value) for key, value in attributes.items()}
    metadata.update(
        source="ptychodus diffraction.h5 + product.h5",
        object_pixel_size_m=list(pixel_size_m),
        object_center_m=list(center_m),
        object_layers=int(layers.shape[0]) if layers.ndim == 3 else 1,
        probe_modes=int(flat_modes.shape[0]),
        probe_mode0_power_fraction=_mode_power_fraction(flat_modes),
    )
    return {"probe": flat_modes[0], "obj": obj, "indexes": indexes, "x_px": x_px, "y_px": y_px, "metadata": metadata}


def check_ptychodus_pair(diffraction_path, product_path):
    """Check the structure of a ptychodus ``diffraction.h5`` + ``product.h5`` pair without reading its arrays.

    Run before ptychodus's own readers see the files (``ptycholib ptychodus reconstruct|train``):
    both files must open as HDF5, and every dataset ptycholib or ptychodus reads must exist, be
    stored in the file (no soft or external links, external storage or virtual datasets), hold
    plain numbers and declare a size within `ptycholib._io.max_array_bytes`.

    Raises
    ------
    FileNotFoundError
        A file is missing.
    ValueError
        One line naming the file and the dataset.
    """
    where = Path(diffraction_path).name
    with open_h5(diffraction_path, where, what="ptychodus diffraction file") as h5file:
        patterns = _h5_dataset(h5file, "patterns", where, kinds="biuf")
        if patterns.ndim != 3:
            raise ValueError(f"patterns in {where} have shape {patterns.shape}; expected (M, N, N).")
        _h5_dataset(h5file, "indexes", where, kinds="iu")
        _h5_dataset(h5file, "bad_pixels", where, kinds="biu", optional=True)
    where = Path(product_path).name
    with open_h5(product_path, where, what="ptychodus product file") as h5file:
        for key in ("object", "probe"):
            _h5_dataset(h5file, key, where)
        _h5_dataset(h5file, "probe_position_indexes", where, kinds="iu")
        for key in ("probe_position_x_m", "probe_position_y_m"):
            _h5_dataset(h5file, key, where, kinds="iuf")


def _pair_by_index(pattern_indexes, position_indexes, x_px, y_px, where):
    """Match each pattern to the position with its index (duplicate positions averaged)."""
    unique, inverse = np.unique(position_indexes, return_inverse=True)
    counts = np.bincount(inverse)
    x_mean = np.bincount(inverse, weights=x_px) / counts
    y_mean = np.bincount(inverse, weights=y_px) / counts
    slot = np.clip(np.searchsorted(unique, pattern_indexes), 0, len(unique) - 1)
    found = unique[slot] == pattern_indexes
    if not found.all():
        missing = pattern_indexes[~found]
        warnings.warn(
            f"{missing.size} of {found.size} patterns in {where} have no position in the product "
            f"(indexes {missing[:5].tolist()}{' ...' if missing.size > 5 else ''}); they are skipped.",
            stacklevel=3,
        )
    return found, x_mean[slot], y_mean[slot]


class _PtychodusPair:
    """Open a ptychodus diffraction/product pair and read patterns by index ranges."""

    def __init__(self, diffraction_path, product_path):
        self.where = Path(diffraction_path).name
        self.file = open_h5(diffraction_path, self.where, what="ptychodus diffraction file")
        try:
            self.patterns = _h5_dataset(self.file, "patterns", self.where, kinds="biuf")
            if self.patterns.ndim != 3:
                raise ValueError(f"patterns in {self.where} have shape {self.patterns.shape}; expected (M, N, N).")
            indexes = np.asarray(_h5_dataset(self.file, "indexes", self.where, kinds="iu")[()])
            bad_pixels = _h5_dataset(self.file, "bad_pixels", self.where, kinds="biu", optional=True)
            self.bad_pixels = None if bad_pixels is None else np.asarray(bad_pixels[()], dtype=bool)
            if self.bad_pixels is not None and self.bad_pixels.shape != self.patterns.shape[-2:]:
                raise ValueError(f"bad_pixels in {self.where} has shape {self.bad_pixels.shape}; the patterns are "
                                 f"{self.patterns.shape[-2:]}.")
            product = _read_product(product_path, self.patterns.shape[-1])
            self.found, self.x_px, self.y_px = _pair_by_index(
                indexes, product.pop("indexes"), product.pop("x_px"), product.pop("y_px"), self.where
            )
            self.product = product
        except BaseException:
            self.file.close()
            raise

    def read(self, start, stop):
        keep = self.found[start:stop]
        try:
            counts = self.patterns[start:stop][keep]
        except OSError as exc:  # a corrupt chunk: h5py's message does not name the file
            raise ValueError(f"patterns {start}:{stop} in {self.where} are unreadable ({one_line(exc)}).") from None
        if self.bad_pixels is not None:
            counts[..., self.bad_pixels] = 0
        amplitudes = counts_to_amplitudes(counts, name="patterns", where=self.where)
        return amplitudes, self.x_px[start:stop][keep], self.y_px[start:stop][keep]

    def close(self):
        self.file.close()


def _pair_data(pair, amplitudes, x_px, y_px, extra_metadata=None):
    metadata = dict(pair.product["metadata"], measurement="amplitude", converted_from="intensity")
    metadata.update(extra_metadata or {})
    return _construct(
        pair.where,
        amplitudes=amplitudes,
        x_px=x_px,
        y_px=y_px,
        probe=pair.product["probe"],
        obj=pair.product["obj"],
        bad_pixels=pair.bad_pixels,
        metadata=metadata,
    )


def load_ptychodus_h5(diffraction_path, product_path, *, batch_size=None):
    """Load a ptychodus ``diffraction.h5`` + ``product.h5`` pair with h5py (no ptychodus import).

    Parameters
    ----------
    diffraction_path : str or Path
        ``indexes`` (M,), ``patterns`` (M, N, N) counts in any dtype, ``bad_pixels`` (N, N) bool.
    product_path : str or Path
        ``probe`` (opr, modes, N, N), ``object`` (layers, rows, cols) with ``center_x_m``,
        ``center_y_m``, ``pixel_width_m``, ``pixel_height_m`` attributes, and
        ``probe_position_indexes``, ``probe_position_x_m``, ``probe_position_y_m``.
    batch_size : int, optional
        Read and convert this many patterns at a time, so that peak memory is the float32 result
        plus one batch of raw counts. ``None`` reads all patterns at once.

    Returns
    -------
    PtychoData
        Amplitudes (bad pixels set to 0 before conversion, mask kept in ``bad_pixels``), positions
        in our object pixels (`ptychodus_positions_to_px`), probe OPR mode 0 / incoherent mode 0,
        object layer 0, and metadata with pixel size, centre and energy.

    Notes
    -----
    Patterns are paired with positions by index, as ptychodus does: duplicate position indexes are
    averaged; patterns whose index has no position are skipped with a warning (ptychodus would
    interpolate positions missing inside the index range; we do not invent positions).

    See Also
    --------
    iter_ptychodus_h5 : the same data in batches, for inputs larger than memory.
    """
    pair = _PtychodusPair(diffraction_path, product_path)
    try:
        total = pair.patterns.shape[0]
        step = total if not batch_size else _positive_batch(batch_size)
        size = pair.patterns.shape[-1]
        amplitudes = np.empty((int(pair.found.sum()), size, size), dtype=np.float32)
        filled = 0
        for start in range(0, total, max(step, 1)):
            batch, _, _ = pair.read(start, start + step)
            amplitudes[filled : filled + len(batch)] = batch
            filled += len(batch)
        return _pair_data(pair, amplitudes, pair.x_px[pair.found], pair.y_px[pair.found])
    finally:
        pair.close()


def iter_ptychodus_h5(diffraction_path, product_path, *, batch_size=1024):
    """Yield a ptychodus pair as consecutive `PtychoData` batches of at most ``batch_size`` patterns.

    Each batch carries the full probe and object (shared, not copied) and its own positions;
    ``metadata["pattern_range"]`` gives the ``[start, stop)`` rows of ``patterns`` it came from.
    The file stays open while the generator runs. See `load_ptychodus_h5` for the conventions.
    """
    batch_size = _positive_batch(batch_size)
    pair = _PtychodusPair(diffraction_path, product_path)
    try:
        total = pair.patterns.shape[0]
        for start in range(0, total, batch_size):
            stop = min(start + batch_size, total)
            amplitudes, x_px, y_px = pair.read(start, stop)
            if len(amplitudes):
                yield _pair_data(pair, amplitudes, x_px, y_px, {"pattern_range": [start, stop]})
    finally:
        pair.close()


def _positive_batch(batch_size):
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}.")
    return int(batch_size)


# ----------------------------------------------------------------------------------------------
# through ptychodus's own readers, and the files of ptychodus's train action


def load_reconstruct_input(folder):
    """Read a standard ptychodus folder (``diffraction.h5`` + ``product.h5``) into a ``ReconstructInput``.

    Uses ptychodus's own readers and ``prepare_reconstruct_input`` (patterns paired with positions
    by scan index), i.e. exactly what ptychodus hands a reconstructor. Needs ptychodus 1.7.
    """
    from ptycholib.ptychodus._upstream import ptychodus_io, prepare_reconstruct_input

    folder = Path(folder)
    missing = [name for name in ("diffraction.h5", "product.h5") if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {' and '.join(missing)}; a ptychodus input folder holds diffraction.h5 and product.h5.")
    assembled = ptychodus_io.load_diffraction_data(folder / "diffraction.h5")
    product = ptychodus_io.load_product(folder / "product.h5")
    return prepare_reconstruct_input(assembled, product)


def load_training_data(folder):
    """Find and read the training data of a ptychodus ``train`` input folder.

    Parameters
    ----------
    folder : str or Path
        Holds `TRAINING_DATA_NAME` (ptycholib's NPZ contract, as ``export training data`` writes
        it, or ptychodus's PtychoPINN export of counts, told apart by its ``bad_pixels`` key and
        missing ``metadata``) or, failing that, ``diffraction.h5`` + ``product.h5``, read as
        ptychodus reads them (`load_reconstruct_input`, needs ptychodus).

    Returns
    -------
    tuple of (PtychoData, Path)
        The data and the file it came from.

    Raises
    ------
    FileNotFoundError
        When the folder holds neither.
    """
    folder = Path(folder)
    npz_path = folder / TRAINING_DATA_NAME
    if npz_path.is_file():
        with open_npz(npz_path, what="training data file") as npz:
            keys = set(npz.files)
        if "metadata" not in keys and "bad_pixels" in keys:
            return load_ptychodus_npz(npz_path), npz_path  # ptychodus's PtychoPINN export: counts
        return load_npz(npz_path), npz_path
    if (folder / "diffraction.h5").is_file() and (folder / "product.h5").is_file():
        from ptycholib.ptychodus.convert import ptycho_data_from_input

        return ptycho_data_from_input(load_reconstruct_input(folder)), folder / "diffraction.h5"
    raise FileNotFoundError(
        f"no training data in {folder}: expected {TRAINING_DATA_NAME} (ptycholib's NPZ contract, what "
        f"'export training data' writes) or diffraction.h5 + product.h5 (a ptychodus input folder)."
    )
