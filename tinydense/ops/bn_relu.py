"""Batch norm, ReLU and a convolution as one op, on channel-major memory: the
building block of the memory-efficient DenseNet (ops/dense_block.py) and its
transitions (``BatchNormReLUConv1x1`` below).

Every array here is a "rows" matrix: channel c's N*H*W values are row c of a
(C, R) matrix, R = N*H*W (memory laid out (C, N, H, W)). Batch statistics are
row sums, and a 1x1 convolution over the whole batch is ONE matrix product,
y = W @ z with W (O, C). The op is

    z = relu(s * v + t)          per row: s, t (C,) are batch norm's affine map
    y = W @ z                    (or a k x k convolution of z, ops/conv.py)

written for v = x - mean, the centred input (training: s = weight / std,
t = bias), or v = x (eval: the running statistics folded into s and t).

The fold. When every s > 0 (batch norm's weight starts at 1 and stays positive
in practice), relu(s*v + t) = s * (max(v, c) - c) with c = -t / s, so

    W @ z = (W s) @ max(v, c) - (W s) @ c        (W s: W's columns scaled by s)

and the whole BN-ReLU costs ONE pass over v (the elementwise max) before the
matrix product; the last term is one vector per output channel. In backward
the same Z = max(v, c) serves the weight gradient, and Z > c is the ReLU's mask.
If some s <= 0 the op simply computes z = relu(s*v + t) (three passes).
Rounding: (W s) @ Z and (W s) @ c are sums of the terms W s v and W t, so the
fold rounds as forming s*v + t does; for centred v these are O(1).

Nothing of v's size is stored: backward rebuilds v and Z from x, which the
caller keeps anyway (a dense block's feature buffer). Scratch arrays come
from the pool in tinydense/memory.py, so a few of them serve every layer.
"""
from __future__ import annotations

from .. import backend, memory
from . import parallel
from ..autograd import Function, Tensor, is_grad_enabled
from .norm import batch_statistics, check_batch_norm_args, inverse_std, update_running_statistics


def column(vector):
    """A per-row vector (C,) shaped (C, 1), to broadcast against (C, R)."""
    return vector.reshape(-1, 1)


def rows(a):
    """A channel-major (C, N, H, W) array as its (C, N*H*W) matrix (a view)."""
    return a.reshape(a.shape[0], -1)


def channel_major(x):
    """x (N, C, H, W) as a channel-major (C, N, H, W) array: a view when x's memory is
    laid out that way, else a transposing copy into a pooled scratch array."""
    cm = x.transpose(1, 0, 2, 3)
    if cm.flags.c_contiguous:
        return cm
    copy = memory.scratch(cm.shape, x.dtype, like=x)
    copy[...] = cm
    return copy


# GPU: z = relu(s*v + t) in one pass over v (NumPy: multiply, add, maximum, three passes)
_RELU_AFFINE = backend.GPUKernel("T v, T s, T t", "T z", "z = max(v * s + t, (T)0)", "tinydense_relu_affine")
# GPU: the ReLU's mask [s*v + t > 0] in one pass (NumPy: the three above and a comparison)
_RELU_OPEN = backend.GPUKernel("T v, T s, T t", "T m", "m = v * s + t > (T)0 ? (T)1 : (T)0", "tinydense_relu_open")


def can_fold(scale):
    """Whether the folded form applies: every scale > 0. On a GPU, reading that answer would
    make the CPU wait for every queued kernel (a host-device synchronisation in the middle of
    the step), so GPU arrays always take the unfolded form, which gives the same numbers."""
    return backend.device_of(scale) == "cpu" and bool((scale > 0).all())


