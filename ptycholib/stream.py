"""Scans larger than memory: diffraction patterns read in chunks from NPZ (memory-mapped) or HDF5.

A `PatternSource` holds what is small in memory (positions, probe, object, metadata) and reads the
patterns on demand, validated and converted to amplitudes chunk by chunk. `open_patterns` opens

- an **NPZ** in the contract of `ptycholib.data` (SPEC section 5). An ``.npz`` is a zip archive:
  a member stored without compression (``np.savez``, what `ptycholib.data.save_npz` writes) is
  memory-mapped at its offset inside the zip, so any rows are read directly; a compressed member
  (``np.savez_compressed``) cannot be mapped and is decompressed as a stream: reading forward is
  fine, jumping backwards decompresses again from the start, so re-save it uncompressed or as HDF5
  before training from it;
- an **HDF5 variant of the contract** (``.h5`` / ``.hdf5``, written by `save_h5` /
  `H5PatternWriter`): datasets named like the NPZ keys (``diff3d``, ``xcoords``, ``ycoords``,
  ``probeGuess``, optional ``objectGuess``, ``scan_index``, ``object_index``, ``bad_pixels``) and
  the JSON ``metadata`` as a root attribute;
- a **ptychodus** ``diffraction.h5`` (with ``product.h5`` beside it) or the folder holding the pair,
  read as `ptycholib.ptychodus.files.load_ptychodus_h5` reads it (counts, bad pixels set to 0,
  positions converted to our pixels).

`should_stream` decides between the in-memory path (small scans, the default) and streaming (above
`STREAM_THRESHOLD_BYTES` of float32 amplitudes). `ptycholib.chunked` reconstructs from a source
chunk by chunk; `StreamedGroups` feeds training batches read from the file, in the batch order of
`ptycholib.batching` (see docs/cluster.md, "Large scans").
"""

from __future__ import annotations

import json
import mmap
import os
import types
import warnings
import zipfile
from pathlib import Path

import numpy as np

from ptycholib import _io
from ptycholib import data as data_io
from ptycholib import forward, grouping
from ptycholib._checks import check_finite, check_nonnegative, check_same_length, check_shape

__all__ = [
    "STREAM_THRESHOLD_BYTES",
    "DEFAULT_CHUNK_SIZE",
    "PatternSource",
    "open_patterns",
    "should_stream",
    "scan_statistics",
    "StreamedGroups",
    "save_h5",
    "load_h5",
    "load_scan",
    "open_scan",
    "H5PatternWriter",
]

STREAM_THRESHOLD_BYTES = 2**30
"""Scans whose float32 amplitudes exceed this (1 GiB, about 65 000 patterns at N = 64) stream by default."""

DEFAULT_CHUNK_SIZE = 2048
"""Groups read and predicted per chunk when streaming (about 100 MB of patterns, inputs and patches at N = 64)."""

_H5_SUFFIXES = (".h5", ".hdf5")


# ----------------------------------------------------------------------------------------------
# raw readers: rows of a (M, N, N) array on disk


def _stored_member_offset(path, info):
    """Byte offset of an uncompressed zip member's data inside the zip file (after its local header)."""
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        header = handle.read(30)
        if header[:4] != b"PK\x03\x04":
            raise ValueError(f"{Path(path).name}: member {info.filename} has no local zip header.")
        name_length = int.from_bytes(header[26:28], "little")
        extra_length = int.from_bytes(header[28:30], "little")
        return info.header_offset + 30 + name_length + extra_length


