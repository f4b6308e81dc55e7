"""Batch norm followed by ReLU, fused: fewer passes over memory, less kept for backward.

    z = max(0, weight * (x - mean) * invstd + bias),   invstd = 1 / sqrt(var + eps)   (per channel)

The plain ops (``batch_norm`` then ``relu``, ops/norm.py and ops/activation.py,
the versions the lessons derive) keep three arrays of x's size for backward:
xhat, the BN output and the ReLU output, and make a new array at every step.
Here forward writes z once (``out=`` and in-place updates, 6 passes over
memory) and keeps nothing but z and two numbers per channel; backward
rebuilds what it needs from x. The backward formulas are batch norm's
(ops/norm.py) with the ReLU mask applied first:

    gy = g * (z > 0)                                   the ReLU's backward
    dbias = sum gy,   dweight = sum gy * xhat
    dx = weight * invstd * (gy - sum gy / M - xhat * sum(gy * xhat) / M)     (training)
    dx = weight * invstd * gy                                                (eval)

``BatchNormReLUConv`` goes one step further, for the convolutions that read a
dense block's ever-wider concatenation (Pleiss et al., 2017, "Memory-Efficient
Implementation of DenseNets"): conv(relu(bn(x))) where z = relu(bn(x)) lives
only in a scratch buffer (from the pool in tinydense/memory.py, so one buffer
serves every layer of a block) and is recomputed from x in backward. Nothing
of x's size is stored: x itself is kept anyway (it is the block's shared
feature buffer). The recomputation uses the batch statistics saved in
forward, so the running statistics are updated exactly once.

Every array is viewed as (N, C, M), M = H*W, so the same lines serve NCHW
arrays and "channel-major" ones whose memory is laid out (C, N, H, W), which
the memory-efficient dense block uses (ops/dense_features.py).
"""
from __future__ import annotations

from .. import backend, memory
from ..autograd import Function, Tensor
from .conv import Conv2d, _pair


def _ncm(x):
    """(N, C, H, W) or (N, C) -> an (N, C, M) view (no copy for NCHW or channel-major memory)."""
    return x.reshape(x.shape[0], x.shape[1], -1)


def _col(vector):
    """A per-channel vector (C,) shaped (1, C, 1) to broadcast against (N, C, M)."""
    return vector.reshape(1, -1, 1)


def _channel_major(x):
    """x (N, C, H, W) as a (C, N*H*W) matrix: a view when x's memory is channel-major,
    else a transposing copy into a pooled buffer."""
    N, C, H, W = x.shape
    rows = x.transpose(1, 0, 2, 3)
    if rows.flags.c_contiguous:
        return rows.reshape(C, N * H * W)
    copy = memory.scratch((C, N, H, W), x.dtype, like=x)
    copy[...] = rows
    return copy.reshape(C, N * H * W)


def _bn_relu_forward(v, weight, bias, running_mean, running_var, training, momentum, eps, out):
    """out (N, C, M) <- relu(bn(v)); returns the (mean, invstd) it used.
    Training: batch statistics (two passes, the variance from centred values as
    numerically it must be), the running statistics updated in place."""
    xp = backend.get_array_module(v)
    if training:
        M = v.shape[0] * v.shape[2]
        mean = v.mean(axis=(0, 2))
        centred = xp.subtract(v, _col(mean), out=out)            # out doubles as scratch here
        var = xp.einsum("ncm,ncm->c", centred, centred) / M       # biased, used to normalise
        if running_mean is not None:                              # PyTorch's rule, as ops/norm.py
            running_mean *= 1 - momentum
            running_mean += momentum * mean
            running_var *= 1 - momentum
            running_var += momentum * var * (M / (M - 1))
    else:
        mean, var = running_mean.copy(), running_var       # copies: a later step may update them
    invstd = 1 / xp.sqrt(var + eps)
    _normalize_relu(v, mean, invstd, weight, bias, out)
    return mean, invstd


def _normalize_relu(v, mean, invstd, weight, bias, out):
    """out <- max(0, v * scale + shift), scale = weight * invstd, shift = bias - mean * scale:
    three passes (multiply, add, clamp), all in place."""
    xp = backend.get_array_module(v)
    scale = weight * invstd
    xp.multiply(v, _col(scale), out=out)
    out += _col(bias - mean * scale)
    xp.maximum(out, 0, out=out)


def _relu_open(v, mean, invstd, weight, bias, scratch):
    """Where relu(bn(v)) > 0, i.e. where v * scale + shift > 0, as a boolean array.
    With every scale > 0 (BN weights start at 1 and rarely change sign) that is
    v > -shift / scale: one comparison instead of rebuilding the BN output in ``scratch``."""
    scale = weight * invstd
    shift = bias - mean * scale
    if (scale > 0).all():
        return v > _col(-shift / scale)
    _normalize_relu(v, mean, invstd, weight, bias, scratch)
    return scratch > 0


