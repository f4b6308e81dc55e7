"""A whole dense block as ONE op: the memory-efficient DenseNet (Pleiss et al., 2017).

The textbook block (models/densenet_blocks.py) concatenates x_0 ... x_{l-1} anew for
every layer l and normalises that copy: its stored activations grow with the
square of the depth. This op computes the same function with memory linear in
depth, and faster:

- ONE feature buffer X for all k0 + L*k channels of the block (channel-major,
  (C, N, H, W)); layer l writes its k channels into the next slot, and reads
  its concatenated input [x_0 .. x_{l-1}] as the first c_l channels: a view.
  X is the block's output.
- Batch statistics ONCE per channel. Every layer that reads channel j in
  training normalises it with the same batch mean and variance (same batch,
  same values), so the block computes them when the channel is written.
  What differs from layer to layer is batch norm's affine map (weight, bias,
  and its eps), which ops/bn_relu_fold.py folds into the 1x1 convolution: with
  v = x - mean, relu(bn(x)) = relu(s v + t), s = weight / sqrt(var + eps),
  t = bias, costs one elementwise pass over the c_l channels per layer
  forward (scale, shift and clamp in one max). And because v is shared, the
  gradients with respect to it can be summed over all layers in one buffer
  G and taken through the statistics once per channel (the per-layer terms
  of that step are per-channel sums, added up as vectors).
- Backward is this op's own loop over the layers in reverse. When it reaches
  layer l, G already holds everything the later layers sent to layer l's
  channels; layer l's gradient is G's slot (through the statistics) plus what
  the block's output got there. v and relu(bn(.)) of the concatenation are
  recomputed from X, never stored. G belongs to this backward alone: no
  gradient passes between ops except through their return values.

Per layer the op keeps the bottleneck's output (4k channels, centred in
place), the 3x3 convolution's own copy of its input (ops/conv.py) and dropout
masks: linear in depth. A layer without bottleneck (DenseNet,
DenseNet-C) runs its 3x3 convolution on the c_l-channel concatenation; that
convolution's copy of its input would grow with depth, so it is dropped and
the convolution's forward is run again in backward.

The convolutions with k x k kernels are ops/conv.py's ``Conv2d``, whose forward
this op runs and whose backward it calls from its own: not through autograd,
because a recorded graph would keep the convolution's input alive, and that
input is a scratch array. The 1x1 convolutions are one matrix product each
over the channel-major matrix (ops/channel_major.py, ops/bn_relu_fold.py). In
eval mode v is x itself and each layer folds its running statistics into its
affine map. Every phase of a layer shares its work among threads (ops/parallel.py).

(Over 400 lines, as one op: its forward, its backward and the per-layer steps
they run read together, with the records of what a layer is given and keeps.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .. import backend, memory
from ..autograd import Function, Tensor, is_grad_enabled
from . import parallel, stats_reducer
from .bn_relu_fold import (ReluAffine, batch_norm_affine, batch_norm_grads, can_fold, conv1x1_backward,
                           conv1x1_forward, statistics_backward)
from .channel_major import as_matrix, centre_rows, centre_rows_threaded, column_slice, whole_batch_rows
from .conv import Conv2d
from .dropout import keep_scale
from .norm import check_batch_norm_args, update_running_statistics


class NormState(NamedTuple):
    """A batch norm layer's state besides its weight and bias."""
    running_mean: object
    running_var: object
    momentum: float
    eps: float


class LayerSpec(NamedTuple):
    """One dense layer: its batch norms (two with a bottleneck, else one), the k x k
    convolution's padding and the dropout rate. Its parameters are, in this order,
    norm1 weight, bias, conv1 weight [, norm2 weight, bias, conv2 weight]."""
    norms: tuple
    padding: tuple
    drop_rate: float


def _conv(x, weight, padding):
    """ops/conv.py's convolution: its forward now, its backward from ours later."""
    op = Conv2d()
    op.needs_grad = (True, True)       # what Conv2d.backward computes: dL/dx and dL/dW
    return op, op.forward(x, weight, padding=padding)


