"""Log-softmax and cross-entropy.

    log_softmax(z)_i = s_i - log sum_j exp(s_j),  s = z - max_j z_j  (s <= 0: no exp overflows)
    backward: dz = g - softmax(z) * sum_i g_i
    cross_entropy(z, y) = -(1/N) sum_n log_softmax(z_n)[y_n]
    backward: dz = (softmax(z) - onehot(y)) / N

Extreme logits behave as in PyTorch: logits 1e300 apart give finite values,
a logit of -inf gets log-probability -inf (and a finite gradient), +inf or
NaN give NaN.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..autograd import Function, Tensor
from .arithmetic import normalize_axis
from .dims import axis_or_dim


def _log_softmax(z, axis):
    xp = backend.get_array_module(z)
    with np.errstate(over="ignore"):      # logits ~1e308 apart: s rounds to -inf, exp(s) = 0, as it should
        s = z - z.max(axis=axis, keepdims=True)
    # sum_j exp(s_j) = (number of maxima, where s = 0) + rest, rest = sum of exp(s_j) below the maximum.
    # log1p(rest + count - 1) keeps the digits of a tiny rest (a confident prediction:
    # log_softmax(0, -40)[0] = -4.25e-18) that log(1 + rest) would round to 0.
    count = (s == 0).sum(axis=axis, keepdims=True, dtype=z.dtype)
    rest = (xp.exp(s) * (s < 0)).sum(axis=axis, keepdims=True)
    return s - xp.log1p(rest + (count - 1))


class LogSoftmax(Function):
    def forward(self, z, axis=-1):
        self.out, self.axis = _log_softmax(z, axis), axis
        return self.out

    def backward(self, g):
        xp = backend.get_array_module(g)
        return g - xp.exp(self.out) * g.sum(axis=self.axis, keepdims=True)


class CrossEntropy(Function):
    # logits (N, K), labels (N,) integers in [0, K) -> scalar mean loss
    def forward(self, logits, labels):
        xp = backend.get_array_module(logits)
        N = logits.shape[0]
        logp = _log_softmax(logits, axis=1)
        self.probs, self.labels = xp.exp(logp), labels
        return -logp[xp.arange(N), labels].mean()

    def backward(self, g):
        xp = backend.get_array_module(g)
        N = self.probs.shape[0]
        grad = self.probs.copy()
        grad[xp.arange(N), self.labels] -= 1
        return grad * (g / N), None


def log_softmax(x, dim=None, axis=None):
    """log(softmax(x)) along ``dim`` or ``axis`` (default -1; negative counts from the end), computed stably."""
    ndim = len((x.data if isinstance(x, Tensor) else x).shape)
    axis = axis_or_dim(axis, dim, "log_softmax", default=-1)
    return LogSoftmax.apply(x, axis=normalize_axis(axis, ndim, "log_softmax"))


def check_labels(logits, labels, op="cross_entropy"):
    """The class labels (N,) of logits (N, K) as an integer array on the logits' device,
    checked: integers, one per row, each in [0, K). ``op`` names the caller in the errors."""
    z = logits.data if isinstance(logits, Tensor) else logits
    y = labels.data if isinstance(labels, Tensor) else labels
    xp = backend.get_array_module(z)
    if z.ndim != 2:
        raise ValueError(f"{op} expects logits of shape (N, K), got shape {tuple(z.shape)}")
    if not hasattr(y, "dtype"):
        y = xp.asarray(y)
    if backend.device_of(y) != backend.device_of(z):
        raise ValueError(f"{op}: logits are on {backend.device_of(z)} but labels on {backend.device_of(y)}")
    if y.dtype.kind not in "iu":
        raise TypeError(f"{op} needs integer class labels, got dtype {y.dtype}")
    if y.shape != (z.shape[0],):
        raise ValueError(f"{op}: labels have shape {tuple(y.shape)} but logits have shape "
                         f"{tuple(z.shape)}; expected labels of shape ({z.shape[0]},)")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= z.shape[1]):
        raise ValueError(f"{op}: labels must lie in [0, {z.shape[1]}), got values from "
                         f"{int(y.min())} to {int(y.max())}")
    return y


def cross_entropy(logits, labels):
    """Mean cross-entropy of logits (N, K) against integer labels (N,) in [0, K).
    ``labels`` may be an integer array or Tensor."""
    return CrossEntropy.apply(logits, check_labels(logits, labels))
