"""The parts of a DenseNet (models/densenet.py): the dense layer, the dense block
and the transition, with torchvision's parameter names.

Inside a dense block, layer l receives the feature maps of ALL preceding
layers, concatenated along the channels:

    x_l = H_l([x_0, x_1, ..., x_{l-1}])

With k0 channels entering the block and every H_l producing k ("growth
rate") new channels, layer l sees k0 + (l-1)k channels and the block
ends with k0 + L*k. The composite function H_l is

    basic:           BN - ReLU - Conv3x3(k)
    bottleneck (B):  BN - ReLU - Conv1x1(bn_size*k) - BN - ReLU - Conv3x3(k)

Between blocks a transition layer (BN - ReLU - Conv1x1 - 2x2 average pool)
halves the image and, with compression theta < 1 (the "C" in DenseNet-BC),
keeps floor(theta*m) of the m channels.

These classes are the textbook: each has one forward, the one written here.
models/efficient_densenet.py subclasses the block and the transition with a
fused forward that gives the same numbers.
"""
from __future__ import annotations

from .. import functional as F
from ..autograd import Tensor
from ..nn import AvgPool2d, BatchNorm2d, Conv2d, Module, ReLU


class DenseLayer(Module):
    """H_l: turns the list of all earlier feature maps into k new ones.

    in_channels = k0 + (l-1)k, the channels of the concatenated input.
    """

    def __init__(self, in_channels, growth_rate, bottleneck=True, bn_size=4, drop_rate=0.0):
        super().__init__()
        self.bottleneck, self.drop_rate = bool(bottleneck), float(drop_rate)
        first_out = bn_size * growth_rate if bottleneck else growth_rate
        self.norm1 = BatchNorm2d(in_channels)
        self.relu1 = ReLU()
        if bottleneck:   # 1x1 conv down to bn_size*k channels, then the 3x3 conv
            self.conv1 = Conv2d(in_channels, first_out, kernel_size=1, bias=False)
            self.norm2 = BatchNorm2d(first_out)
            self.relu2 = ReLU()
            self.conv2 = Conv2d(first_out, growth_rate, kernel_size=3, padding=1, bias=False)
        else:
            self.conv1 = Conv2d(in_channels, growth_rate, kernel_size=3, padding=1, bias=False)

    def concat_norm_relu(self, features):
        """ReLU(BN([x_0, ..., x_{l-1}])): the concatenated input, normalised.

        This is where DenseNet's memory goes: every layer makes its own
        concatenated copy of all earlier features (and a BN and a ReLU output
        of that size), so the stored activations grow quadratically with depth.
        """
        x = features[0] if len(features) == 1 else F.cat(features, axis=1)
        return self.relu1(self.norm1(x))

    def forward(self, features):
        """features: list of (N, C_i, H, W) tensors (or one tensor) -> (N, k, H, W)."""
        if isinstance(features, Tensor):
            features = [features]
        out = self._dropout(self.conv1(self.concat_norm_relu(features)))
        if self.bottleneck:
            out = self._dropout(self.conv2(self.relu2(self.norm2(out))))
        return out

    def _dropout(self, x):
        # the paper puts dropout after every convolution except the first (the stem)
        return F.dropout(x, self.drop_rate, self.training) if self.drop_rate > 0 else x

    def extra_repr(self):
        return "" if self.drop_rate == 0 else f"drop_rate={self.drop_rate}"


class DenseBlock(Module):
    """``num_layers`` dense layers, each fed the concatenation of the block
    input and every earlier layer's output. Output: in_channels + num_layers*k channels."""

    def __init__(self, num_layers, in_channels, growth_rate, bottleneck=True, bn_size=4, drop_rate=0.0):
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}",
                            DenseLayer(in_channels + i * growth_rate, growth_rate,
                                       bottleneck=bottleneck, bn_size=bn_size, drop_rate=drop_rate))
        self.out_channels = in_channels + num_layers * growth_rate

    def forward(self, x):
        features = [x]                       # x_0, then x_1, x_2, ... as they are made
        for layer in self.children():
            features.append(layer(features))
        return F.cat(features, axis=1)


class Transition(Module):
    """Between two blocks: BN - ReLU - Conv1x1(out_channels) - AvgPool 2x2/2."""

    def __init__(self, in_channels, out_channels, drop_rate=0.0):
        super().__init__()
        self.drop_rate = float(drop_rate)
        self.norm = BatchNorm2d(in_channels)
        self.relu = ReLU()
        self.conv = Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.pool = AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x):
        out = self.conv(self.relu(self.norm(x)))
        if self.drop_rate > 0:
            out = F.dropout(out, self.drop_rate, self.training)
        return self.pool(out)
