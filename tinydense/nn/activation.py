"""Activation modules besides ReLU (nn/layers.py): each calls its op."""
from __future__ import annotations

from ..ops.arithmetic import Sigmoid as _SigmoidOp
from ..ops.arithmetic import Tanh as _TanhOp
from ..ops.loss import log_softmax
from ..ops.softmax import softmax
from .module import Module


class Softmax(Module):
    """Probabilities along ``dim``: exp(x) / sum(exp(x))."""

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return softmax(x, dim=self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """log(softmax(x)) along ``dim``, computed stably."""

    def forward(self, x):
        return log_softmax(x, axis=-1 if self.dim is None else self.dim)


class Sigmoid(Module):
    """1 / (1 + exp(-x)), elementwise, in (0, 1): a gate (SENet's excitation). The op, with
    its backward, is ``Sigmoid`` in ops/arithmetic.py."""

    def forward(self, x):
        return _SigmoidOp.apply(x)


class Tanh(Module):
    """tanh(x), elementwise."""

    def forward(self, x):
        return _TanhOp.apply(x)
