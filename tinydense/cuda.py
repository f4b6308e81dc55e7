"""GPU helpers, PyTorch style: ``tinydense.cuda.is_available()``.

tinydense runs on an NVIDIA GPU through CuPy (``pip install 'tinydense[gpu]'``).
Without CuPy, or without a GPU, everything runs on the CPU with NumPy.
"""
from . import backend


def is_available() -> bool:
    """True when CuPy is installed and a CUDA GPU can be used."""
    return backend.cuda_available()


def device_count() -> int:
    """Number of visible CUDA GPUs (0 without CuPy or a driver)."""
    if not is_available():
        return 0
    return int(backend.cupy.cuda.runtime.getDeviceCount())


def synchronize() -> None:
    """Wait for all queued GPU work to finish (for honest timings)."""
    if is_available():
        backend.cupy.cuda.Device().synchronize()


def memory_pool_peak_bytes() -> int:
    """Bytes currently held by CuPy's default memory pool (0 on CPU)."""
    if not is_available():
        return 0
    return int(backend.cupy.get_default_memory_pool().total_bytes())
