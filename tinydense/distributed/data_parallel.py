"""Data parallelism: every rank holds the whole model and a shard of each batch.

Why averaging gradients equals one big batch. The loss of a batch of B = N b images is the
mean of its per-image losses; split among N ranks of b images each,

    dL/dw = 1/B sum_i dl_i/dw = 1/N sum_r (1/b sum_{i in shard r} dl_i/dw)

so each rank computes the gradient of its own shard's mean loss, the ranks average those
(one allreduce, divided by N), and every rank then takes the same optimizer step from the
same weights: the weights stay identical without ever being sent again. That needs:

    ``broadcast_state(model, comm)``     rank 0's parameters and buffers to every rank, once
    ``GradientAverager(params, comm)``   after backward, before the step: the average gradient
    ``MultiNodeOptimizer(opt, comm)``    an optimizer whose step does that first (ChainerMN's
                                         create_multi_node_optimizer): the loop stays the textbook one
    ``synchronized_batch_norm(comm)``    batch norm's statistics over the whole batch

Where the identity breaks: batch norm normalises each image with statistics of its batch,
so an image's loss depends on the other images of the batch. Each rank would normalise with
its own shard's mean and variance (a different function: a batch of b, N times), unless the
statistics are summed across ranks, which ``synchronized_batch_norm`` does through
ops/stats_reducer.py (forward: count, mean, variance; backward: sum g and sum g * xhat).
Without it the run is N batch norms of b images each, with one averaged gradient; the running
statistics of rank 0 are then those of rank 0's shards alone.

The gradients travel in buckets: consecutive parameters packed into flat buffers of at most
``bucket_bytes`` (a parameter larger than that gets its own), one allreduce per bucket.
One call per parameter would pay the latency of a collective hundreds of times per step
(DenseNet-BC-100 has 300 parameter arrays); one buffer for all of them would double the
memory of the gradients. Each bucket also carries one number per parameter, 1 where this
rank has a gradient: a parameter no rank used keeps ``grad = None``, as in one process.
"""
from __future__ import annotations

import contextlib

from .. import backend
from ..ops import stats_reducer

BUCKET_BYTES = 4 * 2 ** 20


def _buffers(model):
    """The model's parameters' and buffers' arrays, in the model's own order (the same on every rank)."""
    return [p.data for p in model.parameters()] + list(model.buffers())


def broadcast_state(model, comm, root=0):
    """Every rank's parameters and buffers (running statistics, batch counters) <- rank ``root``'s,
    in place: the ranks start from one model whatever their seeds."""
    for array in _buffers(model):
        if array.ndim == 0 or not array.flags.c_contiguous:
            flat = array.reshape(-1).copy()
            array[...] = comm.broadcast(flat, root).reshape(array.shape)
        else:
            comm.broadcast(array.reshape(-1), root)


class GradientAverager:
    """Averages the gradients of ``params`` over the ranks, a few flat buffers at a time.

    ``average()`` after backward: every rank's ``p.grad`` <- the mean over the ranks of
    ``p.grad`` (missing gradients count as zeros; a parameter without a gradient on every rank
    keeps None). ``bytes_per_step``: what one ``average`` allreduces."""

    def __init__(self, params, comm, bucket_bytes=BUCKET_BYTES):
        self.params, self.comm = list(params), comm
        if bucket_bytes <= 0:
            raise ValueError(f"bucket_bytes must be positive, got {bucket_bytes}")
        self.buckets, current, size = [], [], 0
        for p in self.params:
            fits = current and p.dtype == current[0].dtype and size + p.data.nbytes <= bucket_bytes
            if current and not fits:
                self.buckets.append(current)
                current, size = [], 0
            current.append(p)
            size += p.data.nbytes
        if current:
            self.buckets.append(current)
        self._flat = [None] * len(self.buckets)

    @property
    def bytes_per_step(self) -> int:
        return sum((sum(p.data.size for p in b) + len(b)) * b[0].dtype.itemsize for b in self.buckets)

    def _flat_buffer(self, i, like):
        """Bucket i's buffer: every gradient of the bucket, then one "has a gradient" flag each."""
        bucket = self.buckets[i]
        n = sum(p.data.size for p in bucket) + len(bucket)
        if self._flat[i] is None or self._flat[i].size != n:
            self._flat[i] = backend.get_array_module(like).empty(n, dtype=like.dtype)
        return self._flat[i]

    def average(self) -> None:
        if self.comm.size == 1:
            return
        for i, bucket in enumerate(self.buckets):
            flat = self._flat_buffer(i, bucket[0].data)
            offset, flags = 0, flat[flat.size - len(bucket):]
            for j, p in enumerate(bucket):
                part = flat[offset:offset + p.data.size]
                if p.grad is None:
                    part[...], flags[j] = 0, 0
                else:
                    part[...], flags[j] = p.grad.reshape(-1), 1
                offset += p.data.size
            self.comm.allreduce(flat)
            flat[:flat.size - len(bucket)] /= self.comm.size
            offset, present = 0, backend.to_device(flags, "cpu") > 0
            for j, p in enumerate(bucket):
                part = flat[offset:offset + p.data.size]
                p.grad = part.reshape(p.data.shape).copy() if present[j] else None
                offset += p.data.size


class MultiNodeOptimizer:
    """``optimizer`` whose ``step()`` first averages the gradients over the ranks of ``comm``.
    Everything else (lr, zero_grad, state_dict, ...) is the optimizer's own, read and set."""

    def __init__(self, optimizer, comm, bucket_bytes=BUCKET_BYTES):
        object.__setattr__(self, "optimizer", optimizer)
        object.__setattr__(self, "averager", GradientAverager(optimizer.params, comm, bucket_bytes))

    def step(self):
        self.averager.average()
        self.optimizer.step()

    def __getattr__(self, name):
        return getattr(self.optimizer, name)

    def __setattr__(self, name, value):
        setattr(self.optimizer, name, value)


@contextlib.contextmanager
def synchronized_batch_norm(comm):
    """Within: every batch norm in training (plain and fused) normalises with the statistics of
    the whole batch across the ranks of ``comm`` (ops/stats_reducer.py), forward and backward."""
    previous = stats_reducer.set_allreduce(comm.allreduce_small if comm.size > 1 else None, comm.size)
    try:
        yield comm
    finally:
        stats_reducer.set_allreduce(*previous)
