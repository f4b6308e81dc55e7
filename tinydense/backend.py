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
    _cupy_import_error = None
except Exception as error:  # not installed, or a broken install (ImportError of a CUDA library ...)
    cupy = None
    _cupy_import_error = None if getattr(error, "name", None) == "cupy" else f"{type(error).__name__}: {error}"

GPU_INSTALL = ("pip install -e \".[gpu]\" for a CUDA 12 driver, or pip install cupy-cuda13x for a CUDA 13 "
               "driver (nvidia-smi prints the driver's CUDA version in its header)")


def cuda_unavailable_reason():
    """None when CuPy is installed and sees a GPU; else why not, in one sentence
    that says what to do: CuPy missing, CuPy broken, or CuPy without a usable GPU."""
    if cupy is None:
        if _cupy_import_error is None:
            return f"CuPy is not installed. On a machine with an NVIDIA GPU: {GPU_INSTALL}"
        return (f"CuPy is installed but does not import ({_cupy_import_error}). Keep exactly one CuPy wheel, "
                f"the one for the driver: {GPU_INSTALL}")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:
        runtime = cupy.cuda.runtime
        found = f"CuPy {cupy.__version__} is installed but finds no usable GPU ({' '.join(str(error).split())})"
        try:
            driver, wheel = runtime.driverGetVersion(), runtime.runtimeGetVersion()
        except Exception:
            driver = wheel = None
        if driver == 0:
            return (f"{found}: no NVIDIA driver is installed here. nvidia-smi shows whether this machine has "
                    f"an NVIDIA GPU and a working driver")
        if driver and wheel and driver < wheel:
            return (f"{found}: the driver supports CUDA {_cuda_version(driver)} but this CuPy wheel needs CUDA "
                    f"{_cuda_version(wheel)}. Install the wheel of the driver's CUDA version instead: "
                    f"{GPU_INSTALL}")
        return f"{found}. nvidia-smi shows whether this machine has an NVIDIA GPU and a working driver"
    if count < 1:
        return (f"CuPy {cupy.__version__} is installed but finds no GPU; nvidia-smi shows whether this "
                f"machine has one (and CUDA_VISIBLE_DEVICES may hide it)")
    return None


def _cuda_version(number) -> str:
    """CUDA's version numbers: 13020 -> "13.2"."""
    return f"{number // 1000}.{number % 1000 // 10}"


def cuda_available() -> bool:
    """True when CuPy is installed and can see at least one GPU."""
    return cuda_unavailable_reason() is None


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
    if name == "cuda":
        reason = cuda_unavailable_reason()
        if reason is not None:
            raise ValueError(f"device 'cuda' requested but CUDA is not available: {reason}")
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


# --- GPU kernels -----------------------------------------------------------

class GPUKernel:
    """An element-wise CUDA kernel, written beside the NumPy code of the op it speeds up
    and compiled by CuPy the first time a GPU array reaches it (``cupy.ElementwiseKernel``:
    ``in_params``, ``out_params`` and a C ``body`` run once per element, with broadcasting).
    On the CPU the op runs its NumPy lines instead; ``op(...)`` on a GPU array only."""

    def __init__(self, in_params, out_params, body, name):
        self.in_params, self.out_params, self.body, self.name = in_params, out_params, body, name
        self._kernel = None

    def __call__(self, *args):
        if self._kernel is None:
            if cupy is None:
                raise RuntimeError(f"{self.name} is a GPU kernel: it needs CuPy arrays")
            self._kernel = cupy.ElementwiseKernel(self.in_params, self.out_params, self.body, self.name)
        return self._kernel(*args)


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
