"""Losses as modules, PyTorch's ``nn.CrossEntropyLoss`` and friends: each holds its options
and calls the function in ops/losses.py, where the math and the backward pass live.

Left out on purpose: class ``weight`` and ``ignore_index`` (no script of the course uses them;
mask the batch instead)."""
from __future__ import annotations

from ..ops import losses
from .module import Module


class _Loss(Module):
    def __init__(self, reduction="mean"):
        super().__init__()
        losses._check_reduction(reduction, type(self).__name__)
        self.reduction = reduction

    def extra_repr(self):
        return "" if self.reduction == "mean" else f"reduction={self.reduction!r}"


class CrossEntropyLoss(_Loss):
    """Cross-entropy of logits (N, C) against integer class labels (N,); ``label_smoothing``
    eps mixes the one-hot target with the uniform distribution (weight eps)."""

    def __init__(self, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction)
        self.label_smoothing = float(label_smoothing)

    def forward(self, input, target):
        return losses.cross_entropy(input, target, self.reduction, self.label_smoothing)


class NLLLoss(_Loss):
    """Negative log-likelihood of log-probabilities (N, C) (e.g. from LogSoftmax) at labels (N,)."""

    def forward(self, input, target):
        return losses.nll_loss(input, target, self.reduction)


class MSELoss(_Loss):
    """Mean squared error between two tensors of the same shape."""

    def forward(self, input, target):
        return losses.mse_loss(input, target, self.reduction)
