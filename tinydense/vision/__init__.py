"""torchvision's shape on tinydense: ``import tinydense.vision as torchvision``.

    datasets.CIFAR10(root, train, download, transform)   over tinydense.data's CIFAR reader
    transforms.Compose, RandomCrop, RandomHorizontalFlip, ToTensor, Normalize
    models                                              the model zoo (tinydense.models)
"""
from . import datasets, models, transforms

__all__ = ["datasets", "models", "transforms"]
