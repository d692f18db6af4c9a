"""Atomic file writes, and the guarded readers of untrusted NPZ and HDF5 files.

Writing: `atomic_write` is the one temporary-file-then-rename writer used by every ``save_*`` function.
Reading: `open_npz` checks an NPZ file's zip directory and every ``.npy`` header before NumPy reads a
byte of array data, and `check_h5_dataset` / `check_h5_tree` refuse HDF5 objects that would make a
reader touch other files (external storage, virtual datasets, soft and external links). Both turn
every format error into one `ValueError` line that names the file (docs/robustness.md).

A reader never sees a half-written file: the content goes to a temporary file beside the target (same
folder, so same file system, so `os.replace` is atomic), is flushed to disk, and only then replaces the
target. If anything fails the temporary file is removed and an existing target is left untouched.

Permissions. The final file gets what a plain ``open(path, "w")`` of a new file gets: ``0o666`` minus
the process umask (plus any default ACL of the folder). The temporary file is created with
``os.open(..., O_CREAT | O_EXCL, 0o666)``, so the kernel applies the umask (and default ACLs) itself,
exactly as for ``open``; nothing reads the umask. Reading it would need ``os.umask(0)`` followed by
``os.umask(old)``, which changes a process-wide setting and races with threads that create files in
between, or parsing ``/proc/self/status`` (Linux only); neither is needed. `tempfile.mkstemp` is not used
because it creates files with mode 0600. As with any rename-based write, the mode of a file being
replaced is not kept: the new file has the fresh-file mode above.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import zipfile
import zlib
from pathlib import Path

__all__ = [
    "atomic_write",
    "MAX_ARRAY_BYTES_ENV",
    "max_array_bytes",
    "format_bytes",
    "one_line",
    "open_npz",
    "check_h5_dataset",
    "check_h5_tree",
    "h5_member",
    "open_h5",
]

MAX_ARRAY_BYTES_ENV = "PTYCHOLIB_MAX_ARRAY_BYTES"
"""Environment variable: the most array bytes one file may declare (default: half the machine's memory)."""

_MODES = ("w", "wb")


@contextlib.contextmanager
def atomic_write(path, mode="w"):
    """Open a temporary file beside ``path`` and move it onto ``path`` when the block succeeds.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write. Its folder must exist (callers that create folders do so first).
    mode : {"w", "wb"}
        Text (UTF-8) or binary.

    Yields
    ------
    file object
        Write to it inside the ``with`` block; do not close it.

    Raises
    ------
    ValueError
        ``mode`` is not ``"w"`` or ``"wb"``.
    FileNotFoundError
        The folder of ``path`` does not exist.
    IsADirectoryError
        ``path`` is a folder.

    Notes
    -----
    On success the file is flushed and ``fsync``-ed before `os.replace`. On any exception inside the
    block (including KeyboardInterrupt) the temporary file is removed, the target is untouched and
    the exception propagates. The final mode is ``0o666 & ~umask``, as for ``open(path, "w")``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "note.txt"
    >>> with atomic_write(target) as handle:
    ...     _ = handle.write("done\\n")
    >>> target.read_text()
    'done\\n'
    """
    if mode not in _MODES:
        raise ValueError(f"atomic_write mode={mode!r} is not supported; use 'w' (text) or 'wb' (binary).")
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {folder} does not exist; create it first.")
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a folder; give a file name.")
    temporary, fd = _create_beside(path)
    try:
        handle = os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {}))
    except BaseException:
        os.close(fd)
        _remove(temporary)
        raise
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        _remove(temporary)
        raise


