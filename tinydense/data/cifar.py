"""CIFAR-10 and CIFAR-100 from the official "python version" files.

The official archives unpack to

    cifar-10-batches-py/   data_batch_1 ... data_batch_5, test_batch, batches.meta
    cifar-100-python/      train, test, meta

Each batch file is a pickled dict. We rely on two keys only:

    b"data"    uint8 array (n, 3072): 1024 red, 1024 green, 1024 blue values, row-major 32x32
    b"labels"  n ints (CIFAR-100: b"fine_labels" or b"coarse_labels")

and accept any n (the subset in ../shared/data has 1017 images per file).
Files are read with a restricted unpickler, so a data file can only ever
produce containers and NumPy arrays: it can never run code.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..safe_pickle import load_numpy_pickle
from .download import download_cifar
from .specs import CIFAR10_CLASSES, CIFAR_PAGE, cifar_spec


class DataNotFoundError(FileNotFoundError):
    """The data set is not where we looked; the message says what to fetch and where."""


def default_data_dir(data_dir=None, recorded=None) -> Path:
    """The directory that holds ``cifar-10-batches-py/``: ``data_dir`` if given,
    else the ``TINYDENSE_DATA`` environment variable, else ``recorded`` (the
    directory a resumed run used), else ``data/`` in the working directory."""
    if data_dir is not None:
        return Path(data_dir)
    return Path(os.environ.get("TINYDENSE_DATA") or recorded or "data")


def missing_files(name, root) -> list:
    """The files of data set ``name`` that are not under ``root`` (empty: all there)."""
    spec = cifar_spec(name)
    folder = Path(root) / spec.folder
    return [str(folder / f) for f in spec.train_files + spec.test_files if not (folder / f).is_file()]


def not_found_message(name, root) -> str:
    """What to download and where to put it, for an error message."""
    spec = cifar_spec(name)
    root = Path(root)
    return (f"{spec.title} not found in {root.resolve()}: expected {spec.folder}/ with "
            f"{', '.join(spec.train_files + spec.test_files)}. Download {spec.archive} "
            f"(\"python version\", {spec.url}, see {CIFAR_PAGE}) and extract it into {root.resolve()}, "
            f"or let tinydense download it (download=True; the CLI: --download), "
            f"or point --data-dir / TINYDENSE_DATA at the directory that contains {spec.folder}/")


def _get(batch: dict, key: str):
    """A value by its str key, whether the pickle used bytes or str keys."""
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise KeyError(key)


def read_batch(path, label_key="labels", num_classes=10):
    """Read one batch file: images (n, 3, 32, 32) uint8 and labels (n,) int64.

    Raises ValueError naming the file when it is not a CIFAR batch, when the
    numbers of images and labels differ, or when a label is out of range."""
    path = Path(path)
    try:
        batch = load_numpy_pickle(path)
    except Exception as e:  # UnpicklingError (refused or corrupt), EOFError, ...
        raise ValueError(f"{path} is not a readable CIFAR batch file: {e}") from e
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
    try:
        data, labels = _get(batch, "data"), _get(batch, label_key)
    except KeyError as e:
        raise ValueError(f"{path}: no {e.args[0]!r} key (keys: {sorted(map(str, batch))})") from None
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: 'data' must be a uint8 array of shape (n, 3072), "
                         f"got {data.dtype} array of shape {data.shape}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise ValueError(f"{path}: {label_key!r} must be a list of integers, got shape "
                         f"{labels.shape} of {labels.dtype}")
    if len(labels) != len(data):
        raise ValueError(f"{path}: {len(data)} images but {len(labels)} labels in {label_key!r}")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{path}: labels must lie in [0, {num_classes}), got values from "
                         f"{labels.min()} to {labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels


class ImageDataset:
    """Images (N, 3, H, W) uint8 with labels (N,) int64 and class names."""

    def __init__(self, images, labels, classes):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.classes = images, labels, tuple(classes)

    def __len__(self):
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def head(self, n) -> "ImageDataset":
        """The first ``n`` images (all of them if ``n`` is None or larger)."""
        if n is not None and (not isinstance(n, (int, np.integer)) or n <= 0):
            raise ValueError(f"the number of images must be a positive integer, got {n!r}")
        return ImageDataset(self.images[:n], self.labels[:n], self.classes)

    def channel_stats(self):
        """Per-channel mean and standard deviation of the pixel values scaled
        to [0, 1], as float32 arrays of shape (C,). Computed exactly from a
        histogram of the 256 byte values, so no float copy of the data set is made."""
        values = np.arange(256, dtype=np.float64) / 255
        mean, std = [], []
        for c in range(self.images.shape[1]):
            counts = np.bincount(self.images[:, c].reshape(-1), minlength=256)
            m = (counts * values).sum() / counts.sum()
            mean.append(m)
            std.append(np.sqrt((counts * (values - m) ** 2).sum() / counts.sum()))
        return np.array(mean, np.float32), np.array(std, np.float32)


def load_cifar(name="cifar10", root=None, train=True, download=False, coarse=False) -> ImageDataset:
    """Load the training (``train=True``) or test split of ``"cifar10"`` or
    ``"cifar100"`` from ``root`` (see :func:`default_data_dir`).

    download: fetch and verify the official archive first if the files are
    missing (see :mod:`tinydense.data.download`). coarse: CIFAR-100's 20
    superclasses instead of its 100 classes."""
    spec = cifar_spec(name)
    root = default_data_dir(root)
    if missing_files(name, root):
        if not download:
            raise DataNotFoundError(not_found_message(name, root))
        download_cifar(name, root)
        if missing_files(name, root):
            raise DataNotFoundError(not_found_message(name, root))
    label_key = "labels" if name == "cifar10" else ("coarse_labels" if coarse else "fine_labels")
    classes = _class_names(spec, root, coarse)
    parts = [read_batch(root / spec.folder / f, label_key, len(classes))
             for f in (spec.train_files if train else spec.test_files)]
    return ImageDataset(np.concatenate([p[0] for p in parts]),
                        np.concatenate([p[1] for p in parts]), classes)


def _class_names(spec, root, coarse):
    """Names from the meta file when it has them, else CIFAR-10's names or
    numbers (training needs only the labels, so the meta file is optional;
    one that is there but unreadable is still an error)."""
    key = "label_names" if spec.num_classes == 10 else ("coarse_label_names" if coarse else "fine_label_names")
    count = 20 if coarse else spec.num_classes
    path = Path(root) / spec.folder / spec.meta_file
    if path.is_file():
        try:
            meta = load_numpy_pickle(path)
        except Exception as e:
            raise ValueError(f"{path} is not a readable CIFAR meta file: {e}") from e
        names = meta.get(key.encode(), meta.get(key)) if isinstance(meta, dict) else None
        if names is not None and len(names) == count:
            return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return list(CIFAR10_CLASSES) if count == 10 else [str(i) for i in range(count)]


def CIFAR10(root=None, train=True, download=False) -> ImageDataset:
    """CIFAR-10: 32x32 colour images in 10 classes (50000 training, 10000 test)."""
    return load_cifar("cifar10", root, train, download)


def CIFAR100(root=None, train=True, download=False, coarse=False) -> ImageDataset:
    """CIFAR-100: 32x32 colour images in 100 classes (or 20 with ``coarse=True``)."""
    return load_cifar("cifar100", root, train, download, coarse)
