"""Fully connected layer: x (N, in) @ weight (out, in)^T + bias (out,) -> (N, out).

Backward: dx = g @ weight,  dweight = g^T @ x,  dbias = sum_n g.
"""
from __future__ import annotations

from ..autograd import Function


def _check_linear(x, weight, bias):
    if x.ndim < 1 or weight.ndim != 2 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input of shape {tuple(x.shape)} does not fit weight of shape "
                         f"{tuple(weight.shape)} (expected input (..., {weight.shape[1] if weight.ndim == 2 else '?'}))")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"linear: bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")


class Linear(Function):
    def forward(self, x, weight, bias=None):
        _check_linear(x, weight, bias)
        self.x, self.weight, self.has_bias = x, weight, bias is not None
        y = x @ weight.T
        if bias is not None:
            y += bias
        return y

    def backward(self, g):
        x2 = self.x.reshape(-1, self.x.shape[-1])
        g2 = g.reshape(-1, g.shape[-1])
        gx = (g @ self.weight) if self.needs_grad[0] else None
        gw = (g2.T @ x2) if self.needs_grad[1] else None
        gb = g2.sum(axis=0) if self.has_bias and self.needs_grad[2] else None
        return gx, gw, gb


def linear(x, weight, bias=None):
    """y = x @ weight^T + bias, with weight (out, in) as in PyTorch."""
    _check_linear(x, weight, bias)             # checked here, before any op runs
    return Linear.apply(x, weight) if bias is None else Linear.apply(x, weight, bias)
