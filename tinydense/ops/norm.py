"""Batch normalisation (Ioffe & Szegedy, 2015), PyTorch's semantics.

    x (N, C, H, W) or (N, C); statistics per channel over every other axis
    (M = N*H*W values per channel).
    training: mu = mean(x), var = mean((x - mu)^2) (biased),
              xhat = (x - mu) / sqrt(var + eps),  y = weight * xhat + bias
              running_mean <- (1 - momentum) running_mean + momentum mu
              running_var  <- (1 - momentum) running_var  + momentum var * M/(M-1)  (unbiased)
    eval:     the same with the running statistics in place of mu and var.

Backward in the compact closed form (training; g = dL/dy):
    dbias   = sum g,   dweight = sum g * xhat
    dx      = weight / (M sqrt(var + eps)) * (M g - sum g - xhat * sum(g * xhat))
In eval mode mu and var are constants, so dx = weight * g / sqrt(var + eps).

The batch statistics are summed in float64 whatever the input's dtype (as
PyTorch does on the CPU): a float32 sum of M values loses about log2(M) bits,
and a mean that is off by a little shifts every xhat by a lot when the
values sit far from zero (x = 1e4 + noise). Only the two per-channel
vectors are float64; the arrays stay in x's dtype. The fused ops of the
memory-efficient DenseNet (ops/bn_relu.py, ops/dense_block.py) compute the same
statistics on their own layout (ops/channel_major.py) and share this op's
``inverse_std``, ``update_running_statistics`` and ``check_batch_norm_args``.

Synchronized batch norm (data parallelism, tinydense/distributed/): when several processes
each hold a shard of the batch, the count, mean and variance (forward) and sum g, sum g * xhat
(backward) are those of the whole batch, through ops/stats_reducer.py; dweight and dbias stay
this shard's sums (the ranks average them with every other gradient).
"""
from __future__ import annotations

import math

from .. import backend
from ..autograd import Function, Tensor
from . import stats_reducer


def _stat_axes(x):
    return (0,) if x.ndim == 2 else (0, 2, 3)


