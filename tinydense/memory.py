"""A small buffer pool: large arrays reused from one training step to the next.

Why: a training step allocates the same big arrays every time (activations,
scratch space, gradient buffers of tens of MB). glibc's ``malloc`` serves
every allocation above 32 MB with a fresh ``mmap`` and returns it to the
operating system on ``free``, so each step touches brand-new pages and the
kernel zero-fills every 4 KB page on first touch: filling a fresh 56 MB
array took 2 to 5 times as long as filling a reused one on this project's
machines. Keeping the arrays
and handing them out again removes that cost (PyTorch's CPU allocator does
the same).

When is an array free again? When nothing but the pool refers to it: no
Tensor, no view, no saved state of a graph. Python counts references, so
the pool simply asks ``sys.getrefcount`` (a NumPy view keeps its base array
alive through ``view.base``, so a live view counts too). There is no
``release()`` to forget and no way to hand out an array that is still in
use: an array kept by a graph that has not been backpropagated yet, or by a
``.grad``, is never given out twice.

    from tinydense import memory
    buf = memory.empty((64, 216, 32, 32), np.float32)   # like np.empty, maybe recycled
    tmp = memory.scratch((64, 24, 32, 32), np.float32)  # short-lived, any size: see below
    memory.clear()                                     # give everything back to the OS

Two kinds of request. ``empty`` gives an array of exactly the size asked
for: for arrays that live through a step (activations kept for backward),
each size coming back every step. ``scratch`` is for arrays that live a
short while, within one op or from one op's backward to the next one's (a
gradient), and whose size changes from call to call (a dense block's layer l
works on k0 + (l-1)k channels): it hands out the front part of the smallest
free scratch array that is large enough, and when none is, replaces the
largest free one by a new one of the size asked for. After the first step
the few scratch arrays have the largest sizes ever needed and serve every
layer of every block. The pool is for the calling thread only (the fused
ops' worker threads get their arrays made beforehand, ops/parallel.py).

The pool keeps what it allocated until ``clear()``: its size is the most
memory that was in use at one time (one training step's worth).
``available_memory()`` says how much the machine has left (for the size
checks of training, ``summary`` and ``compare``).
"""
from __future__ import annotations

import math
import os
import sys

import numpy as np

from . import backend


class BufferPool:
    """Flat arrays kept by (device, dtype, number of elements); ``empty`` hands out
    one that nothing else refers to, or allocates a new one."""

    def __init__(self):
        self._free_lists = {}      # (device, dtype, size) -> [flat arrays]
        self._scratch = {}         # (device, dtype) -> [flat arrays of any size]

    def empty(self, shape, dtype, xp=np):
        """An uninitialised array of ``shape`` and ``dtype`` from module ``xp``
        (numpy or cupy): a recycled one if the pool has one not in use."""
        shape = tuple(int(n) for n in shape)
        dtype = np.dtype(dtype)
        size = math.prod(shape)
        key = (xp.__name__, dtype.str, size)
        arrays = self._free_lists.setdefault(key, [])
        for flat in arrays:
            # references: the list, getrefcount's argument, the loop variable -> 3 when unused
            if sys.getrefcount(flat) <= 3:
                return flat.reshape(shape)
        flat = xp.empty(size, dtype=dtype)
        arrays.append(flat)
        return flat.reshape(shape)

    def scratch(self, shape, dtype, xp=np):
        """Like ``empty``, for short-lived work space: the front of a free scratch array
        at least that large (the smallest such), or a new one replacing the largest free one."""
        shape = tuple(int(n) for n in shape)
        dtype = np.dtype(dtype)
        size = math.prod(shape)
        arrays = self._scratch.setdefault((xp.__name__, dtype.str), [])
        free = [flat for flat in arrays if sys.getrefcount(flat) <= 3]   # the list, flat, the argument
        fitting = [flat for flat in free if flat.size >= size]
        if fitting:
            return min(fitting, key=lambda flat: flat.size)[:size].reshape(shape)
        if free:   # too small for this request: let the largest free one go
            largest = max(free, key=lambda flat: flat.size)
            arrays[:] = [flat for flat in arrays if flat is not largest]
        del free
        flat = xp.empty(size, dtype=dtype)
        arrays.append(flat)
        return flat.reshape(shape)

    def nbytes(self) -> int:
        """Bytes the pool holds (in use or not)."""
        pools = list(self._free_lists.values()) + list(self._scratch.values())
        return sum(a.nbytes for arrays in pools for a in arrays)

    def clear(self) -> None:
        """Forget every array (those still in use stay alive until their users let go)."""
        self._free_lists.clear()
        self._scratch.clear()


_pool = BufferPool()


def empty(shape, dtype, like=None):
    """``np.empty(shape, dtype)`` (``cupy.empty`` when ``like`` is a CuPy array)
    from the shared pool."""
    xp = np if like is None else backend.get_array_module(like)
    return _pool.empty(shape, dtype, xp)


def scratch(shape, dtype, like=None):
    """Short-lived work space of ``shape`` and ``dtype`` from the shared pool (see above)."""
    xp = np if like is None else backend.get_array_module(like)
    return _pool.scratch(shape, dtype, xp)


def pool_nbytes() -> int:
    """Bytes held by the shared pool."""
    return _pool.nbytes()


def clear() -> None:
    """Empty the shared pool (e.g. after training, before building another model)."""
    _pool.clear()


def available_memory():
    """Bytes of memory available on this machine (Linux: MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def training_step_bytes(activation_bytes, params, batch) -> int:
    """A generous guess of a float32 training step's memory: every layer's output for one
    image (``activation_bytes``, summary's activation memory) and its gradient, for the
    batch, and four copies of the ``params`` weights (values, gradients, momentum, update)."""
    return 2 * batch * activation_bytes + 16 * params