def _bn_relu_backward(v, relu_open, g, mean, invstd, weight, training, gx, scratch):
    """The gradients of z = relu(bn(v)) given g = dL/dz, all (N, C, M);
    ``relu_open`` is z > 0, where the ReLU let the gradient through.

    Writes dL/dv into ``gx`` (which may be g itself; any memory layout) and returns
    (gx, dweight, dbias); ``scratch`` holds v - mean for a while.
    """
    xp = backend.get_array_module(v)
    gy = xp.multiply(g, relu_open, out=gx)                     # through the ReLU
    sum_gy = gy.sum(axis=(0, 2))
    centred = xp.subtract(v, _col(mean), out=scratch)
    sum_gy_xhat = xp.einsum("ncm,ncm->c", gy, centred) * invstd
    scale = weight * invstd
    if training:   # dx = scale * (gy - sum_gy / M - xhat * sum_gy_xhat / M), xhat = centred * invstd
        M = v.shape[0] * v.shape[2]
        centred *= _col(scale * invstd * sum_gy_xhat / M)
        gy *= _col(scale)
        gy -= centred
        gy -= _col(scale * sum_gy / M)
    else:          # the statistics are constants: dx = scale * gy
        gy *= _col(scale)
    return gy, sum_gy_xhat, sum_gy


class BatchNormReLU(Function):
    # x (N, C, H, W) or (N, C) -> z = relu(bn(x)), same shape; keeps x, z and (mean, invstd)
    def forward(self, x, weight, bias, running_mean=None, running_var=None, training=False,
                momentum=0.1, eps=1e-5):
        xp = backend.get_array_module(x)
        z = xp.empty_like(x)            # same memory layout as x
        self.mean, self.invstd = _bn_relu_forward(_ncm(x), weight, bias, running_mean, running_var,
                                                  training, momentum, eps, out=_ncm(z))
        self.x, self.z, self.weight, self.training = x, z, weight, training
        return z

    def backward(self, g):
        xp = backend.get_array_module(g)
        x, z = self.x, self.z
        gx = xp.empty_like(x)
        scratch = memory.scratch(x.shape, x.dtype, like=x)
        _, gweight, gbias = _bn_relu_backward(_ncm(x), _ncm(z) > 0, _ncm(g), self.mean, self.invstd, self.weight,
                                              self.training, gx=_ncm(gx), scratch=_ncm(scratch))
        return gx if self.needs_grad[0] else None, gweight, gbias


class BatchNormReLUConv(Function):
    """y = conv2d(relu(bn(x)), conv_weight) without keeping relu(bn(x)).

    x (N, C, H, W), bn_weight and bn_bias (C,), conv_weight (O, C, kH, kW) -> y (N, O, OH, OW).
    z = relu(bn(x)) is written to a pooled scratch buffer, used, and given back;
    backward writes it again from x and the saved (mean, invstd).

    The 1x1 convolution (DenseNet-BC's bottlenecks and transitions) is one
    matrix product, done here with ``out=``: z is built channel-major, a
    (C, N*H*W) matrix, so y = W @ z is ONE GEMM over the whole batch, into a
    pooled (O, N*H*W) output that is returned as an (N, O, H, W) view; no
    copy, no transpose. Other kernels go to ``Conv2d`` (ops/conv.py), which
    keeps the copy of z it needs; with ``recompute_conv=True`` that copy is
    dropped too and the convolution's forward is run again in backward
    (one more matrix product, in exchange for storing nothing of x's size).
    ``out``: an (N, O, OH, OW) array to write y into (e.g. a slot of a shared buffer).
    """

    def forward(self, x, bn_weight, bn_bias, conv_weight, running_mean=None, running_var=None,
                training=False, momentum=0.1, eps=1e-5, stride=1, padding=0, out=None,
                recompute_conv=False):
        N, C, H, W = x.shape
        O = conv_weight.shape[0]
        stride, padding = _pair(stride, "stride"), _pair(padding, "padding")
        self.one_by_one = conv_weight.shape[2:] == (1, 1) and stride == (1, 1) and padding == (0, 0)
        self.need_x = any(self.needs_grad[:-3])
        z = memory.scratch((C, N, H, W), x.dtype, like=x)      # channel-major, given back below
        z_ncm = z.reshape(C, N, H * W).transpose(1, 0, 2)
        self.mean, self.invstd = _bn_relu_forward(_ncm(x), bn_weight, bn_bias, running_mean, running_var,
                                                  training, momentum, eps, out=z_ncm)
        if self.one_by_one:
            xp = backend.get_array_module(x)
            y = memory.empty((O, N, H, W), x.dtype, like=x)
            xp.matmul(conv_weight.reshape(O, C), z.reshape(C, N * H * W), out=y.reshape(O, N * H * W))
            y = y.transpose(1, 0, 2, 3)
            self.conv = None
        else:
            conv = Conv2d()
            conv.needs_grad = (self.need_x, self.needs_grad[-1])
            y = conv.forward(z.transpose(1, 0, 2, 3), conv_weight, stride=stride, padding=padding)
            self.conv = None if recompute_conv else conv
        if out is not None:
            out[...] = y
            y = out
        self.x, self.bn_weight, self.bn_bias, self.conv_weight = x, bn_weight, bn_bias, conv_weight
        self.training, self.stride, self.padding = training, stride, padding
        return y

    def backward(self, g):
        xp = backend.get_array_module(g)
        x, w = self.x, self.conv_weight
        N, C, H, W = x.shape
        O = w.shape[0]
        v, bn = _ncm(x), (self.mean, self.invstd, self.bn_weight, self.bn_bias)
        # scratch buffers, channel-major (C, N, H, W), seen as (N, C, H*W) by the BN-ReLU kernels
        z, gx = (memory.scratch((C, N, H, W), x.dtype, like=x) for _ in range(2))
        z_ncm, gx_ncm = (a.reshape(C, N, H * W).transpose(1, 0, 2) for a in (z, gx))
        if self.one_by_one or self.conv is None:   # the convolution needs z again: recompute it
            _normalize_relu(v, *bn, out=z_ncm)
            relu_open = z_ncm > 0
        else:                                      # Conv2d kept its own copy; only the mask is needed
            relu_open = _relu_open(v, *bn, scratch=z_ncm)
        if self.one_by_one:   # dW = g @ z^T, dz = W^T @ g: two GEMMs on (C, N*H*W) matrices
            g_rows = _channel_major(g)                                            # (O, M)
            gw = xp.matmul(g_rows, z.reshape(C, N * H * W).T).reshape(w.shape)
            xp.matmul(w.reshape(O, C).T, g_rows, out=gx.reshape(C, N * H * W))    # dz, made dx below
            gz_ncm = gx_ncm
        else:
            conv = self.conv
            if conv is None:  # its saved copy of z was dropped: run its forward again
                conv = Conv2d()
                conv.needs_grad = (True, self.needs_grad[-1])
                conv.forward(z.transpose(1, 0, 2, 3), w, stride=self.stride, padding=self.padding)
            conv.needs_grad = (True, self.needs_grad[-1])
            gz_nchw, gw = conv.backward(g)[:2]
            gz_ncm = _ncm(gz_nchw)     # NCHW; the first step below writes it channel-major into gx
        _, gbn_w, gbn_b = _bn_relu_backward(v, relu_open, gz_ncm, self.mean, self.invstd, self.bn_weight,
                                            self.training, gx=gx_ncm, scratch=z_ncm)
        return (gx.transpose(1, 0, 2, 3) if self.need_x else None), gbn_w, gbn_b, gw


