"""A dense block's feature maps in one shared buffer (Pleiss et al., 2017).

The plain dense block (models/densenet.py) concatenates x_0 ... x_{l-1} anew
for every layer l and normalises that copy, so the stored activations grow
with the square of the depth. Here the block allocates ONE buffer for all
its k0 + L*k channels up front; the block input goes into the first k0
channels and every layer writes its k new channels into the next slot. The
input of layer l, [x_0, ..., x_{l-1}], is then simply the first c_l
channels of the buffer: a view, no copy. The buffer is channel-major,
(C, N, H, W), so that view is a contiguous (c_l, N*H*W) matrix: batch norm
statistics are row sums and the bottleneck 1x1 convolution is one matrix
product (ops/bn_relu.py: ``BatchNormReLUConv``, which also recomputes
relu(bn(.)) in backward instead of storing it).

Gradients flow the same way, through one gradient buffer G of the block's
size. Three ops, each an ordinary ``Function``:

    AppendFeatures   x_0 (or a layer's output) -> copied into the next slot;
                     returns the slot (a view). Backward: the slot's gradient.
    SharedBnReluConv conv(relu(bn(first c_l channels))): its inputs are the
                     feature tensors x_0 ... x_{l-1} (so the graph knows what
                     layer l read) but its forward reads the buffer. Backward
                     ADDS dL/d[x_0..x_{l-1}] into G[:c_l] in place and returns
                     no gradient for the features.
    ConcatFeatures   [x_0, ..., x_L] -> the whole buffer (the block's output).
                     Backward copies the incoming gradient into a new G and
                     returns, for each feature, its slice of G (a view).

Why this is correct: every feature tensor x_i gets exactly one gradient from
autograd, the view G[slice_i] from ConcatFeatures (``SharedBnReluConv``
returns None), so autograd never replaces it by a sum. Autograd reaches x_i
only after every op that used it, i.e. after each later layer has added its
share into G[slice_i] in place; by then the view holds the full gradient.
Peak memory: the feature buffer and G of each block, each layer's
bottleneck output, and a few scratch buffers, all linear in depth; the
scratch buffers come from tinydense.memory's pool, so one set serves every
layer of every block.
"""
from __future__ import annotations

from .. import memory
from ..autograd import Function
from .bn_relu import BatchNormReLUConv


class DenseFeatures:
    """The shared, channel-major (C, N, H, W) buffer of one dense block (one forward pass).

    ``like``: the block input (N, k0, H, W); ``channels``: k0 + L*k.
    """

    def __init__(self, like, channels):
        N, _, H, W = like.shape
        self.buffer = memory.empty((channels, N, H, W), like.dtype, like=like)
        self.grad = None           # G, made by ConcatFeatures.backward
        self.filled = 0            # channels written so far

    def next_slot(self, channels):
        """Reserve the next ``channels`` channels; returns them as an (N, channels, H, W) view."""
        lo, hi = self.filled, self.filled + channels
        if hi > self.buffer.shape[0]:
            raise ValueError(f"DenseFeatures: {hi} channels do not fit a buffer of {self.buffer.shape[0]}")
        self.filled = hi
        return self.buffer[lo:hi].transpose(1, 0, 2, 3)

    def first(self, channels):
        """The first ``channels`` channels (the concatenation of the features so far), (N, c, H, W)."""
        return self.buffer[:channels].transpose(1, 0, 2, 3)


class AppendFeatures(Function):
    # x (N, c, H, W) -> the same values in the next c channels of the shared buffer; dx = g
    def forward(self, x, features):
        slot = features.next_slot(x.shape[1])
        slot[...] = x
        return slot

    def backward(self, g):
        return g


class ConcatFeatures(Function):
    # x_0 (N, k0, H, W), x_1 ... x_L (N, k, H, W), all already in the buffer -> (N, k0 + L*k, H, W)
    def forward(self, *xs, features):
        if features.filled != features.buffer.shape[0] or sum(x.shape[1] for x in xs) != features.filled:
            raise ValueError(f"ConcatFeatures: the features fill {sum(x.shape[1] for x in xs)} of "
                             f"{features.buffer.shape[0]} channels")
        self.features, self.widths = features, [x.shape[1] for x in xs]
        return features.first(features.filled)

    def backward(self, g):
        f = self.features
        f.grad = memory.empty(f.buffer.shape, g.dtype, like=g)
        f.grad.transpose(1, 0, 2, 3)[...] = g          # G, the block's gradient buffer
        grads, lo = [], 0
        for width in self.widths:
            grads.append(f.grad[lo:lo + width].transpose(1, 0, 2, 3))
            lo += width
        return tuple(grads)


class SharedBnReluConv(BatchNormReLUConv):
    """conv(relu(bn([x_0, ..., x_{l-1}]))) reading the concatenation from the shared buffer.

    Called as ``apply(*features, bn_weight, bn_bias, conv_weight, features=DenseFeatures, ...)``
    with the other options of ``BatchNormReLUConv``.
    """

    def forward(self, *inputs, features, **options):
        *xs, bn_weight, bn_bias, conv_weight = inputs
        self.features, self.n_inputs = features, len(xs)
        self.channels = sum(x.shape[1] for x in xs)
        return super().forward(features.first(self.channels), bn_weight, bn_bias, conv_weight,
                               recompute_conv=True, **options)

    def backward(self, g):
        gx, gbn_w, gbn_b, gw = super().backward(g)
        if gx is not None:      # accumulate into G in place (see the module docstring)
            shared_grad = self.features.grad[:self.channels].transpose(1, 0, 2, 3)
            shared_grad += gx
        return (None,) * self.n_inputs + (gbn_w, gbn_b, gw)
