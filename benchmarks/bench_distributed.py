"""Data parallelism on one machine: 2 ranks x 1 thread against 1 process x 2 threads.

    python benchmarks/bench_distributed.py                      # DenseNet-BC-100, batch 64, 5 steps
    python benchmarks/bench_distributed.py --depth 40 --steps 3

The same training step of DenseNet-BC (k=12, memory-efficient, float32, SGD with Nesterov
momentum and weight decay) on a global batch of ``--batch`` 32x32 images, measured twice,
each in fresh processes:

    1 process, 2 BLAS threads    the whole batch (the fused ops share the two cores)
    2 ranks, 1 thread each       mpiexec -n 2; each rank half of the batch, gradients averaged
                                 in buckets, batch norm synchronized (tinydense.distributed)

For each: the median step time after one warm-up step; for the ranks also the bytes one
step allreduces (gradient buckets and batch norm's statistics) and the seconds rank 0
spent in communication per step (waiting for the other rank included). Then the paper
model of tinydense.distributed.cost_model: the ring allreduce on 10 and 100 Gbit/s for
DenseNet-BC-100 and ResNet-50, with the measured one-process step as the computation.
Run it on a quiet machine: on a shared one the numbers say more about the neighbours.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_train import _batch, run_child  # noqa: E402


def child(spec):
    """One process of a measurement: prints one JSON line (rank 0 only)."""
    import numpy as np

    import tinydense as td
    import tinydense.functional as F
    from tinydense import distributed
    from tinydense.models import densenet_bc
    from tinydense.optim import SGD

    comm = distributed.init()
    td.manual_seed(0)
    model = densenet_bc(spec["depth"], memory_efficient=True)
    distributed.broadcast_state(model, comm)
    optimizer = distributed.MultiNodeOptimizer(SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                                                   weight_decay=1e-4), comm)
    x, y = _batch(np, spec["batch"])
    mine = distributed.shard(np.arange(spec["batch"]), comm.size, comm.rank)
    x, y = td.tensor(x[mine]), y[mine]
    times, sent, waited = [], [], []
    with distributed.synchronized_batch_norm(comm):
        for _ in range(spec["steps"] + 1):            # the first step warms up
            before = comm.bytes_allreduced, comm.seconds
            start = time.perf_counter()
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
            sent.append(comm.bytes_allreduced - before[0])
            waited.append(comm.seconds - before[1])
    if comm.rank == 0:
        print(json.dumps({"ranks": comm.size, "step_s": statistics.median(times[1:]),
                          "bytes_per_step": statistics.median(sent[1:]),
                          "comm_s_per_step": statistics.median(waited[1:]),
                          "gradient_bytes": optimizer.averager.bytes_per_step}))


def run_ranks(spec, ranks, threads):
    """``ranks`` processes under mpiexec with ``threads`` BLAS threads each; rank 0's JSON."""
    from tinydense.distributed import find_mpiexec
    mpiexec = find_mpiexec()
    if mpiexec is None:
        raise SystemExit("mpiexec not found: pip install -e '.[mpi]'")
    env = dict(os.environ, **{v: str(threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    proc = subprocess.run([mpiexec, "-n", str(ranks), sys.executable, __file__, "--child", json.dumps(spec)],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"mpiexec -n {ranks} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depth", type=int, default=100)
    p.add_argument("--batch", type=int, default=64, help="the global batch (default 64)")
    p.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up (default 5)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(json.loads(args.child))
    spec = {"depth": args.depth, "batch": args.batch, "steps": args.steps}
    one = run_child(spec, threads=2, script=__file__)
    two = run_ranks(spec, ranks=2, threads=1)
    print(f"DenseNet-BC-{args.depth} (k=12), global batch {args.batch}, median of {args.steps} steps")
    print(f"{'':28}{'step s':>8}{'img/s':>8}{'MB allreduced/step':>20}{'comm s/step':>13}")
    for name, r in (("1 process x 2 threads", one), ("2 ranks x 1 thread", two)):
        print(f"{name:28}{r['step_s']:8.3f}{args.batch / r['step_s']:8.1f}{r['bytes_per_step'] / 1e6:20.2f}"
              f"{r['comm_s_per_step']:13.3f}")
    print(f"(of the allreduced bytes, {two['gradient_bytes'] / 1e6:.2f} MB are the gradients; the rest batch "
          f"norm's statistics, forward and backward)")
    from tinydense.distributed import cost_model
    print("\nring allreduce on paper, the measured one-process step as the computation:")
    for line in cost_model.cost_table([("DenseNet-BC-100", cost_model.DENSENET_BC_100_BYTES, one["step_s"]),
                                       ("ResNet-50", cost_model.RESNET50_BYTES, one["step_s"])]):
        print(line)
    return {"one_process": one, "two_ranks": two}


if __name__ == "__main__":
    main()
