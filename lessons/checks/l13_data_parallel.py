"""Checks of lesson 13, data parallelism: batch statistics from the ranks' sums, the averaged
gradient, and a ring allreduce with its messages counted.

The truths here are the whole batch's, computed on the concatenated shards (NumPy's mean and
variance, tinydense's autograd on the whole batch, NumPy's sum): never the combination the
exercise asks for."""
from __future__ import annotations

import numpy as np

import tinydense as td
import tinydense.functional as F

from .common import Failure, rng, verdict


def _shards(seed, counts, channels):
    """The ranks' activations (count_r, C) with different counts and means (shifted by -1, 0.5, 2, ...)."""
    r = rng(seed)
    return [r.standard_normal((n, channels)) * r.uniform(0.5, 2, channels) + (-1.0 + 1.5 * i)
            for i, n in enumerate(counts)]


def check_combine_statistics(fn, sizes=(3, 5, 2), channels=4, seed=31):
    """combine_statistics(counts (R,), sums (R, C), sums_of_squares (R, C)) -> (mean (C,), var (C,)):
    the batch mean and biased variance of the whole batch from each rank's count, sum and sum of squares
    (sizes: the ranks' image counts)."""
    images = f"{', '.join(map(str, sizes[:-1]))} and {sizes[-1]} images"

    def run():
        shards = _shards(seed, sizes, channels)
        counts = np.array([len(s) for s in shards])
        sums = np.stack([s.sum(axis=0) for s in shards])
        squares = np.stack([(s * s).sum(axis=0) for s in shards])
        whole = np.concatenate(shards)
        inputs = (counts.copy(), sums.copy(), squares.copy())
        got = fn(*inputs)
        if not isinstance(got, tuple) or len(got) != 2:
            raise Failure(f"return a tuple (mean, var), got {type(got).__name__}")
        if any(not np.array_equal(a, b) for a, b in zip(inputs, (counts, sums, squares))):
            raise Failure("your function changed its inputs in place; leave the ranks' sums as they are")
        mean, var = (np.asarray(v, dtype=float) for v in got)
        if mean.shape != (channels,) or var.shape != (channels,):
            raise Failure(f"mean and var need one value per channel, shape ({channels},); got {mean.shape} and "
                          f"{var.shape}")
        if not np.allclose(mean, whole.mean(axis=0), rtol=1e-9):
            if np.allclose(mean, np.mean([s.mean(axis=0) for s in shards], axis=0), rtol=1e-9):
                raise Failure(f"your mean is the average of the ranks' means: with {images} the ranks "
                              f"weigh differently. Add up the sums and divide by the total count.")
            raise Failure("the mean is wrong: it is the sum of every rank's sum over the sum of the counts.")
        if np.allclose(var, whole.var(axis=0, ddof=1), rtol=1e-9):
            raise Failure("that is the unbiased variance (divided by n - 1): batch norm normalises with the "
                          "biased one, divided by the count n.")
        if np.allclose(var, np.mean([s.var(axis=0) for s in shards], axis=0), rtol=1e-6):
            raise Failure("your variance averages the ranks' variances: the whole batch's also holds how far "
                          "the ranks' means lie apart. Use E[x^2] - mean^2 over the whole batch.")
        if not np.allclose(var, whole.var(axis=0), rtol=1e-9):
            raise Failure("the variance is wrong: the whole batch's E[x^2] (all squares over all counts) "
                          "minus the square of the mean.")
        return f"the whole batch's mean and biased variance from {len(sizes)} ranks of {images}."
    return verdict("combine statistics", getattr(fn, "__name__", "combine_statistics"), run)


