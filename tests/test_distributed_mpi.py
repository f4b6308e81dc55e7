"""Data parallelism across real processes: ``mpiexec -n 2`` runs this file as its worker.

In float64, two ranks with synchronized batch norm, each with half of a global batch of B,
give the same weights, running statistics and optimizer state as one process with batch B
after several SGD steps (momentum, Nesterov, weight decay), to 1e-10: DenseNet-BC
(memory-efficient and textbook) and a ResNet. Without synchronization each rank normalises
with its own half's statistics; the reference for that is computed here by hand, in one
process: one model per rank sharing the weights, each run on its half, the two gradients
averaged. A rank that raises stops the other with a message naming it, within the timeout.
"""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tinydense as td
import tinydense.functional as F
from tinydense import distributed
from tinydense.models import DenseNet, ResNet

MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
RANKS, BATCH, STEPS, SIZE, CLASSES = 2, 6, 3, 8, 5
TOL = dict(rtol=1e-10, atol=1e-10)

MODELS = {
    "densenet-bc-efficient": lambda: DenseNet(growth_rate=4, block_config=(3, 2), num_init_features=6, compression=0.5,
                                              num_classes=CLASSES, stem="cifar", memory_efficient=True),
    "densenet-bc": lambda: DenseNet(growth_rate=4, block_config=(3, 2), num_init_features=6, compression=0.5,
                                    num_classes=CLASSES, stem="cifar", memory_efficient=False),
    "resnet": lambda: ResNet("basic", (1, 1, 1, 1), num_classes=CLASSES, widths=(4, 8, 8, 8), stem="cifar"),
}


def build(kind, seed=0):
    td.manual_seed(seed)
    return MODELS[kind]().to(dtype=np.float64)


def data():
    """STEPS global batches of BATCH images and labels, the same in every process."""
    rng = np.random.default_rng(7)
    return (rng.standard_normal((STEPS * BATCH, 3, SIZE, SIZE)) * 2 + 0.5, rng.integers(0, CLASSES, STEPS * BATCH))


def optimizer(model):
    return td.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)


def results(model, opt):
    """Everything that must agree: parameters, buffers (running statistics, batch counters), momentum."""
    out = {f"state.{k}": np.asarray(v) for k, v in model.state_dict().items()}
    buffers = opt.buffers                                  # each parameter's momentum, in order
    assert all(b is not None for b in buffers), "every parameter has a momentum buffer after a step"
    out.update({f"opt.momentum.{i}": b for i, b in enumerate(buffers)})
    return out


def step(model, opt, x, y, averager=None):
    opt.zero_grad()
    loss = F.cross_entropy(model(td.tensor(x)), y)
    loss.backward()
    if averager is not None:
        averager.average()
    opt.step()
    return loss.item()


# ---- the worker: python tests/test_distributed_mpi.py SCENARIO OUT -----------------------------

def worker_models(out):
    comm = distributed.init()
    images, labels = data()
    for kind in MODELS:
        for sync in (True, False):
            model = build(kind, seed=comm.rank)             # different on each rank until the broadcast
            distributed.broadcast_state(model, comm)
            model.train()
            opt = optimizer(model)
            averager = distributed.GradientAverager(model.parameters(), comm, bucket_bytes=4096)
            for s in range(STEPS):
                mine = s * BATCH + distributed.shard(np.arange(BATCH), comm.size, comm.rank)
                if sync:
                    with distributed.synchronized_batch_norm(comm):
                        step(model, opt, images[mine], labels[mine], averager)
                else:
                    step(model, opt, images[mine], labels[mine], averager)
            np.savez(Path(out) / f"{kind}-{'sync' if sync else 'local'}-rank{comm.rank}.npz", **results(model, opt),
                     buckets=len(averager.buckets))


def worker_fail(out):
    comm = distributed.init()
    model = build("resnet")
    averager = distributed.GradientAverager(model.parameters(), comm)
    images, labels = data()
    opt = optimizer(model)
    for s in range(STEPS):
        if comm.rank == 1 and s == 1:
            raise ValueError("a deliberate failure in step 1")
        mine = s * BATCH + distributed.shard(np.arange(BATCH), comm.size, comm.rank)
        step(model, opt, images[mine], labels[mine], averager)
    Path(out, f"finished-rank{comm.rank}").write_text("the other rank did not stop this one\n")


