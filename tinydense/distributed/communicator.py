"""Communicators: what data-parallel training asks of the processes it runs on.

A run of N processes (ranks 0 .. N-1, started by ``mpiexec -n N``) needs five things, the
interface of ``Communicator``:

    size, rank                      how many processes, and which one this is
    broadcast(buffer, root=0)       every rank's buffer <- root's          (in place)
    allreduce(buffer)               every rank's buffer <- the sum of all  (in place)
    allreduce_small(array)          a new array: the sum over the ranks of a small float64 one
    barrier()                       wait until every rank has come here
    abort(message)                  print the message (naming this rank) and stop EVERY rank

``broadcast`` and ``allreduce`` take flat contiguous buffers (one call moves one buffer: the
gradients go in a few large ones, data_parallel.py). The engines are existing libraries, as
ChainerMN's were: MPI through mpi4py on CPUs (``MPICommunicator``), NCCL through CuPy on
GPUs (nccl.py), and ``SingleProcess`` (size 1, every call a no-op) so the same code runs
without MPI. Each communicator counts the bytes it allreduced and the seconds it spent
communicating (``bytes_allreduced``, ``seconds``), for the benchmarks.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from .. import backend

# Launchers tell each process its rank and the world size through the environment.
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
_LOCAL_RANK_VARIABLES = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK")


def _launcher_value(names, default, environ=None) -> int:
    environ = os.environ if environ is None else environ
    for name in names:
        if environ.get(name, "").isdigit():
            return int(environ[name])
    return default


def launched_size(environ=None) -> int:
    """The world size a launcher (mpiexec of MPICH or Open MPI) gave this process, 1 if none."""
    return _launcher_value(_SIZE_VARIABLES, 1, environ)


def local_rank(environ=None) -> int:
    """This process's rank among those on its machine (which GPU it takes), 0 if not launched."""
    return _launcher_value(_LOCAL_RANK_VARIABLES, 0, environ)


def _flat(buffer, what):
    """Check that ``buffer`` is one flat contiguous array (what the engines move in one call)."""
    if buffer.ndim != 1 or not buffer.flags.c_contiguous:
        raise ValueError(f"{what} needs a flat contiguous buffer, got shape {tuple(buffer.shape)} "
                         f"(contiguous: {bool(buffer.flags.c_contiguous)})")
    return buffer


class Communicator:
    """The interface (module docstring). Subclasses implement ``_broadcast``, ``_allreduce``,
    ``_allreduce_small``, ``barrier`` and ``abort``; this class checks and counts."""

    engine = "none"

    def __init__(self, size, rank):
        self.size, self.rank = int(size), int(rank)
        self.bytes_allreduced, self.seconds = 0, 0.0

    def _timed(self, fn, *args):
        start = time.perf_counter()
        result = fn(*args)
        self.seconds += time.perf_counter() - start
        return result

    def broadcast(self, buffer, root=0):
        """Every rank's ``buffer`` <- rank ``root``'s, in place; returns it."""
        if not 0 <= root < self.size:
            raise ValueError(f"broadcast: root {root} is not a rank of a world of size {self.size}")
        self._timed(self._broadcast, _flat(buffer, "broadcast"), root)
        return buffer

    def allreduce(self, buffer):
        """Every rank's ``buffer`` <- the elementwise sum of every rank's, in place; returns it."""
        self._timed(self._allreduce, _flat(buffer, "allreduce"))
        self.bytes_allreduced += buffer.nbytes
        return buffer

    def allreduce_small(self, array):
        """The elementwise sum over the ranks of a small array, as a new float64 array (batch
        norm's per-channel statistics: ops/stats_reducer.py)."""
        xp = backend.get_array_module(array)
        out = xp.ascontiguousarray(array, dtype=xp.float64).ravel().copy()
        self._timed(self._allreduce, out)
        self.bytes_allreduced += out.nbytes
        return out.reshape(array.shape)

    def barrier(self):
        """Return once every rank has called it."""

    def abort(self, message, code=1):
        """Print ``message`` naming this rank to stderr and stop every rank with exit ``code``."""
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.engine}, {self.size} process{'es' if self.size != 1 else ''}"

    def _say(self, message):
        print(f"tinydense.distributed: rank {self.rank} of {self.size}: {message}", file=sys.stderr, flush=True)


class SingleProcess(Communicator):
    """A world of one: rank 0 of 1; broadcast and allreduce leave the buffer as it is."""

    engine = "single process"

    def __init__(self):
        super().__init__(1, 0)

    def _broadcast(self, buffer, root):
        pass

    def _allreduce(self, buffer):
        pass

    def abort(self, message, code=1):
        self._say(message)
        sys.exit(code)


class MPICommunicator(Communicator):
    """MPI through mpi4py, on host (NumPy) buffers; a GPU (CuPy) buffer is copied through the
    host (CUDA-aware MPI is not assumed; on GPUs use nccl.py)."""

    engine = "MPI"

    def __init__(self, comm=None):
        from mpi4py import MPI             # the optional dependency: pip install -e ".[mpi]"
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        super().__init__(self.comm.Get_size(), self.comm.Get_rank())

    def _host(self, buffer, fn):
        if isinstance(buffer, np.ndarray):
            fn(buffer)
        else:
            host = backend.to_device(buffer, "cpu")
            fn(host)
            buffer[...] = backend.to_device(host, backend.device_of(buffer))

    def _broadcast(self, buffer, root):
        self._host(buffer, lambda b: self.comm.Bcast(b, root=root))

    def _allreduce(self, buffer):
        self._host(buffer, lambda b: self.comm.Allreduce(self.MPI.IN_PLACE, b, op=self.MPI.SUM))

    def broadcast_object(self, obj, root=0):
        """A small picklable object from ``root`` to every rank (NCCL's unique id). Only between
        the processes of this run, never from a file."""
        return self.comm.bcast(obj, root=root)

    def barrier(self):
        self._timed(self.comm.Barrier)

    def abort(self, message, code=1):
        self._say(message)
        self.comm.Abort(code)