class _ZipStreamRows:
    """Rows of a compressed .npy member, decompressed as a stream (forward reads are cheap)."""

    def __init__(self, path, member):
        self.archive = zipfile.ZipFile(path)
        self.handle = self.archive.open(member)
        self.shape, self.dtype, _, fortran = _io._npy_header(self.handle, member[:-4], Path(path).name)
        if self.dtype.hasobject:
            self.close()
            raise ValueError(f"{member} in {Path(path).name} is a pickled object array; ptycholib never unpickles.")
        if fortran:
            self.close()
            raise ValueError(f"{Path(path).name}: {member} is stored in Fortran order; re-save it with np.savez.")
        self.start = self.handle.tell()
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self.ndim = len(self.shape)

    def __getitem__(self, rows):
        rows = np.arange(self.shape[0])[rows] if isinstance(rows, slice) else np.asarray(rows)
        out = np.empty((len(rows),) + tuple(self.shape[1:]), dtype=self.dtype)
        if not len(rows):
            return out
        # read each run of consecutive rows with one seek
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        for run_start, run in zip(np.r_[0, breaks], np.split(rows, breaks)):
            self.handle.seek(self.start + int(run[0]) * self.row_bytes)
            buffer = self.handle.read(len(run) * self.row_bytes)
            values = np.frombuffer(buffer, dtype=self.dtype)
            out[run_start : run_start + len(run)] = values.reshape((len(run),) + tuple(self.shape[1:]))
        return out

    def close(self):
        self.handle.close()
        self.archive.close()


def _npz_rows(path, key):
    """A row reader of the NPZ member ``key``: a read-only np.memmap when stored, else a stream."""
    member = f"{key}.npy"
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
        if info.compress_type != zipfile.ZIP_STORED:
            return _ZipStreamRows(path, member), "compressed"
        with archive.open(member) as handle:
            shape, dtype, header_length, fortran = _io._npy_header(handle, key, Path(path).name)
    if dtype.hasobject:
        raise ValueError(f"{key} in {Path(path).name} is a pickled object array; ptycholib never unpickles. Re-save "
                         "the file with plain arrays.")
    if fortran:
        return _ZipStreamRows(path, member), "compressed"
    offset = _stored_member_offset(path, info) + header_length
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape)), "memory-mapped"


def _read_rows(rows, indices):
    """``rows[indices]`` for sorted unique ``indices``: one contiguous read when they are dense."""
    indices = np.asarray(indices, dtype=np.int64)
    if not len(indices):
        return np.asarray(rows[0:0])
    first, last = int(indices[0]), int(indices[-1]) + 1
    if last - first == len(indices):
        return np.asarray(rows[first:last])
    if last - first <= 4 * len(indices):  # a little more read, far fewer calls (h5py point selections are slow)
        return np.asarray(rows[first:last])[indices - first]
    return np.asarray(rows[indices])


def _release_pages(rows):
    """Drop a memory map's pages from this process once read (they stay in the page cache).

    Touched pages of a file mapping count in the process's resident memory until the kernel needs
    them back; a scan read once through would look as large as the file. ``MADV_DONTNEED`` unmaps them
    from the process (a later read faults them in again from the cache).
    """
    mapping = getattr(rows, "_mmap", None)
    if mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
        try:
            mapping.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):  # a platform without it: the pages are only reclaimable
            pass


# ----------------------------------------------------------------------------------------------
# the source