class _Statistics:
    """Training: the batch mean and variance of every channel of the block, made once when the
    channel is written; forward writes each channel's centred values x - mean into V."""

    def __init__(self, channels, xp):
        self.mean = xp.empty(channels, dtype=xp.float64)
        self.var = xp.empty(channels, dtype=xp.float64)

    def centre(self, X, V, lo, hi):
        self.mean[lo:hi], self.var[lo:hi] = centre_rows_threaded(as_matrix(X[lo:hi]), out=as_matrix(V[lo:hi]))

    def mean_of(self, lo, hi, dtype):
        """The means of channels lo..hi-1 in the data's dtype: x - mean exactly as ``centre``
        made it (channel_major.column_slice rebuilds it from X)."""
        return self.mean[lo:hi].astype(dtype)


class LayerParams(NamedTuple):
    """One dense layer's parameters: norm1's weight and bias and conv1's weight, and with a
    bottleneck norm2's and conv2's (None without)."""
    norm1_weight: object
    norm1_bias: object
    conv1_weight: object
    norm2_weight: object = None
    norm2_bias: object = None
    conv2_weight: object = None

    @property
    def last_conv_weight(self):
        """The weight of the k x k convolution that makes the layer's k new channels."""
        return self.conv1_weight if self.conv2_weight is None else self.conv2_weight


@dataclass
class SavedLayer:
    """What one layer's forward keeps for its backward (arrays of the layer's own size only).

    affine1, to_xhat1:  norm1-ReLU as relu(s v + t) on the concatenation (bn_relu_fold.py)
    image_ranges:       the images each thread's k x k convolution took
    drop_out:           dropout's scale after the layer's last convolution, or None
    With a bottleneck also:
    bottleneck:         conv1's output (4k channels), centred in place in training: v of norm2
    drop_bottleneck:    dropout's scale after conv1, or None
    affine2, to_xhat2:  norm2-ReLU as relu(s v + t)
    convs2:             conv2's ops (ops/conv.py), one per range of images, for their backward
    """
    affine1: ReluAffine
    to_xhat1: tuple
    image_ranges: list
    drop_out: object = None
    bottleneck: object = None
    drop_bottleneck: object = None
    affine2: ReluAffine = None
    to_xhat2: tuple = None
    convs2: list = None


