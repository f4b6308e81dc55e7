"""VGG (Simonyan and Zisserman, "Very Deep Convolutional Networks for
Large-Scale Image Recognition", ICLR 2015) as torchvision builds it.

One design rule instead of a hand-tuned layer list: every conv is 3x3 with
stride 1 and padding 1 (the image size is kept), every pool is 2x2 max
pooling with stride 2, and after each pool the channels double (up to 512).
Two stacked 3x3 convs see a 5x5 window, three a 7x7 one, with fewer
parameters and more non-linearities than one big kernel. A stage with C
channels at H x W costs 9*C^2*H*W multiply-adds per conv; the next stage,
at 2C channels and H/2 x W/2, costs the same.

The paper's Table 1, one column per model (numbers: conv filters, M: max pool):

    vgg11  "A"  64 M 128 M 256 256 M 512 512 M 512 512 M
    vgg13  "B"  64 64 M 128 128 M 256 256 M 512 512 M 512 512 M
    vgg16  "D"  64 64 M 128 128 M 256 256 256 M 512 512 512 M 512 512 512 M
    vgg19  "E"  64 64 M 128 128 M 256 256 256 256 M 512 512 512 512 M 512 512 512 512 M

then ``avgpool`` (adaptive average pool to 7x7) and ``classifier``: Linear(512*7*7,
4096), ReLU, dropout, Linear(4096, 4096), ReLU, dropout, Linear(4096, classes).
The ``_bn`` models put a batch norm after every conv (not in the paper; torchvision's).

``cifar_vgg11_bn`` and ``cifar_vgg16_bn`` for 32x32 images end the features at
512x1x1 and classify with one Linear(512, classes), as commonly done on CIFAR.
"""
from __future__ import annotations

from ..nn import (AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, Module, ReLU,
                  Sequential, init)
from ._checks import check_image_batch
from .fused_layers import sequential

CONFIGS = {
    "A": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "B": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "D": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "E": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


def make_layers(config, batch_norm=False, in_channels=3):
    """The ``features`` Sequential of a config column: Conv3x3 [BN] ReLU per number, a
    2x2/2 max pool per "M", numbered "0", "1", ... as in torchvision."""
    layers, channels = [], in_channels
    for v in config:
        if v == "M":
            layers.append(MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(Conv2d(channels, v, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(BatchNorm2d(v))
        layers.append(ReLU())
        channels = v
    return Sequential(*layers)


class VGG(Module):
    """torchvision's VGG: ``features`` (make_layers of a config), ``avgpool`` to 7x7,
    ``classifier`` (three linear layers with ReLU and dropout; ``hidden`` = 4096 wide).
    ``classifier="cifar"``: global average pool, one Linear(last channels, num_classes)."""

    def __init__(self, config, batch_norm=False, num_classes=1000, dropout=0.5, hidden=4096,
                 classifier="imagenet", in_channels=3):
        super().__init__()
        config = CONFIGS.get(config, config)
        if classifier not in ("imagenet", "cifar"):
            raise ValueError(f"VGG: classifier must be 'imagenet' or 'cifar', got {classifier!r}")
        self.in_channels, self.batch_norm = in_channels, bool(batch_norm)
        self.features = make_layers(config, batch_norm, in_channels)
        channels = [v for v in config if v != "M"][-1]
        self.flatten = Flatten()
        if classifier == "imagenet":
            self.avgpool = AdaptiveAvgPool2d((7, 7))
            self.classifier = Sequential(
                Linear(channels * 7 * 7, hidden), ReLU(), Dropout(p=dropout),
                Linear(hidden, hidden), ReLU(), Dropout(p=dropout),
                Linear(hidden, num_classes))
        else:
            self.avgpool = AdaptiveAvgPool2d((1, 1))        # the identity on 32x32 images (1x1 features)
            self.classifier = Linear(channels, num_classes)
        # torchvision's initialisation
        for m in self.modules():
            if isinstance(m, Conv2d):
                init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                init.zeros_(m.bias)
            elif isinstance(m, BatchNorm2d):
                init.ones_(m.weight)
                init.zeros_(m.bias)
            elif isinstance(m, Linear):
                init.normal_(m.weight, 0.0, 0.01)
                init.zeros_(m.bias)

    def size_changing_layers(self):
        return [(f"features.{n}", m) for n, m in self.features.named_children() if isinstance(m, (Conv2d, MaxPool2d))]

    def forward(self, x):
        """x (N, in_channels, H, W) -> class scores (N, num_classes)."""
        layers = self.size_changing_layers()
        # the last batch norm follows the last conv, one pool before the end
        check_image_batch(self, x, self.in_channels, layers, last_batch_norm=-2 if self.batch_norm else None)
        # self.features(x), each BN-ReLU pair as one op (fused_layers.py)
        return self.classifier(self.flatten(self.avgpool(sequential(self.features, x))))


def vgg11(num_classes=1000, **kwargs):
    """VGG-11 (configuration A), 132,863,336 parameters."""
    return VGG("A", False, num_classes, **kwargs)


def vgg11_bn(num_classes=1000, **kwargs):
    """VGG-11 with batch norm, 132,868,840 parameters."""
    return VGG("A", True, num_classes, **kwargs)


def vgg13(num_classes=1000, **kwargs):
    """VGG-13 (configuration B), 133,047,848 parameters."""
    return VGG("B", False, num_classes, **kwargs)


def vgg13_bn(num_classes=1000, **kwargs):
    """VGG-13 with batch norm, 133,053,736 parameters."""
    return VGG("B", True, num_classes, **kwargs)


def vgg16(num_classes=1000, **kwargs):
    """VGG-16 (configuration D), 138,357,544 parameters."""
    return VGG("D", False, num_classes, **kwargs)


def vgg16_bn(num_classes=1000, **kwargs):
    """VGG-16 with batch norm, 138,365,992 parameters."""
    return VGG("D", True, num_classes, **kwargs)


def vgg19(num_classes=1000, **kwargs):
    """VGG-19 (configuration E), 143,667,240 parameters."""
    return VGG("E", False, num_classes, **kwargs)


def vgg19_bn(num_classes=1000, **kwargs):
    """VGG-19 with batch norm, 143,678,248 parameters."""
    return VGG("E", True, num_classes, **kwargs)


def cifar_vgg11_bn(num_classes=10, **kwargs):
    """VGG-11 with batch norm for 32x32 images: one Linear(512, classes) after the features."""
    return VGG("A", True, num_classes, classifier="cifar", **kwargs)


def cifar_vgg16_bn(num_classes=10, **kwargs):
    """VGG-16 with batch norm for 32x32 images: one Linear(512, classes) after the features."""
    return VGG("D", True, num_classes, classifier="cifar", **kwargs)
