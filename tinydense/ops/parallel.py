"""Every core for the fused ops (ops/bn_relu.py, ops/dense_block.py).

NumPy runs elementwise work on one core, and OpenBLAS runs a matrix product on
all of them but keeps its threads spinning for a while after it, so a second
core is either idle or fought over. The fused ops therefore divide their work
themselves: each phase of a layer runs on ``threads()`` contiguous parts at once
(a range of images, or of channels), one part per Python thread (NumPy and BLAS
release the GIL), while BLAS is limited to one thread: exactly ``threads()``
threads compute, each on its own data.

``threads()`` is the number of threads BLAS was given (OPENBLAS_NUM_THREADS,
OMP_NUM_THREADS or ``--threads``), read through tinydense/threads.py; without
threadpoolctl, or for CuPy arrays, it is 1 and every phase runs in the calling
thread. Results do not depend on it beyond rounding (a sum over parts is added
in another order).

Only the calling thread may use tinydense.memory's pool: phases get their
arrays made beforehand.
"""
from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..threads import blas_limited_to, blas_threads

_workers = {}                    # thread count -> ThreadPoolExecutor
_active = [1]                    # parts per phase inside ``own_threads``
if hasattr(os, "register_at_fork"):   # a forked child has none of the parent's threads: new pools
    os.register_at_fork(after_in_child=_workers.clear)


def threads(like=None):
    """How many threads the fused ops use for ``like`` (a NumPy array by default)."""
    if like is not None and not isinstance(like, np.ndarray):
        return 1
    return blas_threads() or 1


@contextlib.contextmanager
def own_threads(like):
    """Within: BLAS single-threaded, and ``parallel`` splits work into ``threads(like)`` parts."""
    n = threads(like)
    if n == 1:
        _active.append(1)      # still inside a fused op (``inside``)
        try:
            yield
        finally:
            _active.pop()
        return
    _active.append(n)
    try:
        with blas_limited_to(1):
            yield
    finally:
        _active.pop()


def in_worker():
    """Whether the calling thread is one of ``parallel``'s workers (which may not use the pool)."""
    return threading.current_thread().name.startswith("tinydense")


def inside():
    """Whether the calling thread already runs a part of a fused op (a worker, or the calling
    thread within ``own_threads``): then its work runs where it is, not split again."""
    return in_worker() or len(_active) > 1


def split(n, parts=None):
    """range(n) as at most ``parts`` (default: the active thread count) contiguous (lo, hi) ranges."""
    parts = max(1, min(n, _active[-1] if parts is None else parts))
    bounds = [n * i // parts for i in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def parallel(task, ranges):
    """task(i, lo, hi) for every i, (lo, hi) in enumerate(ranges), at once (``ranges`` from
    ``split``); returns the results in order. The calling thread takes the first range."""
    if len(ranges) == 1:
        return [task(0, *ranges[0])]
    pool = _workers.get(len(ranges) - 1)
    if pool is None:
        pool = _workers[len(ranges) - 1] = ThreadPoolExecutor(len(ranges) - 1, thread_name_prefix="tinydense")
    others = [pool.submit(task, i, lo, hi) for i, (lo, hi) in enumerate(ranges) if i > 0]
    first = task(0, *ranges[0])
    return [first] + [f.result() for f in others]
