"""Neighbour groups for gridsize > 1 (SPEC 3) and the input normalisation g (SPEC 4.2).

With ``gridsize = g`` the network sees ``C = g**2`` neighbouring patterns at once, together with
their offsets from the group mean. Groups are drawn from each seed position's ``K`` nearest
neighbours (``K = neighbor_count >= C``), as in PtychoPINN; when more groups than positions are
requested, different C-subsets of the same neighbourhood are used ("K choose C" oversampling).
With several objects in one data set (``object_index``), neighbourhoods are searched within each
position's own object, so a group never mixes objects. Everything is vectorised and deterministic
for a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ptycholib._checks import check_finite, check_same_length

__all__ = ["Groups", "group_neighbors", "groups_from_indices", "input_scale", "network_inputs"]


@dataclass(frozen=True, eq=False)
class Groups:
    """Groups of scan positions and their offsets.

    Attributes
    ----------
    indices : ndarray of shape (G, C), int64
        Scan positions of each group's members, nearest-first within the seed's neighbourhood.
    offsets : ndarray of shape (G, C, 2), float32
        Member position minus group mean, in pixels, last axis ``(x, y)``; zero-mean per group.
    centres : ndarray of shape (G, 2), float64
        Group means ``(x, y)`` in object pixels.
    seeds : ndarray of shape (G,), int64
        The position whose K nearest neighbours the group was drawn from (for fixed groups, the
        first member).
    """

    indices: np.ndarray
    offsets: np.ndarray
    centres: np.ndarray
    seeds: np.ndarray

    @property
    def n_groups(self):
        """G, the number of groups."""
        return self.indices.shape[0]

    @property
    def channels(self):
        """C = gridsize**2, positions per group."""
        return self.indices.shape[1]

    @property
    def gridsize(self):
        """g, with C = g**2."""
        return math.isqrt(self.channels)


def _positions(x_px, y_px):
    x_px = np.asarray(x_px, dtype=np.float64)
    y_px = np.asarray(y_px, dtype=np.float64)
    if x_px.ndim != 1:
        raise ValueError(f"x_px must be 1-D (one entry per position); got shape {x_px.shape}.")
    check_same_length(x_px, "x_px", y_px, "y_px", what="every position needs x and y")
    check_finite(x_px, "x_px")
    check_finite(y_px, "y_px")
    return np.stack([x_px, y_px], axis=1)


def _object_index(object_index, n_positions):
    """Validate ``object_index``; return it as int64, or None when every position is on one object."""
    if object_index is None:
        return None
    object_index = np.asarray(object_index)
    if object_index.dtype.kind not in "iu":
        raise ValueError(
            f"object_index must hold integers (the object of each position); got dtype {object_index.dtype}."
        )
    if object_index.shape != (n_positions,):
        raise ValueError(
            f"object_index has shape {object_index.shape}; it needs one entry per position, shape ({n_positions},)."
        )
    if n_positions and object_index.min() < 0:
        negative = int(np.sum(object_index < 0))
        raise ValueError(f"object_index has {negative} negative values; objects are numbered >= 0.")
    object_index = object_index.astype(np.int64, copy=False)
    return None if n_positions == 0 or np.all(object_index == object_index[0]) else object_index


def _nearest_neighbours(positions, seeds, neighbor_count, object_index):
    """The ``neighbor_count`` nearest positions of each seed, among the positions of the seed's object."""
    if object_index is None:
        return cKDTree(positions).query(positions[seeds], k=neighbor_count)[1].astype(np.int64)
    neighbours = np.empty((len(seeds), neighbor_count), dtype=np.int64)
    for obj in np.unique(object_index[seeds]):  # one tree per object: a few objects, not one per patch
        members = np.flatnonzero(object_index == obj)
        chosen = object_index[seeds] == obj
        _, found = cKDTree(positions[members]).query(positions[seeds[chosen]], k=neighbor_count)
        neighbours[chosen] = members[found]
    return neighbours


def _make_groups(positions, indices, seeds):
    members = positions[indices]  # (G, C, 2)
    centres = members.mean(axis=1)
    offsets = (members - centres[:, None, :]).astype(np.float32)
    return Groups(indices=indices.astype(np.int64), offsets=offsets, centres=centres, seeds=seeds.astype(np.int64))


def _unrank_combinations(ranks, k, c):
    """Return the lexicographic combinations of ``range(k)`` taken ``c`` at a time with these ranks.

    Rank 0 is ``(0, 1, ..., c - 1)``: the c nearest neighbours.
    """
    binomial = np.array([[math.comb(n, r) for r in range(c + 1)] for n in range(k + 1)], dtype=np.int64)
    ranks = np.array(ranks, dtype=np.int64)
    out = np.empty((ranks.size, c), dtype=np.int64)
    value = np.zeros(ranks.size, dtype=np.int64)
    for position in range(c):
        remaining = c - position - 1
        for _ in range(k - c + 1):  # skip the blocks of combinations that start with smaller values
            block = binomial[np.maximum(k - value - 1, 0), remaining]
            advance = ranks >= block
            ranks -= np.where(advance, block, 0)
            value += advance
        out[:, position] = value
        value = value + 1
    return out


