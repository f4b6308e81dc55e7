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
"""
from __future__ import annotations

from .. import backend
from ..autograd import Function


def _stat_axes(x):
    return (0,) if x.ndim == 2 else (0, 2, 3)


def _per_channel(v, ndim):
    """Shape a (C,) vector to broadcast against (N, C) or (N, C, H, W)."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


class BatchNorm(Function):
    def forward(self, x, running_mean, running_var, weight=None, bias=None,
                training=False, momentum=0.1, eps=1e-5):
        xp = backend.get_array_module(x)
        axes = _stat_axes(x)
        M = x.size // x.shape[1]
        if training:
            mean = x.mean(axis=axes)
            var = x.var(axis=axes)                       # biased, used to normalise
            if running_mean is not None:                 # in-place update, PyTorch's rule
                running_mean *= 1 - momentum
                running_mean += momentum * mean
                running_var *= 1 - momentum
                running_var += momentum * var * (M / (M - 1))
        else:
            mean, var = running_mean, running_var
        invstd = 1 / xp.sqrt(var + eps)
        xhat = (x - _per_channel(mean, x.ndim)) * _per_channel(invstd, x.ndim)
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
                gx = _per_channel(scale / M, nd) * (M * g - _per_channel(sum_g, nd)
                                                    - xhat * _per_channel(sum_g_xhat, nd))
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
    from ..autograd import Tensor
    data = x.data if isinstance(x, Tensor) else x
    if data.ndim not in (2, 4):
        raise ValueError(f"batch_norm expects input of shape (N, C) or (N, C, H, W), got shape {tuple(data.shape)}")
    C = data.shape[1]
    rm = running_mean.data if isinstance(running_mean, Tensor) else running_mean
    rv = running_var.data if isinstance(running_var, Tensor) else running_var
    for name, v in (("running_mean", rm), ("running_var", rv), ("weight", weight), ("bias", bias)):
        if v is not None and tuple(v.shape) != (C,):
            raise ValueError(f"batch_norm: input has {C} channels (shape {tuple(data.shape)}) "
                             f"but {name} has shape {tuple(v.shape)}")
    if training and data.size // C < 2:
        raise ValueError(f"batch_norm in training needs more than one value per channel, "
                         f"got input shape {tuple(data.shape)}")
    if not training and (rm is None or rv is None):
        raise ValueError("batch_norm in eval mode needs running_mean and running_var")
    if (rm is None) != (rv is None):   # else one would be updated and the other fail
        raise ValueError("batch_norm: give both running_mean and running_var, or neither")
    for name, v in (("running_mean", rm), ("running_var", rv)):
        if v is not None and v.dtype.kind != "f":
            raise TypeError(f"batch_norm: {name} must be a floating-point array (updated in place), "
                            f"got dtype {v.dtype}")
    if not 0 <= momentum <= 1:
        raise ValueError(f"batch_norm: momentum must lie in [0, 1], got {momentum}")
    if (weight is None) != (bias is None):
        raise ValueError("batch_norm: give both weight and bias, or neither")
    params = () if weight is None else (weight, bias)
    return BatchNorm.apply(x, rm, rv, *params, training=training, momentum=momentum, eps=eps)