def _per_channel(v, ndim):
    """Shape a (C,) vector to broadcast against (N, C) or (N, C, H, W)."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def batch_statistics(x, axes):
    """Per-channel mean and biased variance of ``x`` over ``axes`` (every axis but the
    channel's), both float64 vectors, and x - mean in x's dtype."""
    xp = backend.get_array_module(x)
    count = math.prod(x.shape[a] for a in axes)
    mean = x.sum(axis=axes, dtype=xp.float64) / count
    centred = x - _per_channel(mean.astype(x.dtype), x.ndim)
    var = (centred * centred).sum(axis=axes, dtype=xp.float64) / count
    return mean, var, centred


def inverse_std(var, eps, dtype):
    """1 / sqrt(var + eps), computed in float64, returned in ``dtype``."""
    xp = backend.get_array_module(var)
    return (1 / xp.sqrt(var.astype(xp.float64) + eps)).astype(dtype)


def update_running_statistics(running_mean, running_var, mean, var, count, momentum):
    """PyTorch's rule, in place: running <- (1 - momentum) running + momentum batch,
    the variance made unbiased (count / (count - 1)); ``count`` values per channel."""
    running_mean *= 1 - momentum
    running_mean += momentum * mean
    running_var *= 1 - momentum
    running_var += momentum * var * (count / (count - 1))


def check_batch_norm_args(name, shape, running_mean, running_var, weight, bias, training, momentum):
    """Raise before anything runs unless the arguments of a batch norm fit an input of ``shape``."""
    shape = tuple(shape)
    if len(shape) not in (2, 4):
        raise ValueError(f"{name} expects input of shape (N, C) or (N, C, H, W), got shape {shape}")
    C = shape[1]
    for what, v in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if v is not None and tuple(v.shape) != (C,):
            raise ValueError(f"{name}: input has {C} channels (shape {shape}) "
                             f"but {what} has shape {tuple(v.shape)}")
    if training and shape[0] * math.prod(shape[2:]) < 2:
        raise ValueError(f"{name} in training needs more than one value per channel, "
                         f"got input shape {shape}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError(f"{name} in eval mode needs running_mean and running_var")
    if (running_mean is None) != (running_var is None):   # else one would be updated and the other fail
        raise ValueError(f"{name}: give both running_mean and running_var, or neither")
    for what, v in (("running_mean", running_mean), ("running_var", running_var)):
        if v is not None and v.dtype.kind != "f":
            raise TypeError(f"{name}: {what} must be a floating-point array (updated in place), "
                            f"got dtype {v.dtype}")
    if not 0 <= momentum <= 1:
        raise ValueError(f"{name}: momentum must lie in [0, 1], got {momentum}")
    if (weight is None) != (bias is None):
        raise ValueError(f"{name}: give both weight and bias, or neither")


class BatchNorm(Function):
    def forward(self, x, running_mean, running_var, weight=None, bias=None,
                training=False, momentum=0.1, eps=1e-5):
        xp = backend.get_array_module(x)
        axes = _stat_axes(x)
        M = x.size // x.shape[1]
        if training:
            mean, var, centred = batch_statistics(x, axes)
            if stats_reducer.synchronized():     # the whole batch's, over every process (tinydense.distributed)
                M, mean, var = stats_reducer.global_statistics(M, mean, var)
                centred = xp.subtract(x, _per_channel(mean.astype(x.dtype), x.ndim), out=centred)
            if running_mean is not None:
                update_running_statistics(running_mean, running_var, mean, var, M, momentum)
        else:
            mean, var = running_mean, running_var
            centred = x - _per_channel(mean, x.ndim)
        invstd = inverse_std(var, eps, x.dtype)
        xhat = xp.multiply(centred, _per_channel(invstd, x.ndim), out=centred)
        self.xhat, self.invstd, self.weight, self.training, self.M = xhat, invstd, weight, training, M
        if weight is None:
            return xhat
        return xhat * _per_channel(weight, x.ndim) + _per_channel(bias, x.ndim)

    def backward(self, g):
        axes, nd = _stat_axes(g), g.ndim
        xhat, invstd = self.xhat, self.invstd
        sum_g = g.sum(axis=axes)
        sum_g_xhat = (g * xhat).sum(axis=axes)
        scale = invstd if self.weight is None else self.weight * invstd
        gx = None
        if self.needs_grad[0]:
            if self.training:
                M = g.dtype.type(self.M)
                all_g, all_g_xhat = stats_reducer.global_sums(sum_g, sum_g_xhat)   # the whole batch's
                gx = _per_channel(scale / M, nd) * (M * g - _per_channel(all_g, nd)
                                                    - xhat * _per_channel(all_g_xhat, nd))
            else:
                gx = g * _per_channel(scale, nd)
        if self.weight is None:
            return gx, None, None
        return gx, None, None, sum_g_xhat, sum_g


def batch_norm(x, running_mean, running_var, weight=None, bias=None,
               training=False, momentum=0.1, eps=1e-5):
    """Batch norm over (N, H, W) per channel for x (N, C, H, W), over N for x (N, C).

    running_mean, running_var: arrays (C,) updated in place when training
    (either may be None in training, then nothing is tracked); weight, bias:
    Tensors (C,) or None. Eval mode (training=False) uses the running stats.
    """
    data = x.data if isinstance(x, Tensor) else x
    rm = running_mean.data if isinstance(running_mean, Tensor) else running_mean
    rv = running_var.data if isinstance(running_var, Tensor) else running_var
    check_batch_norm_args("batch_norm", data.shape, rm, rv, weight, bias, training, momentum)
    params = () if weight is None else (weight, bias)
    return BatchNorm.apply(x, rm, rv, *params, training=training, momentum=momentum, eps=eps)
