"""Inverted dropout: in training, y = x * mask / (1 - p) with mask ~ Bernoulli(1 - p),
so the expected value is unchanged and evaluation needs no rescaling.
Backward: dx = g * mask / (1 - p). Masks come from tinydense's seeded generator."""
from __future__ import annotations

from .. import backend
from ..autograd import Function


def keep_scale(x, p):
    """mask / (1 - p) for x's shape and dtype (one array), the mask ~ Bernoulli(1 - p)
    drawn from tinydense's generator."""
    xp = backend.get_array_module(x)
    keep = backend.rng(xp).random(x.shape, dtype=x.dtype) >= p
    return keep * x.dtype.type(1.0 / (1.0 - p))


class Dropout(Function):
    def forward(self, x, p):
        self.scale = keep_scale(x, p)
        return x * self.scale

    def backward(self, g):
        return g * self.scale


def dropout(x, p=0.5, training=True):
    """Zero each element with probability p in training; identity in eval or when p == 0."""
    if not 0 <= p < 1:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0:
        return x
    return Dropout.apply(x, p=float(p))
