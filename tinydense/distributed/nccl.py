"""NCCL through CuPy: the communicator for GPUs, one process per GPU.

NCCL (NVIDIA's collective communications library) moves GPU buffers between GPUs directly
(NVLink, PCIe, InfiniBand) without a stop in host memory. CuPy wraps it as
``cupy.cuda.nccl``. How the processes find each other is ChainerMN's recipe:

    rank 0:     uid = nccl.get_unique_id()          (an address NCCL's bootstrap listens on)
    every rank: uid = MPI broadcast of rank 0's uid
    every rank: comm = nccl.NcclCommunicator(size, uid, rank)

after which ``comm.allReduce(send, recv, count, dtype, op, stream)`` and ``comm.bcast(...)``
take raw device pointers, an element count, NCCL's code for the dtype and a CUDA stream. MPI
stays for what is not on the GPU (the barrier, abort). Each process takes the GPU of its
local rank (its rank among the processes on its machine).

The calls are enqueued on CuPy's current stream, the one the ops run on, so they are ordered
after the backward that made the gradients and before the update that reads them.

Written so that a machine without a GPU tests everything but NCCL itself: the ``nccl``
module, the MPI communicator, the stream and the pointer of an array can be passed in
(tests/test_distributed_nccl.py gives a stand-in NCCL that sums host buffers by pointer).
"""
from __future__ import annotations

from .. import backend
from .communicator import Communicator, MPICommunicator, local_rank

# NCCL's name for each dtype the gradients and statistics come in.
_NCCL_TYPES = {"float16": "NCCL_FLOAT16", "float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64",
               "int32": "NCCL_INT32", "int64": "NCCL_INT64"}


def device_pointer(array):
    """The address of an array's first element: CuPy's ``data.ptr`` (a NumPy array's
    ``ctypes.data``, for the stand-in NCCL of the tests)."""
    data = array.data
    return data.ptr if hasattr(data, "ptr") else array.ctypes.data


def _cupy_stream():
    return backend.cupy.cuda.get_current_stream().ptr


def _use_gpu(index):
    backend.cupy.cuda.Device(index).use()


class NCCLCommunicator(Communicator):
    """Collectives on GPU buffers through NCCL; the unique id and the barrier through MPI."""

    engine = "NCCL"

    def __init__(self, mpi=None, nccl=None, stream=_cupy_stream, use_gpu=_use_gpu):
        if nccl is None:
            if backend.cupy is None:
                raise RuntimeError(f"NCCL needs CuPy: {backend.cuda_unavailable_reason()}")
            from cupy.cuda import nccl
            if not getattr(nccl, "available", True):
                raise RuntimeError("CuPy finds no NCCL library: pip install nvidia-nccl-cu12 (or -cu13, as the CuPy wheel)")
        self.mpi = MPICommunicator() if mpi is None else mpi
        super().__init__(self.mpi.size, self.mpi.rank)
        self.nccl, self.stream = nccl, stream
        use_gpu(local_rank())
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = self.mpi.broadcast_object(uid, root=0)
        self.comm = nccl.NcclCommunicator(self.size, uid, self.rank)

    def _type(self, buffer):
        name = _NCCL_TYPES.get(str(buffer.dtype))
        if name is None:
            raise TypeError(f"NCCL: no collective for dtype {buffer.dtype} (supported: {', '.join(_NCCL_TYPES)})")
        return getattr(self.nccl, name)

    def _broadcast(self, buffer, root):
        self.comm.bcast(device_pointer(buffer), buffer.size, self._type(buffer), root, self.stream())

    def _allreduce(self, buffer):
        pointer = device_pointer(buffer)
        self.comm.allReduce(pointer, pointer, buffer.size, self._type(buffer), self.nccl.NCCL_SUM, self.stream())

    def barrier(self):
        self.mpi.barrier()

    def abort(self, message, code=1):
        try:
            self.comm.abort()     # frees the other GPUs' processes waiting in a collective
        finally:
            self.mpi.abort(message, code)
