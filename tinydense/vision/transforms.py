"""``torchvision.transforms`` for one image at a time.

An image is either an (H, W, C) array (uint8, what the datasets give, in place of a PIL
image) or, after ``ToTensor``, a (C, H, W) float Tensor. Random choices come from
tinydense's seeded generator (``tinydense.manual_seed``).

Differs from ``tinydense.data``'s batch augmentation on purpose only where torchvision
does: RandomCrop pads the raw image with ``fill`` (black, 0) before ToTensor/Normalize,
while tinydense's own loader pads after normalising (with the data set's mean colour, as
the DenseNet paper's Torch code did).
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import backend
from ..autograd import Tensor


def _layout(image):
    """(array, channel axis first?) of an image: Tensors are (C, H, W), arrays (H, W, C)."""
    if isinstance(image, Tensor):
        return image.data, True
    array = np.asarray(image)
    if array.ndim not in (2, 3):
        raise ValueError(f"an image must have 2 or 3 dimensions, got shape {array.shape}")
    return array, False


def _hw_axes(array, chw):
    return (array.ndim - 2, array.ndim - 1) if chw else (0, 1)


def _same_kind(result, image):
    return Tensor(result) if isinstance(image, Tensor) else result


class Compose:
    """Apply ``transforms`` one after the other."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, image):
        for t in self.transforms:
            image = t(image)
        return image

    def __repr__(self):
        return "Compose(\n" + "".join(f"    {t}\n" for t in self.transforms) + ")"


class ToTensor:
    """(H, W, C) uint8 in [0, 255] -> (C, H, W) float32 Tensor in [0, 1]."""

    def __call__(self, image):
        array, chw = _layout(image)
        if chw:
            raise TypeError("ToTensor: the image is already a Tensor")
        array = array[:, :, None] if array.ndim == 2 else array
        out = np.ascontiguousarray(array.transpose(2, 0, 1)).astype(np.float32)
        return Tensor(out / np.float32(255) if array.dtype == np.uint8 else out)

    def __repr__(self):
        return "ToTensor()"


class Normalize:
    """(C, H, W) Tensor -> (image - mean[c]) / std[c] per channel c."""

    def __init__(self, mean, std, inplace=False):
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        if self.mean.shape != self.std.shape or self.mean.ndim != 1 or (self.std == 0).any():
            raise ValueError(f"Normalize: mean {mean} and std {std} must be sequences of one value per channel, "
                             f"std non-zero")

    def __call__(self, image):
        if not isinstance(image, Tensor):
            raise TypeError("Normalize expects a (C, H, W) Tensor: put ToTensor() before it")
        x = image.data
        if x.shape[-3] != len(self.mean):
            raise ValueError(f"Normalize: the image has {x.shape[-3]} channels but mean has {len(self.mean)} values")
        xp = backend.get_array_module(x)
        shape = (-1, 1, 1)
        return Tensor((x - xp.asarray(self.mean).reshape(shape)) / xp.asarray(self.std).reshape(shape))

    def __repr__(self):
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


class RandomCrop:
    """Pad by ``padding`` (an int: every side; (left/right, top/bottom); or (left, top, right,
    bottom)) with ``fill``, then cut a ``size`` window at a random place."""

    def __init__(self, size, padding=None, pad_if_needed=False, fill=0, padding_mode="constant"):
        self.size = (size, size) if isinstance(size, numbers.Integral) else tuple(size)
        if padding is None:
            padding = 0
        padding = (padding,) * 4 if isinstance(padding, numbers.Integral) else tuple(padding)
        self.padding = padding * 2 if len(padding) == 2 else padding
        if len(self.padding) != 4 or any(p < 0 for p in self.padding):
            raise ValueError(f"RandomCrop: padding must be an int or 2 or 4 non-negative ints, got {padding!r}")
        if padding_mode != "constant":
            raise ValueError(f"RandomCrop: only padding_mode='constant' is provided, got {padding_mode!r}")
        self.pad_if_needed, self.fill = pad_if_needed, fill

    def __call__(self, image):
        array, chw = _layout(image)
        h_ax, w_ax = _hw_axes(array, chw)
        left, top, right, bottom = self.padding
        th, tw = self.size
        if self.pad_if_needed:
            top, bottom = top + max(0, th - array.shape[h_ax] - top - bottom), bottom
            left, right = left + max(0, tw - array.shape[w_ax] - left - right), right
        widths = [(0, 0)] * array.ndim
        widths[h_ax], widths[w_ax] = (top, bottom), (left, right)
        xp = backend.get_array_module(array)
        padded = xp.pad(array, widths, constant_values=self.fill)
        H, W = padded.shape[h_ax], padded.shape[w_ax]
        if H < th or W < tw:
            raise ValueError(f"RandomCrop: crop size {self.size} is larger than the (padded) image {(H, W)}")
        generator = backend.rng(np)
        i, j = int(generator.integers(0, H - th + 1)), int(generator.integers(0, W - tw + 1))
        index = [slice(None)] * array.ndim
        index[h_ax], index[w_ax] = slice(i, i + th), slice(j, j + tw)
        return _same_kind(padded[tuple(index)], image)

    def __repr__(self):
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    """Mirror the image left-right with probability ``p``."""

    def __init__(self, p=0.5):
        if not 0 <= p <= 1:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p!r}")
        self.p = float(p)

    def __call__(self, image):
        if backend.rng(np).random() >= self.p:
            return image
        array, chw = _layout(image)
        xp = backend.get_array_module(array)
        return _same_kind(xp.ascontiguousarray(xp.flip(array, axis=_hw_axes(array, chw)[1])), image)

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"
