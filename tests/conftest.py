"""Shared fixtures.

``device`` runs a test once per device: "cpu" always, "cuda" when
tinydense can see a GPU (otherwise that case is skipped with the reason
"CUDA not available", the only skip reason the test suite uses).
"""
import numpy as np
import pytest

from tinydense import backend

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