class ReluAffine:
    """z = relu(s * v + t) per row, in the folded form of the module docstring when every s > 0 (see can_fold).

    ``inputs`` writes what a 1x1 convolution reads, Z = max(v, c) (folded) or z;
    ``shifted_inputs`` what a k x k one reads, Z - c = z / s (folded) or z;
    ``conv_weight`` the weight that multiplies either (W s folded, else W). c = 0 unfolded.
    """

    def __init__(self, s, t, folded=None):
        xp = backend.get_array_module(s)
        self.s, self.t = s, t
        self.folded = can_fold(s) if folded is None else folded
        self.c = -t / s if self.folded else xp.zeros_like(s)

    def _columns(self, dtype):
        """s and t as (C, 1) columns of ``dtype``: a GPU kernel's arguments share one type."""
        return column(self.s).astype(dtype, copy=False), column(self.t).astype(dtype, copy=False)

    def rows(self, lo, hi):
        """The same map for rows lo..hi-1 only (folded or not as the whole is)."""
        return ReluAffine(self.s[lo:hi], self.t[lo:hi], self.folded)

    def inputs(self, v, out):
        """Z (C, R): max(v, c) if folded, else relu(s*v + t); written into ``out``."""
        xp = backend.get_array_module(v)
        if self.folded:
            return xp.maximum(v, column(self.c), out=out)
        if backend.device_of(v) == "cuda":
            return _RELU_AFFINE(v, *self._columns(v.dtype), out)
        xp.multiply(v, column(self.s), out=out)
        out += column(self.t)
        return xp.maximum(out, 0, out=out)

    def shifted_inputs(self, v, out):
        """z / s (folded) or z: like ``inputs`` without the offset, for a convolution
        whose zero padding must stay zero (ops/conv.py's k x k kernels)."""
        out = self.inputs(v, out)
        if self.folded:
            out -= column(self.c)
        return out

    def conv_weight(self, weight):
        """The weight (O, C, kh, kw) that multiplies the inputs: W s (folded) or W."""
        return weight * self.s.reshape(1, -1, 1, 1) if self.folded else weight

    def weight_grad(self, grad):
        """dL/dW from the gradient of the weight ``conv_weight`` returned."""
        return grad * self.s.reshape(1, -1, 1, 1) if self.folded else grad

    def open(self, v, out):
        """1.0 where the ReLU lets the gradient through (s*v + t > 0), 0.0 elsewhere."""
        xp = backend.get_array_module(v)
        if self.folded:
            return xp.greater(v, column(self.c), out=out)
        if backend.device_of(v) == "cuda":
            return _RELU_OPEN(v, *self._columns(v.dtype), out)
        return xp.greater(self.inputs(v, out), 0, out=out)

    def gradients(self, d, v):
        """``d`` (C, R) holds dL/d(inputs) where the ReLU was open and 0 elsewhere.
        Turns it into dL/dv in place and returns (sum dL/du, sum dL/du * v) per row,
        u = s*v + t the ReLU's input: batch norm's dbias and, for v = xhat, dweight."""
        xp = backend.get_array_module(d)
        sums = d.sum(axis=1), xp.einsum("cr,cr->c", d, v)
        self.to_dv(d)
        return self.du_sums(sums)

    def to_dv(self, d):
        """dL/d(inputs) -> dL/dv in place: nothing to do folded (d = s dL/du already), else d *= s."""
        if not self.folded:
            d *= column(self.s)

    def du_sums(self, sums):
        """(sum d, sum d * v) of d = dL/d(inputs) -> (sum dL/du, sum dL/du * v), in s's dtype."""
        if self.folded:
            sums = sums[0] / self.s, sums[1] / self.s
        return sums[0].astype(self.s.dtype), sums[1].astype(self.s.dtype)

    def dv_sums(self, du_sums):
        """(sum dL/du, sum dL/du * v) -> (sum dL/dv, sum dL/dv * v): the terms statistics_backward needs."""
        return self.s * du_sums[0], self.s * du_sums[1]


# The 1x1 kernels work on CHUNK columns at a time: their scratch arrays are
# C x CHUNK, not C x R (DenseNet-BC-100's first block: 7 MB instead of 56 MB),
# and each chunk's passes stay in the cache.
CHUNK = 8192


def _step(unit=1):
    """Columns per chunk: about CHUNK, a multiple of ``unit``."""
    return max(unit, CHUNK - CHUNK % unit)


def _chunks(lo, hi, unit=1):
    """lo..hi in pieces of ``_step(unit)`` columns (the last one shorter)."""
    step = _step(unit)
    return [(a, min(a + step, hi)) for a in range(lo, hi, step)]


