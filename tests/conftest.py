"""Shared fixtures.

``device`` runs a test once per device: "cpu" always, "cuda" when
tinydense can see a GPU (otherwise that case is skipped with the reason
"CUDA not available").

``cifar_dir`` is the directory holding ``cifar-10-batches-py/`` for the tests
that read CIFAR-10 (the lesson notebooks): ``$TINYDENSE_DATA`` when it is set
(CI points it at the real subset), else a small data set in the official
layout that the tests write themselves, so that a fresh clone with no data and
no network passes. Only a test that needs the real images (the learning check
in test_training.py) skips without them, and says so.
"""
from pathlib import Path

import numpy as np
import pytest

from tinydense import backend

from train_helpers import real_cifar_dir, write_cifar

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not backend.cuda_available(),
                                                  reason="CUDA not available")),
]


@pytest.fixture(params=DEVICES)
def device(request):
    """The device name a test runs on ("cpu" or "cuda")."""
    return request.param


@pytest.fixture
def rng():
    """A fresh, seeded NumPy generator for test data (independent of tinydense's own)."""
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def cifar_dir(tmp_path_factory) -> Path:
    """Where the CIFAR-10 files are: $TINYDENSE_DATA, or a generated stand-in (see above).
    The stand-in has 5 x 64 training and 200 test images whose class is drawn into
    the picture, so the lessons' small training runs have something to learn."""
    real = real_cifar_dir()
    if real:
        return Path(real)
    root = tmp_path_factory.mktemp("cifar-standin")
    write_cifar(root, per_file=64, test_size=200, seed=0, learnable=True)
    return root
