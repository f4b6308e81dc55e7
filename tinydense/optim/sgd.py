"""Stochastic gradient descent with momentum, Nesterov momentum and weight decay.

PyTorch's update rule, per parameter p with gradient g (no dampening):

    g <- g + weight_decay * p                     (L2 weight decay, added to the gradient)
    b <- g                       on the first step
    b <- momentum * b + g        afterwards       (the momentum buffer)
    d <- g + momentum * b        with Nesterov
    d <- b                       without
    p <- p - lr * d

DenseNet's recipe: lr 0.1, Nesterov momentum 0.9, weight decay 1e-4.
"""
from __future__ import annotations

import numpy as np

from .. import backend


class SGD:
    """Updates ``params`` (Tensors, e.g. ``model.parameters()``) in place from their ``.grad``."""

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        self.params = list(params)
        if not self.params:
            raise ValueError("SGD got an empty parameter list")
        for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            if not isinstance(value, (int, float, np.floating)) or not np.isfinite(value) or value < 0:
                raise ValueError(f"SGD: {name} must be a non-negative number, got {value!r}")
        if nesterov and momentum <= 0:
            raise ValueError(f"SGD: Nesterov momentum needs momentum > 0, got momentum={momentum}")
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.nesterov = bool(nesterov)
        self.buffers = [None] * len(self.params)      # momentum buffers, created on first use

    def zero_grad(self) -> None:
        """Forget the gradients (backward accumulates into ``.grad``)."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad
            if self.weight_decay:
                g = g + self.weight_decay * p.data
            if self.momentum:
                b = self.buffers[i]
                if b is None:
                    b = self.buffers[i] = g.copy()
                else:
                    b *= self.momentum
                    b += g
                g = g + self.momentum * b if self.nesterov else b
            p.data -= self.lr * g

    def state_dict(self) -> dict:
        """Hyperparameters and momentum buffers: ``{"lr": ..., "buffer.3": array, ...}``."""
        state = {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov,
                 "weight_decay": self.weight_decay}
        for i, b in enumerate(self.buffers):
            if b is not None:
                state[f"buffer.{i}"] = b
        return state

    def load_state_dict(self, state) -> None:
        """Restore :meth:`state_dict`'s output (arrays are copied to each parameter's device)."""
        buffers = [None] * len(self.params)
        for key, value in state.items():
            if key.startswith("buffer."):
                i = int(key.split(".", 1)[1])
                if not 0 <= i < len(self.params) or value.shape != self.params[i].shape:
                    shape = self.params[i].shape if 0 <= i < len(self.params) else "none"
                    raise ValueError(f"SGD state: {key} has shape {tuple(value.shape)} but the "
                                     f"parameter has shape {shape} ({len(self.params)} parameters)")
                buffers[i] = backend.to_device(value, self.params[i].device).astype(self.params[i].dtype)
        self.lr, self.momentum = float(state["lr"]), float(state["momentum"])
        self.nesterov, self.weight_decay = bool(state["nesterov"]), float(state["weight_decay"])
        self.buffers = buffers
