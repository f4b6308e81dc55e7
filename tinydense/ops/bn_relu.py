"""Batch norm, ReLU and a 1x1 convolution as one op (``BatchNormReLUConv1x1``): the
first half of the memory-efficient DenseNet's transitions (models/efficient_densenet.py),
with the 2x2 average pool that follows when there is no dropout.

It computes conv2d(relu(batch_norm(x))) on the channel-major matrix of x
(ops/channel_major.py) with batch norm and ReLU folded into the convolution
(ops/bn_relu_fold.py), and stores nothing of x's size but x itself: backward
makes the centred input and the ReLU's output again, a chunk of columns at a time.
"""
from __future__ import annotations

from .. import memory
from ..autograd import Function, Tensor, is_grad_enabled
from . import parallel, stats_reducer
from .bn_relu_fold import (ReluAffine, batch_norm_affine, batch_norm_grads, conv1x1_backward, conv1x1_forward,
                           statistics_backward)
from .channel_major import (as_matrix, centre_rows_threaded, channel_major, chunk_scratch, chunk_width, chunks,
                            column_slice)
from .norm import check_batch_norm_args, update_running_statistics


class BatchNormReLUConv1x1(Function):
    """y = conv1x1(relu(batch_norm(x))) without storing relu(batch_norm(x)) (a transition's first half).

    x (N, C, H, W), bn_weight and bn_bias (C,), conv_weight (O, C, 1, 1) -> y (N, O, H, W),
    laid out channel-major. Keeps x and per-channel vectors; xhat (training) and Z are made
    CHUNK columns at a time in backward.
    """

    def forward(self, x, bn_weight, bn_bias, conv_weight, running_mean=None, running_var=None,
                training=False, momentum=0.1, eps=1e-5, pool=False):
        N, C, H, W = x.shape
        with parallel.own_threads(x):
            xr = as_matrix(channel_major(x))
            v, mean, var = xr, None, None
            if training:     # x - mean, for now (backward makes it again, a chunk at a time)
                v = memory.scratch(xr.shape, x.dtype, like=x)
                mean, var = centre_rows_threaded(xr, out=v)
                if running_mean is not None:
                    update_running_statistics(running_mean, running_var, mean, var,
                                              stats_reducer.global_count(xr.shape[1]), momentum)
                mean = mean.astype(x.dtype)
            s, t, to_xhat = batch_norm_affine(bn_weight, bn_bias, running_mean, running_var, eps, training, var)
            affine = ReluAffine(s, t)
            self.pool_width = W if pool else None
            y = memory.empty((conv_weight.shape[0], N) + ((H // 2, W // 2) if pool else (H, W)), x.dtype, like=x)
            conv1x1_forward(affine, v, conv_weight, out=as_matrix(y), pool_width=self.pool_width)
        if is_grad_enabled() and any(self.needs_grad):
            self.x, self.conv_weight, self.affine, self.mean, self.to_xhat = x, conv_weight, affine, mean, to_xhat
        return y.transpose(1, 0, 2, 3)

    def backward(self, g):
        x, mean = self.x, self.mean
        N, C, H, W = x.shape
        with parallel.own_threads(x):
            xr = as_matrix(channel_major(x))
            dx = memory.scratch((C, N, H, W), x.dtype, like=x)      # passed on, not kept
            gw, *sums = conv1x1_backward(self.affine, xr, self.conv_weight, as_matrix(channel_major(g)),
                                         dv=as_matrix(dx), mean=mean, pool_width=self.pool_width)
            if mean is not None:        # dx holds dL/dv, v = x - mean: through the batch statistics
                sum_d, sum_dv = stats_reducer.global_sums(*self.affine.dv_sums(sums))   # the whole batch's
                count = stats_reducer.global_count(xr.shape[1])
                invstd = self.to_xhat[1]
                ranges = parallel.split(xr.shape[1])
                V = [chunk_scratch(xr, chunk_width()) for _ in ranges]

                def part(i, lo, hi):
                    for a, b in chunks(lo, hi):
                        statistics_backward(as_matrix(dx)[:, a:b], column_slice(xr, a, b, mean, V[i]),
                                            (sum_d, invstd * invstd * sum_dv), count)

                parallel.parallel(part, ranges)
        gweight, gbias = batch_norm_grads(sums, self.to_xhat)
        return dx.transpose(1, 0, 2, 3), gweight, gbias, gw


def batch_norm_relu_conv1x1(x, running_mean, running_var, bn_weight, bn_bias, conv_weight, training=False,
                            momentum=0.1, eps=1e-5, pool=False):
    """conv2d(relu(batch_norm(x, ...)), conv_weight) for a 1x1 conv_weight (O, C, 1, 1) without
    bias, storing nothing of x's size for backward (``BatchNormReLUConv1x1``); the output is
    laid out channel-major. Arguments as ``tinydense.functional.batch_norm`` (weight and bias
    required). ``pool``: followed by avg_pool2d(2) (H and W even): a transition without dropout."""
    data = x.data if isinstance(x, Tensor) else x
    check_batch_norm_args("batch_norm_relu_conv1x1", data.shape, running_mean, running_var, bn_weight, bn_bias,
                          training, momentum)
    if bn_weight is None:
        raise ValueError("batch_norm_relu_conv1x1 needs the batch norm weight and bias")
    if data.ndim != 4 or conv_weight.shape[1:] != (data.shape[1], 1, 1):
        raise ValueError(f"batch_norm_relu_conv1x1: input of shape {tuple(data.shape)} does not fit "
                         f"1x1 conv weight of shape {tuple(conv_weight.shape)}")
    if pool and (data.shape[2] % 2 or data.shape[3] % 2):
        raise ValueError(f"batch_norm_relu_conv1x1: pool=True needs an even height and width, "
                         f"got input of shape {tuple(data.shape)}")
    return BatchNormReLUConv1x1.apply(x, bn_weight, bn_bias, conv_weight, running_mean=running_mean,
                                      running_var=running_var, training=training, momentum=momentum, eps=eps,
                                      pool=pool)
