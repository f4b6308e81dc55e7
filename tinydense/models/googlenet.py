"""GoogLeNet, Inception v1 (Szegedy et al., "Going Deeper with
Convolutions", CVPR 2015), as torchvision builds it: with batch norm after
every convolution (which the 2014 network did not have).

Built for efficiency:
- a stem that shrinks the image fast (224 -> 56 in three convs and two pools);
- Inception modules: four branches side by side, concatenated along the
  channels, 1x1 convs "reduce" the channels before the expensive 3x3 and
  5x5 convs;
- global average pooling and ONE linear layer instead of AlexNet's and VGG's
  big fully connected layers;
- optional auxiliary classifiers after inception4a and inception4d, whose
  losses helped the gradient reach the early layers of the deep network in
  training (before batch norm); at test time they are not used.

The paper's Table 1 (the modules; torchvision's numbers, which the code reads below):

    module        #1x1  #3x3 reduce  #3x3  #5x5 reduce  #5x5  pool proj   output at 224
    inception3a     64           96   128           16    32         32   256 x 28 x 28
    inception3b    128          128   192           32    96         64   480 x 28 x 28
    maxpool3                                                              480 x 14 x 14
    inception4a    192           96   208           16    48         64   512 x 14 x 14
    inception4b    160          112   224           24    64         64   512
    inception4c    128          128   256           24    64         64   512
    inception4d    112          144   288           32    64         64   528
    inception4e    256          160   320           32   128        128   832 x 14 x 14
    maxpool4                                                              832 x 7 x 7
    inception5a    256          160   320           32   128        128   832
    inception5b    384          192   384           48   128        128   1024 x 7 x 7

Two deviations of torchvision's model from the paper, kept so that its weights load:
the "5x5" branch uses a 3x3 conv, and maxpool4 is 2x2 rather than 3x3. The
max pools round their output size up (ceil_mode).
"""
from __future__ import annotations

from collections import OrderedDict, namedtuple

import numpy as np

from .. import functional as F
from ..nn import (AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, Module, ReLU,
                  Sequential, init)
from ._checks import check_image_batch

# module -> (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj), or a max pool's kernel size
CONFIG = OrderedDict([
    ("inception3a", (64, 96, 128, 16, 32, 32)),
    ("inception3b", (128, 128, 192, 32, 96, 64)),
    ("maxpool3", 3),
    ("inception4a", (192, 96, 208, 16, 48, 64)),
    ("inception4b", (160, 112, 224, 24, 64, 64)),
    ("inception4c", (128, 128, 256, 24, 64, 64)),
    ("inception4d", (112, 144, 288, 32, 64, 64)),
    ("inception4e", (256, 160, 320, 32, 128, 128)),
    ("maxpool4", 2),
    ("inception5a", (256, 160, 320, 32, 128, 128)),
    ("inception5b", (384, 192, 384, 48, 128, 128)),
])
STEM = (64, 64, 192)       # conv1 (7x7/2), conv2 (1x1), conv3 (3x3)
AUX = (128, 1024)          # an auxiliary classifier's 1x1 conv and hidden linear layer

GoogLeNetOutputs = namedtuple("GoogLeNetOutputs", ["logits", "aux_logits2", "aux_logits1"])
GoogLeNetOutputs.__doc__ = """What GoogLeNet(aux_logits=True) returns in training: the main
classifier's scores and those of the auxiliary classifiers after inception4d (aux2) and
inception4a (aux1), each (N, num_classes), in torchvision's order. Train on
loss(logits) + 0.3 * (loss(aux_logits1) + loss(aux_logits2)), as the paper does."""


class BasicConv2d(Module):
    """Conv (no bias) - BN (eps 0.001) - ReLU."""

    def __init__(self, in_channels, out_channels, **conv_options):
        super().__init__()
        self.conv = Conv2d(in_channels, out_channels, bias=False, **conv_options)
        self.bn = BatchNorm2d(out_channels, eps=0.001)
        self.relu = ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class Inception(Module):
    """Four branches on the same input, concatenated: 1x1 | 1x1 then 3x3 | 1x1 then 3x3
    (the paper's 5x5) | 3x3 max pool (stride 1) then 1x1. The image size is kept."""

    def __init__(self, in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj):
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = Sequential(BasicConv2d(in_channels, ch3x3red, kernel_size=1),
                                  BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1))
        self.branch3 = Sequential(BasicConv2d(in_channels, ch5x5red, kernel_size=1),
                                  BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1))
        self.branch4 = Sequential(MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
                                  BasicConv2d(in_channels, pool_proj, kernel_size=1))
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x):
        return F.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], axis=1)


class InceptionAux(Module):
    """Auxiliary classifier: average pool to 4x4, 1x1 conv, Linear - ReLU - dropout - Linear."""

    def __init__(self, in_channels, num_classes, dropout=0.7, widths=AUX):
        super().__init__()
        self.pool = AdaptiveAvgPool2d((4, 4))
        self.conv = BasicConv2d(in_channels, widths[0], kernel_size=1)
        self.flatten = Flatten()
        self.fc1 = Linear(widths[0] * 4 * 4, widths[1])
        self.relu = ReLU()
        self.fc2 = Linear(widths[1], num_classes)
        self.dropout = Dropout(p=dropout)

    def forward(self, x):
        x = self.flatten(self.conv(self.pool(x)))
        return self.fc2(self.dropout(self.relu(self.fc1(x))))


