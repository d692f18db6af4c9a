"""Validation split and batch order, drawn in NumPy so that both backends see the same batches.

SPEC section 8 compares the two backends trained "with the same batch order"; the frameworks' own
shufflers (``tf.data.Dataset.shuffle``, torch's ``RandomSampler``) cannot agree, so both trainers take
their orders from here.
"""

from __future__ import annotations

import numpy as np

__all__ = ["split_validation", "epoch_order"]


def split_validation(n_groups, fraction, seed):
    """Split group indices into training and validation sets with a seeded permutation.

    Parameters
    ----------
    n_groups : int
    fraction : float
        Fraction in [0, 1) held out for validation (``floor(fraction * n_groups)`` groups, at least one
        when ``fraction > 0`` and there are at least two groups).
    seed : int

    Returns
    -------
    train_indices, val_indices : ndarray of int64, sorted

    Examples
    --------
    >>> train, val = split_validation(10, 0.2, seed=0)
    >>> len(train), len(val)
    (8, 2)
    """
    order = np.random.default_rng([seed, 1]).permutation(n_groups)
    n_val = int(np.floor(fraction * n_groups))
    if fraction > 0 and n_val == 0 and n_groups >= 2:
        n_val = 1
    return np.sort(order[n_val:]).astype(np.int64), np.sort(order[:n_val]).astype(np.int64)


def epoch_order(n_items, seed, epoch):
    """Return the shuffled order of ``n_items`` training items for one epoch (same in both backends).

    Examples
    --------
    >>> (epoch_order(5, 0, 0) == epoch_order(5, 0, 0)).all(), sorted(epoch_order(5, 0, 1).tolist())
    (np.True_, [0, 1, 2, 3, 4])
    """
    return np.random.default_rng([seed, 2, epoch]).permutation(n_items).astype(np.int64)