def check_average_gradients(fn, ranks=4, batch=12, seed=32):
    """average_gradients(grads) -> one list of arrays: grads[r][i] is rank r's gradient of parameter i,
    the average over the ranks; with equal shards, the gradient of the whole batch (a multiple of ranks)."""
    def run():
        r = rng(seed)
        x, y = r.standard_normal((batch, 5)), r.integers(0, 3, batch)
        w0, b0 = r.standard_normal((3, 5)), r.standard_normal(3)

        def grads(rows):
            w, b = td.tensor(w0, requires_grad=True), td.tensor(b0, requires_grad=True)
            F.cross_entropy(F.linear(td.tensor(x[rows]), w, b), y[rows]).backward()
            return [w.grad, b.grad]

        per_rank = [grads(np.arange(k, batch, ranks)) for k in range(ranks)]
        kept = [[g.copy() for g in gs] for gs in per_rank]
        got = fn(per_rank)
        if any(not np.array_equal(a, b) for gs, ks in zip(per_rank, kept) for a, b in zip(gs, ks)):
            raise Failure("your function changed the ranks' gradients in place; return new arrays")
        got = list(got) if isinstance(got, (list, tuple)) else got
        if not isinstance(got, list) or len(got) != 2:
            raise Failure(f"return one list with a gradient per parameter (2 here: weight and bias), got "
                          f"{type(got).__name__} of length {len(got) if hasattr(got, '__len__') else '?'}")
        whole = grads(np.arange(batch))
        for name, mine, right in zip(("weight", "bias"), got, whole):
            mine = np.asarray(mine)
            if mine.shape != right.shape:
                raise Failure(f"the {name} gradient has shape {mine.shape}, the parameter {right.shape}: "
                              f"average over the ranks, parameter by parameter, not over the parameter's values")
            if np.allclose(mine, ranks * right, rtol=1e-9):
                raise Failure(f"the {name} gradient is {ranks} times too large: the ranks' gradients are summed; "
                              f"divide by the number of ranks")
            if np.allclose(mine, per_rank[0][0 if name == "weight" else 1], rtol=1e-12):
                raise Failure(f"the {name} gradient is rank 0's alone: average every rank's")
            if not np.allclose(mine, right, rtol=1e-9, atol=1e-12):
                raise Failure(f"the {name} gradient is not the whole batch's: average grads[r][i] over r")
        return f"the average over {ranks} ranks is the gradient of the whole batch of {batch}."
    return verdict("average gradients", getattr(fn, "__name__", "average_gradients"), run)


class Network:
    """N ranks on a ring: ``send(src, dst, array)`` delivers a copy to ``dst`` and counts it;
    only the right neighbour (dst = src + 1 mod N) can be reached."""

    def __init__(self, size):
        self.size, self.messages, self.values = size, 0, np.zeros(size, dtype=np.int64)

    def send(self, src, dst, array):
        if dst != (src + 1) % self.size:
            raise Failure(f"rank {src} sent to rank {dst}: on a ring each rank sends only to its right "
                          f"neighbour, rank {(src + 1) % self.size}")
        array = np.asarray(array)
        self.messages += 1
        self.values[src] += array.size
        return array.copy()


def check_ring_allreduce(fn, settings=((4, 10), (3, 7), (2, 5), (5, 23)), seed=33):
    """ring_allreduce(buffers, send) -> every rank's sum: buffers[r] is rank r's flat array; send(src, dst,
    array) returns what arrives. A ring allreduce: reduce-scatter then allgather, 2 (N - 1) messages
    per rank, each of about size / N values. settings: [(ranks N, buffer length)]."""
    def run():
        r = rng(seed)
        for size, length in settings:
            buffers = [r.standard_normal(length) for _ in range(size)]
            kept = [b.copy() for b in buffers]
            network = Network(size)
            got = fn([b.copy() for b in buffers], network.send)
            if len(got) != size:
                raise Failure(f"return one array per rank ({size}), got {len(got)}")
            total = np.sum(kept, axis=0)
            for rank, mine in enumerate(got):
                if np.shape(mine) != (length,) or not np.allclose(mine, total, rtol=1e-12, atol=1e-12):
                    raise Failure(f"N={size}: rank {rank}'s result is not the sum of every rank's buffer (after "
                                  f"reduce-scatter each rank holds ONE chunk's sum; allgather passes those around)")
            if network.messages != 2 * size * (size - 1):
                raise Failure(f"N={size}: {network.messages} messages; a ring allreduce takes 2 (N - 1) steps, in "
                              f"each of which every rank sends one message: {2 * size * (size - 1)}")
            if network.values.sum() != 2 * (size - 1) * length:
                raise Failure(f"N={size}: the ranks sent {network.values.sum()} values in all; each message "
                              f"should be one chunk of the buffer (np.array_split(buffer, N)), "
                              f"2 (N - 1) x {length} values in all")
        sizes = sorted({size for size, _ in settings})
        return (f"the sum on every rank, 2 (N - 1) messages per rank of one chunk each, for N = "
                f"{sizes[0]} to {sizes[-1]}.")
    return verdict("ring allreduce", getattr(fn, "__name__", "ring_allreduce"), run)


# the lesson's exercises: the name its stub cell defines -> its check (the grader reads this)
EXERCISES = {"combine_statistics": check_combine_statistics, "average_gradients": check_average_gradients,
             "ring_allreduce": check_ring_allreduce}