class PatternSource:
    """A scan whose patterns stay on disk: positions, probe and object in memory, patterns on demand.

    Open one with `open_patterns`; use it as a context manager (or call `close`).

    Attributes
    ----------
    path : Path
    x_px, y_px : ndarray of shape (n_positions,), float64
        Positions in object pixels (SPEC section 3), validated.
    probe : ndarray of shape (N, N), complex64
    obj : ndarray of shape (rows, cols), complex64, or None
    scan_index, object_index : ndarray of shape (n_positions,), int64, or None
    bad_pixels : ndarray of shape (N, N), bool, or None
    metadata : dict
    access : str
        How patterns are read: ``"memory-mapped"``, ``"compressed"`` (zip stream), ``"hdf5"``.
    """

    def __init__(self, path, rows, *, x_px, y_px, probe, obj=None, scan_index=None, object_index=None,
                 bad_pixels=None, metadata=None, measurement="amplitude", access="hdf5", row_index=None,
                 zero_bad_pixels=False, closers=()):
        self.path = Path(path)
        self.where = self.path.name
        self._rows, self._measurement, self.access = rows, measurement, access
        self._row_index, self._zero_bad_pixels, self._closers = row_index, zero_bad_pixels, list(closers)
        n_rows = len(row_index) if row_index is not None else rows.shape[0]
        if len(rows.shape) != 3 or rows.shape[-1] != rows.shape[-2]:
            self.close()
            raise ValueError(f"{self.where}: patterns have shape {tuple(rows.shape)}; expected (M, N, N).")
        size = int(rows.shape[-1])
        try:
            # everything but the patterns is validated by PtychoData itself, on one stand-in pattern
            small = data_io._construct(self.where, amplitudes=np.zeros((1, size, size), np.float32),
                                       x_px=np.zeros(1), y_px=np.zeros(1), probe=probe, bad_pixels=bad_pixels,
                                       metadata=metadata or {})
            x_px = np.asarray(x_px, dtype=np.float64)
            y_px = np.asarray(y_px, dtype=np.float64)
            stand_in = np.empty((n_rows, 0))
            for name, values in (("x_px (xcoords)", x_px), ("y_px (ycoords)", y_px)):
                check_shape(values, ("n_positions",), name, where=self.where)
                check_same_length(values, name, stand_in, f"the patterns ({n_rows})", where=self.where)
                check_finite(values, name, where=self.where)
            if obj is not None:
                obj = data_io._construct(self.where, amplitudes=np.zeros((1, size, size), np.float32), x_px=[0.0],
                                         y_px=[0.0], probe=probe, obj=obj).obj
                positions = types.SimpleNamespace(obj=obj, x_px=x_px, y_px=y_px)
                try:
                    data_io.PtychoData._check_positions_on_canvas(positions)
                except ValueError as error:
                    raise ValueError(f"{self.where}: {error}") from None
            indices = {}
            for name, values in (("scan_index", scan_index), ("object_index", object_index)):
                if values is not None:
                    values = np.asarray(values)
                    if values.dtype.kind not in "iu" or values.shape != (n_rows,) or (len(values) and values.min() < 0):
                        raise ValueError(f"{self.where}: {name} must hold {n_rows} integers >= 0; got {values.dtype} "
                                         f"{values.shape}.")
                    indices[name] = values.astype(np.int64)
        except BaseException:
            self.close()
            raise
        self.x_px, self.y_px, self.obj = x_px, y_px, obj
        self.probe, self.bad_pixels, self.metadata = small.probe, small.bad_pixels, small.metadata
        self.scan_index, self.object_index = indices.get("scan_index"), indices.get("object_index")

    # sizes --------------------------------------------------------------------------------------

    @property
    def n_positions(self):
        """Number of patterns (and positions)."""
        return len(self.x_px)

    @property
    def patch_size(self):
        """N."""
        return int(self._rows.shape[-1])

    @property
    def nbytes(self):
        """Bytes of the scan's float32 amplitudes in memory (what the in-memory path would hold)."""
        return self.n_positions * self.patch_size**2 * 4

    def __len__(self):
        return self.n_positions

    # reading ------------------------------------------------------------------------------------

    def _convert(self, raw, first):
        where = f"{self.where}, patterns from {first}"
        if self._zero_bad_pixels and self.bad_pixels is not None:
            raw = np.array(raw)
            raw[..., self.bad_pixels] = 0
        if self._measurement == "intensity":
            return data_io.counts_to_amplitudes(raw, name="patterns", where=where)
        amplitudes = np.asarray(raw, dtype=np.float32)
        check_finite(amplitudes, "amplitudes (diff3d)", where=where)
        check_nonnegative(amplitudes, "amplitudes (diff3d)", where=where, quantity="amplitudes",
                          hint=data_io._COUNTS_HINT)
        return amplitudes

    def read(self, start, stop):
        """Amplitudes of patterns ``start:stop``, float32 ``(stop - start, N, N)``, validated."""
        start, stop = max(0, int(start)), min(self.n_positions, int(stop))
        return self.take(np.arange(start, max(start, stop)))

    def take(self, indices):
        """Amplitudes of the patterns ``indices`` (any order, repeats allowed), float32 ``(len, N, N)``."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= self.n_positions):
            raise IndexError(f"pattern indices must lie in [0, {self.n_positions - 1}].")
        unique, inverse = np.unique(indices, return_inverse=True)
        rows = unique if self._row_index is None else self._row_index[unique]
        amplitudes = self._convert(_read_rows(self._rows, rows), int(unique[0]) if unique.size else 0)
        _release_pages(self._rows)
        if len(unique) == len(indices) and np.array_equal(unique, indices):
            return amplitudes
        return amplitudes[inverse.reshape(-1)]

    def iter_chunks(self, chunk_size=DEFAULT_CHUNK_SIZE):
        """Yield ``(start, amplitudes)`` for consecutive chunks of at most ``chunk_size`` patterns."""
        chunk_size = _positive(chunk_size, "chunk_size")
        for start in range(0, self.n_positions, chunk_size):
            yield start, self.read(start, start + chunk_size)

    def load(self):
        """Read every pattern into a `ptycholib.data.PtychoData` (the in-memory path)."""
        amplitudes = np.empty((self.n_positions, self.patch_size, self.patch_size), dtype=np.float32)
        for start, chunk in self.iter_chunks():
            amplitudes[start : start + len(chunk)] = chunk
        return data_io._construct(self.where, amplitudes=amplitudes, x_px=self.x_px, y_px=self.y_px, probe=self.probe,
                                  obj=self.obj, scan_index=self.scan_index, bad_pixels=self.bad_pixels,
                                  metadata=dict(self.metadata), object_index=self.object_index)

    def close(self):
        """Close the underlying files."""
        for close in self._closers:
            close()
        self._closers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return (f"PatternSource({self.where!r}, {self.n_positions} patterns of {self.patch_size} px, "
                f"{self.access})")


def _positive(value, name):
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer.")
    return int(value)


# ----------------------------------------------------------------------------------------------
# opening files


def _open_npz(path, measurement):
    where = path.name
    # structure, headers and size checked before anything is read (ptycholib._io.open_npz); the patterns
    # are read chunk by chunk, so only the other arrays count towards the memory cap
    with _io.open_npz(path, uncapped=("diff3d", "diffraction")) as npz:
        keys = set(npz.files)
        if {"diff3d", "diffraction"} <= keys:
            raise ValueError(f"{where} has both 'diff3d' and 'diffraction'; keep one pattern array.")
        key = "diffraction" if "diffraction" in keys else "diff3d"
        if key not in keys:
            data_io._require(npz, key, where, "it holds the diffraction patterns")
        metadata = data_io._read_metadata(npz, where)
        small = {name: data_io._require(npz, npz_key, where, "every pattern needs a position")
                 for name, npz_key in (("x_px", "xcoords"), ("y_px", "ycoords"))}
        probe_modes = data_io._require(npz, "probeGuess", where, "the probe is part of the data contract")
        for npz_key, name in (("objectGuess", "obj"), ("scan_index", "scan_index"), ("object_index", "object_index"),
                              ("bad_pixels", "bad_pixels")):
            if npz_key in keys:
                small[name] = data_io._read_key(npz, npz_key, where)
    rows, access = _npz_rows(path, key)
    return _finish_open(path, rows, access, key, measurement, metadata, probe_modes, small,
                        closers=[rows.close] if hasattr(rows, "archive") else [])


def _finish_open(path, rows, access, key, measurement, metadata, probe_modes, small, closers):
    where = path.name
    dtype = np.dtype(rows.dtype)
    if dtype.kind not in "biuf":
        for close in closers:
            close()
        kind = "complex" if dtype.kind == "c" else "not numeric"
        raise ValueError(f"{key} in {where} has dtype {dtype} ({kind}); diffraction patterns must be real numbers.")
    probe, n_modes = data_io._first_mode(probe_modes, where, "probeGuess")
    if n_modes > 1:
        metadata["probe_modes"] = n_modes
        metadata["probe_mode0_power_fraction"] = data_io._mode_power_fraction(probe_modes)
    try:
        domain = data_io._resolve_measurement(rows, key, where, measurement, metadata.get("measurement"))
    except BaseException:
        for close in closers:
            close()
        raise
    if domain == "intensity":
        metadata["converted_from"] = "intensity"
    metadata["measurement"] = "amplitude"
    return PatternSource(path, rows, probe=probe, metadata=metadata, measurement=domain, access=access,
                         closers=closers, **small)


def _open_h5(path, measurement):
    import h5py

    where = path.name
    handle = _io.open_h5(path, where)
    try:
        _io.check_h5_tree(handle, where)  # no external storage, virtual datasets, links or odd members
        if "patterns" in handle and "diff3d" not in handle and (path.parent / "product.h5").is_file():
            handle.close()
            return _open_ptychodus(path, path.parent / "product.h5")

        def dataset(key, why=None):
            item = handle.get(key)
            if item is None or not isinstance(item, h5py.Dataset):
                if why is None:
                    return None
                found = ", ".join(sorted(handle.keys())) or "nothing"
                raise ValueError(f"{where} has no '{key}' dataset (found: {found}); {why}.")
            return item

        rows = dataset("diff3d", "it holds the diffraction patterns (ptycholib's HDF5 contract, docs/cluster.md)")
        raw = handle.attrs.get("metadata")
        metadata = {}
        if raw is not None:
            try:
                metadata = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
            except json.JSONDecodeError as error:
                raise ValueError(f"metadata in {where} is not a JSON string ({error}).") from None
            if not isinstance(metadata, dict):
                raise ValueError(f"metadata in {where} must be a JSON object; got {type(metadata).__name__}.")
        small = {"x_px": dataset("xcoords", "every pattern needs a position")[()],
                 "y_px": dataset("ycoords", "every pattern needs a position")[()]}
        probe_modes = dataset("probeGuess", "the probe is part of the data contract")[()]
        for key, name in (("objectGuess", "obj"), ("scan_index", "scan_index"), ("object_index", "object_index"),
                          ("bad_pixels", "bad_pixels")):
            item = dataset(key)
            if item is not None:
                small[name] = item[()]
    except BaseException:
        handle.close()
        raise
    return _finish_open(path, rows, "hdf5", "diff3d", measurement, metadata, probe_modes, small, closers=[handle.close])


def _open_ptychodus(diffraction_path, product_path):
    from ptycholib.ptychodus import files

    pair = files._PtychodusPair(diffraction_path, product_path)
    kept = np.flatnonzero(pair.found)
    metadata = dict(pair.product["metadata"], measurement="amplitude", converted_from="intensity")
    row_index = None if len(kept) == pair.patterns.shape[0] else kept
    return PatternSource(diffraction_path, pair.patterns, x_px=pair.x_px[pair.found], y_px=pair.y_px[pair.found],
                         probe=pair.product["probe"], obj=pair.product["obj"], bad_pixels=pair.bad_pixels,
                         metadata=metadata, measurement="intensity", access="hdf5", row_index=row_index,
                         zero_bad_pixels=True, closers=[pair.close])


def open_patterns(path, *, measurement=None):
    """Open a scan for chunked reading.

    Parameters
    ----------
    path : str or Path
        An NPZ in the data contract, an HDF5 file in its HDF5 variant (``.h5``/``.hdf5``, see
        `save_h5`), a ptychodus ``diffraction.h5`` with ``product.h5`` beside it, or a folder
        holding that pair.
    measurement : {"amplitude", "intensity"}, optional
        As in `ptycholib.data.load_npz`: how to read a float pattern array whose file does not say.

    Returns
    -------
    PatternSource
        Positions, probe and object validated now; patterns validated as they are read.

    Raises
    ------
    FileNotFoundError, ValueError
        A missing file or key, or any check of `ptycholib.data.PtychoData`; messages name the file.
    """
    path = Path(path)
    if path.is_dir():
        pair = (path / "diffraction.h5", path / "product.h5")
        if not all(p.is_file() for p in pair):
            raise FileNotFoundError(f"{path} is a folder without diffraction.h5 and product.h5 (a ptychodus input folder).")
        return _open_ptychodus(*pair)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist.")
    if path.suffix.lower() in _H5_SUFFIXES:
        return _open_h5(path, measurement)
    try:
        return _open_npz(path, measurement)
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        raise ValueError(f"{path.name} is not a readable NPZ file ({error}); is it truncated?") from None


def should_stream(source, *, threshold_bytes=STREAM_THRESHOLD_BYTES):
    """True when the scan's float32 amplitudes exceed ``threshold_bytes`` (`STREAM_THRESHOLD_BYTES`)."""
    return source.nbytes > threshold_bytes


