"""Datasets and batching the way PyTorch's ``torch.utils.data`` does them, sample by sample.

    Dataset            anything with ``__len__`` and ``__getitem__(i) -> sample``
    TensorDataset      samples are the i-th rows of some tensors: (x[i], y[i])
    Subset             a dataset seen through a list of indices
    random_split       a dataset cut at random into pieces of given lengths (or fractions)
    DataLoader         batches: reads ``batch_size`` samples, in order or shuffled, and
                       ``collate_fn`` stacks them into tensors (default_collate)

Shuffling draws from tinydense's seeded generator (``tinydense.manual_seed``) unless a
``generator`` (a ``numpy.random.Generator``) is given. ``num_workers`` is accepted so that
PyTorch scripts run, and ignored: every sample is read in the main process, one after
another (there are no worker processes to start, to seed or to debug).

``tinydense.data.DataLoader`` is the other loader: it works on a whole array of images at
once (normalising and augmenting a batch in one NumPy operation) and is what
``tinydense train`` uses; this one calls your dataset per sample, as PyTorch scripts expect.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import backend
from ..autograd import Tensor


class Dataset:
    """Base class of map-style datasets: define ``__len__`` and ``__getitem__``."""

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")

    def __len__(self):
        raise NotImplementedError(f"{type(self).__name__} must define __len__")


class TensorDataset(Dataset):
    """Sample i is ``(t[i] for t in tensors)``; every tensor must have the same first dimension."""

    def __init__(self, *tensors):
        if not tensors:
            raise ValueError("TensorDataset needs at least one tensor")
        sizes = [len(t) for t in tensors]
        if len(set(sizes)) != 1:
            raise ValueError(f"TensorDataset: the tensors' first dimensions differ: {sizes}")
        self.tensors = tensors

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def __len__(self):
        return len(self.tensors[0])


class Subset(Dataset):
    """``dataset[indices[i]]`` as sample i."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, [int(i) for i in indices]

    def __getitem__(self, index):
        return self.dataset[self.indices[index]]

    def __len__(self):
        return len(self.indices)


def random_split(dataset, lengths, generator=None):
    """Cut ``dataset`` at random into Subsets of the given ``lengths``, which sum to its
    length, or are fractions summing to 1 (PyTorch's rule: floor each, then hand the
    remainder out one by one from the first piece on)."""
    n = len(dataset)
    lengths = list(lengths)
    if lengths and all(isinstance(x, float) for x in lengths) and math.isclose(sum(lengths), 1.0):
        counts = [int(math.floor(n * f)) for f in lengths]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
        lengths = counts
    if any(not isinstance(x, numbers.Integral) or x < 0 for x in lengths) or sum(lengths) != n:
        raise ValueError(f"random_split: lengths {lengths} must be non-negative integers summing to the "
                         f"dataset's length {n}, or fractions summing to 1")
    order = (generator if generator is not None else backend.rng(np)).permutation(n)
    bounds = np.cumsum([0] + lengths)
    return [Subset(dataset, order[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])]


def default_collate(batch):
    """Stack a list of samples into a batch, keeping the samples' structure: tensors and
    arrays are stacked along a new first axis, Python ints become an int64 tensor, floats a
    float64 tensor (as PyTorch), and tuples, lists and dicts are collated field by field."""
    first = batch[0]
    if isinstance(first, Tensor):
        xp = backend.get_array_module(first.data)
        return Tensor(xp.stack([x.data for x in batch]))
    if isinstance(first, np.ndarray) or (hasattr(first, "shape") and hasattr(first, "dtype")):
        return Tensor(backend.get_array_module(first).stack(batch))
    if isinstance(first, (bool, np.bool_)):
        return Tensor(np.array(batch, dtype=bool))
    if isinstance(first, numbers.Integral):
        return Tensor(np.array(batch, dtype=np.int64))
    if isinstance(first, numbers.Real):
        return Tensor(np.array(batch, dtype=np.float64))
    if isinstance(first, (str, bytes)):
        return list(batch)
    if isinstance(first, dict):
        return {key: default_collate([sample[key] for sample in batch]) for key in first}
    if isinstance(first, (tuple, list)):
        if any(len(sample) != len(first) for sample in batch):
            raise ValueError("default_collate: the samples of a batch have different numbers of fields")
        return [default_collate(list(field)) for field in zip(*batch)]
    raise TypeError(f"default_collate cannot batch samples of type {type(first).__name__}; "
                    f"pass collate_fn=")


class DataLoader:
    """Batches of ``dataset``'s samples, collated by ``collate_fn`` (default: default_collate).

    batch_size: samples per batch (None: no batching, the samples themselves). shuffle: a new
    random order every pass. drop_last: leave out a last, smaller batch. num_workers,
    pin_memory, persistent_workers: accepted and ignored (see the module's docstring)."""

    def __init__(self, dataset, batch_size=1, shuffle=False, sampler=None, num_workers=0, collate_fn=None,
                 pin_memory=False, drop_last=False, generator=None, persistent_workers=False):
        if batch_size is not None and (not isinstance(batch_size, numbers.Integral)
                                       or isinstance(batch_size, bool) or batch_size <= 0):
            raise ValueError(f"DataLoader: batch_size must be a positive integer or None, got {batch_size!r}")
        if not isinstance(num_workers, numbers.Integral) or num_workers < 0:
            raise ValueError(f"DataLoader: num_workers must be a non-negative integer, got {num_workers!r}")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: give sampler or shuffle=True, not both")
        self.dataset, self.batch_size, self.shuffle = dataset, batch_size, bool(shuffle)
        self.sampler, self.drop_last, self.generator = sampler, bool(drop_last), generator
        self.collate_fn = collate_fn if collate_fn is not None else (
            default_collate if batch_size is not None else (lambda sample: sample))
        self.num_workers = int(num_workers)

    def _order(self):
        if self.sampler is not None:
            return list(self.sampler)
        n = len(self.dataset)
        return (self.generator if self.generator is not None else backend.rng(np)).permutation(n) \
            if self.shuffle else range(n)

    def __len__(self):
        n = len(self.sampler) if self.sampler is not None else len(self.dataset)
        if self.batch_size is None:
            return n
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        order = self._order()
        if self.batch_size is None:
            for i in order:
                yield self.collate_fn(self.dataset[int(i)])
            return
        batch = []
        for i in order:
            batch.append(self.dataset[int(i)])
            if len(batch) == self.batch_size:
                yield self.collate_fn(batch)
                batch = []
        if batch and not self.drop_last:
            yield self.collate_fn(batch)
