"""This process's place in a run: its communicator, and what happens when one rank fails.

``init()`` is the one call a data-parallel program makes first. It picks the engine
(``create_communicator``) and installs a handler for uncaught exceptions: the rank that
fails prints its traceback and a line naming itself, then aborts the whole run, because the
other ranks would otherwise wait forever in their next collective for a rank that is gone
(MPI cannot tell a slow rank from a dead one). A rank that is killed outright (SIGKILL,
out of memory) cannot print; ``mpiexec`` notices its exit and stops the others.
"""
from __future__ import annotations

import sys
import traceback

from .communicator import MPICommunicator, SingleProcess, launched_size
from .nccl import NCCLCommunicator


def create_communicator(engine="auto"):
    """The communicator of this process: ``"auto"`` takes MPI when a launcher started more than
    one process and the single process otherwise; ``"mpi"``, ``"nccl"`` and ``"single"`` ask
    for one engine."""
    if engine == "auto":
        engine = "mpi" if launched_size() > 1 else "single"
    if engine == "single":
        return SingleProcess()
    if engine == "mpi":
        try:
            return MPICommunicator()
        except ImportError as error:
            raise RuntimeError(f"MPI needs mpi4py and an MPI runtime: pip install -e \".[mpi]\" ({error})") from None
    if engine == "nccl":
        return NCCLCommunicator()
    raise ValueError(f"unknown communicator engine {engine!r}: choose auto, mpi, nccl or single")


def abort_on_failure(comm):
    """Uncaught exceptions on this rank stop every rank with a message naming this one
    (a world of one keeps Python's usual handling)."""
    if comm.size == 1:
        return

    def handler(kind, error, tb):
        traceback.print_exception(kind, error, tb)
        comm.abort(f"failed with {kind.__name__}: {error}; stopping all {comm.size} ranks")

    sys.excepthook = handler


def init(engine="auto"):
    """The communicator of this process, with ``abort_on_failure`` installed."""
    comm = create_communicator(engine)
    abort_on_failure(comm)
    return comm
