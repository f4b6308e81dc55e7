"""tinydense.distributed in one process: ranks simulated by threads around a shared allreduce.

The sampler's shards (disjoint, covering, the same shuffle; padding and dropping), batch norm
synchronized over simulated ranks against one big batch and, unsynchronized, against each
shard's statistics computed by hand; the stable combination of the shards' variances; the
gradient buckets (bounded size, averages, missing gradients); the broadcast of a model; the
communicators' checks and the ring-allreduce cost model against hand-computed values.
(test_distributed_mpi.py runs real processes with mpiexec; test_distributed_nccl.py the NCCL engine.)
"""
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinydense as td
import tinydense.functional as F
from tinydense import backend, distributed
from tinydense.distributed import cost_model
from tinydense.distributed.communicator import Communicator
from tinydense.ops import stats_reducer

TOL = dict(rtol=1e-10, atol=1e-10)


class ThreadWorld:
    """N ranks as threads of this process; a collective meets at a barrier (30 s, then it fails)."""

    def __init__(self, size):
        self.size, self.barrier, self.slots = size, threading.Barrier(size, timeout=30), [None] * size
        self.local = threading.local()


class ThreadComm(Communicator):
    engine = "threads"

    def __init__(self, world, rank):
        super().__init__(world.size, rank)
        self.world = world

    def _exchange(self, buffer):
        w = self.world
        w.slots[self.rank] = buffer.copy()
        w.barrier.wait()
        slots = list(w.slots)
        w.barrier.wait()
        return slots

    def _allreduce(self, buffer):
        buffer[...] = sum(self._exchange(buffer))          # in rank order: the same on every rank

    def _broadcast(self, buffer, root):
        buffer[...] = self._exchange(buffer)[root]


