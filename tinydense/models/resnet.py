"""ResNet (He, Zhang, Ren and Sun, "Deep Residual Learning for Image
Recognition", CVPR 2016), ResNeXt (Xie et al., "Aggregated Residual
Transformations for Deep Neural Networks", CVPR 2017) and Wide ResNet
(Zagoruyko and Komodakis, BMVC 2016), laid out as torchvision's resnet.py:
the same module names, parameter shapes and initialisation, so torchvision's
weight files load unchanged.

A residual block adds its input to what it computes: out = relu(F(x) + x).
Post-activation (Conv - BN - ReLU), as in the original paper; the pre-activation
CIFAR ResNet that the DenseNet paper compares with is in preact_resnet.py.

    basic block:      3x3 conv (w), 3x3 conv (w)                    out: w channels
    bottleneck block: 1x1 conv (w), 3x3 conv (w, groups G), 1x1 conv out: 4 * planes

with w = planes for the basic block and w = planes * width_per_group/64 * G for
the bottleneck: ResNeXt-50 32x4d has G = 32 groups of 4 channels (w = 128 in
the first stage), Wide ResNet-50-2 doubles w with width_per_group = 128. Where
a block halves the image (the stride-2 3x3 conv) or changes the width, the
shortcut is a 1x1 conv with stride and a BN ("downsample").

The paper's Table 1, for 224x224 images:

    name     output   layers
    conv1    112x112  7x7 conv, 64, stride 2 (then bn1, relu)
    maxpool  56x56    3x3 max pool, stride 2
    layer1   56x56    blocks of planes 64
    layer2   28x28    blocks of planes 128, the first with stride 2
    layer3   14x14    blocks of planes 256, the first with stride 2
    layer4   7x7      blocks of planes 512, the first with stride 2
    avgpool, fc       global average pool, Linear(512 * expansion, num_classes)

``attention``: a block can gate what it computes before the addition,
out = relu(attention(F(x)) + x). ``attention`` is a function channels -> Module
(or None, the default: no gate); SENet passes its squeeze-and-excitation
block this way (senet.py), registered as ``se`` between the block's last BN
and its shortcut, as timm names it.

The CIFAR variants (``cifar_resnet18`` ...) replace the stem by one 3x3
conv with stride 1 and no max pool, as commonly done for 32x32 images
(the stages then run at 32, 16, 8 and 4 pixels); every name stays.
"""
from __future__ import annotations

from ..nn import (AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Flatten, Identity, Linear, MaxPool2d, Module, ReLU,
                  Sequential, init)
from ._checks import check_image_batch
from .fused_layers import add_relu, norm_relu

# depth -> (block, blocks per stage): the paper's Table 1
CONFIGS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


def conv3x3(in_channels, out_channels, stride=1, groups=1, dilation=1):
    """3x3 convolution, padding = dilation (the image size is kept at stride 1), no bias."""
    return Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation, groups=groups, bias=False,
                  dilation=dilation)


