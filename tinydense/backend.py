"""The one place that chooses between NumPy (CPU) and CuPy (GPU).

Op code never imports numpy or cupy directly for array math: it asks
``get_array_module(*arrays)`` for ``xp`` and calls ``xp.matmul``,
``xp.zeros`` ... so that the same lines run on both devices (the idea is
Chainer's ``cuda.get_array_module``). CuPy is optional: without it every
array is a NumPy array and ``"cuda"`` is simply unavailable.
"""
from __future__ import annotations

import json

import numpy as np

try:  # CuPy imports fine on a machine without a GPU; using it then fails.
    import cupy
except Exception:  # ImportError, or a broken CUDA install
    cupy = None


def cuda_available() -> bool:
    """True when CuPy is installed and can see at least one GPU."""
    if cupy is None:
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def get_array_module(*arrays):
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy``."""
    if cupy is not None:
        return cupy.get_array_module(*arrays)
    return np


def device_of(array) -> str:
    """``"cuda"`` for a CuPy array, ``"cpu"`` for anything else."""
    if cupy is not None and isinstance(array, cupy.ndarray):
        return "cuda"
    return "cpu"


def check_device(device: str) -> str:
    """Validate a device name: ``"cpu"``, or ``"cuda"`` (the same as ``"cuda:0"``:
    tinydense uses one GPU, CuPy's current device). Returns ``"cpu"`` or ``"cuda"``;
    anything else is a ValueError naming it."""
    if not isinstance(device, str):
        raise TypeError(f"device must be a string 'cpu' or 'cuda', got {type(device).__name__}")
    if device.startswith("cuda:") and device[5:].isdigit() and device != "cuda:0":
        raise ValueError(f"device {device!r}: tinydense uses one GPU, 'cuda' (or 'cuda:0'); to run on "
                         f"another one, make it the only visible one: CUDA_VISIBLE_DEVICES={device[5:]}")
    name = {"cpu": "cpu", "cuda": "cuda", "cuda:0": "cuda"}.get(device)
    if name is None:
        raise ValueError(f"unknown device {device!r}: expected 'cpu' or 'cuda'")
    if name == "cuda" and not cuda_available():
        raise ValueError("device 'cuda' requested but CUDA is not available "
                         "(install the 'gpu' extra: pip install 'tinydense[gpu]', on a machine with an NVIDIA GPU)")
    return name


def to_device(array, device: str):
    """Copy ``array`` to ``device`` (no copy if it is already there)."""
    device = check_device(device)
    if device == "cuda":
        return cupy.asarray(array)
    if device_of(array) == "cuda":
        return cupy.asnumpy(array)
    return np.asarray(array)


def to_numpy(array) -> np.ndarray:
    """A NumPy copy (or view) of any array, for printing, plotting and saving."""
    if device_of(array) == "cuda":
        return cupy.asnumpy(array)
    return np.asarray(array)


def module_for(device: str):
    """The array module of a device name."""
    return cupy if check_device(device) == "cuda" else np


# --- random numbers -------------------------------------------------------
# Every random draw tinydense makes (weight init, dropout masks, data
# shuffling and augmentation) comes from these generators, so that
# ``manual_seed(n)`` makes a run repeatable and a checkpoint can store them.

_cpu_rng = np.random.default_rng(0)
_gpu_rng = None


def manual_seed(seed: int) -> None:
    """Seed every random generator tinydense uses (CPU and, if present, GPU)."""
    global _cpu_rng, _gpu_rng
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    _cpu_rng = np.random.default_rng(int(seed))
    _gpu_rng = cupy.random.default_rng(int(seed)) if cuda_available() else None


def rng(xp=np):
    """The generator for array module ``xp``: ``numpy.random.Generator`` on
    the CPU, ``cupy.random.Generator`` on the GPU. Both provide
    ``random(shape, dtype=...)`` and ``standard_normal(shape, dtype=...)``."""
    global _gpu_rng
    if xp is np:
        return _cpu_rng
    if _gpu_rng is None:
        _gpu_rng = cupy.random.default_rng(0)
    return _gpu_rng


def get_rng_state() -> str:
    """The CPU generator's full state as a JSON string (saved in checkpoints)."""
    return json.dumps(_cpu_rng.bit_generator.state)


def set_rng_state(state: str) -> None:
    """Restore a state returned by :func:`get_rng_state`."""
    _cpu_rng.bit_generator.state = json.loads(state)