class FusedDenseBlock(Function):
    """x (N, k0, H, W) and every layer's parameters -> (N, k0 + L*k, H, W), channel-major."""

    def forward(self, x, *params, layers, training):
        N, k0, H, W = x.shape
        xp = backend.get_array_module(x)
        weights = _per_layer(params, layers)
        ends = [k0]
        for ws in weights:
            ends.append(ends[-1] + ws.last_conv_weight.shape[0])   # layer i writes channels ends[i]..ends[i+1]-1
        keep = is_grad_enabled() and any(self.needs_grad)
        with parallel.own_threads(x):
            X = memory.empty((ends[-1], N, H, W), x.dtype, like=x)
            X[:k0] = x.transpose(1, 0, 2, 3)
            V, stats = X, None
            if training:      # x - mean, for this forward only: backward rebuilds it from X, a chunk at a time
                V = memory.scratch(X.shape, x.dtype, like=x)
                stats = _Statistics(ends[-1], xp)
                stats.centre(X, V, 0, k0)
            saved = []
            for i, (spec, ws) in enumerate(zip(layers, weights)):
                saved.append(_layer_forward(X, V, ends[i], spec, ws, stats, keep))
                if stats is not None:
                    stats.centre(X, V, ends[i], ends[i + 1])
        if keep:
            self.X, self.stats, self.layers, self.weights, self.saved, self.ends = X, stats, layers, weights, saved, ends
        return X.transpose(1, 0, 2, 3)

    def backward(self, g):
        X, stats, ends = self.X, self.stats, self.ends
        xp = backend.get_array_module(g)
        with parallel.own_threads(g):
            G = memory.scratch(X.shape, X.dtype, like=X)    # dL/dV, summed over every layer that reads a channel
            # per channel, over those layers l: sum of dL/dV and of invstd_l^2 dL/dV V (statistics_backward's)
            totals = None if stats is None else (xp.zeros(X.shape[0]), xp.zeros(X.shape[0]))
            grads = []
            for i in reversed(range(len(self.layers))):
                lo, hi = ends[i], ends[i + 1]
                if i == len(self.layers) - 1:      # no later layer read these channels
                    G[lo:hi] = g[:, lo:hi].transpose(1, 0, 2, 3)
                else:
                    self._finish(G, g, totals, lo, hi)
                grads[:0] = _layer_backward(G, X, lo, self.layers[i], self.weights[i], self.saved[i], stats, totals,
                                            first=i == len(self.layers) - 1)
                self.saved[i] = None               # this layer's arrays are no longer needed
            self._finish(G, g, totals, 0, ends[0])
            gx = G[:ends[0]].transpose(1, 0, 2, 3).copy() if self.needs_grad[0] else None
        return (gx,) + tuple(grads)

    def _finish(self, G, g, totals, lo, hi):
        """G[lo:hi] <- dL/dx of those channels: through the shared batch statistics (training),
        plus what the block's output received there. The channels shared among the threads."""
        R = G[lo:hi].size // (hi - lo)
        ranges = parallel.split(hi - lo)
        scratch = [memory.scratch((b - a, R), G.dtype, like=G) for a, b in ranges] if totals is not None else None
        if totals is not None:     # complete for these channels: over the whole batch (ops/stats_reducer.py)
            totals[0][lo:hi], totals[1][lo:hi] = stats_reducer.global_sums(totals[0][lo:hi], totals[1][lo:hi])
        count = stats_reducer.global_count(R)

        def part(i, a, b):
            a, b = lo + a, lo + b
            if totals is not None:
                v = column_slice(as_matrix(self.X[a:b]), 0, R, self.stats.mean_of(a, b, G.dtype), scratch[i])
                statistics_backward(as_matrix(G[a:b]), v, (totals[0][a:b], totals[1][a:b]), count)
            G[a:b] += g[:, a:b].transpose(1, 0, 2, 3)

        parallel.parallel(part, ranges)