def run_workers(scenario, out, timeout=240):
    assert MPIEXEC, "mpiexec not found: pip install -e '.[mpi]' (mpi4py and mpich are in the dev extra)"
    start = time.monotonic()
    proc = subprocess.run([MPIEXEC, "-n", str(RANKS), sys.executable, __file__, scenario, str(out)],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"})   # the fused ops' threads too
    return proc, time.monotonic() - start


# ---- the references, in this process -------------------------------------------------------------

def one_process(kind):
    """One process, the whole batch of BATCH images per step."""
    model = build(kind).train()
    opt = optimizer(model)
    images, labels = data()
    for s in range(STEPS):
        step(model, opt, images[s * BATCH:(s + 1) * BATCH], labels[s * BATCH:(s + 1) * BATCH])
    return results(model, opt)


def per_rank_statistics(kind, rank):
    """By hand: each rank's model normalises with its own half; the weights move by the average of
    the two halves' gradients. Returns rank ``rank``'s results (its own running statistics)."""
    models = [build(kind).train() for _ in range(RANKS)]
    opt = optimizer(models[0])
    images, labels = data()
    for s in range(STEPS):
        grads = []
        for r, model in enumerate(models):
            mine = s * BATCH + np.arange(r, BATCH, RANKS)
            model.zero_grad()
            F.cross_entropy(model(td.tensor(images[mine])), labels[mine]).backward()
            grads.append([p.grad for p in model.parameters()])
        for p, *gs in zip(models[0].parameters(), *grads):
            p.grad = sum(gs) / RANKS
        opt.step()
        for model in models[1:]:                           # the same weights on every rank
            for p, p0 in zip(model.parameters(), models[0].parameters()):
                p.data[...] = p0.data
    model = models[rank]
    model_opt = optimizer(model)
    for p, p0 in zip(model.parameters(), models[0].parameters()):   # the shared momentum
        model_opt.state[p] = opt.state[p0]
    return results(model, model_opt)


@pytest.fixture(scope="module")
def model_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("mpi")
    proc, seconds = run_workers("models", out)
    assert proc.returncode == 0, f"mpiexec failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return out


def load(out, kind, mode, rank):
    with np.load(out / f"{kind}-{mode}-rank{rank}.npz") as f:
        return {k: f[k] for k in f.files}


def assert_same(got, want):
    assert got.keys() - {"buckets"} == want.keys()
    for key in want:
        np.testing.assert_allclose(got[key], want[key], **TOL, err_msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(MODELS))
def test_two_ranks_with_synchronized_batch_norm_equal_one_process(model_runs, kind):
    want = one_process(kind)
    for rank in range(RANKS):
        got = load(model_runs, kind, "sync", rank)
        assert got["buckets"] > 1                  # gradients in several buckets, not one call per parameter
        assert_same(got, want)


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(MODELS))
def test_without_synchronization_each_rank_normalises_with_its_own_half(model_runs, kind):
    for rank in range(RANKS):
        assert_same(load(model_runs, kind, "local", rank), per_rank_statistics(kind, rank))
    # and that differs from one process (so the equality above says something)
    local, whole = load(model_runs, kind, "local", 0), one_process(kind)
    assert max(np.abs(local[k] - whole[k]).max() for k in whole if "running_mean" in k) > 1e-3


@pytest.mark.slow
def test_a_failing_rank_stops_the_other_and_is_named(tmp_path):
    proc, seconds = run_workers("fail", tmp_path, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "rank 1 of 2: failed with ValueError: a deliberate failure in step 1" in output, output
    assert not list(tmp_path.glob("finished-rank*")), output     # rank 0 did not run on alone


if __name__ == "__main__":
    {"models": worker_models, "fail": worker_fail}[sys.argv[1]](sys.argv[2])
