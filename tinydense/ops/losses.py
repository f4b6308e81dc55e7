"""The losses PyTorch scripts use besides cross-entropy (ops/loss.py), each with a ``reduction``:
"mean" (default), "sum" or "none" (one loss per sample).

    nll_loss(logp, y)     = -logp[n, y_n]                  ; d/dlogp[n, k] = -[k == y_n]
    mse_loss(a, b)        = (a - b)^2                      ; d/da = 2 (a - b), d/db = -2 (a - b)
    cross_entropy with label_smoothing eps over K classes (PyTorch's definition):
                          = (1 - eps) * nll(logp, y) + eps * mean_k(-logp[n, k])
"""
from __future__ import annotations

from .. import backend
from ..autograd import Function, Tensor
from .loss import cross_entropy as _fused_cross_entropy
from .loss import check_labels, log_softmax

REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction, op):
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _scale(n, reduction):
    return 1.0 / n if reduction == "mean" else 1.0


class NLL(Function):
    # logp (N, K), labels (N,) -> (N,) or its sum/mean
    def forward(self, logp, labels, reduction="mean"):
        xp = backend.get_array_module(logp)
        self.shape, self.labels, self.reduction = logp.shape, labels, reduction
        losses = -logp[xp.arange(logp.shape[0]), labels]
        return losses if reduction == "none" else (losses.sum() * logp.dtype.type(_scale(len(losses), reduction)))

    def backward(self, g):
        xp = backend.get_array_module(g)
        N = self.shape[0]
        grad = xp.zeros(self.shape, dtype=g.dtype)
        per_sample = g if self.reduction == "none" else xp.broadcast_to(g * g.dtype.type(_scale(N, self.reduction)), (N,))
        grad[xp.arange(N), self.labels] = -per_sample
        return grad, None


class SquaredError(Function):
    # a, b same shape -> (a - b)^2 elementwise, or its sum/mean
    def forward(self, a, b, reduction="mean"):
        self.diff, self.reduction = a - b, reduction
        sq = self.diff * self.diff
        return sq if reduction == "none" else sq.sum() * a.dtype.type(_scale(sq.size, reduction))

    def backward(self, g):
        scale = 2 * _scale(self.diff.size, self.reduction)
        ga = g * self.diff * self.diff.dtype.type(scale)
        return ga, -ga


def nll_loss(input, target, reduction="mean"):
    """Negative log-likelihood of log-probabilities ``input`` (N, C) at integer ``target`` (N,)."""
    _check_reduction(reduction, "nll_loss")
    return NLL.apply(input, check_labels(input, target, "nll_loss"), reduction=reduction)


def mse_loss(input, target, reduction="mean"):
    """Squared error (input - target)^2, averaged (or summed, or per element); same shapes."""
    _check_reduction(reduction, "mse_loss")
    a, b = (t.data if isinstance(t, Tensor) else t for t in (input, target))
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"mse_loss: input has shape {tuple(a.shape)} but target {tuple(b.shape)}; "
                         f"they must match (tinydense does not broadcast a loss)")
    return SquaredError.apply(input, target if isinstance(target, Tensor) else Tensor(b), reduction=reduction)


def cross_entropy(input, target, reduction="mean", label_smoothing=0.0):
    """Cross-entropy of logits (N, C) against integer targets (N,), PyTorch's options.
    The default case runs the fused op of ops/loss.py; the others are built from
    log_softmax and nll_loss (whose backward passes compose)."""
    _check_reduction(reduction, "cross_entropy")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing!r}")
    if reduction == "mean" and label_smoothing == 0.0:
        return _fused_cross_entropy(input, target)
    y = check_labels(input, target)
    logp = log_softmax(input, axis=1)
    loss = NLL.apply(logp, y, reduction=reduction)
    if label_smoothing:
        smooth = -logp.mean(axis=1)
        smooth = smooth if reduction == "none" else (smooth.sum() if reduction == "sum" else smooth.mean())
        loss = loss * (1.0 - label_smoothing) + smooth * label_smoothing
    return loss
