"""Preprocessing on whole batches: normalisation and the paper's augmentation.

Everything works on a batch array (N, C, H, W) at once, with NumPy or CuPy
(``xp``), so no Python loop ever visits an image or a pixel.

DenseNet's CIFAR recipe (Huang et al., 2017, following He et al., 2016):
normalise each channel with the training set's mean and standard deviation,
then zero-pad every image by 4 pixels, take a random 32x32 crop and mirror
it horizontally with probability 1/2. Padding after normalising means the
border is filled with the data set's mean colour (as in the original Torch code).
"""
from __future__ import annotations

import numpy as np

from .. import backend


def normalize(images, mean, std):
    """uint8 images (N, C, H, W) -> float32 ``(images / 255 - mean) / std``,
    with ``mean`` and ``std`` per channel (C,), in [0, 1] units."""
    xp = backend.get_array_module(images)
    mean = xp.asarray(mean, dtype=xp.float32).reshape(1, -1, 1, 1)
    std = xp.asarray(std, dtype=xp.float32).reshape(1, -1, 1, 1)
    if mean.shape[1] != images.shape[1] or std.shape[1] != images.shape[1]:
        raise ValueError(f"normalize: images have {images.shape[1]} channels but mean has "
                         f"{mean.shape[1]} and std {std.shape[1]} values")
    return (images.astype(xp.float32) / xp.float32(255) - mean) / std


def draw_crop_flip(generator, n, padding=4):
    """Random parameters for ``n`` images: offsets (n, 2) int in [0, 2*padding]
    (top, left of the crop inside the padded image) and flips (n,) bool."""
    offsets = generator.integers(0, 2 * padding + 1, size=(n, 2))
    flips = generator.random(n) < 0.5
    return offsets, flips


def crop_flip(x, offsets, flips, padding=4):
    """Zero-pad ``x`` (N, C, H, W) by ``padding``, cut an H x W window at
    ``offsets[i] = (top, left)`` from image i, and mirror it left-right where
    ``flips[i]``. One gather for the whole batch:

        out[i, c, r, s] = padded[i, c, top_i + r, col_i(s)]
        col_i(s) = left_i + s            (no flip)
                   left_i + W - 1 - s    (flip: read the window right to left)
    """
    xp = backend.get_array_module(x)
    N, C, H, W = x.shape
    if len(offsets) != N or len(flips) != N:
        raise ValueError(f"crop_flip: {N} images but {len(offsets)} offsets and {len(flips)} flips")
    offsets, flips = xp.asarray(offsets), xp.asarray(flips)
    padded = xp.zeros((N, C, H + 2 * padding, W + 2 * padding), dtype=x.dtype)
    padded[:, :, padding:padding + H, padding:padding + W] = x
    rows = offsets[:, 0:1] + xp.arange(H)                                  # (N, H)
    cols = offsets[:, 1:2] + xp.where(flips[:, None], xp.arange(W - 1, -1, -1), xp.arange(W))  # (N, W)
    return padded[xp.arange(N)[:, None, None, None], xp.arange(C)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def random_crop_flip(x, generator=None, padding=4):
    """The paper's augmentation on a batch: pad, random crop, random mirror.
    ``generator``: a ``numpy.random.Generator`` (default: tinydense's seeded one)."""
    generator = generator if generator is not None else backend.rng(np)
    offsets, flips = draw_crop_flip(generator, len(x), padding)
    return crop_flip(x, offsets, flips, padding)
