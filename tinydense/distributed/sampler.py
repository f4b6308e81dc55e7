"""Which images each rank reads: a disjoint shard of every epoch, the same shuffle everywhere.

Every rank draws the epoch's order from the same generator (the run's seed), so every rank
knows the whole order without sending it. Rank r of N then takes every N-th position,
starting at r:

    order     = permutation(n)                        (the same on every rank)
    shard r   = order[r], order[r + N], order[r + 2N], ...

Interleaving (not N contiguous blocks) keeps ONE process's batches: rank r's batch i of b
images is positions r, r + N, ... of the one-process batch i of B = N b images, so the N
shards of a step together are exactly the images one process would have used in that step, and with synchronized batch norm the step is the same step.

When N does not divide n, the shards would differ in length by one, and a rank that ran out
would wait forever in the others' allreduce. Two remedies, chosen by ``drop_last``:

    padding (default):  the order is extended by its own first (-n mod N) entries (from the
                        start again if n < N), so every rank gets ceil(n / N) images; those
                        few images count twice this epoch.
    dropping:           the order's last (n mod N) entries are left out, so every rank gets
                        floor(n / N) images; different ones each epoch, as the order changes.
"""
from __future__ import annotations

import numpy as np


def _check(size, rank):
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"world size must be a positive integer, got {size!r}")
    if not isinstance(rank, (int, np.integer)) or not 0 <= rank < size:
        raise ValueError(f"rank must lie in 0..{size - 1} for a world of size {size}, got {rank!r}")


def shard(order, size, rank, drop_last=False):
    """Rank ``rank``'s share of the epoch's ``order`` (an index array the same on every rank)."""
    _check(size, rank)
    order = np.asarray(order)
    n = len(order)
    if n < size and drop_last:
        raise ValueError(f"{n} images cannot be shared among {size} ranks with drop_last (each would get none)")
    if drop_last:
        order = order[:n - n % size]
    elif n % size:
        order = np.concatenate([order, np.resize(order, size - n % size)])
    return order[rank::size]


class DistributedSampler:
    """The indices rank ``rank`` of ``size`` reads in each epoch of a data set of ``n`` images.

    ``indices(epoch)``: its shard of the epoch's order, ``permutation(n)`` drawn from
    ``seed`` and the epoch (``shuffle``) or ``arange(n)``, padded or dropped as the module
    docstring says. ``len`` is the shard's length, the same on every rank."""

    def __init__(self, n, size, rank, seed=0, shuffle=True, drop_last=False):
        _check(size, rank)
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"the data set must hold at least one image, got n={n!r}")
        self.n, self.size, self.rank = int(n), int(size), int(rank)
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        shard(np.arange(self.n), self.size, self.rank, drop_last)   # refuses what cannot be shared

    def __len__(self):
        return self.n // self.size if self.drop_last else -(-self.n // self.size)

    def order(self, epoch):
        """The whole epoch's order, the same on every rank."""
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def indices(self, epoch):
        return shard(self.order(epoch), self.size, self.rank, self.drop_last)
