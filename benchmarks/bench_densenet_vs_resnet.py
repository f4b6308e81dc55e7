"""DenseNet-BC-100 (k=12) against ResNet-164 (pre-activation) at CIFAR scale: the paper's
equal-cost argument (its Figs. 3 and 4), measured on this machine.

    python benchmarks/bench_densenet_vs_resnet.py                       # about 3 minutes
    python benchmarks/bench_densenet_vs_resnet.py --runs runs/cmp-densenet-bc100 runs/cmp-resnet164

For each network: parameters and multiply-adds of one 32x32 image (tinydense.summary);
a training step (forward, cross-entropy, backward, SGD with Nesterov momentum and weight
decay) at batch ``--batch`` with ``--threads`` BLAS threads, both networks in ONE child
process, alternating A B A B, median of ``--repeats`` pairs after a warm-up; and memory,
each network in a fresh child: resident memory with the model and batch built, the peak
during one step (VmHWM), and the resident memory after it. The peak is reached inside
backward, when the activations kept for backward and the gradients being made are alive
together; after the step only the weights, their gradients and the optimizer's momentum
are in use (lesson 10 counts those bytes with tracemalloc), yet the resident memory stays
near the peak because the allocator and tinydense's pool keep what was freed for the next
step: neither number read after a step is the step's peak, which only VmHWM records.
When PyTorch is installed, the same two architectures written in plain PyTorch
(benchmarks/bench_models.py) are timed in the same child and alternation, and their
peak memory read the same way: the step-time ratio of the two architectures in each
framework, side by side (lesson 10's table).
With ``--runs`` it also prints the test accuracy per epoch of two finished ``tinydense train``
runs (same schedule), from their metrics.csv.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

from bench_train import _status_mb, _timed, run_child, step_for

NETWORKS = {"DenseNet-BC-100 (k=12)": ("densenet_bc", 100), "ResNet-164 (pre-activation)": ("preact_resnet", 164)}
TORCH_MODELS = {"DenseNet-BC-100 (k=12)": "densenet_bc100", "ResNet-164 (pre-activation)": "preact_resnet164"}


def _have_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _torch_step_fn(name, threads):
    import bench_models

    return bench_models._build(TORCH_MODELS[name], "torch", threads)[0]


def _step_fn(builder, depth, batch):
    import tinydense
    from tinydense import models

    tinydense.manual_seed(0)
    return step_for(getattr(models, builder)(depth), batch)[0]


def child(spec):
    if spec["kind"] == "memory":
        step = (_torch_step_fn(spec["name"], spec["threads"]) if spec.get("torch")
                else _step_fn(spec["builder"], spec["depth"], spec["batch"]))
        before = _status_mb("VmRSS")
        step()
        return {"rss_before_mb": before, "peak_mb": _status_mb("VmHWM"), "rss_after_mb": _status_mb("VmRSS")}
    steps = {name: _step_fn(b, d, spec["batch"]) for name, (b, d) in NETWORKS.items()}
    if spec.get("torch"):
        steps.update({"PyTorch " + name: _torch_step_fn(name, spec["threads"]) for name in NETWORKS})
    for step in steps.values():
        step()                                   # warm-up
    times = {name: [] for name in steps}
    for _ in range(spec["repeats"]):
        for name, step in steps.items():
            times[name].append(_timed(step))
    return {name: {"median_s": statistics.median(t), "all_s": t} for name, t in times.items()}


def read_run(run_dir):
    with open(Path(run_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{run_dir}/metrics.csv has no epochs yet")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5, help="A B pairs of training steps (default 5)")
    p.add_argument("--runs", nargs=2, metavar=("DENSENET_RUN", "RESNET_RUN"),
                   help="two finished tinydense train runs to report test accuracy from")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    import tinydense
    from tinydense import models

    print(f"batch {args.batch}, 32x32, float32, {args.threads} threads, tinydense {tinydense.__version__}")
    costs = {}
    for name, (builder, depth) in NETWORKS.items():
        s = tinydense.summary(getattr(models, builder)(depth), (3, 32, 32))
        costs[name] = (s.total_params, s.total_macs)
    torch = _have_torch() and args.batch == 64          # bench_models builds PyTorch's at batch 64
    times = run_child({"kind": "time", "batch": args.batch, "repeats": args.repeats, "torch": torch}, args.threads,
                      script=__file__)
    memory = {name: run_child({"kind": "memory", "builder": b, "depth": d, "batch": args.batch}, args.threads,
                                script=__file__)
              for name, (b, d) in NETWORKS.items()}
    if torch:
        memory.update({"PyTorch " + name: run_child({"kind": "memory", "name": name, "torch": True, "batch": 64},
                                                    args.threads, script=__file__) for name in NETWORKS})
    print(f"{'network':<30} {'parameters':>11} {'MACs/image':>11} {'step (median)':>14} "
          f"{'MB before':>10} {'peak MB':>8} {'MB after':>9}")
    for name in times:
        params, macs = costs[name.replace("PyTorch ", "")]
        m = memory[name]
        print(f"{name:<30} {params:>11,} {macs / 1e6:>10.0f}M {times[name]['median_s']:>12.2f} s "
              f"{m['rss_before_mb']:>10.0f} {m['peak_mb']:>8.0f} {m['rss_after_mb']:>9.0f}")
    (a, b) = NETWORKS
    for prefix in ("", "PyTorch ") if torch else ("",):
        print(f"{prefix or 'tinydense '}step-time ratio {a.split()[0]} / {b.split()[0]}: "
              f"{times[prefix + a]['median_s'] / times[prefix + b]['median_s']:.2f}")
    print(f"(medians of {args.repeats} alternating pairs: {json.dumps({n: [round(t, 2) for t in v['all_s']] for n, v in times.items()})})")
    if args.runs:
        for name, run in zip(NETWORKS, args.runs):
            rows = read_run(run)
            accs = ", ".join(f"{float(r['test_acc']):.1%}" for r in rows)
            print(f"{name}: test accuracy per epoch ({run}): {accs}; final {float(rows[-1]['test_acc']):.2%}")


if __name__ == "__main__":
    main()
