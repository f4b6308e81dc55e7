"""Concatenation and flattening: ops that move values without changing them."""
from __future__ import annotations

from .. import backend
from ..autograd import Function, Tensor


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
    """Concatenate tensors along ``axis`` (default 1: channels of NCHW).
    Every other dimension must match."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat needs at least one tensor")
    shapes = [tuple((t.data if isinstance(t, Tensor) else t).shape) for t in tensors]
    ndim = len(shapes[0])
    if any(len(s) != ndim for s in shapes):
        raise ValueError(f"cat: tensors have different numbers of dimensions: {shapes}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"cat: axis {axis} is out of range for {ndim}-D tensors")
    axis %= ndim
    rest = {s[:axis] + s[axis + 1:] for s in shapes}
    if len(rest) > 1:
        raise ValueError(f"cat along axis {axis}: all other dimensions must match, got shapes {shapes}")
    return Cat.apply(*tensors, axis=axis)


def flatten(x, start_dim=1):
    """Merge all dimensions from ``start_dim`` on: (N, C, H, W) -> (N, C*H*W)."""
    shape = x.shape
    return x.reshape(tuple(shape[:start_dim]) + (-1,))
