"""Atomic file writes: the one temporary-file-then-rename writer used by every ``save_*`` function.

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
import os
import secrets
from pathlib import Path

__all__ = ["atomic_write"]

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
