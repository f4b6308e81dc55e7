"""Tensor arithmetic: the small ops behind ``+ - * / ** @``, reductions,
reshapes and indexing. Each class is one op: forward, then its backward.

Broadcasting: when an input was broadcast to a larger shape in forward,
its gradient is summed back over the broadcast axes (``unbroadcast``).
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..autograd import Function


def unbroadcast(grad, shape):
    """Sum ``grad`` down to ``shape``: undo NumPy broadcasting in backward."""
    if tuple(grad.shape) == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:                       # leading axes that broadcasting added
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:                            # axes of length 1 that were stretched
        grad = grad.sum(axis=axes, keepdims=True)
    return grad


class Add(Function):
    # z = a + b ; dz/da = 1, dz/db = 1
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, g):
        return unbroadcast(g, self.shapes[0]), unbroadcast(g, self.shapes[1])


class Sub(Function):
    # z = a - b
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a - b

    def backward(self, g):
        return unbroadcast(g, self.shapes[0]), unbroadcast(-g, self.shapes[1])


class Mul(Function):
    # z = a * b ; dz/da = b, dz/db = a
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        ga = unbroadcast(g * self.b, self.a.shape) if self.needs_grad[0] else None
        gb = unbroadcast(g * self.a, self.b.shape) if self.needs_grad[1] else None
        return ga, gb


class Div(Function):
    # z = a / b ; dz/da = 1/b, dz/db = -a/b^2
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, g):
        ga = unbroadcast(g / self.b, self.a.shape) if self.needs_grad[0] else None
        gb = unbroadcast(-g * self.a / (self.b * self.b), self.b.shape) if self.needs_grad[1] else None
        return ga, gb


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, g):
        return -g


class Pow(Function):
    # z = a ** p (p a constant) ; dz/da = p * a^(p-1)
    def forward(self, a, exponent):
        self.a, self.p = a, exponent
        return a ** a.dtype.type(exponent)

    def backward(self, g):
        p = self.a.dtype.type(self.p)
        return g * p * self.a ** (p - 1)


class MatMul(Function):
    # (..., n, k) @ (..., k, m) -> (..., n, m) ; dA = G B^T, dB = A^T G
    # 1-D operands follow NumPy: a vector is a row on the left, a column on the right.
    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0 or a.shape[-1] != b.shape[0 if b.ndim == 1 else -2]:
            raise ValueError(f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} do not fit: the last "
                             f"axis of the first must match the {'only' if b.ndim == 1 else 'second-to-last'} "
                             f"axis of the second")
        self.a, self.b = a, b
        return a @ b

    def backward(self, g):
        xp = backend.get_array_module(g)
        a, b = self.a, self.b
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        # g with the vectors' dropped axes put back: the shape of a2 @ b2
        g2 = g.reshape(np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2]) + (a2.shape[-2], b2.shape[-1]))
        ga = gb = None
        if self.needs_grad[0]:
            ga = unbroadcast(g2 @ xp.swapaxes(b2, -1, -2), a2.shape).reshape(a.shape)
        if self.needs_grad[1]:
            gb = unbroadcast(xp.swapaxes(a2, -1, -2) @ g2, b2.shape).reshape(b.shape)
        return ga, gb


def normalize_axes(axis, ndim, op):
    """The axes an op was given, as non-negative ints in the order given.

    ``axis``: None (every axis), an int, or a sequence of ints; each in
    [-ndim, ndim), -1 being the last axis (NumPy's and PyTorch's rule).
    Every op that takes axes goes through here, so forward and backward agree
    on them. ``op`` names the op in the errors: ValueError for an axis out of
    range or named twice, TypeError for one that is not an integer.
    """
    if axis is None:
        return tuple(range(ndim))
    axes = []
    given = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    for ax in given:
        if isinstance(ax, bool) or not isinstance(ax, (int, np.integer)):
            raise TypeError(f"{op}: axis must be None, an integer or a tuple of integers, got {axis!r}")
        if not -ndim <= ax < ndim:
            raise ValueError(f"{op}: axis {ax} is out of range for a {ndim}-D tensor "
                             f"(valid axes: {-ndim} to {ndim - 1})")
        if ax % ndim in axes:
            raise ValueError(f"{op}: axes {axis!r} name dimension {ax % ndim} of a {ndim}-D tensor twice")
        axes.append(int(ax) % ndim)
    return tuple(axes)


def normalize_axis(axis, ndim, op):
    """One axis (an int in [-ndim, ndim)) as a non-negative int; see ``normalize_axes``."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{op}: axis must be an integer, got {axis!r}")
    return normalize_axes(axis, ndim, op)[0]


class Sum(Function):
    # z = sum over axes ; the gradient is g copied back along those axes
    def forward(self, a, axis=None, keepdims=False):
        self.shape, self.axes, self.keepdims = a.shape, normalize_axes(axis, a.ndim, "sum"), keepdims
        return a.sum(axis=self.axes, keepdims=keepdims)

    def backward(self, g):
        xp = backend.get_array_module(g)
        g = g if self.keepdims else xp.expand_dims(g, self.axes)
        return xp.broadcast_to(g, self.shape)


