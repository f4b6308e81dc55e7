"""The seam of synchronized batch norm: where batch norm's per-channel numbers leave the process.

In data-parallel training (tinydense/distributed/) every process holds a shard of the batch.
Batch norm's forward and backward need, per channel, a few numbers over the WHOLE batch:

    forward:  the count M, the mean and the biased variance
    backward: sum g and sum g * xhat (the closed form of ops/norm.py)

Every batch norm op in training (ops/norm.py and the fused ones that compute their statistics
themselves, ops/channel_major.py, ops/bn_relu.py, ops/dense_block.py) passes its local values
through ``global_statistics`` and ``global_sums``, and its count through ``global_count``. By
default (one process) these return them unchanged. ``set_allreduce(fn, size)`` installs
``fn``, a sum over the ``size`` processes of a small float64 array
(``Communicator.allreduce_small``), and then:

    count, sum:  M = sum_r M_r,  mean = sum_r M_r mean_r / M          (one allreduce)
    variance:    var = sum_r (M_r var_r + M_r (mean_r - mean)^2) / M   (a second one)

The second line is the exact identity sum (x - mean)^2 = sum_r [sum (x - mean_r)^2 + M_r
(mean_r - mean)^2] (Chan, Golub & LeVeque): each shard's squares stay centred on its own
mean, so no sum of raw squares loses the variance to cancellation (x = 1e4 + noise), and the
result is the one-process two-pass variance up to rounding. Everything is float64, as the
one-process statistics are. Every process must make the same calls in the same order (they
are collective): the ops call these once per op, never from their worker threads. Every
process must also hold as many images (tinydense.distributed's sampler pads or drops so that
they do): then the whole batch's count is the shard's times the number of processes, which
``global_count`` gives without a message, and ``global_statistics`` checks.
"""
from __future__ import annotations

from .. import backend

_allreduce, _size = None, 1


def set_allreduce(fn, size=1):
    """Install ``fn`` (float64 array -> its elementwise sum over the ``size`` processes), or None
    for one process. Returns the previous (fn, size) (to restore it: ``set_allreduce(*previous)``)."""
    global _allreduce, _size
    previous, (_allreduce, _size) = (_allreduce, _size), (fn, size if fn is not None else 1)
    return previous


def global_count(count):
    """Values per channel over the whole batch, from this process's ``count``."""
    return count * _size


def synchronized():
    """Whether batch statistics are combined across processes."""
    return _allreduce is not None


def global_statistics(count, mean, var):
    """(count, mean, var) of the whole batch from this process's: ``count`` values per channel,
    ``mean`` and ``var`` (C,) float64. Unchanged when not synchronized."""
    if _allreduce is None:
        return count, mean, var
    xp = backend.get_array_module(mean)
    first = _allreduce(xp.concatenate([xp.full(1, float(count)), count * mean]))
    total = int(round(float(first[0])))
    if total != count * _size:        # the same on every process: all raise together, none waits
        raise ValueError(f"synchronized batch norm needs the same batch size on every process: "
                         f"{count} values per channel here, {total} over {_size} processes")
    mean_all = first[1:] / total
    var_all = _allreduce(count * var + count * (mean - mean_all) ** 2) / total
    return total, mean_all, var_all


def global_sums(*sums):
    """Per-channel sums (C,) over this process's values -> the sums over the whole batch,
    each in its own dtype, added in float64 (one allreduce for all of them)."""
    if _allreduce is None:
        return sums
    xp = backend.get_array_module(sums[0])
    total = _allreduce(xp.concatenate([s.astype(xp.float64) for s in sums]))
    return tuple(part.astype(s.dtype) for part, s in zip(xp.split(total, len(sums)), sums))
