"""The memory-efficient DenseNet's blocks and transitions: the one seam behind
which the fast path lives.

``EfficientDenseBlock`` and ``EfficientTransition`` are ``DenseBlock`` and
``Transition`` (models/densenet_blocks.py) with the same layers, parameters, buffers
and state-dict names (so checkpoints and .pth files load into either), whose
forward runs the whole block, or the transition's BN-ReLU-Conv1x1, as one op:

    ops/dense_block.py   FusedDenseBlock: one feature buffer for the block, batch
                         statistics computed once per channel, BN-ReLU folded into
                         the 1x1 convolutions and recomputed in backward; the block's
                         own backward loops over its layers in reverse.
    ops/bn_relu.py       BatchNormReLUConv1x1: the transition's BN-ReLU-Conv1x1 (and
                         its 2x2 average pool when there is no dropout), storing
                         nothing of its input's size.

Both share each phase of their work among threads, BLAS single-threaded
meanwhile (ops/parallel.py).

Why a whole block as one op, and not one fused op per layer: the gradient of
a dense block's features is a sum over every later layer that read them. Per
layer ops would each return a gradient of the whole concatenation (autograd
summing those is quadratic work and memory) or would have to add into a buffer
they share, behind autograd's back. One op owns that buffer for the length of
its backward, and can also share what all layers share: the batch statistics
of each channel. The cost is that the layers inside do not run as modules.

So forward hooks: a hook on a layer inside (norm1, relu1, conv1, ...) needs the
tensors that layer makes, which the fused op never forms. While any module
inside has a hook (``tinydense.summary`` sets them on every module), or is in
another mode (train/eval) than the block, these modules run the textbook forward
of models/densenet_blocks.py instead: the same numbers, with every layer called.
"""
from __future__ import annotations

from .. import functional as F
from ..ops.bn_relu import batch_norm_relu_conv1x1
from ..ops.dense_block import LayerSpec, NormState, dense_block
from .densenet_blocks import DenseBlock, Transition


def _runs_as_textbook(module):
    """True when the fused forward cannot stand in for the textbook one: a module inside
    has a forward hook, or is not in the module's own training mode."""
    return any(m.has_forward_hooks() or m.training != module.training for m in module.modules() if m is not module)


def _norm_state(norm):
    return NormState(norm.running_mean, norm.running_var, norm.momentum, norm.eps)


class EfficientDenseBlock(DenseBlock):
    """``DenseBlock`` computed by one fused op (ops/dense_block.py): memory linear in depth."""

    def forward(self, x):
        if _runs_as_textbook(self):
            return super().forward(x)
        params, layers, norms = [], [], []
        for layer in self.children():
            pairs = [(layer.norm1, layer.conv1)] + ([(layer.norm2, layer.conv2)] if layer.bottleneck else [])
            for norm, conv in pairs:
                params += [norm.weight, norm.bias, conv.weight]
                norms.append(norm)
            layers.append(LayerSpec(tuple(_norm_state(norm) for norm, _ in pairs), pairs[-1][1].padding,
                                    layer.drop_rate))
        out = dense_block(x, params, layers, training=self.training)
        for norm in norms:
            norm.count_batch()
        return out


class EfficientTransition(Transition):
    """``Transition`` whose BN-ReLU-Conv1x1 is one op storing nothing of the input's size;
    without dropout, and for an even image size, the 2x2 average pool is part of it."""

    def forward(self, x):
        if _runs_as_textbook(self):
            return super().forward(x)
        norm = self.norm
        pool = self.drop_rate == 0 and x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0
        out = batch_norm_relu_conv1x1(x, norm.running_mean, norm.running_var, norm.weight, norm.bias,
                                      self.conv.weight, training=norm.training, momentum=norm.momentum,
                                      eps=norm.eps, pool=pool)
        norm.count_batch()
        if pool:
            return out
        if self.drop_rate > 0:
            out = F.dropout(out, self.drop_rate, self.training)
        return self.pool(out)
