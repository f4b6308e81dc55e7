"""GPU helpers, PyTorch style: ``tinydense.cuda.is_available()``.

tinydense runs on an NVIDIA GPU through CuPy (README's GPU line:
``pip install -e ".[gpu]"`` for a CUDA 12 driver, ``cupy-cuda13x`` for CUDA 13).
Without CuPy, or without a GPU, everything runs on the CPU with NumPy.
"""
from . import backend


def is_available() -> bool:
    """True when CuPy is installed and a CUDA GPU can be used."""
    return backend.cuda_available()


def unavailable_reason():
    """None when the GPU can be used; else why not and what to do, in one sentence."""
    return backend.cuda_unavailable_reason()


def device_count() -> int:
    """Number of visible CUDA GPUs (0 without CuPy or a driver)."""
    if not is_available():
        return 0
    return int(backend.cupy.cuda.runtime.getDeviceCount())


def describe() -> str:
    """The GPU tinydense uses (CuPy's current device), in one line: name, memory,
    compute capability, the driver's CUDA version and CuPy's version."""
    cupy = backend.cupy
    runtime = cupy.cuda.runtime
    device = cupy.cuda.Device()
    props = runtime.getDeviceProperties(device.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    free, total = device.mem_info
    return (f"GPU {device.id}: {name}, {total / 2**30:.1f} GiB ({free / 2**30:.1f} GiB free), compute capability "
            f"{props['major']}.{props['minor']}, driver for CUDA {backend._cuda_version(runtime.driverGetVersion())}, "
            f"CuPy {cupy.__version__}")


def synchronize() -> None:
    """Wait for all queued GPU work to finish (for honest timings)."""
    if is_available():
        backend.cupy.cuda.Device().synchronize()


def memory_pool_peak_bytes() -> int:
    """Bytes held by CuPy's default memory pool (0 on CPU). The pool keeps the
    blocks it frees for reuse, so this is the most it has reserved so far (as
    ``torch.cuda.max_memory_reserved``), unless someone called ``free_all_blocks``."""
    if not is_available():
        return 0
    return int(backend.cupy.get_default_memory_pool().total_bytes())


class PeakMemory:
    """The most bytes of GPU memory in use at once inside a ``with`` block
    (as ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``):

        with tinydense.cuda.PeakMemory() as peak:
            train_step(...)
        print(peak.bytes, peak.start)       # peak and at the start, bytes

    It routes CuPy's allocations through a function that asks the memory pool
    how much is in use after each one (slower: measure memory and time
    separately). Counts everything held, tinydense's own buffer pool
    (tinydense/memory.py) included. On the CPU both numbers stay 0.
    """

    def __init__(self):
        self.bytes = self.start = 0
        self._previous = None

    def __enter__(self):
        if not is_available():
            return self
        cupy = backend.cupy
        pool = cupy.get_default_memory_pool()
        self.bytes = self.start = int(pool.used_bytes())

        def malloc(size):
            memptr = pool.malloc(size)
            used = pool.used_bytes()
            if used > self.bytes:
                self.bytes = int(used)
            return memptr

        self._previous = cupy.cuda.get_allocator()
        cupy.cuda.set_allocator(malloc)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            backend.cupy.cuda.set_allocator(self._previous)
            self._previous = None
        return False