class Mean(Function):
    # z = sum / count ; the gradient is g / count copied back
    def forward(self, a, axis=None, keepdims=False):
        self.shape, self.axes, self.keepdims = a.shape, normalize_axes(axis, a.ndim, "mean"), keepdims
        self.count = math.prod(a.shape[ax] for ax in self.axes)
        return a.mean(axis=self.axes, keepdims=keepdims)

    def backward(self, g):
        xp = backend.get_array_module(g)
        g = g if self.keepdims else xp.expand_dims(g, self.axes)
        return xp.broadcast_to(g / g.dtype.type(self.count), self.shape)


class Max(Function):
    # z = max over axes ; the gradient goes to the maximal entries (split evenly on ties)
    def forward(self, a, axis=None, keepdims=False):
        self.a, self.axes = a, normalize_axes(axis, a.ndim, "max")
        self.out = a.max(axis=self.axes, keepdims=True)
        return self.out if keepdims else self.out.reshape([n for i, n in enumerate(a.shape) if i not in self.axes])

    def backward(self, g):
        g = g.reshape(self.out.shape)
        mask = self.a == self.out
        return mask * (g / mask.sum(axis=self.axes, keepdims=True).astype(g.dtype))


class Reshape(Function):
    def forward(self, a, shape):
        self.shape = a.shape
        try:
            return a.reshape(shape)
        except ValueError:
            raise ValueError(f"cannot reshape a tensor of shape {tuple(a.shape)} "
                             f"({a.size} elements) into shape {tuple(shape)}") from None

    def backward(self, g):
        return g.reshape(self.shape)


class Transpose(Function):
    # z = a with its axes permuted: z.shape[i] = a.shape[axes[i]] ; backward applies the inverse
    # permutation (argsort of the axes, made non-negative first: -1 is the last axis)
    def forward(self, a, axes=None):
        xp = backend.get_array_module(a)
        self.axes = tuple(range(a.ndim))[::-1] if axes is None else normalize_axes(axes, a.ndim, "transpose")
        if len(self.axes) != a.ndim:
            raise ValueError(f"transpose: axes {tuple(axes)} must name each of the {a.ndim} dimensions "
                             f"exactly once (a tensor of shape {tuple(a.shape)})")
        return xp.transpose(a, self.axes)

    def backward(self, g):
        xp = backend.get_array_module(g)
        return xp.transpose(g, np.argsort(self.axes))


class GetItem(Function):
    # z = a[index] ; backward scatters g into zeros of a's shape (adding at repeated indices)
    def forward(self, a, index):
        self.shape, self.dtype, self.index = a.shape, a.dtype, index
        try:
            return a[index]
        except IndexError as e:
            raise IndexError(f"index {index!r} does not fit a tensor of shape {tuple(a.shape)}: {e}") from None

    def backward(self, g):
        xp = backend.get_array_module(g)
        out = xp.zeros(self.shape, dtype=g.dtype)
        xp.add.at(out, self.index, g) if _is_fancy(self.index) else out.__setitem__(self.index, g)
        return out


def _is_fancy(index):
    items = index if isinstance(index, tuple) else (index,)
    return any(hasattr(i, "shape") or isinstance(i, list) for i in items)


class Exp(Function):
    # z = e^a ; dz/da = z
    def forward(self, a):
        self.out = backend.get_array_module(a).exp(a)
        return self.out

    def backward(self, g):
        return g * self.out


class Log(Function):
    # z = ln a ; dz/da = 1/a
    def forward(self, a):
        self.a = a
        return backend.get_array_module(a).log(a)

    def backward(self, g):
        return g / self.a


class Sigmoid(Function):
    # z = 1 / (1 + e^-a) ; dz/da = z (1 - z)
    # Both computed from e = exp(-|a|), which lies in (0, 1] and cannot overflow:
    #   z = 1 / (1 + e) for a >= 0,  z = e / (1 + e) for a < 0  (= e^a / (1 + e^a))
    #   dz/da = e / (1 + e)^2 on both sides (sigmoid' is even)
    # No form subtracts nearly equal numbers, so every digit survives: sigmoid(-40) = 4.25e-18,
    # where 0.5 * (tanh(a/2) + 1) gives 0, and dz/da at a = 40 is 4.25e-18, where z (1 - z) gives 0.
    def forward(self, a):
        xp = backend.get_array_module(a)
        self.e = xp.exp(-xp.abs(a))
        d = 1 + self.e
        return xp.where(a >= 0, 1 / d, self.e / d)

    def backward(self, g):
        return g * (self.e / ((1 + self.e) * (1 + self.e)))


class Tanh(Function):
    # z = tanh a ; dz/da = 1 - z^2 = 4e / (1 + e)^2 with e = exp(-2|a|) in (0, 1]
    # (for |a| > 19, z rounds to +-1 and 1 - z^2 to 0; the second form keeps every digit)
    def forward(self, a):
        xp = backend.get_array_module(a)
        self.a = a
        return xp.tanh(a)

    def backward(self, g):
        xp = backend.get_array_module(g)
        e = xp.exp(-2 * xp.abs(self.a))
        return g * (4 * e / ((1 + e) * (1 + e)))


class Cast(Function):
    # change dtype ; the gradient is cast back
    def forward(self, a, dtype):
        self.dtype = a.dtype
        return a.astype(dtype)

    def backward(self, g):
        return g.astype(self.dtype)


class ToDevice(Function):
    # move between CPU and GPU ; the gradient moves back
    def forward(self, a, device):
        self.device = backend.device_of(a)
        return backend.to_device(a, device)

    def backward(self, g):
        return backend.to_device(g, self.device)