# ----------------------------------------------------------------------------------------------
# statistics over the whole scan, one chunk at a time


def scan_statistics(source, probe_scale, *, input_transform="linear", chunk_size=DEFAULT_CHUNK_SIZE):
    """Return ``(input_scale, intensity_scale)``: SPEC's g and s0 computed chunk by chunk.

    Equal to `ptycholib.grouping.input_scale` and `ptycholib.forward.initial_intensity_scale` on the
    whole scan: every pattern's energy is summed on its own (as there), then the mean is taken over
    the vector of all energies in one call, so the two paths agree bit for bit. The source's
    ``bad_pixels`` are left out of s0's fit, as in `ptycholib.forward.initial_intensity_scale`.
    """
    size = source.patch_size
    good = None if source.bad_pixels is None else ~np.asarray(source.bad_pixels, dtype=bool)
    energies = np.empty(source.n_positions)
    transformed = np.empty(source.n_positions)
    for start, chunk in source.iter_chunks(chunk_size):
        stop = start + len(chunk)
        chunk64 = np.asarray(chunk, dtype=np.float64)
        energies[start:stop] = (np.sum(chunk64**2, axis=(-2, -1)) if good is None
                                else np.sum(chunk64[..., good] ** 2, axis=-1))
        transformed[start:stop] = np.sum(np.square(grouping._transformed(chunk, input_transform), dtype=np.float64),
                                         axis=(-2, -1))
    energy = float(np.mean(transformed))
    if not energy > 0 or not np.isfinite(energy):
        raise ValueError(f"amplitudes have mean energy {energy}; g needs patterns with signal (non-zero, finite).")
    input_scale = (size / 2) / float(np.sqrt(energy))
    probe_hat = 0.5 * forward.normalize_probe(source.probe, probe_scale)
    probe_energy = float(np.sum(np.abs(probe_hat) ** 2) if good is None
                         else np.sum(forward.far_field_amplitude(probe_hat).astype(np.float64)[good] ** 2))
    return input_scale, float(np.sqrt(float(np.mean(energies)) / probe_energy))


