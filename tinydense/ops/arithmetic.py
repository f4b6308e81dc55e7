"""Tensor arithmetic: the small ops behind ``+ - * / ** @``, reductions,
reshapes and indexing. Each class is one op: forward, then its backward.

Broadcasting: when an input was broadcast to a larger shape in forward,
its gradient is summed back over the broadcast axes (``unbroadcast``).
"""
from __future__ import annotations

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


def _normalize_axis(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    for ax in axes:
        if not -ndim <= ax < ndim:
            raise ValueError(f"axis {ax} is out of range for a tensor with {ndim} dimensions")
    return tuple(ax % ndim for ax in axes)


class Sum(Function):
    # z = sum over axes ; the gradient is g copied back along those axes
    def forward(self, a, axis=None, keepdims=False):
        self.shape, self.axes = a.shape, _normalize_axis(axis, a.ndim)
        return a.sum(axis=self.axes, keepdims=keepdims)

    def backward(self, g):
        xp = backend.get_array_module(g)
        g = xp.expand_dims(g, self.axes) if g.ndim != len(self.shape) else g
        return xp.broadcast_to(g, self.shape)


class Mean(Function):
    # z = sum / count ; the gradient is g / count copied back
    def forward(self, a, axis=None, keepdims=False):
        self.shape, self.axes = a.shape, _normalize_axis(axis, a.ndim)
        self.count = int(np.prod([a.shape[ax] for ax in self.axes]))
        return a.mean(axis=self.axes, keepdims=keepdims)

    def backward(self, g):
        xp = backend.get_array_module(g)
        g = xp.expand_dims(g, self.axes) if g.ndim != len(self.shape) else g
        return xp.broadcast_to(g / g.dtype.type(self.count), self.shape)


class Max(Function):
    # z = max over axes ; the gradient goes to the maximal entries (split evenly on ties)
    def forward(self, a, axis=None, keepdims=False):
        self.a, self.axes = a, _normalize_axis(axis, a.ndim)
        self.out = a.max(axis=self.axes, keepdims=True)
        return self.out if keepdims else self.out.reshape([n for i, n in enumerate(a.shape) if i not in self.axes])

    def backward(self, g):
        xp = backend.get_array_module(g)
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
    # permute axes ; backward applies the inverse permutation
    def forward(self, a, axes=None):
        xp = backend.get_array_module(a)
        self.axes = tuple(range(a.ndim))[::-1] if axes is None else tuple(axes)
        if sorted(ax % a.ndim for ax in self.axes) != list(range(a.ndim)):
            raise ValueError(f"transpose axes {axes} are not a permutation of a {a.ndim}-D tensor's axes")
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
    def forward(self, a):
        xp = backend.get_array_module(a)
        self.out = 0.5 * (xp.tanh(0.5 * a) + 1)   # the same function, without overflow
        return self.out

    def backward(self, g):
        return g * self.out * (1 - self.out)


class Tanh(Function):
    # z = tanh a ; dz/da = 1 - z^2
    def forward(self, a):
        self.out = backend.get_array_module(a).tanh(a)
        return self.out

    def backward(self, g):
        return g * (1 - self.out * self.out)


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
