"""DenseNet (Huang, Liu, van der Maaten and Weinberger, "Densely Connected
Convolutional Networks", CVPR 2017), with torchvision's parameter names.

The network: a stem, dense blocks joined by transition layers, a final
BN-ReLU, global average pooling and a linear classifier. Its parts, the dense
layer H_l, the dense block and the transition, are in models/densenet_blocks.py.

    name         image    layers                                   paper
    features     224x224  conv0 7x7/2, norm0, relu0, pool0 3x3/2   ImageNet stem
                 32x32    conv0 3x3                                CIFAR stem
    denseblock1..n        [denselayer1 ... denselayerL]
    transition1..n-1      norm, relu, conv 1x1, pool 2x2/2
    norm5                 final BN (then ReLU, global average pool)
    classifier            Linear(channels, num_classes)

Memory-efficient mode (``memory_efficient=True``, the default, MEMORY_EFFICIENT
below) builds the blocks and transitions from models/efficient_densenet.py
instead of the textbook ones (BLOCKS below): the same layers, parameters and
state-dict names, computed by fused ops whose memory grows linearly with depth
(the plain block stores, for every layer, its own normalised copy of all
earlier features). Outputs, gradients and running statistics are those of the
textbook classes.
"""
from __future__ import annotations

import math
from collections import OrderedDict

from ..nn import AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, Module, ReLU, Sequential
from ._checks import check_image_batch
from .densenet_blocks import DenseBlock, Transition
from .efficient_densenet import EfficientDenseBlock, EfficientTransition

MEMORY_EFFICIENT = True    # the default of DenseNet and every builder below

# memory_efficient -> the (block, transition) classes a DenseNet is built from: the textbook
# modules, or the same modules whose forward runs one fused op (models/efficient_densenet.py)
BLOCKS = {False: (DenseBlock, Transition), True: (EfficientDenseBlock, EfficientTransition)}


class DenseNet(Module):
    """A DenseNet: stem, dense blocks joined by transitions, BN-ReLU, global
    average pooling and a linear classifier.

    growth_rate:        k, channels each dense layer adds
    block_config:       number of layers in each dense block, e.g. (6, 12, 24, 16)
    num_init_features:  channels of the stem convolution
    bn_size:            bottleneck width factor (bn_size*k channels after the 1x1 conv)
    bottleneck:         use BN-ReLU-Conv1x1-BN-ReLU-Conv3x3 layers (DenseNet-B)
    compression:        theta in (0, 1]; a transition keeps floor(theta*m) channels
    drop_rate:          dropout probability after each convolution but the stem's
    stem:               "imagenet" (7x7/2 conv, BN, ReLU, 3x3/2 max pool) or "cifar" (3x3 conv)
    memory_efficient:   build the blocks and transitions of models/efficient_densenet.py
                        (module docstring): the same results, memory linear in depth
    """

    def __init__(self, growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64, bn_size=4,
                 bottleneck=True, compression=0.5, drop_rate=0.0, num_classes=1000, stem="imagenet",
                 in_channels=3, memory_efficient=MEMORY_EFFICIENT):
        super().__init__()
        for name, value in (("growth_rate", growth_rate), ("num_init_features", num_init_features),
                            ("bn_size", bn_size), ("num_classes", num_classes), ("in_channels", in_channels)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"DenseNet: {name} must be a positive integer, got {value!r}")
        block_config = tuple(block_config)
        if not block_config or not all(isinstance(n, int) and n >= 1 for n in block_config):
            raise ValueError(f"DenseNet: block_config must list positive layer counts, got {block_config!r}")
        if not 0 < compression <= 1:
            raise ValueError(f"DenseNet: compression (theta) must be in (0, 1], got {compression}")
        if not 0 <= drop_rate < 1:
            raise ValueError(f"DenseNet: drop_rate must be in [0, 1), got {drop_rate}")
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"DenseNet: stem must be 'imagenet' or 'cifar', got {stem!r}")
        self.in_channels, self.memory_efficient = in_channels, bool(memory_efficient)
        block_class, transition_class = BLOCKS[self.memory_efficient]

        if stem == "imagenet":
            layers = OrderedDict([
                ("conv0", Conv2d(in_channels, num_init_features, kernel_size=7, stride=2, padding=3, bias=False)),
                ("norm0", BatchNorm2d(num_init_features)),
                ("relu0", ReLU()),
                ("pool0", MaxPool2d(kernel_size=3, stride=2, padding=1)),
            ])
        else:
            layers = OrderedDict([
                ("conv0", Conv2d(in_channels, num_init_features, kernel_size=3, padding=1, bias=False)),
            ])
        channels = num_init_features
        widths = transition_widths(num_init_features, block_config, growth_rate, compression)
        for i, num_layers in enumerate(block_config):
            block = block_class(num_layers, channels, growth_rate, bottleneck=bottleneck,
                                bn_size=bn_size, drop_rate=drop_rate)
            layers[f"denseblock{i + 1}"] = block
            channels = block.out_channels
            if i != len(block_config) - 1:
                out = widths[i][0]
                layers[f"transition{i + 1}"] = transition_class(channels, out, drop_rate=drop_rate)
                channels = out
        layers["norm5"] = BatchNorm2d(channels)
        self.features = Sequential(layers)
        self.relu = ReLU()
        self.pool = AdaptiveAvgPool2d(1)
        self.flatten = Flatten()
        self.classifier = Linear(channels, num_classes)

    def size_changing_layers(self):
        """(name, layer) of every layer that changes the image size, in order."""
        out = []
        for name, layer in self.features.named_children():
            if isinstance(layer, Transition):
                out.append((f"features.{name}.pool", layer.pool))
            elif isinstance(layer, (Conv2d, MaxPool2d)):
                out.append((f"features.{name}", layer))
        return out

    def forward(self, x):
        """x (N, in_channels, H, W) -> class scores (N, num_classes)."""
        check_image_batch(self, x, self.in_channels, self.size_changing_layers())
        out = self.relu(self.features(x))
        return self.classifier(self.flatten(self.pool(out)))