# ----------------------------------------------------------------------------------------------
# training batches read from the file


class StreamedGroups:
    """Training groups whose patterns are read from a `PatternSource` batch by batch.

    What the backends' ``train`` takes instead of in-memory ``inputs`` arrays: ``batch(indices)``
    returns the same arrays, bit for bit, as gathering ``indices`` from the in-memory groups of
    `ptycholib.workflow.group_data`, so a streamed run sees the same batches in the same order
    (`ptycholib.batching.epoch_order`).

    Parameters
    ----------
    source : PatternSource
    groups : ptycholib.grouping.Groups
    input_scale : float
        g.
    input_transform : str
    target_channels : int or None
        For ``model_type='supervised'``: 1 (one target per group, at its mean position) or C; None
        for the physics-informed loss.
    """

    def __init__(self, source, groups, input_scale, *, input_transform="linear", target_channels=None):
        if target_channels is not None and source.obj is None:
            raise ValueError("model_type='supervised' needs the true object (objectGuess) in the training data.")
        self.source, self.groups = source, groups
        self.input_scale, self.input_transform, self.target_channels = input_scale, input_transform, target_channels

    def __len__(self):
        return self.groups.n_groups

    @property
    def keys(self):
        """Names of the arrays of a batch, in order."""
        targets = ("amplitude", "phase") if self.target_channels is not None else ("amplitudes",)
        return ("inputs", "offsets") + targets

    def batch(self, indices):
        """Return the groups ``indices`` as a dict of float32 arrays (see `keys`)."""
        indices = np.asarray(indices, dtype=np.int64)
        members = self.groups.indices[indices]
        amplitudes = self.source.take(members.reshape(-1)).reshape(members.shape + (self.source.patch_size,) * 2)
        out = {"inputs": grouping.network_inputs(amplitudes, self.input_scale, self.input_transform),
               "offsets": np.asarray(self.groups.offsets[indices], dtype=np.float32)}
        if self.target_channels is None:
            out["amplitudes"] = amplitudes.astype(np.float32, copy=False)
            return out
        x_px, y_px = self.source.x_px[members], self.source.y_px[members]
        if self.target_channels == 1:
            x_px, y_px = x_px.mean(axis=1, keepdims=True), y_px.mean(axis=1, keepdims=True)
        size = self.source.patch_size
        patches = forward.extract_patches(self.source.obj, x_px.reshape(-1), y_px.reshape(-1), size)
        patches = patches.reshape(x_px.shape + (size, size)).astype(np.complex64)
        out["amplitude"] = np.abs(patches).astype(np.float32)
        out["phase"] = np.angle(patches).astype(np.float32)
        return out


