"""Batch norm and ReLU as one op, and the residual add with its ReLU as one op: the
fast path of the plain networks' Conv-BN-ReLU and BN-ReLU-Conv (models/fused_layers.py).

    BatchNormReLU:  z = relu(batch_norm(x))        x, z (N, C, H, W)
    AddReLU:        z = relu(a + b)                a, b, z (N, C, H, W)

They compute what the textbook ops compute (ops/norm.py, ops/activation.py,
ops/arithmetic.py's Add), with the same formulas grouped differently (float64: the
same numbers to 1e-10; float32: within the textbook's own rounding); what changes is
how often the data is read and written, and by how many cores:

- forward: v = x - mean and z are written into arrays made once (from the pool in
  tinydense/memory.py) instead of one new array per step of the formula, batch
  norm's scale and shift applied in one multiply-add, z = relu(v * weight * invstd + bias),
  the ReLU in place: z is stored for backward (its mask z > 0 is the ReLU's), v for
  batch norm's (xhat = v * invstd); nothing else.
- backward: the ReLU's mask is applied as batch norm's backward reads g, its sums
  are taken without temporaries, and dx = scale * g + per-channel terms in three
  passes; AddReLU returns ONE masked gradient for both of its inputs (no copies).
- with ``THREADED``, every pass runs on ``threads()`` ranges of channels at once
  (ops/parallel.py); off by default (see there).

The variance and sum(g * v) are summed image by image (H*W products per channel in x's
dtype, the images' sums in float64), as ops/channel_major.py's ``sums_of_squares`` does,
without a temporary of x's size; the textbook squares into a new array first.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np

from .. import memory
from ..autograd import Function, is_grad_enabled
from . import parallel
from .norm import inverse_std, update_running_statistics


# Whether these ops split their passes among the fused ops' threads (ops/parallel.py), and
# from which size on: arrays of at least THREADED_MIN_SIZE values. Off: alone, split passes
# run 1.4x to 1.6x faster on 2 threads from (64, 16, 32, 32) up (slower below (64, 64, 8, 8)),
# but inside a network each follows a convolution whose BLAS threads still spin for a while
# after their product and take the second core: ResNet-164's step took 1.07x and ResNet-18's
# 1.03x as long with them on (2026-12-08; every array split: 1.13x).
THREADED = False
THREADED_MIN_SIZE = 2 ** 19


def _threaded(like):
    return THREADED and like.size >= THREADED_MIN_SIZE


def _threads(like):
    return parallel.own_threads(like) if _threaded(like) else contextlib.nullcontext()


def _split(n, like):
    return parallel.split(n) if _threaded(like) else [(0, n)]


def _column(v):
    """A (C,) vector shaped (1, C, 1, 1), to broadcast against (N, C, H, W)."""
    return v.reshape(1, -1, 1, 1)


def _channel_sums(a):
    """Per-channel sum over (N, H, W) of a (N, C, H, W), float64: each image's H*W values
    summed along their contiguous row (NumPy's pairwise sum, a's dtype), the images in float64."""
    N, C = a.shape[:2]
    return a.reshape(N, C, -1).sum(axis=2).sum(axis=0, dtype=np.float64)


def _sum_products(a, b):
    """Per-channel sum of a * b over (N, H, W) for a, b (N, C, H, W), float64: one einsum
    over every image's rows (H*W products in a's dtype), the images in float64; no
    temporary of a's size."""
    N, C = a.shape[:2]
    return np.einsum("nci,nci->nc", a.reshape(N, C, -1), b.reshape(N, C, -1)).sum(axis=0, dtype=np.float64)


