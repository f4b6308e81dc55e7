"""AlexNet (Krizhevsky, Sutskever and Hinton, NeurIPS 2012) as torchvision
builds it, and ZFNet (Zeiler and Fergus, "Visualizing and Understanding
Convolutional Networks", ECCV 2014), the same design made bigger.

Five convolutions with ReLU, three of them followed by a 3x3 stride-2 max
pool, then three fully connected layers with dropout. Neither network uses
the local response normalisation of the papers (torchvision dropped it; batch
norm replaced it later), and both run on one device (the 2012 network was
split across two GPUs). torchvision's AlexNet has 64, 192, 384, 256, 256
filters: these are the numbers of the lecture's AlexNet table, whose 227x227
input gives 56 -> 27 -> 27 -> 13 -> 13 -> 6 pixels. The 2012 network
(``alexnet_2012``) had 96, 256, 384, 384, 256 filters, and conv2, conv4 and
conv5 each saw only the half of the channels on their own GPU: grouped
convolutions with 2 groups.

    features     conv      filters  kernel  stride  pad   then
    features.0   conv1     64       11      4       2     ReLU, 3x3/2 max pool
    features.3   conv2     192      5       1       2     ReLU, 3x3/2 max pool
    features.6   conv3     384      3       1       1     ReLU
    features.8   conv4     256      3       1       1     ReLU
    features.10  conv5     256      3       1       1     ReLU, 3x3/2 max pool
    avgpool                                               adaptive average pool to 6x6
    classifier   dropout, fc6 9216 -> 4096, ReLU, dropout, fc7 4096 -> 4096, ReLU, fc8 -> classes

ZFNet, per the lecture: conv1 becomes 7x7 with stride 2 (96 filters) and
conv3, conv4, conv5 get 512, 1024, 512 filters; conv2 is 5x5 with stride 2
(256 filters) and the pools round up, as in the paper's Figure 3, so a
224x224 image gives 110 -> 55 -> 26 -> 13 -> 13 -> 6 pixels.
"""
from __future__ import annotations

from ..nn import AdaptiveAvgPool2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, Module, ReLU, Sequential, init
from ._checks import check_image_batch

# (filters, kernel, stride, padding, max pool after it[, groups])
ALEXNET = ((64, 11, 4, 2, True), (192, 5, 1, 2, True), (384, 3, 1, 1, False), (256, 3, 1, 1, False),
           (256, 3, 1, 1, True))
# Krizhevsky, Sutskever and Hinton (2012), Figure 2: two GPUs, so conv2, conv4, conv5 in 2 groups
ALEXNET_2012 = ((96, 11, 4, 0, True), (256, 5, 1, 2, True, 2), (384, 3, 1, 1, False), (384, 3, 1, 1, False, 2),
                (256, 3, 1, 1, True, 2))
# Zeiler and Fergus (2014), Figure 3, with Table 2's bigger layers 3-5 (512, 1024, 512), as the lecture gives it
ZFNET = ((96, 7, 2, 1, True), (256, 5, 2, 0, True), (512, 3, 1, 1, False), (1024, 3, 1, 1, False),
         (512, 3, 1, 1, True))


class AlexNet(Module):
    """torchvision's AlexNet: ``features`` (convs, ReLUs, max pools, numbered as in
    torchvision), ``avgpool`` to 6x6, ``classifier`` (dropout, three linear layers).

    convs:     the table of (filters, kernel, stride, padding, pool after[, groups]) rows
    hidden:    width of the two hidden fully connected layers (4096)
    ceil_mode: round the max pools' output size up (ZFNet)
    """

    def __init__(self, num_classes=1000, dropout=0.5, convs=ALEXNET, hidden=4096, ceil_mode=False,
                 in_channels=3):
        super().__init__()
        self.in_channels = in_channels
        layers, channels = [], in_channels
        for filters, kernel, stride, padding, pool, *groups in convs:
            layers += [Conv2d(channels, filters, kernel, stride=stride, padding=padding, groups=groups[0] if groups else 1),
                       ReLU()]
            if pool:
                layers.append(MaxPool2d(kernel_size=3, stride=2, ceil_mode=ceil_mode))
            channels = filters
        self.features = Sequential(*layers)
        self.avgpool = AdaptiveAvgPool2d((6, 6))
        self.flatten = Flatten()
        self.classifier = Sequential(
            Dropout(p=dropout), Linear(channels * 6 * 6, hidden), ReLU(),
            Dropout(p=dropout), Linear(hidden, hidden), ReLU(),
            Linear(hidden, num_classes))
        for m in self.modules():                 # PyTorch's default initialisation (torchvision sets none)
            if isinstance(m, (Conv2d, Linear)):
                init.torch_default_(m)

    def size_changing_layers(self):
        return [(f"features.{n}", m) for n, m in self.features.named_children() if isinstance(m, (Conv2d, MaxPool2d))]

    def forward(self, x):
        """x (N, in_channels, H, W) -> class scores (N, num_classes)."""
        check_image_batch(self, x, self.in_channels, self.size_changing_layers(), last_batch_norm=None)
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


class ZFNet(AlexNet):
    """ZFNet: AlexNet with a 7x7/2 first conv, a 5x5/2 second conv, wider conv3-5 and
    pools that round up (Zeiler and Fergus, 2014). Initialised as in the paper: weights
    N(0, 0.01^2), biases 0."""

    def __init__(self, num_classes=1000, dropout=0.5, convs=ZFNET, hidden=4096, in_channels=3):
        super().__init__(num_classes, dropout, convs, hidden, ceil_mode=True, in_channels=in_channels)
        for m in self.modules():
            if isinstance(m, (Conv2d, Linear)):
                init.normal_(m.weight, 0.0, 0.01)
                init.zeros_(m.bias)


def alexnet(num_classes=1000, dropout=0.5):
    """torchvision's AlexNet, 61,100,840 parameters (at 224x224: 0.71 G multiply-adds)."""
    return AlexNet(num_classes=num_classes, dropout=dropout)


def alexnet_2012(num_classes=1000, dropout=0.5):
    """The 2012 paper's AlexNet on one device: 96, 256, 384, 384, 256 filters, conv2, conv4 and
    conv5 in two groups (the two GPUs' halves), no local response normalisation; for
    227x227 images (55 -> 27 -> 27 -> 13 -> 13 -> 6 pixels), 60,965,224 parameters (the
    paper's "60 million"). Initialised as torchvision's AlexNet (PyTorch's defaults)."""
    return AlexNet(num_classes=num_classes, dropout=dropout, convs=ALEXNET_2012)


def zfnet(num_classes=1000, dropout=0.5):
    """ZFNet as the lecture describes it (Zeiler and Fergus, ECCV 2014: Figure 3's network
    with layers 3, 4, 5 of 512, 1024, 512 filters, Table 2), 107,627,624 parameters
    with 1000 classes. No torchvision counterpart."""
    return ZFNet(num_classes=num_classes, dropout=dropout)

