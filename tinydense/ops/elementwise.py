"""Elementwise choices: ``clamp``, ``where`` and ``abs``.

    clamp(x, lo, hi) = min(max(x, lo), hi)  ; dx = g where lo <= x <= hi, else 0 (PyTorch's rule)
    where(c, a, b)   = a where c, else b     ; da = g where c, db = g where not c (each summed
                                               back over the axes broadcasting added)
    abs(x)           = |x|                   ; dx = g * sign(x)  (0 at x = 0, as PyTorch)
"""
from __future__ import annotations

from .. import backend
from ..autograd import Function, Tensor
from .arithmetic import unbroadcast


class Clamp(Function):
    def forward(self, x, lo=None, hi=None):
        xp = backend.get_array_module(x)
        self.inside = xp.ones(x.shape, dtype=bool)
        if lo is not None:
            self.inside &= x >= lo
        if hi is not None:
            self.inside &= x <= hi
        return xp.clip(x, lo, hi).astype(x.dtype)

    def backward(self, g):
        return g * self.inside


class Where(Function):
    def forward(self, condition, a, b):
        xp = backend.get_array_module(a, b)
        self.condition, self.shapes = condition, (a.shape, b.shape)
        return xp.where(condition, a, b)

    def backward(self, g):
        zero = g.dtype.type(0)
        xp = backend.get_array_module(g)
        ga = unbroadcast(xp.where(self.condition, g, zero), self.shapes[0]) if self.needs_grad[1] else None
        gb = unbroadcast(xp.where(self.condition, zero, g), self.shapes[1]) if self.needs_grad[2] else None
        return None, ga, gb


class Abs(Function):
    def forward(self, x):
        self.sign = backend.get_array_module(x).sign(x)
        return x * self.sign

    def backward(self, g):
        return g * self.sign


def abs(input):
    """|x|, elementwise."""
    return Abs.apply(input)


def clamp(input, min=None, max=None):
    """Limit every value to [min, max] (either bound may be None)."""
    if min is None and max is None:
        raise ValueError("clamp: give min, max or both")
    if min is not None and max is not None and min > max:
        raise ValueError(f"clamp: min={min} is greater than max={max}")
    return Clamp.apply(input, lo=min, hi=max)


def where(condition, input, other):
    """``input`` where ``condition`` holds, else ``other`` (tensors or scalars, broadcast together)."""
    c = condition.data if isinstance(condition, Tensor) else condition
    like = input if isinstance(input, Tensor) else other
    xp = backend.get_array_module(like.data) if isinstance(like, Tensor) else backend.get_array_module(c)
    c = xp.asarray(c)
    if c.dtype != bool:
        raise TypeError(f"where: condition must be a boolean tensor, got dtype {c.dtype}")
    dtype = like.dtype if isinstance(like, Tensor) else None
    a, b = (x if isinstance(x, Tensor) else Tensor(xp.asarray(x, dtype=dtype)) for x in (input, other))
    return Where.apply(c, a, b)
