"""Data-parallel training, as ChainerMN did it for Chainer: on existing engines (MPI through
mpi4py, NCCL through CuPy), N processes each with the whole model and a shard of each batch.

    comm = distributed.init()                            # world.py: rank, size, abort on failure
    distributed.broadcast_state(model, comm)             # data_parallel.py: one model everywhere
    averager = distributed.GradientAverager(model.parameters(), comm)
    with distributed.synchronized_batch_norm(comm):      # batch norm over the whole batch
        loss.backward(); averager.average(); optimizer.step()

communicator.py (the interface and the MPI and single-process engines), nccl.py (GPUs),
sampler.py (which images each rank reads), launch.py (``tinydense train --nproc N``),
cost_model.py (what allreduce costs on paper). The Trainer on N ranks: training/distributed.py.
"""
from .communicator import Communicator, MPICommunicator, SingleProcess, launched_size, local_rank
from .data_parallel import BUCKET_BYTES, GradientAverager, MultiNodeOptimizer, broadcast_state, synchronized_batch_norm
from .sampler import DistributedSampler, shard
from .launch import find_mpiexec, mpiexec_command
from .world import abort_on_failure, create_communicator, init

__all__ = ["Communicator", "MPICommunicator", "SingleProcess", "launched_size", "local_rank", "BUCKET_BYTES",
           "GradientAverager", "MultiNodeOptimizer", "broadcast_state", "synchronized_batch_norm", "DistributedSampler", "shard",
           "abort_on_failure", "create_communicator", "init", "find_mpiexec", "mpiexec_command"]
