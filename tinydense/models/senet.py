"""SENet (Hu, Shen, Albanie, Sun and Wu, "Squeeze-and-Excitation Networks",
CVPR 2018): a ResNet whose every block re-weights its channels by a gate it
computes from the whole image.

The squeeze-and-excitation block, on a residual r of shape (N, C, H, W):

    squeeze   z = global average pool of r            (N, C, 1, 1)  one number per channel
    excite    s = sigmoid(fc2(relu(fc1(z))))          (N, C, 1, 1)  fc1: C -> C/16, fc2: C/16 -> C
    scale     out = r * s                             (N, C, H, W)  s broadcast over H and W

fc1 and fc2 are 1x1 convolutions with bias (on a 1x1 image they are fully
connected layers), as timm writes them, so timm's ``seresnet*`` weights load by
name: ``layer1.0.se.fc1.weight`` (C/16, C, 1, 1), ``layer1.0.se.fc2.bias`` (C,).
The scale is the ordinary broadcast multiply, ``Mul`` in ops/arithmetic.py: its
backward sums the gradient of s over the H x W positions it was copied to
(``unbroadcast``): ds[n, c] = sum_hw g[n, c, h, w] * r[n, c, h, w].

The block sits in each residual block after its last batch norm, before the
addition (resnet.py's ``attention`` hook): out = relu(se(F(x)) + x).

Reduction: timm rounds C/16 to the nearest multiple of 8, and never below 8
(``make_divisible``); for every bottleneck width (256 ... 2048) that is C/16
exactly, but the basic blocks of SE-ResNet-18/34 at 64 channels get 8, not 4.

The cost: SE-ResNet-50 has 28,088,024 parameters, ResNet-50's 25,557,032 plus
2,514,944 weights and 16,048 biases in its 16 SE blocks (10% more); its
multiply-adds grow by much less (fc1 and fc2 see a 1x1 image): the paper's
claim, 3.87 against 3.86 GFLOPs, is checked in lesson 3.
"""
from __future__ import annotations

from functools import partial

from ..nn import AdaptiveAvgPool2d, Conv2d, Module, ReLU, Sigmoid
from .resnet import _resnet


def make_divisible(value, divisor=8):
    """``value`` rounded to the nearest multiple of ``divisor`` (halves up), at least
    ``divisor``: timm's rounding of SE widths (its make_divisible with round_limit=0)."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


class SqueezeExcite(Module):
    """(N, C, H, W) -> (N, C, H, W): each channel scaled by a gate in (0, 1) computed from
    the global average of every channel. ``reduction``: the bottleneck C -> C/reduction
    (rounded by ``make_divisible``), or ``rd_channels`` given directly."""

    def __init__(self, channels, reduction=16, divisor=8, rd_channels=None):
        super().__init__()
        self.channels = channels
        self.rd_channels = rd_channels or make_divisible(channels / reduction, divisor)
        self.pool = AdaptiveAvgPool2d(1)                               # squeeze
        self.fc1 = Conv2d(channels, self.rd_channels, 1, bias=True)   # excite: down ...
        self.act = ReLU()
        self.fc2 = Conv2d(self.rd_channels, channels, 1, bias=True)   # ... and up
        self.gate = Sigmoid()

    def forward(self, x):
        s = self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))     # (N, C, 1, 1)
        return x * s                                                   # scale, broadcast over H, W

    def extra_repr(self):
        return f"{self.channels} -> {self.rd_channels} -> {self.channels}"


def _se_resnet(depth, num_classes, reduction=16, **kwargs):
    return _resnet(depth, num_classes, attention=partial(SqueezeExcite, reduction=reduction), **kwargs)


def se_resnet18(num_classes=1000, **kwargs):
    """SE-ResNet-18 (timm's seresnet18): 11,779,624 parameters."""
    return _se_resnet(18, num_classes, **kwargs)


def se_resnet34(num_classes=1000, **kwargs):
    """SE-ResNet-34 (timm's seresnet34): 21,960,416 parameters."""
    return _se_resnet(34, num_classes, **kwargs)


def se_resnet50(num_classes=1000, **kwargs):
    """SE-ResNet-50 (timm's seresnet50): 28,088,024 parameters."""
    return _se_resnet(50, num_classes, **kwargs)


def se_resnet101(num_classes=1000, **kwargs):
    """SE-ResNet-101 (timm's seresnet101): 49,326,872 parameters."""
    return _se_resnet(101, num_classes, **kwargs)


def se_resnet152(num_classes=1000, **kwargs):
    """SE-ResNet-152 (timm's seresnet152): 66,821,848 parameters."""
    return _se_resnet(152, num_classes, **kwargs)


def se_resnext50_32x4d(num_classes=1000, **kwargs):
    """SE-ResNeXt-50 32x4d (timm's seresnext50_32x4d): 27,559,896 parameters."""
    return _se_resnet(50, num_classes, groups=32, width_per_group=4, **kwargs)


# --- CIFAR variants: a 3x3 stride-1 stem, no max pool (as resnet.py's) ---------------------

def cifar_se_resnet18(num_classes=10, **kwargs):
    """SE-ResNet-18 for 32x32 images (3x3 stem, no max pool)."""
    return _se_resnet(18, num_classes, stem="cifar", **kwargs)


def cifar_se_resnet34(num_classes=10, **kwargs):
    """SE-ResNet-34 for 32x32 images (3x3 stem, no max pool)."""
    return _se_resnet(34, num_classes, stem="cifar", **kwargs)


def cifar_se_resnet50(num_classes=10, **kwargs):
    """SE-ResNet-50 for 32x32 images (3x3 stem, no max pool)."""
    return _se_resnet(50, num_classes, stem="cifar", **kwargs)


def cifar_se_resnext50_32x4d(num_classes=10, **kwargs):
    """SE-ResNeXt-50 32x4d for 32x32 images (3x3 stem, no max pool)."""
    return _se_resnet(50, num_classes, stem="cifar", groups=32, width_per_group=4, **kwargs)