def group_neighbors(
    x_px, y_px, gridsize, *, neighbor_count, n_groups=None, seed=0, sequential=False, object_index=None
):
    """Group scan positions into sets of ``C = gridsize**2`` nearby positions.

    Parameters
    ----------
    x_px, y_px : ndarray of shape (n_positions,)
        Positions in object pixels.
    gridsize : int
        g; groups have ``C = g**2`` members. For ``gridsize = 1`` the groups are the positions
        themselves (offsets zero) and ``neighbor_count`` is not used.
    neighbor_count : int
        K, the size of each seed's neighbourhood (itself included), ``C <= K <= n_positions``.
    n_groups : int, optional
        Number of groups; ``None`` gives one per position. Up to ``n_positions`` groups have
        distinct seeds; beyond that, up to ``n_positions * comb(K, C)`` distinct (seed, subset)
        pairs are drawn ("K choose C" oversampling).
    seed : int
        Seeds the random choice of seeds and subsets.
    sequential : bool
        No randomness: group ``i`` is seeded by position ``i % n_positions`` and takes the
        ``i // n_positions``-th subset in lexicographic order, so the first ``n_positions`` groups
        are every position with its C nearest neighbours (what inference uses).
    object_index : ndarray of shape (n_positions,), int, optional
        The object (tile of a mosaic canvas, see `ptycholib.data.PtychoData`) of each position.
        A seed's K nearest neighbours are searched among the positions of its own object only, so
        every group's members share one object; seeds, subsets and ``n_groups`` (the total over all
        objects) are drawn exactly as without it. ``None`` or a single value: one object, the
        same groups as before.

    Returns
    -------
    Groups

    Raises
    ------
    ValueError
        If ``gridsize < 1``, ``neighbor_count < C``, ``neighbor_count > n_positions`` (or than
        the positions of one object), ``n_groups`` exceeds what the positions can form (the
        message gives the limit), or ``object_index`` is not one non-negative integer per position.

    Examples
    --------
    >>> x, y = np.meshgrid(np.arange(4.0), np.arange(3.0))
    >>> groups = group_neighbors(x.ravel(), y.ravel(), 2, neighbor_count=4, sequential=True)
    >>> groups.indices.shape, groups.offsets.shape, float(np.abs(groups.offsets.mean(axis=1)).max())
    ((12, 4), (12, 4, 2), 0.0)
    """
    positions = _positions(x_px, y_px)
    n_positions = len(positions)
    object_index = _object_index(object_index, n_positions)
    if int(gridsize) != gridsize or gridsize < 1:
        raise ValueError(f"gridsize must be a positive integer; got {gridsize!r}.")
    channels = int(gridsize) ** 2
    if n_groups is not None and (int(n_groups) != n_groups or n_groups < 1):
        raise ValueError(f"n_groups must be a positive integer or None; got {n_groups!r}.")
    n_groups = n_positions if n_groups is None else int(n_groups)
    rng = np.random.default_rng(seed)

    if channels == 1:
        if n_groups > n_positions:
            raise ValueError(
                f"n_groups={n_groups} but there are only {n_positions} positions; with gridsize 1 a group is "
                f"one position, so at most {n_positions} groups exist. Lower n_groups (None uses all)."
            )
        chosen = np.arange(n_groups) if sequential else np.sort(rng.choice(n_positions, n_groups, replace=False))
        return _make_groups(positions, chosen[:, None], chosen)

    if int(neighbor_count) != neighbor_count or neighbor_count < channels:
        raise ValueError(
            f"neighbor_count={neighbor_count!r} is smaller than gridsize**2 = {channels}; a group of {channels} "
            f"needs at least {channels} neighbours to choose from. Set neighbor_count >= {channels}."
        )
    neighbor_count = int(neighbor_count)
    if neighbor_count > n_positions:
        raise ValueError(
            f"neighbor_count={neighbor_count} exceeds the {n_positions} scan positions; lower it to at most "
            f"{n_positions} (and at least {channels})."
        )
    subsets = math.comb(neighbor_count, channels)
    limit = n_positions * subsets
    if n_groups > limit:
        raise ValueError(
            f"n_groups={n_groups} exceeds the {limit} distinct groups that {n_positions} positions can form with "
            f"neighbor_count={neighbor_count} and gridsize={gridsize} ({n_positions} seeds x comb({neighbor_count}, "
            f"{channels}) = {subsets} subsets); raise neighbor_count or lower n_groups."
        )
    if object_index is not None:
        objects, sizes = np.unique(object_index, return_counts=True)
        if sizes.min() < neighbor_count:
            smallest = int(np.argmin(sizes))
            raise ValueError(
                f"object {objects[smallest]} has {sizes[smallest]} scan positions but neighbor_count={neighbor_count}; "
                f"groups stay within one object, so lower neighbor_count to at most {sizes[smallest]} (and at least "
                f"{channels}) or give every object more positions."
            )
    if limit >= 2**62:
        raise ValueError(f"neighbor_count={neighbor_count} gives too many subsets to enumerate; lower it.")

    if sequential:
        ids = np.arange(n_groups, dtype=np.int64)
    elif n_groups <= n_positions:
        seeds = np.sort(rng.choice(n_positions, n_groups, replace=False))
        ids = rng.integers(subsets, size=n_groups, dtype=np.int64) * n_positions + seeds
    else:
        ids = np.sort(rng.choice(limit, n_groups, replace=False)).astype(np.int64)
    seeds, ranks = ids % n_positions, ids // n_positions
    neighbours = _nearest_neighbours(positions, seeds, neighbor_count, object_index)
    columns = _unrank_combinations(ranks, neighbor_count, channels)
    indices = np.take_along_axis(neighbours, columns, axis=1)
    return _make_groups(positions, indices, seeds)


