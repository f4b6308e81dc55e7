"""Log-softmax and cross-entropy.

    log_softmax(z)_i = z_i - m - log sum_j exp(z_j - m),  m = max_j z_j  (stable for |z| ~ 1e4)
    backward: dz = g - softmax(z) * sum_i g_i
    cross_entropy(z, y) = -(1/N) sum_n log_softmax(z_n)[y_n]
    backward: dz = (softmax(z) - onehot(y)) / N
"""
from __future__ import annotations

from .. import backend
from ..autograd import Function, Tensor


def _log_softmax(z, axis):
    xp = backend.get_array_module(z)
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


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


def log_softmax(x, axis=-1):
    """log(softmax(x)) along ``axis``, computed stably."""
    return LogSoftmax.apply(x, axis=axis)


def cross_entropy(logits, labels):
    """Mean cross-entropy of logits (N, K) against integer labels (N,) in [0, K).
    ``labels`` may be an integer array or Tensor."""
    z = logits.data if isinstance(logits, Tensor) else logits
    y = labels.data if isinstance(labels, Tensor) else labels
    xp = backend.get_array_module(z)
    if z.ndim != 2:
        raise ValueError(f"cross_entropy expects logits of shape (N, K), got shape {tuple(z.shape)}")
    if not hasattr(y, "dtype"):
        y = xp.asarray(y)
    if backend.device_of(y) != backend.device_of(z):
        raise ValueError(f"cross_entropy: logits are on {backend.device_of(z)} but labels on {backend.device_of(y)}")
    if y.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy needs integer class labels, got dtype {y.dtype}")
    if y.shape != (z.shape[0],):
        raise ValueError(f"cross_entropy: labels have shape {tuple(y.shape)} but logits have shape "
                         f"{tuple(z.shape)}; expected labels of shape ({z.shape[0]},)")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= z.shape[1]):
        raise ValueError(f"cross_entropy: labels must lie in [0, {z.shape[1]}), got values from "
                         f"{int(y.min())} to {int(y.max())}")
    return CrossEntropy.apply(logits, y)