def _check_bn_args(name, x, running_mean, running_var, weight, bias, training):
    data = x.data if isinstance(x, Tensor) else x
    if data.ndim not in (2, 4):
        raise ValueError(f"{name} expects input of shape (N, C) or (N, C, H, W), got shape {tuple(data.shape)}")
    C = data.shape[1]
    for what, v in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if v is not None and tuple(v.shape) != (C,):
            raise ValueError(f"{name}: input has {C} channels (shape {tuple(data.shape)}) "
                             f"but {what} has shape {tuple(v.shape)}")
    if weight is None or bias is None:
        raise ValueError(f"{name} needs the batch norm weight and bias")
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{name}: give both running_mean and running_var, or neither")
    if not training and running_mean is None:
        raise ValueError(f"{name} in eval mode needs running_mean and running_var")
    if training and data.size // C < 2:
        raise ValueError(f"{name} in training needs more than one value per channel, "
                         f"got input shape {tuple(data.shape)}")


def batch_norm_relu(x, running_mean, running_var, weight, bias, training=False, momentum=0.1, eps=1e-5):
    """relu(batch_norm(x, ...)) in one op, the same values and gradients as the two
    (arguments as ``tinydense.functional.batch_norm``; weight and bias required)."""
    _check_bn_args("batch_norm_relu", x, running_mean, running_var, weight, bias, training)
    return BatchNormReLU.apply(x, weight, bias, running_mean=running_mean, running_var=running_var,
                               training=training, momentum=momentum, eps=eps)


def batch_norm_relu_conv(x, running_mean, running_var, bn_weight, bn_bias, conv_weight, training=False,
                         momentum=0.1, eps=1e-5, stride=1, padding=0, out=None, recompute_conv=False):
    """conv2d(relu(batch_norm(x, ...)), conv_weight, stride, padding) (no conv bias),
    storing nothing of x's size for backward (see ``BatchNormReLUConv``)."""
    _check_bn_args("batch_norm_relu_conv", x, running_mean, running_var, bn_weight, bn_bias, training)
    data = x.data if isinstance(x, Tensor) else x
    if data.ndim != 4 or conv_weight.ndim != 4 or conv_weight.shape[1] != data.shape[1]:
        raise ValueError(f"batch_norm_relu_conv: input of shape {tuple(data.shape)} does not fit "
                         f"conv weight of shape {tuple(conv_weight.shape)}")
    return BatchNormReLUConv.apply(x, bn_weight, bn_bias, conv_weight, running_mean=running_mean,
                                   running_var=running_var, training=training, momentum=momentum, eps=eps,
                                   stride=stride, padding=padding, out=out, recompute_conv=recompute_conv)