def transition_widths(num_init_features, block_config, growth_rate, compression) -> list:
    """(channels kept, channels coming in) of each transition of a DenseNet: a dense
    block of n layers adds n*k channels to what comes in, a transition keeps
    floor(theta*m) of its m (the arithmetic :class:`DenseNet` builds with)."""
    channels, widths = num_init_features, []
    for num_layers in tuple(block_config)[:-1]:
        incoming = channels + num_layers * growth_rate
        channels = int(math.floor(compression * incoming))
        widths.append((channels, incoming))
    return widths


# --- CIFAR models (the paper's Section 4) ------------------------------------------

def cifar_layout(depth, growth_rate, bottleneck=False, compression=1.0):
    """(block_config, stem channels) of the CIFAR DenseNet of ``depth``: three blocks of
    n = (L - 4) / 3 layers, or (L - 4) / 6 with bottleneck; a stem of 2k channels for
    DenseNet-BC (bottleneck and compression < 1), else 16. ValueError if L does not fit."""
    if not isinstance(depth, int) or isinstance(depth, bool):
        raise ValueError(f"densenet: depth must be an integer, got {depth!r}")
    per_layer = 6 if bottleneck else 3
    kind = "DenseNet-B(C) with bottleneck: L = 6n + 4" if bottleneck else "DenseNet: L = 3n + 4"
    if depth < per_layer + 4 or (depth - 4) % per_layer:
        lower = max(per_layer + 4, depth - (depth - 4) % per_layer)
        raise ValueError(f"densenet: depth {depth} does not fit {kind} with n >= 1 layers per block "
                         f"(nearest valid depths: {lower}, {lower + per_layer})")
    n = (depth - 4) // per_layer
    return (n, n, n), (2 * growth_rate if bottleneck and compression < 1 else 16)


def densenet(depth, growth_rate, bottleneck=False, compression=1.0, num_classes=10, drop_rate=0.0,
             memory_efficient=MEMORY_EFFICIENT):
    """A DenseNet for 32x32 images as in the paper's CIFAR experiments.

    Three dense blocks of n layers each. depth L counts the layers with weights:
    the stem conv, 3n layers (two convs each with bottleneck), two transition
    convs and the classifier, so n = (L - 4) / 3, or (L - 4) / 6 with bottleneck.
    The stem is one 3x3 conv to 16 channels (2k for DenseNet-BC: bottleneck and
    compression < 1); no stem norm or pool.
    """
    block_config, stem = cifar_layout(depth, growth_rate, bottleneck, compression)
    return DenseNet(growth_rate, block_config, stem, bn_size=4, bottleneck=bottleneck, compression=compression,
                    drop_rate=drop_rate, num_classes=num_classes, stem="cifar", memory_efficient=memory_efficient)


def densenet_bc(depth=100, growth_rate=12, num_classes=10, drop_rate=0.0, memory_efficient=MEMORY_EFFICIENT):
    """DenseNet-BC for CIFAR: bottleneck layers and compression theta = 0.5."""
    return densenet(depth, growth_rate, bottleneck=True, compression=0.5,
                    num_classes=num_classes, drop_rate=drop_rate,
                    memory_efficient=memory_efficient)


# --- ImageNet models (the paper's Table 1, torchvision's names) ----------------------

# The paper's Table 1: depth -> (growth rate k, layers per dense block, stem channels).
IMAGENET_CONFIGS = {
    121: (32, (6, 12, 24, 16), 64),
    161: (48, (6, 12, 36, 24), 96),
    169: (32, (6, 12, 32, 32), 64),
    201: (32, (6, 12, 48, 32), 64),
    264: (32, (6, 12, 64, 48), 64),
}


def _imagenet_densenet(depth, num_classes, drop_rate, memory_efficient):
    growth_rate, block_config, stem_channels = IMAGENET_CONFIGS[depth]
    return DenseNet(growth_rate, block_config, stem_channels, num_classes=num_classes, drop_rate=drop_rate,
                    memory_efficient=memory_efficient)


def densenet121(num_classes=1000, drop_rate=0.0, memory_efficient=MEMORY_EFFICIENT):
    """DenseNet-121: k=32, blocks (6, 12, 24, 16), 7,978,856 parameters."""
    return _imagenet_densenet(121, num_classes, drop_rate, memory_efficient)


def densenet161(num_classes=1000, drop_rate=0.0, memory_efficient=MEMORY_EFFICIENT):
    """DenseNet-161: k=48, 96 stem channels, blocks (6, 12, 36, 24)."""
    return _imagenet_densenet(161, num_classes, drop_rate, memory_efficient)


def densenet169(num_classes=1000, drop_rate=0.0, memory_efficient=MEMORY_EFFICIENT):
    """DenseNet-169: k=32, blocks (6, 12, 32, 32)."""
    return _imagenet_densenet(169, num_classes, drop_rate, memory_efficient)


def densenet201(num_classes=1000, drop_rate=0.0, memory_efficient=MEMORY_EFFICIENT):
    """DenseNet-201: k=32, blocks (6, 12, 48, 32)."""
    return _imagenet_densenet(201, num_classes, drop_rate, memory_efficient)


def densenet264(num_classes=1000, drop_rate=0.0, memory_efficient=MEMORY_EFFICIENT):
    """DenseNet-264: k=32, blocks (6, 12, 64, 48)."""
    return _imagenet_densenet(264, num_classes, drop_rate, memory_efficient)
