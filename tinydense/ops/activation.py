"""ReLU: y = max(x, 0) ; dy/dx = 1 where x > 0, else 0 (0 at the kink, as PyTorch)."""
from __future__ import annotations

from .. import backend
from ..autograd import Function


class ReLU(Function):
    def forward(self, x):
        xp = backend.get_array_module(x)
        self.out = xp.maximum(x, 0)
        return self.out

    def backward(self, g):
        return g * (self.out > 0)


def relu(x, inplace=False):
    """Elementwise max(x, 0); any shape. ``inplace`` is accepted (PyTorch code passes it)
    and ignored: the result is always a new array."""
    return ReLU.apply(x)