# ----------------------------------------------------------------------------------------------
# writing the HDF5 variant


class H5PatternWriter:
    """Write a scan in the HDF5 contract chunk by chunk, without holding its patterns in memory.

    The file appears at ``path`` only when the writer closes without error (a temporary file
    beside it is renamed), like every writer of ptycholib.

    Parameters
    ----------
    path : str or Path
    x_px, y_px : ndarray of shape (n_positions,)
    probe : ndarray of shape (N, N), complex
    obj : ndarray of shape (rows, cols), complex, optional
    metadata : dict, optional
    chunk_rows : int
        HDF5 chunk along the pattern axis (also the unit of efficient reads).

    Examples
    --------
    ``with H5PatternWriter(path, x, y, probe) as writer: writer.write(0, amplitudes[:1000]) ...``
    """

    def __init__(self, path, x_px, y_px, probe, *, obj=None, metadata=None, chunk_rows=256):
        import h5py

        self.path = Path(path)
        x_px, y_px = np.asarray(x_px, dtype=np.float64), np.asarray(y_px, dtype=np.float64)
        probe = np.asarray(probe, dtype=np.complex64)
        size = probe.shape[-1]
        self.n_positions, self.written = len(x_px), np.zeros(len(x_px), dtype=bool)
        self.temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        self.file = h5py.File(self.temporary, "w")
        self.file.create_dataset("xcoords", data=x_px)
        self.file.create_dataset("ycoords", data=y_px)
        self.file.create_dataset("probeGuess", data=probe)
        if obj is not None:
            self.file.create_dataset("objectGuess", data=np.asarray(obj, dtype=np.complex64))
        self.file.attrs["metadata"] = json.dumps(dict(metadata or {}, measurement="amplitude"), allow_nan=False,
                                                 default=data_io._json_default)
        self.patterns = self.file.create_dataset("diff3d", shape=(len(x_px), size, size), dtype=np.float32,
                                                 chunks=(max(1, min(chunk_rows, len(x_px))), size, size))

    def write(self, start, amplitudes):
        """Store ``amplitudes`` (float32 ``(k, N, N)``) as patterns ``start:start + k``."""
        amplitudes = np.asarray(amplitudes, dtype=np.float32)
        self.patterns[start : start + len(amplitudes)] = amplitudes
        self.written[start : start + len(amplitudes)] = True

    def close(self, *, keep=True):
        """Finish the file (rename it into place) or, with ``keep=False``, remove it."""
        if self.file is None:
            return
        self.file.close()
        self.file = None
        if keep and not self.written.all():
            keep = False
            warnings.warn(f"{self.path.name}: {int((~self.written).sum())} patterns were never written; "
                          "the file was discarded.", stacklevel=2)
        if keep:
            os.replace(self.temporary, self.path)
        else:
            self.temporary.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.close(keep=exc_type is None)