class BatchNormReLU(Function):
    """z = relu(batch_norm(x; weight, bias)) for x (N, C, H, W), in one op (module docstring).

    Keeps v = x - mean (training: the batch's mean; eval: the running mean) and z: batch norm's
    xhat is v * invstd, so forward writes v, then z = relu(v * (weight * invstd) + bias)."""

    def forward(self, x, weight, bias, running_mean=None, running_var=None, training=False, momentum=0.1,
                eps=1e-5):
        N, C, H, W = x.shape
        M = N * H * W
        keep = is_grad_enabled() and any(self.needs_grad)
        v = memory.empty(x.shape, x.dtype) if keep else (memory.scratch(x.shape, x.dtype) if training else None)
        z = memory.empty(x.shape, x.dtype)

        def part(i, lo, hi):
            xs, zs = x[:, lo:hi], z[:, lo:hi]
            vs = None if v is None else v[:, lo:hi]
            if training:       # batch statistics, as ops/norm.py's batch_statistics
                mean = _channel_sums(xs) / M
                np.subtract(xs, _column(mean.astype(x.dtype)), out=vs)
                var = _sum_products(vs, vs) / M
            else:
                mean, var = running_mean[lo:hi], running_var[lo:hi]
                if not keep:   # evaluation without a graph: z = relu(x * a + (bias - mean * a)), a = weight *
                    invstd = inverse_std(var, eps, x.dtype)                        # invstd; no v at all
                    a = weight[lo:hi] * invstd
                    np.multiply(xs, _column(a), out=zs)
                    zs += _column(bias[lo:hi] - mean * a)
                    np.maximum(zs, 0, out=zs)
                    return mean, var, invstd
                np.subtract(xs, _column(mean), out=vs)
            invstd = inverse_std(var, eps, x.dtype)
            np.multiply(vs, _column(weight[lo:hi] * invstd), out=zs)        # weight * xhat + bias
            zs += _column(bias[lo:hi])
            np.maximum(zs, 0, out=zs)                                       # relu, in place
            return mean, var, invstd

        with _threads(x):
            mean, var, invstd = (np.concatenate(values) for values in zip(*parallel.parallel(part, _split(C, x))))
        if training and running_mean is not None:
            update_running_statistics(running_mean, running_var, mean, var, M, momentum)
        if keep:
            self.v, self.z, self.invstd, self.weight, self.training = v, z, invstd, weight, training
        return z

    def backward(self, g):
        v, z, invstd = self.v, self.z, self.invstd
        N, C, H, W = g.shape
        M = g.dtype.type(N * H * W)
        d = memory.scratch(g.shape, g.dtype)          # g through the ReLU
        gx = memory.scratch(g.shape, g.dtype)
        scale = self.weight * invstd

        def part(i, lo, hi):
            ds, vs, gs = d[:, lo:hi], v[:, lo:hi], gx[:, lo:hi]
            np.multiply(g[:, lo:hi], z[:, lo:hi] > 0, out=ds)
            sum_g = _channel_sums(ds).astype(g.dtype)
            sum_g_xhat = (_sum_products(ds, vs) * invstd[lo:hi]).astype(g.dtype)    # sum g * xhat
            k = scale[lo:hi]
            if self.training:   # scale / M * (M g - sum g - xhat * sum(g xhat)), ops/norm.py's, as
                # scale * g - scale * sum(g) / M - v * (scale * invstd * sum(g xhat) / M)
                np.multiply(vs, _column(-k * invstd[lo:hi] * sum_g_xhat / M), out=gs)
                gs -= _column(k * sum_g / M)
                gs += np.multiply(ds, _column(k), out=ds)
            else:
                np.multiply(ds, _column(k), out=gs)
            return sum_g_xhat, sum_g

        with _threads(g):
            gweight, gbias = (np.concatenate(values) for values in zip(*parallel.parallel(part, _split(C, g))))
        return (gx if self.needs_grad[0] else None), gweight, gbias


class AddReLU(Function):
    """z = relu(a + b), a and b of one shape (a residual block's output); one gradient for both."""

    def forward(self, a, b):
        z = memory.empty(a.shape, a.dtype)
        flat = [v.reshape(-1) for v in (a, b, z)]

        def part(i, lo, hi):
            za = np.add(flat[0][lo:hi], flat[1][lo:hi], out=flat[2][lo:hi])
            np.maximum(za, 0, out=za)

        with _threads(a):
            parallel.parallel(part, _split(z.size, z))
        if is_grad_enabled() and any(self.needs_grad):
            self.z = z
        return z

    def backward(self, g):
        d = np.empty_like(g)      # returned to autograd for both inputs: not from the pool's scratch
        flat = [v.reshape(-1) for v in (g, self.z, d)]

        def part(i, lo, hi):
            np.multiply(flat[0][lo:hi], flat[1][lo:hi] > 0, out=flat[2][lo:hi])

        with _threads(g):
            parallel.parallel(part, _split(d.size, d))
        return d, d


def fits(x):
    """Whether the ops here take this input: a non-empty 4-D NumPy array of floats."""
    return isinstance(x, np.ndarray) and x.ndim == 4 and x.dtype.kind == "f" and math.prod(x.shape) > 0