def conv1x1(in_channels, out_channels, stride=1):
    return Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class BasicBlock(Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), two 3x3 convs of ``planes`` channels."""
    expansion = 1

    def __init__(self, in_channels, planes, stride=1, downsample=None, groups=1, base_width=64, dilation=1,
                 attention=None):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError(f"BasicBlock supports only groups=1 and base_width=64, got groups={groups}, "
                             f"base_width={base_width} (ResNeXt and Wide ResNet use bottleneck blocks)")
        if dilation > 1:
            raise ValueError(f"BasicBlock does not support dilation > 1, got {dilation}")
        self.conv1 = conv3x3(in_channels, planes, stride)
        self.bn1 = BatchNorm2d(planes)
        self.relu = ReLU()
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = BatchNorm2d(planes)
        self.se = attention(planes) if attention else None
        self.downsample = downsample
        self.stride = stride

    def residual(self, x):
        return self.bn2(self.conv2(norm_relu(self.bn1, self.relu, self.conv1(x))))

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.residual(x)
        if self.se is not None:                  # the attention gate (SENet), when there is one
            out = self.se(out)
        return add_relu(self.relu, out, shortcut)   # relu(out + shortcut), fused_layers.py


class Bottleneck(Module):
    """1x1 conv down to ``width``, 3x3 conv (stride, groups) at ``width``, 1x1 conv up to
    4 * planes; width = planes * base_width/64 * groups. The stride sits in the 3x3 conv
    (torchvision's "ResNet v1.5")."""
    expansion = 4

    def __init__(self, in_channels, planes, stride=1, downsample=None, groups=1, base_width=64, dilation=1,
                 attention=None):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(in_channels, width)
        self.bn1 = BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups, dilation)
        self.bn2 = BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = BatchNorm2d(planes * self.expansion)
        self.relu = ReLU()
        self.se = attention(planes * self.expansion) if attention else None
        self.downsample = downsample
        self.stride = stride

    def residual(self, x):
        out = norm_relu(self.bn1, self.relu, self.conv1(x))     # relu(bn1(conv1(x))), fused_layers.py
        out = norm_relu(self.bn2, self.relu, self.conv2(out))
        return self.bn3(self.conv3(out))

    forward = BasicBlock.forward


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(Module):
    """torchvision's ResNet: stem, four stages of ``layers[i]`` blocks, global average pool, fc.

    block:             BasicBlock or Bottleneck (or "basic" / "bottleneck")
    layers:            blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50
    groups, width_per_group:  ResNeXt's cardinality G and channels per group (bottleneck only)
    replace_stride_with_dilation:  three booleans, for layer2..4: keep the image size and
                       dilate the later 3x3 convs instead (as torchvision, for segmentation)
    zero_init_residual: start each block's last BN at weight 0, so every block begins as the identity
    widths:            planes of the four stages (torchvision: 64, 128, 256, 512; smaller
                       values give narrow models for tests); the stem has widths[0] channels
    stem:              "imagenet" (7x7/2 conv, 3x3/2 max pool) or "cifar" (3x3 conv, no pool)
    attention:         None, or a function channels -> Module that every block applies to its
                       residual before the addition (SENet's squeeze-and-excitation, senet.py)
    """

    def __init__(self, block, layers, num_classes=1000, zero_init_residual=False, groups=1, width_per_group=64,
                 replace_stride_with_dilation=None, widths=(64, 128, 256, 512), stem="imagenet", in_channels=3,
                 attention=None):
        super().__init__()
        block = BLOCKS.get(block, block)
        if block not in (BasicBlock, Bottleneck):
            raise ValueError(f"ResNet: block must be BasicBlock, Bottleneck, 'basic' or 'bottleneck', got {block!r}")
        layers, widths = tuple(layers), tuple(widths)
        if len(layers) != 4 or not all(isinstance(n, int) and n >= 1 for n in layers):
            raise ValueError(f"ResNet: layers must be four positive block counts, got {layers!r}")
        if len(widths) != 4 or not all(isinstance(n, int) and n >= 1 for n in widths):
            raise ValueError(f"ResNet: widths must be four positive channel counts, got {widths!r}")
        dilate = tuple(replace_stride_with_dilation or (False, False, False))
        if len(dilate) != 3:
            raise ValueError(f"ResNet: replace_stride_with_dilation must have 3 entries, got {dilate!r}")
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"ResNet: stem must be 'imagenet' or 'cifar', got {stem!r}")
        self.in_channels, self.groups, self.base_width, self.dilation = in_channels, groups, width_per_group, 1
        self.attention = attention
        self.inplanes = widths[0]
        if stem == "imagenet":
            self.conv1 = Conv2d(in_channels, self.inplanes, 7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = Conv2d(in_channels, self.inplanes, 3, stride=1, padding=1, bias=False)
        self.bn1 = BatchNorm2d(self.inplanes)
        self.relu = ReLU()
        self.maxpool = MaxPool2d(3, stride=2, padding=1) if stem == "imagenet" else Identity()
        self.layer1 = self._make_layer(block, widths[0], layers[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], stride=2, dilate=dilate[0])
        self.layer3 = self._make_layer(block, widths[2], layers[2], stride=2, dilate=dilate[1])
        self.layer4 = self._make_layer(block, widths[3], layers[3], stride=2, dilate=dilate[2])
        self.avgpool = AdaptiveAvgPool2d((1, 1))
        self.flatten = Flatten()
        self.fc = Linear(widths[3] * block.expansion, num_classes)

        # torchvision's initialisation: Kaiming-normal convs (fan_out), BN as the identity;
        # fc keeps PyTorch's default Linear initialisation
        for m in self.modules():
            if isinstance(m, Conv2d):
                init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, BatchNorm2d):
                init.ones_(m.weight)
                init.zeros_(m.bias)
        init.torch_default_(self.fc)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    init.zeros_(m.bn3.weight if isinstance(m, Bottleneck) else m.bn2.weight)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        downsample, previous_dilation = None, self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                    BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width, previous_dilation,
                        attention=self.attention)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, groups=self.groups, base_width=self.base_width,
                                dilation=self.dilation, attention=self.attention))
        return Sequential(*layers)

    def size_changing_layers(self):
        """(name, layer) of the stem and of every conv on the main path, in order
        (the downsample shortcuts run in parallel with them; the convs of an attention
        gate run on its 1x1 pooled image)."""
        out = [("conv1", self.conv1)] + ([("maxpool", self.maxpool)] if isinstance(self.maxpool, MaxPool2d) else [])
        return out + [(n, m) for n, m in self.named_modules()
                      if isinstance(m, Conv2d) and n.startswith("layer") and ".downsample." not in n
                      and ".se." not in n]

    def forward(self, x):
        """x (N, in_channels, H, W) -> class scores (N, num_classes)."""
        check_image_batch(self, x, self.in_channels, self.size_changing_layers())
        x = self.maxpool(norm_relu(self.bn1, self.relu, self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.avgpool(x)))


