"""Small input checks shared by the library: named-dimension shapes, finite and non-negative values.

The shape check reads only ``.shape``, so it works for NumPy arrays, torch tensors and TensorFlow
tensors alike; the value checks convert with ``np.asarray`` (CPU tensors convert without a copy).
Every check raises ``ValueError`` with a message that names the argument, says what was expected
and what was found.
"""

from __future__ import annotations

import numpy as np

__all__ = ["check_shape", "check_finite", "check_nonnegative", "check_same_length", "check_same_keys", "describe"]


def describe(name, where=""):
    """Return ``name`` followed by ``(where)`` when a location is given, for use in messages."""
    return f"{name} ({where})" if where else name


def check_shape(array, dims, name, *, sizes=None, where=""):
    """Check an array's shape against named dimensions and return the sizes they bind.

    Parameters
    ----------
    array : array-like with a ``.shape``
        NumPy array, torch tensor or TensorFlow tensor.
    dims : sequence of str or int
        One entry per axis. A string names a dimension: every axis with the same name must have
        the same size (``("M", "N", "N")`` asks for square patterns). An int asks for that exact
        size. ``"*"`` accepts any size. A leading ``"..."`` accepts any number of leading axes.
    name : str
        Argument name used in the error message.
    sizes : dict of str to int, optional
        Sizes bound by earlier checks; a named dimension already in ``sizes`` must match it. The
        dict is not modified.
    where : str
        Where the array came from (a file name), added to the message.

    Returns
    -------
    dict of str to int
        ``sizes`` extended by the dimensions this array bound.

    Examples
    --------
    >>> check_shape(np.zeros((5, 64, 64)), ("M", "N", "N"), "amplitudes")
    {'M': 5, 'N': 64}
    >>> check_shape(np.zeros((64, 32)), ("N", "N"), "probe")
    Traceback (most recent call last):
    ...
    ValueError: probe must have shape (N, N); got (64, 32): N is 64 on one axis and 32 on another.
    """
    shape = tuple(int(s) for s in array.shape)
    dims = tuple(dims)
    bound = dict(sizes or {})
    expected = ", ".join(str(d) for d in dims)
    if dims and dims[0] == "...":
        dims = dims[1:]
        shape = shape[len(shape) - len(dims) :] if len(shape) >= len(dims) else None
    if shape is None or len(shape) != len(dims):
        raise ValueError(
            f"{describe(name, where)} must have shape ({expected}); got {tuple(array.shape)} "
            f"({len(array.shape)} axes instead of {len(dims)})."
        )
    for dim, size in zip(dims, shape):
        if dim == "*":
            continue
        if isinstance(dim, int):
            if size != dim:
                raise ValueError(
                    f"{describe(name, where)} must have shape ({expected}); got {tuple(array.shape)}."
                )
            continue
        if dim in bound and bound[dim] != size:
            raise ValueError(
                f"{describe(name, where)} must have shape ({expected}); got {tuple(array.shape)}: "
                f"{dim} is {bound[dim]} on one axis and {size} on another."
            )
        bound[dim] = size
    return bound


def check_finite(array, name, *, where=""):
    """Raise ``ValueError`` if ``array`` holds NaN or Inf, saying how many and where the first is.

    Examples
    --------
    >>> check_finite(np.array([1.0, np.nan]), "xcoords")
    Traceback (most recent call last):
    ...
    ValueError: xcoords has 1 non-finite value (NaN or Inf), the first at index (1,); remove or repair those entries.
    """
    values = np.asarray(array)
    if values.dtype.kind not in "fc" or values.size == 0:
        return
    flat = values.reshape(-1).view(values.real.dtype) if values.dtype.kind == "c" else values.reshape(-1)
    if np.isfinite(flat.min()) and np.isfinite(flat.max()):  # min and max propagate NaN: one fast pass each
        return
    bad = ~np.isfinite(values)
    count = int(bad.sum())
    if count:
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        plural = "value" if count == 1 else "values"
        raise ValueError(
            f"{describe(name, where)} has {count} non-finite {plural} (NaN or Inf), the first at index "
            f"{first}; remove or repair those entries."
        )


def check_nonnegative(array, name, *, where="", quantity="values", hint=""):
    """Raise ``ValueError`` if a real ``array`` has negative values.

    ``quantity`` names what must be non-negative in the message ("amplitudes", "counts");
    ``hint`` is a sentence that says how to fix it.
    """
    values = np.asarray(array)
    if values.size == 0 or values.min() >= 0:
        return
    count = int(np.count_nonzero(values < 0))
    if count:
        plural = "value" if count == 1 else "values"
        message = f"{describe(name, where)} has {count} negative {plural} (minimum {values.min():g}); {quantity} must be >= 0."
        raise ValueError(f"{message} {hint}".rstrip())


def check_same_length(first, first_name, second, second_name, *, where="", what="every pattern needs one position"):
    """Raise ``ValueError`` unless two arrays have the same leading length."""
    n_first, n_second = len(first), len(second)
    if n_first != n_second:
        location = f" ({where})" if where else ""
        raise ValueError(
            f"{first_name} has {n_first} entries but {second_name} has {n_second}{location}; {what}."
        )


def check_same_keys(given, expected, what, *, hint="", error=ValueError):
    """Raise ``error`` naming the missing and unexpected keys when ``given`` and ``expected`` differ.

    Used for canonical weight dicts (the archive and both backends' ``set_weights``).
    """
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    if missing or unexpected:
        def shorten(keys):
            return f"{keys[:5]}{'...' if len(keys) > 5 else ''}"

        raise error(f"{what}: missing {shorten(missing)}, unexpected {shorten(unexpected)}.{' ' + hint if hint else ''}")
