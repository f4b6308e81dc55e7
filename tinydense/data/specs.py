"""Where each CIFAR variant lives: its folder, archive, URL, checksum and file names.

Shared by reading (cifar.py) and downloading (download.py) the files.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CifarSpec:
    """Where a CIFAR variant lives and how its files are named."""
    title: str
    folder: str
    archive: str
    url: str
    md5: str
    train_files: tuple
    test_files: tuple
    meta_file: str
    num_classes: int


CIFAR_PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"

SPECS = {
    "cifar10": CifarSpec(
        title="CIFAR-10", folder="cifar-10-batches-py", archive="cifar-10-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)), test_files=("test_batch",),
        meta_file="batches.meta", num_classes=10),
    "cifar100": CifarSpec(
        title="CIFAR-100", folder="cifar-100-python", archive="cifar-100-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        train_files=("train",), test_files=("test",), meta_file="meta", num_classes=100),
}

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")


def cifar_spec(name) -> CifarSpec:
    """The spec of ``"cifar10"`` or ``"cifar100"``; ValueError naming the choices otherwise."""
    if name not in SPECS:
        raise ValueError(f"unknown data set {name!r}: expected one of {sorted(SPECS)}")
    return SPECS[name]
