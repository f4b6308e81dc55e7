"""Batch norm and ReLU folded into the convolution that follows them: the arithmetic of
the fused ops (ops/bn_relu.py, ops/dense_block.py), on channel-major (C, R) matrices
(ops/channel_major.py). Each fused op computes

    z = relu(s * v + t)          per row: s, t (C,) are batch norm's affine map
    y = W @ z                    (or a k x k convolution of z, ops/conv.py)

written for v = x - mean, the centred input (training: s = weight / std,
t = bias), or v = x (eval: the running statistics folded into s and t):
``batch_norm_affine`` makes s and t, ``batch_norm_grads`` turns the sums the
backward pass collects into batch norm's dweight and dbias.

The fold (``ReluAffine``). When every s > 0 (batch norm's weight starts at 1 and
stays positive in practice), relu(s*v + t) = s * (max(v, c) - c) with c = -t / s, so

    W @ z = (W s) @ max(v, c) - (W s) @ c        (W s: W's columns scaled by s)

and the whole BN-ReLU costs ONE pass over v (the elementwise max) before the
matrix product; the last term is one vector per output channel. In backward
the same Z = max(v, c) serves the weight gradient, and Z > c is the ReLU's mask.
If some s <= 0 the op simply computes z = relu(s*v + t) (three passes).
Rounding: (W s) @ Z and (W s) @ c are sums of the terms W s v and W t, so the
fold rounds as forming s*v + t does; for centred v these are O(1).

Nothing of v's size is stored: ``conv1x1_backward`` rebuilds v and Z from x, which
the caller keeps anyway (a dense block's feature buffer), CHUNK columns at a
time. Scratch arrays come from the pool in tinydense/memory.py, so a few of
them serve every layer.
"""
from __future__ import annotations

from .. import backend
from . import parallel
from .channel_major import (chunk_scratch, chunk_width, chunks, column_slice, per_row, pool_2x2, thread_ranges,
                            unpool_2x2)
from .norm import inverse_std


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

    def _kernel_args(self, dtype):
        """s and t as (C, 1) columns of ``dtype``: a GPU kernel's arguments share one type."""
        return per_row(self.s).astype(dtype, copy=False), per_row(self.t).astype(dtype, copy=False)

    def slice_rows(self, lo, hi):
        """The same map for rows lo..hi-1 only (folded or not as the whole is)."""
        return ReluAffine(self.s[lo:hi], self.t[lo:hi], self.folded)

    def inputs(self, v, out):
        """Z (C, R): max(v, c) if folded, else relu(s*v + t); written into ``out``."""
        xp = backend.get_array_module(v)
        if self.folded:
            return xp.maximum(v, per_row(self.c), out=out)
        if backend.device_of(v) == "cuda":
            return _RELU_AFFINE(v, *self._kernel_args(v.dtype), out)
        xp.multiply(v, per_row(self.s), out=out)
        out += per_row(self.t)
        return xp.maximum(out, 0, out=out)

    def shifted_inputs(self, v, out):
        """z / s (folded) or z: like ``inputs`` without the offset, for a convolution
        whose zero padding must stay zero (ops/conv.py's k x k kernels)."""
        out = self.inputs(v, out)
        if self.folded:
            out -= per_row(self.c)
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
            return xp.greater(v, per_row(self.c), out=out)
        if backend.device_of(v) == "cuda":
            return _RELU_OPEN(v, *self._kernel_args(v.dtype), out)
        return xp.greater(self.inputs(v, out), 0, out=out)

    def to_dv(self, d):
        """dL/d(inputs) -> dL/dv in place: nothing to do folded (d = s dL/du already), else d *= s."""
        if not self.folded:
            d *= per_row(self.s)

    def du_sums(self, sums):
        """(sum d, sum d * v) of d = dL/d(inputs) -> (sum dL/du, sum dL/du * v), in s's dtype."""
        if self.folded:
            sums = sums[0] / self.s, sums[1] / self.s
        return sums[0].astype(self.s.dtype), sums[1].astype(self.s.dtype)

    def dv_sums(self, du_sums):
        """(sum dL/du, sum dL/du * v) -> (sum dL/dv, sum dL/dv * v): the terms statistics_backward needs."""
        return self.s * du_sums[0], self.s * du_sums[1]


def batch_norm_affine(weight, bias, running_mean, running_var, eps, training, var=None):
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


def batch_norm_grads(sums, to_xhat):
    """Batch norm's (dweight, dbias) from (sum dL/du, sum dL/du * v), u = s*v + t (``batch_norm_affine``)."""
    sum_g, sum_gv = sums
    centre, invstd = to_xhat
    return (sum_gv - centre * sum_g) * invstd, sum_g


def conv1x1_forward(affine, v, weight, out, pool_width=None):
    """out (O, R) <- W @ relu(s*v + t) for the 1x1 ``weight`` (O, C, 1, 1), v (C, R); returns out.
    With ``pool_width`` (the images' width W; H and W even) the result is 2x2-average-pooled,
    out (O, R/4): W @ pool(z), the same as pool(W @ z) since both are linear and act on
    different axes, at a quarter of the matrix product. The columns are shared among the
    threads (ops/parallel.py), CHUNK at a time."""
    xp = backend.get_array_module(v)
    A = affine.conv_weight(weight)[:, :, 0, 0]
    offset = per_row(A @ affine.c) if affine.folded else None
    unit, q = (1, 1) if pool_width is None else (2 * pool_width, 4)
    ranges = thread_ranges(v.shape[1], unit)
    Z = [chunk_scratch(v, chunk_width(unit)) for _ in ranges]
    P = [None if q == 1 else chunk_scratch(v, chunk_width(unit) // 4) for _ in ranges]

    def part(i, lo, hi):
        for a, b in chunks(lo, hi, unit):
            Zc = affine.inputs(v[:, a:b], out=Z[i][:, :b - a])
            if q == 4:
                Zc = pool_2x2(Zc, pool_width, P[i][:, :(b - a) // 4])
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
    ranges = thread_ranges(v.shape[1], unit)
    scratch = [[chunk_scratch(v, chunk_width(unit)) for _ in range(2 if mean is None else 3)] for _ in ranges]
    P = [None if q == 1 else chunk_scratch(v, chunk_width(unit) // 4) for _ in ranges]

    def part(i, lo, hi):
        Z, D, *V = scratch[i]
        gA = xp.zeros(A.shape, dtype=A.dtype)
        sum_d, sum_dv = (xp.zeros(v.shape[0]) for _ in range(2))        # float64 over the chunks
        for a, b in chunks(lo, hi, unit):
            vc = column_slice(v, a, b, mean, V[0] if V else None)
            Zc, gc = affine.inputs(vc, out=Z[:, :b - a]), g[:, a // q:b // q]
            if q == 1:
                gA += gc @ Zc.T                                    # dL/dA = g Z^T  (O, C)
                Dc = xp.matmul(A.T, gc, out=D[:, :b - a])          # dL/dZ
            else:                                                  # the same through the pooling
                gA += gc @ pool_2x2(Zc, pool_width, P[i][:, :(b - a) // 4]).T
                Dc = unpool_2x2(xp.matmul(A.T, gc, out=P[i][:, :(b - a) // 4]), pool_width, D[:, :b - a])
            Dc *= xp.greater(Zc, per_row(affine.c), out=Zc)         # Z > c: where the ReLU was open
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
    v *= per_row((sum_dv / count).astype(d.dtype))
    d -= v
    d -= per_row((sum_d / count).astype(d.dtype))
    return d
