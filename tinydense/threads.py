"""BLAS threads: how many threads NumPy's matrix products use, asked and set in one place.

NumPy's matrix products run in a BLAS library (OpenBLAS in NumPy's wheels, or MKL)
that starts one thread per core. The environment variables that choose this
(OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, MKL_NUM_THREADS) are read once, when NumPy
loads the library, so by the time tinydense runs only the library's own function can
change it; threadpoolctl finds the libraries loaded in the process and calls it.
The command line (``--threads``), ``tinydense compare`` and the fused ops
(ops/parallel.py) all go through this module. It imports nothing of tinydense.

    blas_threads()            the number the library uses now (None: no BLAS found)
    set_blas_threads(4)       from now on, in this process and the processes it starts
    with blas_limited_to(1):  ... for a while (the fused ops run their own threads)
    load_average()            how busy the machine's cores are (the 1-minute load average)
"""
from __future__ import annotations

import contextlib
import os

try:
    from threadpoolctl import ThreadpoolController
except ImportError:              # then nothing can be asked or set: one thread for the fused ops
    ThreadpoolController = None

ENVIRONMENT = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_libraries = []                  # [the BLAS libraries' controllers], found once


def blas_libraries() -> list:
    """threadpoolctl's controllers of the BLAS libraries loaded in this process."""
    if ThreadpoolController is None:
        return []
    if not _libraries:
        _libraries.append([lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"])
    return _libraries[0]


def blas_threads():
    """The number of threads the loaded BLAS library uses (None if there is none to ask)."""
    libraries = blas_libraries()
    return max(lib.num_threads for lib in libraries) if libraries else None


def set_blas_threads(n: int) -> int:
    """Let the BLAS library behind NumPy's matrix products use ``n`` threads, from now
    on, in this process (and, through the environment variables, in processes it
    starts). Returns ``n``; ValueError if it cannot be set or the library does not
    take it (e.g. more than its maximum), the library then left as it was."""
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"threads must be a positive integer, got {n!r}")
    libraries = blas_libraries()
    if not libraries:
        raise ValueError(f"--threads {n}: found no OpenBLAS or MKL library in this process to set; start the "
                         f"command with " + " ".join(f"{name}={n}" for name in ENVIRONMENT) + " instead")
    for name in ENVIRONMENT:
        os.environ[name] = str(n)
    for lib in libraries:
        before = lib.num_threads
        lib.set_num_threads(n)
        got = lib.num_threads
        if got != n:
            lib.set_num_threads(before)
            raise ValueError(f"--threads {n}: the BLAS library uses {got} threads after being asked for {n} "
                             f"(its maximum?)")
    return n


@contextlib.contextmanager
def blas_limited_to(n: int):
    """Within: every BLAS library uses ``n`` threads; afterwards, as many as before."""
    libraries = blas_libraries()
    before = [lib.num_threads for lib in libraries]
    for lib in libraries:
        lib.set_num_threads(n)
    try:
        yield
    finally:
        for lib, count in zip(libraries, before):
            lib.set_num_threads(count)


def load_average():
    """The 1-minute load average of this machine (runnable processes), or None if unknown."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