def save_h5(data, path, *, chunk_rows=256):
    """Write a `ptycholib.data.PtychoData` in the HDF5 variant of the data contract (atomically).

    Datasets ``diff3d`` (float32 amplitudes, chunked by ``chunk_rows`` patterns), ``xcoords``,
    ``ycoords``, ``probeGuess``, and ``objectGuess``, ``scan_index``, ``object_index``,
    ``bad_pixels`` when present; the JSON ``metadata`` is a root attribute. Read it with
    `open_patterns` (chunks) or `load_h5` (whole).
    """
    with H5PatternWriter(path, data.x_px, data.y_px, data.probe, obj=data.obj, metadata=data.metadata,
                         chunk_rows=chunk_rows) as writer:
        for name, key in (("scan_index", "scan_index"), ("object_index", "object_index"), ("bad_pixels", "bad_pixels")):
            if getattr(data, name) is not None:
                writer.file.create_dataset(key, data=getattr(data, name))
        writer.write(0, data.amplitudes)
    return Path(path)


def load_h5(path, *, measurement=None):
    """Read a whole HDF5 scan (contract variant or ptychodus pair) into a `ptycholib.data.PtychoData`."""
    with open_patterns(path, measurement=measurement) as source:
        return source.load()


def load_scan(path, *, measurement=None):
    """Read a whole scan into memory: `ptycholib.data.load_npz` for ``.npz``, else `open_patterns` + ``load``.

    What the command line uses for its in-memory path, so that it reads every format `open_patterns` opens.
    """
    path = Path(path)
    if path.suffix.lower() == ".npz" and not path.is_dir():
        return data_io.load_npz(path, measurement=measurement)
    with open_patterns(path, measurement=measurement) as source:
        return source.load()


def open_scan(path, *, measurement=None, mode="auto", threshold_bytes=STREAM_THRESHOLD_BYTES):
    """Open a scan in memory or for streaming, as ``mode`` says: what ``train --stream`` and ``reconstruct --stream`` use.

    Parameters
    ----------
    path : str or Path
        Any file `open_patterns` opens.
    measurement : {"amplitude", "intensity"}, optional
    mode : {"auto", "on", "off"}
        ``"off"``: read it all (`load_scan`); ``"on"``: stream; ``"auto"``: stream when
        `should_stream` says so (float32 amplitudes above ``threshold_bytes``).

    Returns
    -------
    ptycholib.data.PtychoData or PatternSource
        A source is open: close it (or use it as a context manager) when done.
    """
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"stream mode {mode!r} must be 'auto', 'on' or 'off'.")
    if mode == "off":
        return load_scan(path, measurement=measurement)
    source = open_patterns(path, measurement=measurement)
    if mode == "on" or should_stream(source, threshold_bytes=threshold_bytes):
        return source
    source.close()
    return load_scan(path, measurement=measurement)
