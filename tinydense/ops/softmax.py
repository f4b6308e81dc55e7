"""Softmax: probabilities from scores along one axis.

    y_i = exp(z_i) / sum_j exp(z_j)       (computed as exp(log_softmax(z)): no overflow)
    backward: dz_i = y_i * (g_i - sum_j g_j y_j)
"""
from __future__ import annotations

from .. import backend
from ..autograd import Function, Tensor
from .arithmetic import normalize_axis
from .dims import axis_or_dim
from .loss import _log_softmax


class Softmax(Function):
    def forward(self, z, axis=-1):
        self.axis = axis
        self.y = backend.get_array_module(z).exp(_log_softmax(z, axis))
        return self.y

    def backward(self, g):
        return self.y * (g - (g * self.y).sum(axis=self.axis, keepdims=True))


def softmax(x, dim=None, axis=None):
    """exp(x) / sum(exp(x)) along ``dim`` (or ``axis``; default the last one). PyTorch requires
    ``dim``; so does this when x has more than one axis, rather than guess as old PyTorch did."""
    ndim = len((x.data if isinstance(x, Tensor) else x).shape)
    axis = axis_or_dim(axis, dim, "softmax")
    if axis is None:
        if ndim > 1:
            raise TypeError(f"softmax of a {ndim}-D tensor needs dim= (which axis sums to 1?)")
        axis = -1
    return Softmax.apply(x, axis=normalize_axis(axis, max(ndim, 1), "softmax"))
