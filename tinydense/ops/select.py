"""Picking entries along an axis: ``gather``, max/min with their indices, ``topk``.

    gather(x, axis, idx)[..., i, ...] = x[..., idx[..., i, ...], ...]     (idx replaces the axis' index)
    backward: the gradient goes back to the picked entries (added where one is picked twice)

max(x, dim) and min(x, dim) return (values, indices), PyTorch's way: the values are a gather
at argmax/argmin, so the whole gradient goes to the one entry picked (the first of ties),
unlike ``x.max(axis=...)`` (ops/arithmetic.py), which splits it over ties.
"""
from __future__ import annotations

from collections import namedtuple

from .. import backend
from ..autograd import Function, Tensor
from .arithmetic import normalize_axis

ValuesIndices = namedtuple("ValuesIndices", ["values", "indices"])


def _full_index(idx, axis):
    """The fancy index that reads ``take_along_axis(x, idx, axis)`` as ``x[index]``."""
    xp = backend.get_array_module(idx)
    grids = list(xp.ix_(*[xp.arange(n) for n in idx.shape]))
    grids[axis] = idx
    return tuple(grids)


class Gather(Function):
    # x (..., n, ...), idx (..., m, ...) integers in [0, n) -> (..., m, ...)
    def forward(self, x, idx, axis):
        self.shape, self.index = x.shape, _full_index(idx, axis)
        return x[self.index]

    def backward(self, g):
        xp = backend.get_array_module(g)
        grad = xp.zeros(self.shape, dtype=g.dtype)
        xp.add.at(grad, self.index, g)
        return grad, None


def _data(x):
    return x.data if isinstance(x, Tensor) else x


def gather(input, dim, index):
    """``torch.gather``: out[i][j] = input[i][index[i][j]] for dim=1 (and likewise for any dim)."""
    x, idx = _data(input), _data(index)
    xp = backend.get_array_module(x)
    idx = xp.asarray(idx)
    axis = normalize_axis(dim, x.ndim, "gather")
    if idx.dtype.kind not in "iu" or idx.ndim != x.ndim:
        raise ValueError(f"gather: index must be an integer array with {x.ndim} dimensions like the input, "
                         f"got dtype {idx.dtype} and shape {tuple(idx.shape)}")
    if any(idx.shape[d] > x.shape[d] for d in range(x.ndim) if d != axis):
        raise ValueError(f"gather: index shape {tuple(idx.shape)} exceeds input shape {tuple(x.shape)} "
                         f"outside dimension {axis}")
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= x.shape[axis]):
        raise IndexError(f"gather: index values must lie in [0, {x.shape[axis]}), got {int(idx.min())} to "
                         f"{int(idx.max())}")
    return Gather.apply(input, idx, axis=axis)


def _pick(input, dim, keepdim, arg, op):
    x = _data(input)
    axis = normalize_axis(dim, max(x.ndim, 1), op)
    if x.ndim and x.shape[axis] == 0:
        raise ValueError(f"{op}: dimension {axis} of shape {tuple(x.shape)} is empty")
    xp = backend.get_array_module(x)
    idx = xp.expand_dims(arg(x, axis=axis), axis)
    values = Gather.apply(input, idx, axis=axis) if isinstance(input, Tensor) else Tensor(x[_full_index(idx, axis)])
    if not keepdim:
        values, idx = values.reshape(values.shape[:axis] + values.shape[axis + 1:]), idx.squeeze(axis)
    return ValuesIndices(values, Tensor(idx.astype("int64")))


def max_along(input, dim, keepdim=False, op="max"):
    """(values, indices) of the maxima along ``dim`` (``op`` names the caller in errors)."""
    return _pick(input, dim, keepdim, lambda a, axis: a.argmax(axis=axis), op)


def min_along(input, dim, keepdim=False, op="min"):
    """(values, indices) of the minima along ``dim``."""
    return _pick(input, dim, keepdim, lambda a, axis: a.argmin(axis=axis), op)


def topk(input, k, dim=-1, largest=True, sorted=True):
    """(values, indices) of the ``k`` largest (or smallest) entries along ``dim``, largest first."""
    x = _data(input)
    axis = normalize_axis(dim, max(x.ndim, 1), "topk")
    n = x.shape[axis] if x.ndim else 1
    if not isinstance(k, int) or not 0 <= k <= n:
        raise ValueError(f"topk: k must be an integer in [0, {n}] for dimension {axis} of shape "
                         f"{tuple(x.shape)}, got {k!r}")
    xp = backend.get_array_module(x)
    order = xp.argsort(-x if largest else x, axis=axis, kind="stable")
    idx = xp.take(order, xp.arange(k), axis=axis)
    return ValuesIndices(Gather.apply(input, idx, axis=axis), Tensor(idx.astype("int64")))
