"""Batches for training and evaluation: shuffle, normalise, augment, move to the device.

The loader owns its random generator. Each pass over the data (an epoch)
draws, up front, the order of the images and every image's crop and flip,
so an epoch is fully determined by the generator's state at its start:
``state_dict()`` saves that state, and ``iterate(start_batch=b)`` replays
an epoch from batch ``b``, which is how an interrupted run resumes exactly.
"""
from __future__ import annotations

import json

import numpy as np

from .. import backend
from ..autograd import Tensor
from .transforms import crop_flip, draw_crop_flip, normalize


class DataLoader:
    """Iterate over ``dataset`` (an :class:`ImageDataset`) in batches of
    ``(images, labels)`` Tensors on ``device``: images float32 (B, C, H, W),
    labels int64 (B,). The last batch may be smaller.

    shuffle: a new random order every epoch. augment: the paper's pad-4 /
    crop / mirror augmentation. mean, std: per-channel normalisation in
    [0, 1] units (None: only scale to [0, 1]). seed: anything
    ``numpy.random.default_rng`` accepts."""

    def __init__(self, dataset, batch_size=64, shuffle=False, augment=False, mean=None, std=None,
                 device="cpu", seed=0, padding=4):
        if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.dataset, self.batch_size = dataset, int(batch_size)
        self.shuffle, self.augment, self.padding = shuffle, augment, padding
        channels = dataset.images.shape[1]
        self.mean = np.zeros(channels, np.float32) if mean is None else np.asarray(mean, np.float32)
        self.std = np.ones(channels, np.float32) if std is None else np.asarray(std, np.float32)
        self.device = backend.check_device(device)
        self.generator = np.random.default_rng(seed)
        self.share = None    # data parallelism: positions of a batch -> the ones this process reads

    def __len__(self):
        """The number of batches per epoch."""
        return -(-len(self.dataset) // self.batch_size)

    def __iter__(self):
        return self.iterate()

    def iterate(self, start_batch=0):
        """One epoch, skipping the first ``start_batch`` batches (the random
        draws for the whole epoch are made either way)."""
        n = len(self.dataset)
        order = self.generator.permutation(n) if self.shuffle else np.arange(n)
        if self.augment:
            offsets, flips = draw_crop_flip(self.generator, n, self.padding)
        for start in range(start_batch * self.batch_size, n, self.batch_size):
            positions = np.arange(start, min(start + self.batch_size, n))
            if self.share is not None:         # this process's part of the batch (tinydense.distributed.shard)
                positions = self.share(positions)
            idx = order[positions]
            images = backend.to_device(self.dataset.images[idx], self.device)
            x = normalize(images, self.mean, self.std)
            if self.augment:
                x = crop_flip(x, offsets[positions], flips[positions], self.padding)
            y = backend.to_device(self.dataset.labels[idx], self.device)
            yield Tensor(x), Tensor(y)

    def state_dict(self) -> dict:
        """The generator's state (a JSON string): what the next epoch will draw."""
        return {"generator": json.dumps(self.generator.bit_generator.state)}

    def load_state_dict(self, state) -> None:
        self.generator.bit_generator.state = json.loads(str(state["generator"]))