class GoogLeNet(Module):
    """torchvision's GoogLeNet.

    aux_logits:      build the two auxiliary classifiers (aux1, aux2); in training the
                     model then returns GoogLeNetOutputs(logits, aux_logits2, aux_logits1)
    transform_input: convert ImageNet-normalised input to the (x - 0.5) / 0.5 scaling the
                     published weights were trained on (torchvision sets it for them)
    config, stem, aux_widths: the tables above (smaller numbers give narrow test models)
    """

    def __init__(self, num_classes=1000, aux_logits=False, transform_input=False, dropout=0.2, dropout_aux=0.7,
                 config=CONFIG, stem=STEM, aux_widths=AUX, in_channels=3):
        super().__init__()
        self.aux_logits, self.transform_input, self.in_channels = bool(aux_logits), bool(transform_input), in_channels
        if transform_input and in_channels != 3:
            raise ValueError(f"GoogLeNet: transform_input needs 3 input channels, got {in_channels}")
        self.conv1 = BasicConv2d(in_channels, stem[0], kernel_size=7, stride=2, padding=3)
        self.maxpool1 = MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(stem[0], stem[1], kernel_size=1)
        self.conv3 = BasicConv2d(stem[1], stem[2], kernel_size=3, padding=1)
        self.maxpool2 = MaxPool2d(3, stride=2, ceil_mode=True)
        self.order, channels, aux_in = list(config), stem[2], {}
        for name, row in config.items():
            if name.startswith("maxpool"):
                setattr(self, name, MaxPool2d(row, stride=2, ceil_mode=True))
                continue
            setattr(self, name, Inception(channels, *row))
            channels = getattr(self, name).out_channels
            aux_in[name] = channels
        if self.aux_logits:
            self.aux1 = InceptionAux(aux_in["inception4a"], num_classes, dropout_aux, aux_widths)
            self.aux2 = InceptionAux(aux_in["inception4d"], num_classes, dropout_aux, aux_widths)
        else:
            self.aux1 = self.aux2 = None
        self.avgpool = AdaptiveAvgPool2d((1, 1))
        self.flatten = Flatten()
        self.dropout = Dropout(p=dropout)
        self.fc = Linear(channels, num_classes)
        # torchvision's initialisation: truncated normal (std 0.01) weights, BN as the identity;
        # linear biases keep PyTorch's default
        for m in self.modules():
            if isinstance(m, (Conv2d, Linear)):
                if isinstance(m, Linear):
                    init.torch_default_(m)
                init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
            elif isinstance(m, BatchNorm2d):
                init.ones_(m.weight)
                init.zeros_(m.bias)

    def size_changing_layers(self):
        stem = [("conv1.conv", self.conv1.conv), ("maxpool1", self.maxpool1), ("conv3.conv", self.conv3.conv),
                ("maxpool2", self.maxpool2)]
        return stem + [(name, getattr(self, name)) for name in self.order if name.startswith("maxpool")]

    def _transform_input(self, x):
        """x * std / 0.5 + (mean - 0.5) / 0.5 per channel, ImageNet's mean and std."""
        mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
        scale = (std / 0.5).reshape(1, 3, 1, 1).astype(x.dtype)
        shift = ((mean - 0.5) / 0.5).reshape(1, 3, 1, 1).astype(x.dtype)
        return x * scale + shift

    def forward(self, x):
        """x (N, in_channels, H, W) -> class scores (N, num_classes), or GoogLeNetOutputs
        in training with aux_logits."""
        check_image_batch(self, x, self.in_channels, self.size_changing_layers())
        if self.transform_input:
            x = self._transform_input(x)
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        aux = {}
        for name in self.order:
            x = getattr(self, name)(x)
            if self.aux_logits and self.training and name in ("inception4a", "inception4d"):
                aux[name] = (self.aux1 if name == "inception4a" else self.aux2)(x)
        x = self.fc(self.dropout(self.flatten(self.avgpool(x))))
        if self.aux_logits and self.training:
            return GoogLeNetOutputs(x, aux["inception4d"], aux["inception4a"])
        return x


def googlenet(num_classes=1000, aux_logits=False, transform_input=False, dropout=0.2, dropout_aux=0.7):
    """torchvision's GoogLeNet (Inception v1 with batch norm), 6,624,904 parameters
    without the auxiliary classifiers; ``aux_logits=True`` adds them (13,004,888 in all).
    torchvision's published weight file holds the auxiliary classifiers too and expects
    ``transform_input=True``: load it into ``googlenet(aux_logits=True, transform_input=True)``."""
    return GoogLeNet(num_classes, aux_logits, transform_input, dropout, dropout_aux)
