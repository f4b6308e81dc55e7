"""Pre-activation ResNet for CIFAR (He, Zhang, Ren and Sun, "Identity
Mappings in Deep Residual Networks", ECCV 2016): the baseline DenseNet is
compared with in the DenseNet paper's Table 2, and the ``resnet`` model of
``tinydense train``. (torchvision's original, post-activation ImageNet
ResNets, resnet18 ... resnet152, are in resnet.py.)

A residual block ADDS its input to what it computes,

    x_{l+1} = x_l + F(x_l)          (ResNet: features are summed)
    x_l     = H_l([x_0, ..., x_{l-1}])   (DenseNet: features are concatenated)

and F is written "pre-activation": BN - ReLU - Conv, twice (basic block)
or three times with a 1x1 - 3x3 - 1x1 bottleneck of width 4x smaller than
the output (bottleneck block). Where a block changes the width or halves
the image, the shortcut is a 1x1 convolution of the pre-activated input.

    name      image   layers
    conv1     32x32   3x3 conv, 16 channels
    layer1    32x32   n blocks, 16 channels (64 with bottleneck blocks)
    layer2    16x16   n blocks, 32 channels (128), the first with stride 2
    layer3    8x8     n blocks, 64 channels (256), the first with stride 2
    bn, fc            BN - ReLU - global average pool - Linear
"""
from __future__ import annotations

from ..nn import AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Flatten, Linear, Module, ModuleList, ReLU
from ._checks import check_image_batch
from .fused_layers import norm_relu


class PreActBlock(Module):
    """Basic block: BN-ReLU-Conv3x3, BN-ReLU-Conv3x3, plus the shortcut."""
    expansion = 1

    def __init__(self, in_channels, width, stride=1):
        super().__init__()
        out_channels = width * self.expansion
        self.bn1, self.relu1 = BatchNorm2d(in_channels), ReLU()
        self.conv1 = Conv2d(in_channels, width, 3, stride=stride, padding=1, bias=False)
        self.bn2, self.relu2 = BatchNorm2d(width), ReLU()
        self.conv2 = Conv2d(width, out_channels, 3, padding=1, bias=False)
        self.shortcut = (Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
                         if stride != 1 or in_channels != out_channels else None)

    def residual(self, out):
        return self.conv2(norm_relu(self.bn2, self.relu2, self.conv1(out)))

    def forward(self, x):
        out = norm_relu(self.bn1, self.relu1, x)        # relu1(bn1(x)) as one op (fused_layers.py)
        shortcut = x if self.shortcut is None else self.shortcut(out)
        return self.residual(out) + shortcut


class PreActBottleneck(Module):
    """Bottleneck block: BN-ReLU-Conv1x1(w), BN-ReLU-Conv3x3(w), BN-ReLU-Conv1x1(4w),
    plus the shortcut."""
    expansion = 4

    def __init__(self, in_channels, width, stride=1):
        super().__init__()
        out_channels = width * self.expansion
        self.bn1, self.relu1 = BatchNorm2d(in_channels), ReLU()
        self.conv1 = Conv2d(in_channels, width, 1, bias=False)
        self.bn2, self.relu2 = BatchNorm2d(width), ReLU()
        self.conv2 = Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn3, self.relu3 = BatchNorm2d(width), ReLU()
        self.conv3 = Conv2d(width, out_channels, 1, bias=False)
        self.shortcut = (Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
                         if stride != 1 or in_channels != out_channels else None)

    def residual(self, out):
        out = self.conv2(norm_relu(self.bn2, self.relu2, self.conv1(out)))
        return self.conv3(norm_relu(self.bn3, self.relu3, out))

    forward = PreActBlock.forward


class PreActResNet(Module):
    """Pre-activation ResNet for 32x32 images: three stages of ``blocks_per_stage``
    blocks of widths 16, 32, 64 (times 4 at the output of bottleneck blocks)."""

    def __init__(self, blocks_per_stage, bottleneck=False, num_classes=10, in_channels=3):
        super().__init__()
        block = PreActBottleneck if bottleneck else PreActBlock
        self.in_channels = in_channels
        self.conv1 = Conv2d(in_channels, 16, 3, padding=1, bias=False)
        channels = 16
        for stage, (width, stride) in enumerate(((16, 1), (32, 2), (64, 2)), start=1):
            blocks = ModuleList()
            for i in range(blocks_per_stage):
                blocks.append(block(channels, width, stride if i == 0 else 1))
                channels = width * block.expansion
            self.add_module(f"layer{stage}", blocks)
        self.bn, self.relu = BatchNorm2d(channels), ReLU()
        self.pool, self.flatten = AdaptiveAvgPool2d(1), Flatten()
        self.fc = Linear(channels, num_classes)

    def size_changing_layers(self):
        """(name, layer) of the convolutions on the main path, in order (the strided
        shortcut convs run in parallel with them)."""
        return [(n, m) for n, m in self.named_modules()
                if isinstance(m, Conv2d) and not n.endswith("shortcut")]

    def forward(self, x):
        """x (N, in_channels, H, W) -> class scores (N, num_classes)."""
        check_image_batch(self, x, self.in_channels, self.size_changing_layers())
        out = self.conv1(x)
        for stage in (self.layer1, self.layer2, self.layer3):
            for block in stage:
                out = block(out)
        return self.fc(self.flatten(self.pool(norm_relu(self.bn, self.relu, out))))


def preact_resnet(depth, num_classes=10, bottleneck=None):
    """Pre-activation ResNet-``depth`` for CIFAR.

    Basic blocks (two 3x3 convs): depth = 6n + 2, e.g. 20, 56, 110.
    Bottleneck blocks (three convs): depth = 9n + 2, e.g. 164, 1001.
    ``bottleneck=None`` picks the kind whose formula the depth fits; a depth that
    fits both (56, 110, 164 ...) gets bottleneck blocks from 164 on, as in He et al.
    """
    if not isinstance(depth, int) or isinstance(depth, bool):
        raise ValueError(f"preact_resnet: depth must be an integer, got {depth!r}")
    fits = {False: depth >= 8 and (depth - 2) % 6 == 0, True: depth >= 11 and (depth - 2) % 9 == 0}
    if bottleneck is None:
        if not any(fits.values()):
            raise ValueError(f"preact_resnet: depth {depth} fits neither basic blocks (depth = 6n + 2: 8, 20, "
                             f"56, 110 ...) nor bottleneck blocks (depth = 9n + 2: 11, 164, 1001 ...)")
        bottleneck = depth >= 164 if fits[True] and fits[False] else fits[True]
    if not fits[bool(bottleneck)]:
        kind = "bottleneck blocks: depth = 9n + 2" if bottleneck else "basic blocks: depth = 6n + 2"
        raise ValueError(f"preact_resnet: depth {depth} does not fit {kind} with n >= 1 "
                         f"(e.g. {'11, 164, 1001' if bottleneck else '8, 20, 56, 110'})")
    return PreActResNet((depth - 2) // (9 if bottleneck else 6), bottleneck=bool(bottleneck), num_classes=num_classes)