def _ranges(R, unit=1):
    """The columns 0..R as one range per thread, each a multiple of ``unit`` columns."""
    return [(lo * unit, hi * unit) for lo, hi in parallel.split(R // unit)]


def columns(v, lo, hi, mean=None, scratch=None):
    """Columns lo..hi of v (C, R), or of v - mean, written into ``scratch``, if ``mean``
    (per row, in v's dtype) is given."""
    if mean is None:
        return v[:, lo:hi]
    return backend.get_array_module(v).subtract(v[:, lo:hi], column(mean), out=scratch[:, :hi - lo])


def _scratch(v, width):
    return memory.scratch((v.shape[0], min(width, v.shape[1])), v.dtype, like=v)


def _pool(Z, width, out):
    """out (C, r/4) <- the 2x2 averages of Z (C, r), whose columns are pairs of image rows
    ``width`` wide: the order of AvgPool2d(2)'s sum (ops/pool.py), then times 1/4."""
    xp = backend.get_array_module(Z)
    C, r = Z.shape
    taps = Z.reshape(C, r // (2 * width), 2, width // 2, 2)
    pooled = out.reshape(C, r // (2 * width), width // 2)
    xp.add(taps[:, :, 0, :, 0], taps[:, :, 0, :, 1], out=pooled)
    pooled += taps[:, :, 1, :, 0]
    pooled += taps[:, :, 1, :, 1]
    pooled *= Z.dtype.type(0.25)
    return out


def _unpool(d, width, out):
    """out (C, r) <- the gradient of ``_pool``: each of a window's 4 values gets d / 4."""
    C, r = out.shape
    taps = out.reshape(C, r // (2 * width), 2, width // 2, 2)
    quarter = (d * d.dtype.type(0.25)).reshape(C, r // (2 * width), width // 2)
    for a in (0, 1):
        for b in (0, 1):
            taps[:, :, a, :, b] = quarter
    return out


def conv1x1_forward(affine, v, weight, out, pool_width=None):
    """out (O, R) <- W @ relu(s*v + t) for the 1x1 ``weight`` (O, C, 1, 1), v (C, R); returns out.
    With ``pool_width`` (the images' width W; H and W even) the result is 2x2-average-pooled,
    out (O, R/4): W @ pool(z), the same as pool(W @ z) since both are linear and act on
    different axes, at a quarter of the matrix product. The columns are shared among the
    threads (ops/parallel.py), CHUNK at a time."""
    xp = backend.get_array_module(v)
    A = affine.conv_weight(weight)[:, :, 0, 0]
    offset = column(A @ affine.c) if affine.folded else None
    unit, q = (1, 1) if pool_width is None else (2 * pool_width, 4)
    ranges = _ranges(v.shape[1], unit)
    Z = [_scratch(v, _step(unit)) for _ in ranges]
    P = [None if q == 1 else _scratch(v, _step(unit) // 4) for _ in ranges]

    def part(i, lo, hi):
        for a, b in _chunks(lo, hi, unit):
            Zc = affine.inputs(v[:, a:b], out=Z[i][:, :b - a])
            if q == 4:
                Zc = _pool(Zc, pool_width, P[i][:, :(b - a) // 4])
            yc = xp.matmul(A, Zc, out=out[:, a // q:b // q])
            if offset is not None:
                yc -= offset

    parallel.parallel(part, ranges)
    return out


def conv1x1_backward(affine, v, weight, g, dv, accumulate=False, mean=None, pool_width=None):
    """Given g = dL/dy (O, R) (O, R/4 with ``pool_width``, as in ``conv1x1_forward``): writes
    dL/dv into ``dv`` (C, R), or adds it there with ``accumulate``, and returns (dL/dW,
    sum dL/du, sum dL/du * v); Z is recomputed from v, or from v - mean (the rows' means in v's
    dtype) if ``mean`` is given."""
    xp = backend.get_array_module(v)
    A = affine.conv_weight(weight)[:, :, 0, 0]
    unit, q = (1, 1) if pool_width is None else (2 * pool_width, 4)
    ranges = _ranges(v.shape[1], unit)
    scratch = [[_scratch(v, _step(unit)) for _ in range(2 if mean is None else 3)] for _ in ranges]
    P = [None if q == 1 else _scratch(v, _step(unit) // 4) for _ in ranges]

    def part(i, lo, hi):
        Z, D, *V = scratch[i]
        gA = xp.zeros(A.shape, dtype=A.dtype)
        sum_d, sum_dv = (xp.zeros(v.shape[0]) for _ in range(2))        # float64 over the chunks
        for a, b in _chunks(lo, hi, unit):
            vc = columns(v, a, b, mean, V[0] if V else None)
            Zc, gc = affine.inputs(vc, out=Z[:, :b - a]), g[:, a // q:b // q]
            if q == 1:
                gA += gc @ Zc.T                                    # dL/dA = g Z^T  (O, C)
                Dc = xp.matmul(A.T, gc, out=D[:, :b - a])          # dL/dZ
            else:                                                  # the same through the pooling
                gA += gc @ _pool(Zc, pool_width, P[i][:, :(b - a) // 4]).T
                Dc = _unpool(xp.matmul(A.T, gc, out=P[i][:, :(b - a) // 4]), pool_width, D[:, :b - a])
            Dc *= xp.greater(Zc, column(affine.c), out=Zc)         # Z > c: where the ReLU was open
            sum_d += Dc.sum(axis=1)
            sum_dv += xp.einsum("cr,cr->c", Dc, vc)
            affine.to_dv(Dc)
            if accumulate:
                dv[:, a:b] += Dc
            else:
                dv[:, a:b] = Dc
        return gA, sum_d, sum_dv

    gA, sum_d, sum_dv = (sum(values) for values in zip(*parallel.parallel(part, ranges)))
    if affine.folded:                                          # y = A Z - A c 1^T
        gA -= g.sum(axis=1)[:, None] * affine.c[None, :]
    gw = affine.weight_grad(gA[:, :, None, None])
    return (gw,) + affine.du_sums((sum_d, sum_dv))


def statistics_backward(d, v, sums, count):
    """dL/dx of batch norms that normalise x with its batch statistics, per row of (C, R) arrays,
    from d = dL/dv, v = x - mean the centred input:

        dL/dx = d - mean(d) - v * sum_l invstd_l^2 mean(d_l * v)

    (ops/norm.py's invstd * (g - mean(g) - xhat * mean(g * xhat)) with xhat = v * invstd,
    summed over the batch norms l that read x, each with its own invstd; d = sum_l d_l).
    ``sums`` = (sum d, sum_l invstd_l^2 sum d_l * v) per row over the whole batch (``count``
    values; ``d`` may be some of its columns). Written over ``d`` in place; ``v`` is destroyed."""
    sum_d, sum_dv = sums
    v *= column((sum_dv / count).astype(d.dtype))
    d -= v
    d -= column((sum_d / count).astype(d.dtype))
    return d


def centred(x, out):
    """Per-row batch mean and biased variance of x (C, R) (float64) and x - mean written into
    ``out``; returns (mean, var). In the calling thread."""
    mean, var, _ = batch_statistics(x, (1,), centred=out)
    return mean, var


def centred_rows(x, out):
    """``centred``, the rows shared among the threads."""
    xp = backend.get_array_module(x)
    parts = parallel.parallel(lambda i, lo, hi: centred(x[lo:hi], out[lo:hi]), parallel.split(x.shape[0]))
    return tuple(xp.concatenate(values) for values in zip(*parts))


def affine_for(weight, bias, running_mean, running_var, eps, training, var=None):
    """(s, t, to_xhat) of relu(s*v + t) = relu(bn(x)):

    training: v = x - mean (the batch's), s = weight * invstd, invstd = 1/sqrt(var + eps) from the
              batch variance ``var``, t = bias;
    eval:     v = x, the running statistics folded in: s = weight * invstd, t = bias - mean * s.
    ``to_xhat`` = (centre, invstd): batch norm's xhat = (v - centre) * invstd."""
    if training:
        invstd = inverse_std(var, eps, weight.dtype)
        return weight * invstd, bias, (0, invstd)
    invstd = inverse_std(running_var, eps, weight.dtype)
    mean = running_mean.astype(weight.dtype)
    s = weight * invstd
    return s, bias - mean * s, (mean, invstd)


def norm_grads(sums, to_xhat):
    """Batch norm's (dweight, dbias) from (sum dL/du, sum dL/du * v), u = s*v + t (``affine_for``)."""
    sum_g, sum_gv = sums
    centre, invstd = to_xhat
    return (sum_gv - centre * sum_g) * invstd, sum_g


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
            xr = rows(channel_major(x))
            v, mean, var = xr, None, None
            if training:     # x - mean, for now (backward makes it again, a chunk at a time)
                v = memory.scratch(xr.shape, x.dtype, like=x)
                mean, var = centred_rows(xr, out=v)
                if running_mean is not None:
                    update_running_statistics(running_mean, running_var, mean, var, xr.shape[1], momentum)
                mean = mean.astype(x.dtype)
            s, t, to_xhat = affine_for(bn_weight, bn_bias, running_mean, running_var, eps, training, var)
            affine = ReluAffine(s, t)
            self.pool_width = W if pool else None
            y = memory.empty((conv_weight.shape[0], N) + ((H // 2, W // 2) if pool else (H, W)), x.dtype, like=x)
            conv1x1_forward(affine, v, conv_weight, out=rows(y), pool_width=self.pool_width)
        if is_grad_enabled() and any(self.needs_grad):
            self.x, self.conv_weight, self.affine, self.mean, self.to_xhat = x, conv_weight, affine, mean, to_xhat
        return y.transpose(1, 0, 2, 3)

    def backward(self, g):
        x, mean = self.x, self.mean
        N, C, H, W = x.shape
        with parallel.own_threads(x):
            xr = rows(channel_major(x))
            dx = memory.scratch((C, N, H, W), x.dtype, like=x)      # passed on, not kept
            gw, *sums = conv1x1_backward(self.affine, xr, self.conv_weight, rows(channel_major(g)), dv=rows(dx),
                                         mean=mean, pool_width=self.pool_width)
            if mean is not None:        # dx holds dL/dv, v = x - mean: through the batch statistics
                sum_d, sum_dv = self.affine.dv_sums(sums)
                invstd = self.to_xhat[1]
                ranges = parallel.split(xr.shape[1])
                V = [_scratch(xr, _step()) for _ in ranges]

                def part(i, lo, hi):
                    for a, b in _chunks(lo, hi):
                        statistics_backward(rows(dx)[:, a:b], columns(xr, a, b, mean, V[i]),
                                            (sum_d, invstd * invstd * sum_dv), xr.shape[1])

                parallel.parallel(part, ranges)
        gweight, gbias = norm_grads(sums, self.to_xhat)
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
