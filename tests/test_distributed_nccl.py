"""The NCCL engine (tinydense/distributed/nccl.py) up to the calls that need a GPU.

A stand-in for ``cupy.cuda.nccl`` takes the calls NCCL would: its communicators, one per
simulated rank (threads), meet at a barrier and sum or copy the HOST memory behind the raw
pointers they are given, with the element count and dtype code they are given; a wrong
pointer, count, dtype code, root or reduction shows as wrong numbers. The unique id travels
through a stand-in MPI broadcast from rank 0, as ChainerMN shares it. On a GPU the real
module takes the same calls (see the GPU issue for the run there).
"""
import ctypes
import threading
import types

import numpy as np
import pytest

from tinydense import distributed
from tinydense.distributed import nccl as nccl_engine

from test_distributed import on_threads

DTYPES = {0: np.float16, 1: np.float32, 2: np.float64, 3: np.int32, 4: np.int64}


def fake_nccl(size):
    """A module with NCCL's names whose collectives run on host memory among ``size`` threads."""
    barrier, slots, calls = threading.Barrier(size, timeout=30), {}, []
    module = types.SimpleNamespace(NCCL_FLOAT16=0, NCCL_FLOAT32=1, NCCL_FLOAT64=2, NCCL_INT32=3, NCCL_INT64=4,
                                   NCCL_SUM=7, calls=calls, barrier=barrier)
    module.get_unique_id = lambda: tuple(range(128))

    def view(pointer, count, code):
        dtype = np.dtype(DTYPES[code])
        raw = (ctypes.c_char * (count * dtype.itemsize)).from_address(pointer)
        return np.frombuffer(raw, dtype=dtype)

    class NcclCommunicator:
        def __init__(self, ndev, uid, rank):
            assert ndev == size and uid == tuple(range(128)), (ndev, uid)
            self.rank = rank

        def _meet(self, array):
            slots[self.rank] = array.copy()
            barrier.wait()
            got = [slots[r] for r in range(size)]
            barrier.wait()
            return got

        def allReduce(self, send, recv, count, code, op, stream):
            calls.append(("allReduce", self.rank, count, code, op, stream))
            assert op == module.NCCL_SUM
            view(recv, count, code)[...] = sum(self._meet(view(send, count, code)))

        def bcast(self, buff, count, code, root, stream):
            calls.append(("bcast", self.rank, count, code, root, stream))
            view(buff, count, code)[...] = self._meet(view(buff, count, code))[root]

        def abort(self):
            calls.append(("abort", self.rank))

    module.NcclCommunicator = NcclCommunicator
    return module


class FakeMPI:
    """What NCCLCommunicator asks of MPI: size, rank, an object broadcast, barrier, abort."""

    def __init__(self, size, rank, shared):
        self.size, self.rank, self.shared, self.aborted = size, rank, shared, None

    def broadcast_object(self, obj, root=0):
        if self.rank == root:
            self.shared["object"] = obj
        self.shared["barrier"].wait()
        return self.shared["object"]

    def barrier(self):
        self.shared["barrier"].wait()

    def abort(self, message, code=1):
        self.aborted = (message, code)


def run_nccl_ranks(size, task):
    module, shared, gpus = fake_nccl(size), {"barrier": threading.Barrier(size, timeout=30)}, []

    def make_comm(rank):
        return nccl_engine.NCCLCommunicator(mpi=FakeMPI(size, rank, shared), nccl=module, stream=lambda: 1234,
                                            use_gpu=gpus.append)

    return on_threads(size, make_comm, task, [shared["barrier"], module.barrier]), module.calls, gpus


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_nccl_allreduce_and_broadcast_pass_pointers_counts_and_types(dtype):
    def task(comm):
        a = np.arange(5, dtype=dtype) * (comm.rank + 1)
        comm.allreduce(a[1:])                      # a view: the pointer of its first element
        b = np.full(3, comm.rank, dtype=dtype)
        comm.broadcast(b, root=2)
        return a, b, comm.bytes_allreduced

    results, calls, gpus = run_nccl_ranks(3, task)
    for a, b, nbytes in results:
        np.testing.assert_array_equal(a, np.concatenate([[0], np.arange(1, 5) * 6]).astype(dtype))
        np.testing.assert_array_equal(b, [2, 2, 2])
        assert nbytes == 4 * np.dtype(dtype).itemsize
    code = {np.float32: 1, np.float64: 2, np.int64: 4}[dtype]
    assert sorted(c for c in calls if c[0] == "allReduce") == [("allReduce", r, 4, code, 7, 1234) for r in range(3)]
    assert sorted(c for c in calls if c[0] == "bcast") == [("bcast", r, 3, code, 2, 1234) for r in range(3)]
    assert gpus == [0, 0, 0]          # not launched: local rank 0 each (mpiexec sets MPI_LOCALRANKID)


def test_nccl_engine_runs_the_data_parallel_pieces():
    def task(comm):
        stats = comm.allreduce_small(np.array([1.0, comm.rank]))
        p = distributed.data_parallel.GradientAverager([], comm)
        return stats, p.bytes_per_step

    results, _, _ = run_nccl_ranks(2, task)
    for stats, nbytes in results:
        np.testing.assert_array_equal(stats, [2, 1])
        assert nbytes == 0


def test_nccl_refuses_a_dtype_it_has_no_collective_for_and_aborts_through_mpi():
    def task(comm):
        with pytest.raises(TypeError, match="NCCL: no collective for dtype bool"):
            comm.allreduce(np.zeros(2, dtype=bool))
        comm.abort("giving up", code=4)
        return comm.mpi.aborted

    results, calls, _ = run_nccl_ranks(2, task)
    assert results == [("giving up", 4)] * 2
    assert sorted(c for c in calls if c[0] == "abort") == [("abort", 0), ("abort", 1)]


def test_nccl_without_cupy_says_what_to_install(monkeypatch):
    monkeypatch.setattr(nccl_engine.backend, "cupy", None)
    with pytest.raises(RuntimeError, match="NCCL needs CuPy: CuPy is not installed"):
        nccl_engine.NCCLCommunicator(mpi=FakeMPI(1, 0, {"barrier": threading.Barrier(1)}))