def _create_beside(path):
    """Create a new, empty, uniquely named hidden file in ``path``'s folder; return (path, fd)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return temporary, os.open(temporary, flags, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file beside {path}: 100 random names were taken.")


def _remove(temporary):
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)


# --------------------------------------------------------------------------------------------------
# guarded readers


def max_array_bytes():
    """Return the most bytes of arrays one input file may declare.

    ``$PTYCHOLIB_MAX_ARRAY_BYTES`` when set (a number of bytes, ``1e9`` allowed), else half of the
    machine's physical memory (16 GiB where that cannot be read). Readers compare the sizes that
    headers *declare* with it before allocating anything, so a small compressed file cannot make
    ptycholib allocate gigabytes.

    Raises
    ------
    ValueError
        The environment variable is not a positive number.
    """
    text = os.environ.get(MAX_ARRAY_BYTES_ENV, "").strip()
    if text:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{MAX_ARRAY_BYTES_ENV}={text!r} must be a positive number of bytes, e.g. 8e9.")
        return int(value)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        total = 32 << 30
    return int(total) // 2


def format_bytes(n_bytes):
    """Return a byte count for messages, e.g. ``'1.5 GiB'``.

    Examples
    --------
    >>> format_bytes(3 * 2**30 // 2), format_bytes(512)
    ('1.5 GiB', '512 B')
    """
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1024
    return f"{value:.3g} EiB"  # pragma: no cover


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"


def _file_start(path, what):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist.")
    if not path.is_file():
        raise IsADirectoryError(f"{what} {path} is not a file.")
    with open(path, "rb") as handle:
        start = handle.read(8)
    if not start:
        raise ValueError(f"{path.name} is empty (0 bytes); expected an {what}.")
    return start


def _npy_header(member, key, where):
    """Read the .npy header of an open member; return ``(shape, dtype, header_bytes, fortran_order)``."""
    import numpy as np

    try:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            raise ValueError(f".npy format version {version} is not read by ptycholib (1.0 and 2.0 are)")
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"{key} in {where} has an unreadable .npy header ({one_line(exc)}).") from None
    return shape, dtype, member.tell(), fortran


def one_line(exc):
    """Return an exception's message on one line (whitespace runs collapsed, at most 300 characters)."""
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


@contextlib.contextmanager
def open_npz(path, *, what="NPZ file", unread=(), uncapped=()):
    """Open an NPZ file for reading after checking its zip directory and every array header.

    Parameters
    ----------
    path : str or Path
    what : str
        What the file is, for messages ("NPZ file", "reconstruction file").
    unread : tuple of str
        Keys the caller skips without reading (PtychoPINN's pickled ``_metadata``): their headers are
        not checked, only their stored size counts towards the limit.
    uncapped : tuple of str
        Keys whose headers are checked but whose bytes do not count towards `max_array_bytes`: the
        pattern arrays that `ptycholib.stream` reads chunk by chunk, never whole.

    Yields
    ------
    numpy.lib.npyio.NpzFile
        Opened with ``allow_pickle=False``; errors while reading members (a corrupt or truncated
        deflate stream, a CRC mismatch) become `ValueError` naming the file.

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        No such file, or a folder.
    ValueError
        The file is empty, not a zip (a text file renamed ``.npz`` is reported as such, not as a
        pickle), truncated, has duplicate or non-``.npy`` members, an object (pickled) array, a
        header whose declared shape does not match the member's size, or declares more array bytes
        in all than `max_array_bytes`. Nothing of the arrays is allocated before these checks.
    """
    import numpy as np

    path = Path(path)
    where = path.name
    start = _file_start(path, what)
    if start.startswith(_NPY_MAGIC):
        raise ValueError(f"{where} is a single .npy array, not an NPZ file (a zip of named arrays); save it with np.savez.")
    if start[:4] not in _ZIP_MAGIC:
        raise ValueError(f"{where} is not an NPZ file: it does not start like a zip archive (it starts with {start[:8]!r}).")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ValueError(f"{where} is not a readable NPZ file ({one_line(exc)}); is it truncated?") from None
    limit = max_array_bytes()
    with zf:
        names = zf.namelist()
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"{where} has duplicate members {duplicates}; the file was tampered with or badly written.")
        total = 0
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                raise ValueError(f"{where} holds {info.filename!r}, which is not a .npy array; an NPZ file holds arrays only.")
            key = info.filename[:-4]
            if key in unread:
                total += info.file_size
                continue
            try:
                with zf.open(info) as member:
                    shape, dtype, header_bytes, _ = _npy_header(member, key, where)
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError) as exc:
                raise ValueError(f"{key} in {where} is unreadable ({one_line(exc)}); is the file truncated?") from None
            if dtype.hasobject:
                raise ValueError(
                    f"{key} in {where} is a pickled object array ({dtype}); ptycholib never unpickles. Re-save the file "
                    "with plain numeric arrays (metadata as a JSON string)."
                )
            n_bytes = math.prod(shape) * dtype.itemsize
            if info.file_size != header_bytes + n_bytes:
                raise ValueError(
                    f"{key} in {where} declares shape {shape} of {dtype} ({format_bytes(n_bytes)}) but the member holds "
                    f"{format_bytes(max(info.file_size - header_bytes, 0))} of data; the file is corrupt."
                )
            total += 0 if key in uncapped else n_bytes
        if total > limit:
            raise ValueError(
                f"{where} declares {format_bytes(total)} of arrays, more than the {format_bytes(limit)} one file may hold "
                f"here (half this machine's memory; set {MAX_ARRAY_BYTES_ENV} to change it)."
            )
    try:
        npz = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ValueError(f"{where} is not a readable NPZ file ({one_line(exc)}); is it truncated?") from None
    with npz:
        try:
            yield npz
        except (zipfile.BadZipFile, EOFError, zlib.error, OSError) as exc:
            if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
                raise
            raise ValueError(f"{where} is corrupt: an array could not be read ({one_line(exc)}).") from None