def _resnet(depth, num_classes, stem="imagenet", **kwargs):
    block, layers = CONFIGS[depth]
    return ResNet(block, layers, num_classes=num_classes, stem=stem, **kwargs)


def resnet18(num_classes=1000, **kwargs):
    """ResNet-18: basic blocks (2, 2, 2, 2), 11,689,512 parameters."""
    return _resnet(18, num_classes, **kwargs)


def resnet34(num_classes=1000, **kwargs):
    """ResNet-34: basic blocks (3, 4, 6, 3), 21,797,672 parameters."""
    return _resnet(34, num_classes, **kwargs)


def resnet50(num_classes=1000, **kwargs):
    """ResNet-50: bottleneck blocks (3, 4, 6, 3), 25,557,032 parameters."""
    return _resnet(50, num_classes, **kwargs)


def resnet101(num_classes=1000, **kwargs):
    """ResNet-101: bottleneck blocks (3, 4, 23, 3), 44,549,160 parameters."""
    return _resnet(101, num_classes, **kwargs)


def resnet152(num_classes=1000, **kwargs):
    """ResNet-152: bottleneck blocks (3, 8, 36, 3), 60,192,808 parameters."""
    return _resnet(152, num_classes, **kwargs)


def resnext50_32x4d(num_classes=1000, **kwargs):
    """ResNeXt-50 32x4d: ResNet-50 with 32 groups of 4 channels in the first stage's 3x3
    convs (width 128, doubling per stage), 25,028,904 parameters."""
    return _resnet(50, num_classes, groups=32, width_per_group=4, **kwargs)


def resnext101_32x8d(num_classes=1000, **kwargs):
    """ResNeXt-101 32x8d, 88,791,336 parameters."""
    return _resnet(101, num_classes, groups=32, width_per_group=8, **kwargs)


def resnext101_64x4d(num_classes=1000, **kwargs):
    """ResNeXt-101 64x4d, 83,455,272 parameters."""
    return _resnet(101, num_classes, groups=64, width_per_group=4, **kwargs)


def wide_resnet50_2(num_classes=1000, **kwargs):
    """Wide ResNet-50-2: ResNet-50 with bottlenecks twice as wide (128 ... 1024 channels
    in the 3x3 convs), 68,883,240 parameters."""
    return _resnet(50, num_classes, width_per_group=128, **kwargs)


def wide_resnet101_2(num_classes=1000, **kwargs):
    """Wide ResNet-101-2, 126,886,696 parameters."""
    return _resnet(101, num_classes, width_per_group=128, **kwargs)


# --- CIFAR variants: a 3x3 stride-1 stem, no max pool ------------------------------------

def cifar_resnet18(num_classes=10, **kwargs):
    """ResNet-18 for 32x32 images (3x3 stem, no max pool), 11,173,962 parameters with 10 classes."""
    return _resnet(18, num_classes, stem="cifar", **kwargs)


def cifar_resnet34(num_classes=10, **kwargs):
    """ResNet-34 for 32x32 images (3x3 stem, no max pool)."""
    return _resnet(34, num_classes, stem="cifar", **kwargs)


def cifar_resnet50(num_classes=10, **kwargs):
    """ResNet-50 for 32x32 images (3x3 stem, no max pool)."""
    return _resnet(50, num_classes, stem="cifar", **kwargs)


def cifar_resnext50_32x4d(num_classes=10, **kwargs):
    """ResNeXt-50 32x4d for 32x32 images (3x3 stem, no max pool)."""
    return _resnet(50, num_classes, stem="cifar", groups=32, width_per_group=4, **kwargs)
