"""The size of a run before anything is built: parameters and a training step's memory.

``--depth 100000000`` or ``--growth-rate 1000000`` would build a model larger than
the machine (a system-wide out-of-memory kill after minutes, or a raw MemoryError).
:func:`check_fits` counts first, from the architecture's arithmetic, and refuses
with the estimate what cannot fit. Two counts are those :func:`tinydense.summary`
gives for the built model (the tests compare them): the parameters, and every
layer's output for one 32x32 image. A third is what any implementation must keep
through a training step: the features, i.e. each block's input and every layer's
new channels (DenseNet) or each block's output (ResNet). The memory-efficient
DenseNet recomputes the rest in the backward pass, so the refusal is on the least
a step needs: four copies of the weights (values, gradients, momentum, update)
and the batch's features with their gradients (the backward pass of a block holds
a gradient as large as its features), in float32. Whatever is refused cannot fit;
what passes may still run out of memory later (the CLI then says so in one line).

Sums over the layers of a block are in closed form (sum_{l<n} (c + l*k) =
n*c + k*n(n-1)/2), so a depth of a hundred million is counted at once.
"""
from __future__ import annotations

from .. import memory
from ..models.densenet import cifar_layout, transition_widths
from .config import DATASETS

FLOAT = 4                  # bytes per float32 number
BN_SIZE = 4                # a DenseNet-BC layer's bottleneck: 4k channels


def densenet_size(config):
    """(parameters, numbers in every layer's output for one image, numbers in the features
    of one image) of the CIFAR DenseNet; zeros when the depth does not fit."""
    bottleneck, k, theta = config["model"] == "densenet-bc", config["growth_rate"], config["compression"]
    try:
        blocks, stem = cifar_layout(config["depth"], k, bottleneck, theta)
    except ValueError:                                                 # the model says why
        return 0, 0, 0
    kept = [width for width, _ in transition_widths(stem, blocks, k, theta)]
    params, outputs, c, features = 27 * stem, stem * 32 * 32, stem, 0  # the stem: 3x3 conv of 3 channels
    for b, n in enumerate(blocks):
        hw = (32 >> b) ** 2
        features += (c + n * k) * hw                                   # the block's input and new channels
        inputs = n * c + k * n * (n - 1) // 2                          # sum of the layers' input channels
        params += 2 * inputs                                           # norm1 of every layer
        outputs += 2 * inputs * hw                                     # norm1 and relu1 outputs
        if bottleneck:                                                 # conv1 1x1 to 4k, norm2, conv2 3x3 to k
            params += BN_SIZE * k * inputs + n * (2 * BN_SIZE * k + 9 * BN_SIZE * k * k)
            outputs += n * (3 * BN_SIZE * k + k) * hw
        else:                                                          # conv1 3x3 to k
            params += 9 * k * inputs
            outputs += n * k * hw
        c += n * k
        if b < len(kept):                                              # norm, relu, 1x1 conv, 2x2 pool
            params += 2 * c + c * kept[b]
            outputs += (2 * c + kept[b]) * hw + kept[b] * hw // 4
            c = kept[b]
    return _head(params, outputs, c, 8 * 8, DATASETS[config["dataset"]]) + (features,)


def resnet_size(config):
    """(parameters, numbers in every layer's output for one image, numbers in the features
    of one image) of the CIFAR pre-activation ResNet; zeros when the depth does not fit."""
    depth = config["depth"]
    basic, bottle = depth >= 8 and (depth - 2) % 6 == 0, depth >= 11 and (depth - 2) % 9 == 0
    if not (basic or bottle):                                          # the model says why
        return 0, 0, 0
    bottleneck = depth >= 164 if basic and bottle else bottle
    n = (depth - 2) // (9 if bottleneck else 6)
    expansion = 4 if bottleneck else 1
    params, outputs, c, features = 27 * 16, 16 * 32 * 32, 16, 16 * 32 * 32
    for stage, width in enumerate((16, 32, 64)):
        hw_in, hw = (32 >> max(stage - 1, 0)) ** 2, (32 >> stage) ** 2
        for first in (True, False):
            count, c_in, at = (1, c, hw_in) if first else (n - 1, width * expansion, hw)
            out = width * expansion
            if bottleneck:     # bn-relu, 1x1 to w, bn-relu, 3x3 to w (the stride), bn-relu, 1x1 to 4w
                p = 2 * c_in + c_in * width + 2 * width + 9 * width * width + 2 * width + width * out
                o = (2 * c_in + 3 * width) * at + (3 * width + out) * hw
            else:              # bn-relu, 3x3 to w (the stride), bn-relu, 3x3 to w
                p = 2 * c_in + 9 * c_in * width + 2 * width + 9 * width * width
                o = 2 * c_in * at + 4 * width * hw
            if first and (stage > 0 or c_in != out):                   # the 1x1 shortcut
                p, o = p + c_in * out, o + out * hw
            params, outputs = params + count * p, outputs + count * o
        c = width * expansion
        features += n * c * (32 >> stage) ** 2                         # the blocks' outputs
    return _head(params, outputs, c, 8 * 8, DATASETS[config["dataset"]]) + (features,)


def _head(params, outputs, c, hw, classes):
    """Add BN - ReLU - global pooling - flatten - Linear on c channels of hw pixels."""
    return params + 2 * c + c * classes + classes, outputs + 2 * c * hw + 2 * c + classes


def estimate(config):
    """(parameters, bytes of every layer's output for one image, the least bytes a training
    step needs: 4 copies of the weights, the batch's features and their gradients), float32."""
    params, outputs, features = (resnet_size if config["model"] == "resnet" else densenet_size)(config)
    return params, FLOAT * outputs, FLOAT * (4 * params + 2 * config["batch_size"] * features)


def check_fits(config, available=None) -> None:
    """ValueError, with the estimate, if even the least a training step of ``config`` needs
    is more than the memory ``available`` (default: what this machine has free now). Call
    it after :func:`make_config` and before building the model."""
    params, per_image, least = estimate(config)
    available = memory.available_memory() if available is None else available
    if available is not None and least > available:
        raise ValueError(f"this model is too large for this machine: {params:,} parameters "
                         f"({4 * params / 2 ** 30:,.1f} GB in float32; {per_image / 2 ** 20:,.1f} MB of layer "
                         f"outputs per image), and a training step at batch {config['batch_size']} needs at least "
                         f"{least / 2 ** 30:,.1f} GB (the weights, their gradients and momentum, and the batch's "
                         f"features with their gradients), more than the {available / 2 ** 30:,.1f} GB available: "
                         f"use a smaller --depth, --growth-rate or --batch-size")