def _layer_forward(X, V, c, spec, ws, stats, keep):
    """Layer l on the first c channels of the block: writes its k channels into X[c:c+k].
    Returns what its backward needs (a ``SavedLayer``; None if no backward will come). Each
    phase shares its work among the threads: columns (images) for the convolutions, rows
    (channels) for batch norm's statistics."""
    training = stats is not None
    _, N, H, W = X.shape
    R = stats_reducer.global_count(N * H * W)         # values per channel in the whole batch (every process's)
    norm1 = spec.norms[0]
    if training:   # the batch statistics are the block's, made when the channels were written
        update_running_statistics(norm1.running_mean, norm1.running_var, stats.mean[:c], stats.var[:c], R,
                                  norm1.momentum)
    s, t, to_xhat1 = batch_norm_affine(ws.norm1_weight, ws.norm1_bias, norm1.running_mean, norm1.running_var,
                                       norm1.eps, training, stats.var[:c] if training else None)
    a1, v = ReluAffine(s, t), as_matrix(V[:c])
    if len(spec.norms) == 1:          # BN-ReLU-Conv kxk on the concatenation
        E = memory.scratch((c, N, H, W), X.dtype, like=X)
        parallel.parallel(lambda i, lo, hi: a1.slice_rows(lo, hi).shifted_inputs(v[lo:hi], out=as_matrix(E)[lo:hi]),
                          parallel.split(c))
        # the convolution is not kept (its copy of E grows with depth): backward runs it again
        _, ranges, drop_out = _images_conv(E, a1.conv_weight(ws.conv1_weight), spec.padding, spec.drop_rate,
                                           training, X, c)
        layer = SavedLayer(a1, to_xhat1, ranges, drop_out)
    else:                             # BN-ReLU-Conv1x1 (fused), BN-ReLU-Conv3x3
        norm2, weight2, bias2 = spec.norms[1], ws.norm2_weight, ws.norm2_bias
        bottleneck = memory.empty((ws.conv1_weight.shape[0], N, H, W), X.dtype, like=X)
        conv1x1_forward(a1, v, ws.conv1_weight, out=as_matrix(bottleneck))
        drop_bottleneck = _drop_scale(bottleneck.transpose(1, 0, 2, 3), spec.drop_rate, training)
        folded2 = can_fold(weight2)         # s2 = weight2 * invstd2 > 0 where weight2 > 0: known before the statistics
        E = memory.scratch(bottleneck.shape, X.dtype, like=X)
        b = as_matrix(bottleneck)
        synchronized = training and stats_reducer.synchronized()   # then conv2's input waits for the whole batch

        def bn2(i, lo, hi):
            """Channels lo..hi-1 of the bottleneck: dropout, centred in place (training), conv2's input."""
            if drop_bottleneck is not None:
                bottleneck[lo:hi] *= drop_bottleneck.transpose(1, 0, 2, 3)[lo:hi]
            stats2 = centre_rows(b[lo:hi], out=b[lo:hi]) if training else (None, None)
            if not synchronized:
                conv2_input(lo, hi, stats2[1])
            return stats2

        def conv2_input(lo, hi, var2):
            s2, t2, _ = batch_norm_affine(weight2[lo:hi], bias2[lo:hi], norm2.running_mean[lo:hi],
                                          norm2.running_var[lo:hi], norm2.eps, training, var2)
            ReluAffine(s2, t2, folded2).shifted_inputs(b[lo:hi], out=as_matrix(E)[lo:hi])

        parts = parallel.parallel(bn2, parallel.split(bottleneck.shape[0]))
        var2 = None
        if training:
            mean2, var2 = (backend.get_array_module(b).concatenate(v) for v in zip(*parts))
            if synchronized:
                mean2, var2 = whole_batch_rows(N * H * W, mean2, var2, b)
                parallel.parallel(lambda i, lo, hi: conv2_input(lo, hi, var2[lo:hi]), parallel.split(b.shape[0]))
            update_running_statistics(norm2.running_mean, norm2.running_var, mean2, var2, R, norm2.momentum)
        s2, t2, to_xhat2 = batch_norm_affine(weight2, bias2, norm2.running_mean, norm2.running_var, norm2.eps,
                                             training, var2)
        a2 = ReluAffine(s2, t2, folded2)
        convs2, ranges, drop_out = _images_conv(E, a2.conv_weight(ws.conv2_weight), spec.padding, spec.drop_rate,
                                                training, X, c)
        layer = SavedLayer(a1, to_xhat1, ranges, drop_out, bottleneck, drop_bottleneck, a2, to_xhat2, convs2)
    return layer if keep else None


def _images_conv(E, weight, padding, drop_rate, training, X, c):
    """X[c:c+k] <- dropout(conv2d(E)) for E (C, N, H, W) channel-major, the images shared among
    the threads (one ops/conv.py op each). Returns the ops, their ranges of images and the
    dropout scale (drawn first, for the whole batch, as the textbook's dropout draws it)."""
    N, k = E.shape[1], weight.shape[0]
    drop = _drop_scale(X[c:c + k].transpose(1, 0, 2, 3), drop_rate, training)

    def part(i, lo, hi):
        op, y = _conv(E[:, lo:hi].transpose(1, 0, 2, 3), weight, padding)
        if drop is not None:
            y *= drop[lo:hi]
        X[c:c + k, lo:hi] = y.transpose(1, 0, 2, 3)
        return op

    ranges = parallel.split(N)
    return parallel.parallel(part, ranges), ranges, drop


def _drop_scale(a, p, training):
    """Dropout's scale (mask / (1 - p)) for an array of a's shape, drawn as ops/dropout.py
    draws it (the same numbers as the textbook path), or None."""
    return keep_scale(a, p) if training and p > 0 else None


