"""``torchvision.datasets.CIFAR10`` and ``CIFAR100``: per-sample access to the files that
``tinydense.data`` reads (restricted unpickler, optional checked download).

Sample i is ``(image, label)``: the image an (H, W, C) uint8 array (the layout of the PIL
image torchvision gives; ``transforms.ToTensor`` makes it a (C, H, W) float tensor in [0, 1]),
the label an int. ``transform`` / ``target_transform`` are applied to each, as in torchvision.
"""
from __future__ import annotations

import numpy as np

from ..data import load_cifar


class CIFAR10:
    """CIFAR-10 from ``root`` (holding ``cifar-10-batches-py/``); ``data`` is (N, 32, 32, 3)
    uint8 and ``targets`` a list of ints, as torchvision's."""

    name = "cifar10"

    def __init__(self, root, train=True, transform=None, target_transform=None, download=False):
        images = load_cifar(self.name, root, train=train, download=download)
        self.root, self.train = root, train
        self.data = np.ascontiguousarray(images.images.transpose(0, 2, 3, 1))     # NCHW -> NHWC
        self.targets = [int(y) for y in images.labels]
        self.classes = list(images.classes)
        self.transform, self.target_transform = transform, target_transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        image, target = self.data[index], self.targets[index]
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    def __repr__(self):
        return (f"Dataset {type(self).__name__}\n    Number of datapoints: {len(self)}\n    Root location: "
                f"{self.root}\n    Split: {'Train' if self.train else 'Test'}")


class CIFAR100(CIFAR10):
    """CIFAR-100 (100 fine classes) from ``root`` (holding ``cifar-100-python/``)."""

    name = "cifar100"
