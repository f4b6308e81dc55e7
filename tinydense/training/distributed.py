"""The Trainer on N processes: ``mpiexec -n N tinydense train ...`` (or ``tinydense train --nproc N``).

Every rank sets up the same Trainer (the same configuration, seed and data), and then
(tinydense.distributed for the pieces):

* the model: rank 0's parameters and buffers are broadcast to every rank at the start;
* the data: the loader draws the same order and augmentation on every rank (the same
  generator), and each rank reads its share of every batch, every N-th image from its rank
  (``distributed.shard``). The configuration's batch size is the global batch: it must divide
  by N (the last batch of an epoch, if it does not, is padded from its own start). A run
  resumed on another number of processes goes on with the same batches, shared out anew,
  and says so;
* the step: the gradients are averaged over the ranks before every update
  (``MultiNodeOptimizer``) and batch norm normalises with the whole batch's statistics
  (``synchronized_batch_norm``): the run takes the steps one process would (to rounding);
* the files: rank 0 alone takes the lock, writes config.json, last.npz, best.npz and
  metrics.csv, prints, draws the progress bar and the time estimate; the other ranks are
  silent and resume from the same last.npz;
* stopping: Ctrl-C or SIGTERM (mpiexec passes them on) stop every rank after the same batch:
  after each batch the ranks agree (one small allreduce) whether any was asked to stop. An
  error on one rank stops all of them with a message naming it (``run_on_ranks``);
* what differs from one process: an epoch's train loss and accuracy are rank 0's share of
  the images (1/N of them; so a resume stays exact), its images per second all ranks'; every rank evaluates the whole test set (the same model, the same
  numbers); dropout masks come from one generator state shared by the ranks (so rank 0's
  saved state is every rank's and a resume stays exact), so the ranks' shares see the same masks.
"""
from __future__ import annotations

import contextlib
import functools
import io
import subprocess

import numpy as np

from ..distributed import MultiNodeOptimizer, broadcast_state, init, mpiexec_command, shard, synchronized_batch_norm
from .trainer import Trainer


def _silent(*args, **kwargs):
    pass


class DistributedTrainer(Trainer):
    """A :class:`Trainer` that is rank ``comm.rank`` of ``comm.size`` (module docstring)."""

    def __init__(self, config, out_dir, comm, **options):
        self.comm = comm
        if comm.rank:
            options.update(progress=False, log=_silent)
        super().__init__(config, out_dir, **options)
        batch, n = self.config["batch_size"], comm.size
        if batch % n:
            raise ValueError(f"the batch of {batch} images (the global batch) does not divide among {n} processes: "
                             f"choose a batch size that is a multiple of {n}")
        broadcast_state(self.model, comm)
        self.log(f"data parallel: {n} processes ({comm.engine}), {batch // n} images of every batch of {batch} each, "
                 f"batch norm over the whole batch")
        if self.resume and self.saved_ranks != n:
            self.log(f"resumed on {n} processes, the run was on {self.saved_ranks}: the global batch stays {batch} "
                     f"images, now {batch // n} per process")

    def _read_configuration(self, given):
        checkpoint = super()._read_configuration(given)
        self.saved_ranks = None if checkpoint is None else int(checkpoint.get("ranks", 1))
        return checkpoint

    def _make_optimizer_and_loaders(self) -> None:
        super()._make_optimizer_and_loaders()
        self.optimizer = MultiNodeOptimizer(self.optimizer, self.comm)     # the scheduler keeps the inner one
        self.train_loader.share = functools.partial(shard, size=self.comm.size, rank=self.comm.rank)

    def state(self, loader_state) -> dict:
        return super().state(loader_state) | {"ranks": self.comm.size}

    def fit(self) -> str:
        self.comm.barrier()                     # every rank has checked the directory before rank 0 writes there
        with synchronized_batch_norm(self.comm):
            return super().fit()

    def _epoch_row(self, results, lr, seconds) -> dict:
        row = super()._epoch_row(results, lr, seconds)
        row["images_per_s"] = round(row["images_per_s"] * self.comm.size, 2)    # every rank's share, not rank 0's
        return row

    def train_step(self, x, y):
        result = super().train_step(x, y)
        asked = self.comm.allreduce_small(np.array([float(self.stop_requested)]))
        self.stop_requested = bool(asked[0] > 0)        # one rank asked: every rank stops after this batch
        return result

    def _save_last(self, state) -> None:
        if self.comm.rank == 0:
            super()._save_last(state)
        self.saved_at = (self.epoch, self.batch)      # every rank knows what rank 0 saved


def _on_rank_zero(name):
    """Trainer method ``name``, run by rank 0 alone."""
    def method(self, *args):
        if self.comm.rank == 0:
            return getattr(super(DistributedTrainer, self), name)(*args)
    method.__name__ = name
    return method


# rank 0 alone takes the directory and writes in it
for _name in ("_take_directory", "_write_start_files", "_save_best", "_write_metrics", "_forget_unsaved_start"):
    setattr(DistributedTrainer, _name, _on_rank_zero(_name))


def run_on_ranks(comm, task):
    """``task()`` on this rank: only rank 0's standard output is shown, and an exception on any
    rank stops every rank with a message naming it (the others would wait for it forever)."""
    with contextlib.redirect_stdout(io.StringIO()) if comm.rank else contextlib.nullcontext():
        try:
            return task()
        except Exception as error:
            comm.abort(f"failed with {type(error).__name__}: {' '.join(str(error).split())}; "
                       f"stopping all {comm.size} processes")


def on_processes(nproc, argv, task):
    """``tinydense train``: with ``nproc``, the command line ``argv`` again on ``nproc`` processes
    started by mpiexec (returns its exit status); else ``task(comm)`` for this process's
    communicator (a world of one unless mpiexec started it), through ``run_on_ranks``."""
    if nproc is not None:
        return subprocess.call(mpiexec_command(nproc, argv))
    comm = init()
    return task(comm) if comm.size == 1 else run_on_ranks(comm, lambda: task(comm))