def _layer_backward(G, X, c, spec, ws, saved, stats, totals, first):
    """Layer l's backward, given dL/dy in G's slot c..c+k-1: adds dL/dV of the first c
    channels into G (assigns if ``first``) and returns the layer's parameter gradients.
    V (X - mean in training, X in eval) is made again from X."""
    _, N, H, W = G.shape
    R = N * H * W
    k = ws.last_conv_weight.shape[0]
    dy = G[c:c + k].transpose(1, 0, 2, 3)
    if saved.drop_out is not None:             # dropout after the last convolution
        dy *= saved.drop_out
    x, mean = as_matrix(X[:c]), (None if stats is None else stats.mean_of(0, c, G.dtype))
    HW = H * W
    a1 = saved.affine1
    if len(spec.norms) == 1:
        v = x if mean is None else memory.scratch(x.shape, G.dtype, like=G)
        E = memory.scratch((c, N, H, W), G.dtype, like=G)

        def inputs(i, lo, hi):                 # x - mean again (training), and the convolution's input
            if mean is not None:
                column_slice(x[lo:hi], 0, R, mean[lo:hi], v[lo:hi])
            a1.slice_rows(lo, hi).shifted_inputs(v[lo:hi], out=as_matrix(E)[lo:hi])

        parallel.parallel(inputs, parallel.split(c))
        cw = a1.conv_weight(ws.conv1_weight)

        def images(i, lo, hi):                 # the convolution again, its backward, the ReLU's mask
            conv, _ = _conv(E[:, lo:hi].transpose(1, 0, 2, 3), cw, spec.padding)
            dE, gw = conv.backward(dy[lo:hi])[:2]
            return gw, _masked(a1, v[:, lo * HW:hi * HW], E[:, lo:hi], dE)

        gw_parts, sum_parts = zip(*parallel.parallel(images, saved.image_ranges))
        gw1 = a1.weight_grad(sum(gw_parts))
        sums1 = a1.du_sums(tuple(sum(s_) for s_ in zip(*sum_parts)))
        parallel.parallel(lambda i, lo, hi: _add_into(G, as_matrix(E), a1, lo, hi, first), parallel.split(c))
        param_grads = ()
    else:
        a2, drop_bottleneck = saved.affine2, saved.drop_bottleneck
        d2 = memory.scratch(saved.bottleneck.shape, G.dtype, like=G)
        bh = as_matrix(saved.bottleneck)       # bottleneck - mean2 (training), the bottleneck (eval)

        def images(i, lo, hi):                 # conv2's backward, then the ReLU's mask
            dE2, gw2 = saved.convs2[i].backward(dy[lo:hi])[:2]
            return gw2, _masked(a2, bh[:, lo * HW:hi * HW], d2[:, lo:hi], dE2)

        gw2_parts, sum_parts = zip(*parallel.parallel(images, saved.image_ranges))
        du2 = a2.du_sums(tuple(sum(s_) for s_ in zip(*sum_parts)))
        sum_d2, sum_dv2 = a2.dv_sums(du2)
        if stats is not None:                  # over the whole batch (data parallelism: ops/stats_reducer.py)
            sum_d2, sum_dv2 = stats_reducer.global_sums(sum_d2, sum_dv2)
        invstd2 = saved.to_xhat2[1]

        def to_db(i, lo, hi):
            """dL/dv2 -> dL/d(bottleneck) (through bn2's statistics), then dropout's backward."""
            d = as_matrix(d2)[lo:hi]
            a2.slice_rows(lo, hi).to_dv(d)
            if stats is not None:
                statistics_backward(d, bh[lo:hi], (sum_d2[lo:hi], (invstd2 * invstd2 * sum_dv2)[lo:hi]),
                                    stats_reducer.global_count(R))
            if drop_bottleneck is not None:
                d2[lo:hi] *= drop_bottleneck.transpose(1, 0, 2, 3)[lo:hi]

        parallel.parallel(to_db, parallel.split(d2.shape[0]))
        gw1, *sums1 = conv1x1_backward(a1, x, ws.conv1_weight, as_matrix(d2), dv=as_matrix(G[:c]),
                                       accumulate=not first, mean=mean)
        param_grads = batch_norm_grads(du2, saved.to_xhat2) + (a2.weight_grad(sum(gw2_parts)),)
    if totals is not None:   # this layer's sums of dL/dV and invstd^2 dL/dV V, for the statistics' backward
        sum_d, sum_dv = a1.dv_sums(sums1)
        invstd1 = saved.to_xhat1[1]
        totals[0][:c] += sum_d
        totals[1][:c] += invstd1 * invstd1 * sum_dv
    return batch_norm_grads(tuple(sums1), saved.to_xhat1) + (gw1,) + param_grads