def on_threads(size, make_comm, task, barriers):
    """task(make_comm(rank)) on ``size`` threads, one a rank; their results in rank order. The
    first error aborts ``barriers`` (no thread waits for a dead one) and is raised again."""
    results, errors = [None] * size, []

    def body(rank):
        try:
            results[rank] = task(make_comm(rank))
        except BaseException as error:
            errors.append(error)
            for barrier in barriers:
                barrier.abort()

    backend.get_array_module(np.zeros(1))   # CuPy's first call imports cupyx: not in several threads at once
    threads = [threading.Thread(target=body, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def run_ranks(size, task, synchronized=True):
    """task(comm) on ``size`` threads, each a rank, batch norm synchronized among them or not;
    their results in rank order (errors re-raised)."""
    world = ThreadWorld(size)

    def make_comm(rank):
        world.local.comm = ThreadComm(world, rank)
        return world.local.comm

    previous = stats_reducer.set_allreduce((lambda a: world.local.comm.allreduce_small(a)) if synchronized else None,
                                           size)
    try:
        return on_threads(size, make_comm, task, [world.barrier])
    finally:
        stats_reducer.set_allreduce(*previous)


# ---- the sampler ---------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 60), size=st.integers(1, 7), seed=st.integers(0, 99), epoch=st.integers(0, 3),
       drop_last=st.booleans())
def test_shards_are_disjoint_cover_the_epoch_and_pad_or_drop_as_stated(n, size, seed, epoch, drop_last):
    if drop_last and n < size:
        with pytest.raises(ValueError, match=f"{n} images cannot be shared among {size} ranks"):
            distributed.DistributedSampler(n, size, 0, seed=seed, drop_last=drop_last)
        return
    samplers = [distributed.DistributedSampler(n, size, r, seed=seed, drop_last=drop_last) for r in range(size)]
    order = np.random.default_rng([seed, epoch]).permutation(n)
    assert all((s.order(epoch) == order).all() for s in samplers)          # the same shuffle on every rank
    shards = [s.indices(epoch) for s in samplers]
    lengths = {len(s) for s in samplers} | {len(s) for s in shards}
    if drop_last:   # the order's last n mod N entries are left out
        assert lengths == {n // size}
        assert sorted(np.concatenate(shards)) == sorted(order[:n - n % size])
    else:           # padded with the order's first -n mod N entries (over again, if n < N)
        assert lengths == {-(-n // size)}
        everything = np.concatenate(shards)
        padding = np.concatenate([order] * size)[:-n % size]
        assert sorted(everything) == sorted(np.concatenate([order, padding]))
        assert set(everything) == set(range(n))


@given(size=st.integers(1, 4), local=st.integers(1, 5), batches=st.integers(1, 4))
def test_interleaved_shards_split_the_one_process_batches(size, local, batches):
    """Rank r's batch i together with the other ranks' batch i is the one-process batch i of size*local."""
    n = size * local * batches
    order = np.random.default_rng(size).permutation(n)
    shards = [distributed.shard(order, size, r) for r in range(size)]
    for i in range(batches):
        together = np.concatenate([s[i * local:(i + 1) * local] for s in shards])
        assert sorted(together) == sorted(order[i * size * local:(i + 1) * size * local])


def test_sampler_refuses_bad_arguments():
    with pytest.raises(ValueError, match="rank must lie in 0..1 for a world of size 2, got 2"):
        distributed.DistributedSampler(10, 2, 2)
    with pytest.raises(ValueError, match="world size must be a positive integer, got 0"):
        distributed.shard(np.arange(3), 0, 0)
    with pytest.raises(ValueError, match="at least one image, got n=0"):
        distributed.DistributedSampler(0, 1, 0)
    assert (distributed.DistributedSampler(5, 2, 1, shuffle=False).indices(3) == [1, 3, 0]).all()


# ---- synchronized batch norm -----------------------------------------------------------------

def batch_norm_step(x, g, weight, bias, running):
    """Training batch norm on x; returns y, dL/dx for dL/dy = g, dweight, dbias, running statistics."""
    xt, w, b = td.tensor(x, requires_grad=True), td.tensor(weight, requires_grad=True), td.tensor(bias, requires_grad=True)
    rm, rv = running[0].copy(), running[1].copy()
    y = F.batch_norm(xt, rm, rv, w, b, training=True, momentum=0.3)
    (y * td.tensor(g)).sum().backward()
    return y.data, xt.grad, w.grad, b.grad, rm, rv


def by_hand(x, g, weight, bias, running, momentum=0.3, eps=1e-5):
    """Batch norm's forward and backward written out with NumPy over (N, H, W) per channel."""
    axes = (0, 2, 3)
    M = x.size // x.shape[1]
    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    xhat = (x - mean) / np.sqrt(var + eps)
    w, b = weight.reshape(1, -1, 1, 1), bias.reshape(1, -1, 1, 1)
    dxhat = g * w
    dx = (dxhat - dxhat.mean(axis=axes, keepdims=True) - xhat * (dxhat * xhat).mean(axis=axes, keepdims=True)) \
        / np.sqrt(var + eps)
    rm = (1 - momentum) * running[0] + momentum * mean.ravel()
    rv = (1 - momentum) * running[1] + momentum * var.ravel() * M / (M - 1)
    return xhat * w + b, dx, (g * xhat).sum(axis=axes), g.sum(axis=axes), rm, rv


@settings(max_examples=15, deadline=None)
@given(size=st.integers(2, 3), per_rank=st.integers(1, 3), seed=st.integers(0, 999), offset=st.sampled_from([0.0, 1e4]))
def test_synchronized_batch_norm_over_simulated_ranks_is_one_big_batch(size, per_rank, seed, offset):
    rng = np.random.default_rng(seed)
    B, C = size * per_rank, 3
    x = rng.standard_normal((B, C, 3, 2)) * rng.uniform(0.5, 3, (1, C, 1, 1)) + offset
    g = rng.standard_normal(x.shape)
    weight, bias = rng.uniform(0.5, 2, C), rng.standard_normal(C)
    running = (rng.standard_normal(C), rng.uniform(0.5, 2, C))
    whole = by_hand(x, g, weight, bias, running)
    parts = run_ranks(size, lambda comm: batch_norm_step(x[comm.rank::size], g[comm.rank::size], weight, bias, running))
    for r, (y, dx, dw, db, rm, rv) in enumerate(parts):
        np.testing.assert_allclose(y, whole[0][r::size], **TOL)
        np.testing.assert_allclose(dx, whole[1][r::size], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(rm, whole[4], **TOL)
        np.testing.assert_allclose(rv, whole[5], **TOL)
    # dweight and dbias are each shard's own sums: they add up to the whole batch's
    np.testing.assert_allclose(sum(p[2] for p in parts), whole[2], **TOL)
    np.testing.assert_allclose(sum(p[3] for p in parts), whole[3], **TOL)


def test_unsynchronized_batch_norm_uses_each_shards_own_statistics():
    rng = np.random.default_rng(0)
    x, g = rng.standard_normal((6, 2, 2, 2)) + np.arange(6).reshape(6, 1, 1, 1), rng.standard_normal((6, 2, 2, 2))
    weight, bias, running = np.array([1.5, 0.7]), np.array([0.1, -0.2]), (np.zeros(2), np.ones(2))
    parts = run_ranks(2, lambda comm: batch_norm_step(x[comm.rank::2], g[comm.rank::2], weight, bias, running),
                      synchronized=False)
    for r, got in enumerate(parts):
        for a, b in zip(got, by_hand(x[r::2], g[r::2], weight, bias, running)):
            np.testing.assert_allclose(a, b, **TOL)
        assert np.abs(got[0] - by_hand(x, g, weight, bias, running)[0][r::2]).max() > 0.1   # not the whole batch's


def test_a_world_of_one_installs_no_reducer():
    with distributed.synchronized_batch_norm(distributed.SingleProcess()):
        assert not stats_reducer.synchronized()
    with distributed.synchronized_batch_norm(ThreadComm(ThreadWorld(2), 0)):
        assert stats_reducer.synchronized()
    assert not stats_reducer.synchronized()


@settings(max_examples=30, deadline=None)
@given(ranks=st.integers(2, 4), n=st.integers(1, 6), seed=st.integers(0, 999), offset=st.sampled_from([0.0, 1e4, -3e6]))
def test_global_statistics_combine_shards_stably(ranks, n, seed, offset):
    rng = np.random.default_rng(seed)
    shards = [rng.standard_normal((n, 3)) * 0.01 + offset + rng.standard_normal(3) * 0.01 for _ in range(ranks)]
    whole = np.concatenate(shards)

    def task(comm):
        s = shards[comm.rank]
        return stats_reducer.global_statistics(len(s), s.mean(axis=0), s.var(axis=0))

    for count, mean, var in run_ranks(ranks, task):
        assert count == len(whole)
        np.testing.assert_allclose(mean, whole.mean(axis=0), rtol=1e-14, atol=1e-15 * np.abs(whole).max())
        np.testing.assert_allclose(var, whole.var(axis=0), rtol=1e-6)   # 1e4 + 0.01 noise: raw squares would lose it


def test_unequal_shards_are_refused_on_every_rank():
    def task(comm):
        with pytest.raises(ValueError, match=f"same batch size on every process: {comm.rank + 2} values per "
                                             "channel here, 5 over 2 processes"):
            stats_reducer.global_statistics(comm.rank + 2, np.zeros(2), np.ones(2))
        return stats_reducer.global_count(3)

    assert run_ranks(2, task) == [6, 6]


def test_global_sums_keep_each_dtype():
    def task(comm):
        return stats_reducer.global_sums(np.full(2, comm.rank + 1, np.float32), np.arange(2.0) * comm.rank)

    for a, b in run_ranks(3, task):
        assert a.dtype == np.float32 and (a == 6).all() and (b == [0, 3]).all()


# ---- gradients and the model ---------------------------------------------------------------------

def small_model():
    td.manual_seed(1)
    return td.nn.Sequential(td.nn.Conv2d(3, 4, 3), td.nn.BatchNorm2d(4), td.nn.Flatten(), td.nn.Linear(16, 2)).double()


def test_gradients_are_averaged_in_bounded_buckets():
    model = small_model()
    params = list(model.parameters())
    bucket_bytes = 300
    rng = np.random.default_rng(0)
    grads = [[rng.standard_normal(p.shape) for p in params] for _ in range(3)]
    grads[1][2] = None                        # rank 1 has no gradient for one parameter: counts as zero

    def task(comm):
        averager = distributed.GradientAverager(params if comm.rank == 0 else small_model().parameters(), comm,
                                                bucket_bytes=bucket_bytes)
        for p, g in zip(averager.params, grads[comm.rank]):
            p.grad = None if g is None else g.copy()
        averager.average()
        return averager, [p.grad for p in averager.params]

    results = run_ranks(3, task)
    averager = results[0][0]
    assert 1 < len(averager.buckets) < len(params)
    for bucket in averager.buckets:
        assert len(bucket) == 1 or sum(p.data.nbytes for p in bucket) <= bucket_bytes
    assert [p for b in averager.buckets for p in b] == params
    assert averager.bytes_per_step == 8 * (sum(p.size for p in params) + len(params))
    want = [sum(np.zeros(p.shape) if g[i] is None else g[i] for g in grads) / 3 for i, p in enumerate(params)]
    for _, got in results:
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-15)


def test_a_parameter_no_rank_used_keeps_no_gradient():
    def task(comm):
        model = small_model()
        params = list(model.parameters())
        for p in params[1:]:
            p.grad = np.ones(p.shape)
        distributed.GradientAverager(params, comm).average()
        return [p.grad for p in params]

    for grads in run_ranks(2, task):
        assert grads[0] is None and all((g == 1).all() for g in grads[1:])


def test_broadcast_state_gives_every_rank_rank_zeros_model():
    def task(comm):
        td.manual_seed(comm.rank)
        model = td.nn.Sequential(td.nn.Conv2d(2, 3, 1), td.nn.BatchNorm2d(3)).double()
        model[1].running_mean[...] = comm.rank + 5
        model[1].num_batches_tracked[...] = comm.rank + 2            # a 0-d buffer
        before = {k: np.array(v) for k, v in model.state_dict().items()}
        distributed.broadcast_state(model, comm)
        return before, {k: np.array(v) for k, v in model.state_dict().items()}

    (zero, _), *others = run_ranks(3, task)
    for before, after in others:
        assert any((before[k] != zero[k]).any() for k in zero)
        for k in zero:
            np.testing.assert_array_equal(after[k], zero[k])


def test_single_process_averager_and_broadcast_change_nothing():
    model = small_model()
    for p in model.parameters():
        p.grad = np.full(p.shape, 2.0)
    comm = distributed.create_communicator("single")
    distributed.broadcast_state(model, comm)
    distributed.GradientAverager(model.parameters(), comm).average()
    assert (comm.size, comm.rank) == (1, 0) and all((p.grad == 2).all() for p in model.parameters())


# ---- communicators -------------------------------------------------------------------------------

def test_communicator_checks_its_buffers_and_engine_names():
    comm = distributed.SingleProcess()
    with pytest.raises(ValueError, match=r"allreduce needs a flat contiguous buffer, got shape \(2, 2\)"):
        comm.allreduce(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="broadcast needs a flat contiguous buffer"):
        comm.broadcast(np.zeros(6)[::2])
    with pytest.raises(ValueError, match="root 1 is not a rank of a world of size 1"):
        comm.broadcast(np.zeros(2), root=1)
    with pytest.raises(ValueError, match="unknown communicator engine 'gloo'"):
        distributed.create_communicator("gloo")
    assert comm.allreduce_small(np.array([[1, 2]])).dtype == np.float64
    assert comm.bytes_allreduced == 16


def test_launcher_environment():
    from tinydense.distributed.communicator import launched_size, local_rank
    assert launched_size({}) == 1 and local_rank({}) == 0
    assert launched_size({"PMI_SIZE": "4"}) == 4 and launched_size({"OMPI_COMM_WORLD_SIZE": "3"}) == 3
    assert local_rank({"MPI_LOCALRANKID": "1"}) == 1 and local_rank({"OMPI_COMM_WORLD_LOCAL_RANK": "2"}) == 2


def test_single_process_abort_names_the_rank(capsys):
    with pytest.raises(SystemExit) as exit_info:
        distributed.SingleProcess().abort("something broke", code=3)
    assert exit_info.value.code == 3
    assert "rank 0 of 1: something broke" in capsys.readouterr().err


# ---- the cost model ------------------------------------------------------------------------------

def test_ring_allreduce_cost_by_hand():
    # 2 ranks, 1e9 bytes, 8 Gbit/s = 1e9 bytes/s: each sends 2 (2-1)/2 = 1 buffer: one second
    assert cost_model.ring_allreduce_seconds(1e9, 2, 8) == pytest.approx(1.0)
    assert cost_model.ring_allreduce_seconds(1e9, 1, 8) == 0
    assert cost_model.bytes_sent_per_rank(100, 4) == 150
    # DenseNet-BC-100, 3.08 MB on 10 Gbit/s, N = 4: 1.5 x 3,076,648 x 8 / 1e10 s
    assert cost_model.ring_allreduce_seconds(cost_model.DENSENET_BC_100_BYTES, 4, 10) == pytest.approx(3.69e-3, rel=1e-3)
    with pytest.raises(ValueError, match="need ranks >= 1"):
        cost_model.ring_allreduce_seconds(1, 0, 10)


@given(step=st.floats(1e-3, 100), nbytes=st.floats(1e5, 1e9), gbit=st.sampled_from([1, 10, 100]))
def test_crossover_is_where_communication_first_reaches_computation(step, nbytes, gbit):
    n = cost_model.crossover_ranks(step, nbytes, gbit)
    assert n >= 2
    assert cost_model.ring_allreduce_seconds(nbytes, n, gbit) >= step / n * (1 - 1e-12)
    if n > 2:
        assert cost_model.ring_allreduce_seconds(nbytes, n - 1, gbit) < step / (n - 1)


def test_cost_table_rows():
    lines = cost_model.cost_table([("ResNet-50", cost_model.RESNET50_BYTES, 2.3)], bandwidths=(10,), ranks=(2, 16))
    assert lines[0].startswith("| model | link | N=2: comm / compute | N=16")
    # N=2: 1 x 102.2 MB at 1.25 GB/s = 81.8 ms against 1150 ms; crossover 1 + 2.3 x 1.25e9 / (2 x 102.2e6) = 15.06
    assert lines[2] == "| ResNet-50 (102.2 MB) | 10 Gbit/s | 81.8 / 1150 ms | 153.3 / 144 ms | N = 16 |"