def check_h5_dataset(dataset, where, *, kinds="biufc"):
    """Refuse an HDF5 dataset whose data lies outside the file or is not plain numbers.

    Parameters
    ----------
    dataset : h5py.Dataset
    where : str
        The file's name, for messages.
    kinds : str
        Accepted NumPy dtype kinds (default: booleans, integers, floats and complex numbers).

    Raises
    ------
    ValueError
        External raw storage (the bytes of another file), a virtual dataset (a view of other
        datasets or files), or a dtype of another kind (strings, references, compounds).
    """
    external = dataset.external
    if external:
        source = external[0][0]
        source = source.decode(errors="replace") if isinstance(source, bytes) else source
        raise ValueError(
            f"dataset {dataset.name} in {where} uses external storage (its bytes are in {source!r}); ptycholib reads "
            "only data stored inside the file."
        )
    if dataset.is_virtual:
        raise ValueError(
            f"dataset {dataset.name} in {where} is a virtual dataset (a view of other datasets or files); ptycholib "
            "reads only data stored inside the file."
        )
    if dataset.dtype.kind not in kinds:
        raise ValueError(f"dataset {dataset.name} in {where} has dtype {dataset.dtype}; expected plain numbers.")
    return dataset


def h5_member(group, name, where):
    """Return ``group[name]`` after checking that it is a hard link (not a soft, external or user-defined link)."""
    import h5py

    link = group.get(name, getlink=True)
    full = f"{group.name.rstrip('/')}/{name}"
    if isinstance(link, h5py.SoftLink):
        raise ValueError(f"{full} in {where} is a soft link (to {link.path}); ptycholib reads only objects stored under their own name.")
    if isinstance(link, h5py.ExternalLink):
        raise ValueError(
            f"{full} in {where} is an external link (to {link.filename}:{link.path}); ptycholib never follows links "
            "out of a file."
        )
    if not isinstance(link, h5py.HardLink):
        raise ValueError(f"{full} in {where} is a {type(link).__name__}; ptycholib reads only datasets and groups.")
    return group[name]


def check_h5_tree(group, where, *, kinds="biufc", max_depth=8):
    """Walk an HDF5 group and return ``{path: dataset}`` after checking every member.

    Every member must be a dataset or a group reached by a hard link; datasets pass
    `check_h5_dataset`. Nothing is read but the file's structure.

    Raises
    ------
    ValueError
        A soft or external link, a named datatype or other non-dataset object, a dataset refused by
        `check_h5_dataset`, or groups nested deeper than ``max_depth``.
    """
    import h5py

    datasets = {}

    def walk(node, depth):
        if depth > max_depth:
            raise ValueError(f"{node.name} in {where} is nested deeper than {max_depth} groups.")
        for name in node:
            item = h5_member(node, name, where)
            if isinstance(item, h5py.Group):
                walk(item, depth + 1)
            elif isinstance(item, h5py.Dataset):
                datasets[item.name] = check_h5_dataset(item, where, kinds=kinds)
            else:
                raise ValueError(f"{item.name} in {where} is a {type(item).__name__}, not a dataset or group.")

    walk(group, 0)
    return datasets


def open_h5(source, where, *, what="HDF5 file"):
    """Open an HDF5 file (a path or a file object) read-only; format errors become one `ValueError` line.

    External links are never followed by h5py on open; use `check_h5_tree` or `check_h5_dataset`
    before reading members.
    """
    import h5py

    if isinstance(source, (str, os.PathLike)):
        _file_start(source, what)
    try:
        return h5py.File(source, "r")
    except OSError as exc:
        if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
            raise
        raise ValueError(f"{where} is not a readable HDF5 file ({one_line(exc)}); is it truncated?") from None