def _masked(affine, v, out, d_inputs):
    """out (C, n, H, W), a range of images of a channel-major array, <- dL/d(inputs) where the
    ReLU was open and 0 elsewhere, from the convolution's d_inputs (n, C, H, W); v (C, n*H*W)
    the same images of v. Returns the sums (sum out, sum out * v) per row, float64."""
    xp = backend.get_array_module(v)
    out_rows = out.reshape(out.shape[0], -1)              # a view: each row's images are consecutive
    affine.open(v, out=out_rows)
    xp.multiply(out, d_inputs.transpose(1, 0, 2, 3), out=out)
    return out_rows.sum(axis=1, dtype=xp.float64), xp.einsum("cr,cr->c", out_rows, v).astype(xp.float64)


def _add_into(G, d, affine, lo, hi, first):
    """Rows lo..hi-1: d -> dL/dv (``ReluAffine.to_dv``), then into G (assigned if ``first``)."""
    rows_d = d[lo:hi]
    affine.slice_rows(lo, hi).to_dv(rows_d)
    if first:
        as_matrix(G)[lo:hi] = rows_d
    else:
        as_matrix(G)[lo:hi] += rows_d


def _per_layer(params, layers):
    """The flat parameter list split into one ``LayerParams`` per layer (3 arrays per batch norm)."""
    out, i = [], 0
    for spec in layers:
        n = 3 * len(spec.norms)
        out.append(LayerParams(*params[i:i + n]))
        i += n
    return out


def dense_block(x, params, layers, training):
    """The dense block of ``layers`` (``LayerSpec``) on x (N, k0, H, W) as one op
    (``FusedDenseBlock``); ``params``: every layer's parameters in order (see ``LayerSpec``).
    Returns the block's output (N, k0 + L*k, H, W), the same values as the textbook block."""
    data = x.data if isinstance(x, Tensor) else x
    arrays = [p.data if isinstance(p, Tensor) else p for p in params]
    if data.ndim != 4:
        raise ValueError(f"dense_block expects input of shape (N, C, H, W), got shape {tuple(data.shape)}")
    if sum(3 * len(spec.norms) for spec in layers) != len(arrays):
        raise ValueError(f"dense_block: {len(arrays)} parameters do not fit {len(layers)} layers")
    shape, channels = tuple(data.shape), data.shape[1]
    for i, (spec, ws) in enumerate(zip(layers, _per_layer(arrays, layers))):
        given = ws[:3 * len(spec.norms)]
        for j, norm in enumerate(spec.norms):
            weight, bias, conv = given[3 * j:3 * j + 3]
            width = channels if j == 0 else ws.conv1_weight.shape[0]
            where = f"dense_block layer {i + 1} norm{j + 1}"
            check_batch_norm_args(where, (shape[0], width) + shape[2:], norm.running_mean, norm.running_var,
                                  weight, bias, training, norm.momentum)
            if conv.ndim != 4 or conv.shape[1] != width or (j == 0 and len(spec.norms) == 2 and conv.shape[2:] != (1, 1)):
                raise ValueError(f"{where}: {width} channels do not fit conv weight of shape {tuple(conv.shape)}")
        for a in given:
            if a.dtype != data.dtype:
                raise TypeError(f"dense_block: input dtype {data.dtype} differs from layer {i + 1}'s "
                                f"parameter dtype {a.dtype}")
        channels += ws.last_conv_weight.shape[0]
    return FusedDenseBlock.apply(x, *params, layers=layers, training=training)