def groups_from_indices(x_px, y_px, indices):
    """Build `Groups` from fixed member lists (e.g. SPEC 10's grid groups, `bench.setting.benchmark_scan`).

    Parameters
    ----------
    x_px, y_px : ndarray of shape (n_positions,)
    indices : ndarray of shape (G, C), int
        Members of each group; C must be a square (``gridsize**2``).

    Returns
    -------
    Groups
        Seeds are the first members.
    """
    positions = _positions(x_px, y_px)
    indices = np.asarray(indices)
    if indices.ndim != 2 or indices.dtype.kind not in "iu":
        raise ValueError(f"indices must be a 2-D integer array (groups, members); got {indices.dtype} {indices.shape}.")
    if math.isqrt(indices.shape[1]) ** 2 != indices.shape[1]:
        raise ValueError(f"groups have {indices.shape[1]} members; it must be gridsize**2 (1, 4, 9, ...).")
    if indices.size and (indices.min() < 0 or indices.max() >= len(positions)):
        raise ValueError(f"indices must lie in [0, {len(positions) - 1}]; got [{indices.min()}, {indices.max()}].")
    return _make_groups(positions, indices.astype(np.int64), indices[:, 0])


def _transformed(amplitudes, transform):
    if transform == "linear":
        return np.asarray(amplitudes)
    if transform == "log":
        return np.log1p(np.asarray(amplitudes, dtype=np.float32))
    raise ValueError(f"input_transform={transform!r} is not supported; allowed values: 'linear', 'log'.")


def network_inputs(amplitudes, scale, transform="linear"):
    """Return the network input ``x = g * T(a)`` as float32 (SPEC 4.2; ``ModelConfig.input_transform``).

    Parameters
    ----------
    amplitudes : ndarray of shape (..., N, N)
        Measured amplitudes (square roots of counts).
    scale : float
        ``g`` from `input_scale` (computed on the training data, stored in the archive).
    transform : str
        ``"linear"`` (``T(a) = a``) or ``"log"`` (``T(a) = log(1 + a)``).

    Examples
    --------
    >>> network_inputs(np.full((1, 2, 2), np.e - 1), 2.0, "log").tolist()
    [[[2.0, 2.0], [2.0, 2.0]]]
    """
    return (scale * _transformed(amplitudes, transform)).astype(np.float32)


def input_scale(amplitudes, transform="linear"):
    """Return SPEC's ``g``: the factor that makes the mean per-pattern energy of ``g * T(a)`` equal ``(N/2)**2``.

    Parameters
    ----------
    amplitudes : ndarray of shape (..., N, N)
        Measured amplitudes (training data; inference reuses the stored ``g``).
    transform : str
        ``T`` of `network_inputs`: ``"linear"`` (SPEC 4.2) or ``"log"``.

    Returns
    -------
    float
        ``g = (N / 2) / sqrt(mean_k sum(a_k**2))``.

    Examples
    --------
    >>> input_scale(np.full((3, 64, 64), 2.0))
    0.25
    """
    amplitudes = _transformed(amplitudes, transform)
    n = amplitudes.shape[-1]
    energy = float(np.mean(np.sum(np.square(amplitudes, dtype=np.float64), axis=(-2, -1))))
    if not energy > 0 or not math.isfinite(energy):
        raise ValueError(f"amplitudes have mean energy {energy}; g needs patterns with signal (non-zero, finite).")
    return (n / 2) / math.sqrt(energy)
