"""Concatenation and flattening: ops that move values without changing them."""
from __future__ import annotations

import math

from .. import backend
from ..autograd import Function, Tensor
from .arithmetic import normalize_axis


class Cat(Function):
    # y = [x_1, x_2, ...] along `axis` ; backward cuts g into the same pieces
    def forward(self, *xs, axis=1):
        xp = backend.get_array_module(*xs)
        self.axis = axis
        self.bounds = []
        start = 0
        for x in xs:
            self.bounds.append((start, start + x.shape[axis]))
            start += x.shape[axis]
        return xp.concatenate(xs, axis=axis)

    def backward(self, g):
        index = [slice(None)] * g.ndim
        grads = []
        for (lo, hi), need in zip(self.bounds, self.needs_grad):
            index[self.axis] = slice(lo, hi)
            grads.append(g[tuple(index)] if need else None)
        return tuple(grads)


def cat(tensors, axis=1):
    """Concatenate tensors along ``axis`` (default 1: channels of NCHW; negative
    axes count from the end). Every other dimension must match."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat needs at least one tensor")
    shapes = [tuple((t.data if isinstance(t, Tensor) else t).shape) for t in tensors]
    ndim = len(shapes[0])
    if any(len(s) != ndim for s in shapes):
        raise ValueError(f"cat: tensors have different numbers of dimensions: {shapes}")
    axis = normalize_axis(axis, ndim, "cat")
    rest = {s[:axis] + s[axis + 1:] for s in shapes}
    if len(rest) > 1:
        raise ValueError(f"cat along axis {axis}: all other dimensions must match, got shapes {shapes}")
    return Cat.apply(*tensors, axis=axis)


def flatten(x, start_dim=1, end_dim=-1):
    """Merge dimensions ``start_dim`` to ``end_dim`` (both included; negative
    counts from the end) into one: (N, C, H, W) -> (N, C*H*W) by default.
    A 0-d tensor becomes shape (1,), as in PyTorch."""
    shape = tuple(x.shape)
    ndim = max(len(shape), 1)                  # a 0-d tensor flattens like a 1-d one
    start = normalize_axis(start_dim, ndim, "flatten start_dim")
    end = normalize_axis(end_dim, ndim, "flatten end_dim")
    if start > end:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} "
                         f"(a tensor of shape {shape})")
    return x.reshape(shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:])
