"""Training-step time and peak memory of DenseNet-BC (k=12) in tinydense, against PyTorch if installed.

    python benchmarks/bench_train.py                         # the whole suite (several minutes)
    python benchmarks/bench_train.py --depths 100 --no-ops   # one depth, no per-op table

Batch 64 of 32x32 images, float32, ``--threads`` BLAS / PyTorch threads (default 2).
A training step is forward, cross-entropy, backward and an SGD update (lr 0.1,
Nesterov momentum 0.9, weight decay 1e-4). Every measurement runs in a fresh
child process (this script with ``--child``), so one cannot inherit another's
memory or warm allocator:

1. memory, per depth and mode (``memory_efficient`` on / off): the child builds
   the model and the batch, notes its resident memory (VmRSS), runs ONE step and
   notes the peak (VmHWM). "step MB" is the difference: what the step itself needs.
   Plain mode at depths above ``--plain-max-depth`` would need more memory than
   a shared machine should give; there the child uses batch 16 and the step's
   memory is scaled by 64/16 (activations are proportional to the batch), marked "x4".
2. time, per depth and mode: median of ``--repeats`` steps after one warm-up step.
3. PyTorch (``--compare-depths``, default 40 and 100): the same architecture built
   by hand in PyTorch (torchvision's layout: inplace ReLU, concatenation in every
   layer), timed in the SAME child, alternating A B A B, so both see the same
   machine load; reported as the ratio of medians, for training steps and then
   for eval forwards (no_grad, eval mode: images/s). Done twice: with glibc's
   allocator as shipped and with ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736``
   (large blocks are then kept instead of being returned to the OS after every
   step). PyTorch's peak memory is measured like 1.
4. eval throughput (images/s) of a no_grad, eval-mode forward, both modes.
5. where the time goes: the memory-efficient step at ``--profile-depth`` (default
   100): the matrix products and ops/conv.py's convolutions timed, and cProfile's
   self time per function; and, unless ``--no-ops``, the per-op convolution table
   of benchmarks/bench_ops.py.

Prints tables and writes benchmarks/results/bench_train-<time>.json and a PNG
(step memory vs depth, both modes). PyTorch stays optional: without it the
comparison is skipped.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TUNED_MALLOC = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736"}


# --- child side: runs in a fresh process, prints one JSON line -------------------------

def _status_mb(field):
    """VmRSS (now) or VmHWM (peak) of this process, in MB (Linux); imported when first
    called, so that the child sets its threads before numpy is imported."""
    from tinydense.tools.train_compare import process_memory_mb
    return process_memory_mb(field)


def _batch(np, batch, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, 3, 32, 32), dtype=np.float32), rng.integers(0, 10, batch)


def _tinydense_step_fn(depth, efficient, batch):
    import tinydense
    from tinydense.models import densenet_bc

    tinydense.manual_seed(0)
    model = densenet_bc(depth, memory_efficient=efficient)
    step, x = step_for(model, batch)
    return step, _evaluator(model, x, tinydense.no_grad)


def step_for(model, batch):
    """(step, x): one training step of ``model`` on a fixed random batch (forward, cross-entropy,
    backward, SGD with Nesterov momentum and weight decay), and that batch."""
    import numpy as np

    import tinydense
    import tinydense.functional as F
    from tinydense.optim import SGD

    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    x_np, y_np = _batch(np, batch)
    x = tinydense.tensor(x_np)

    def step():
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y_np)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step, x


def _evaluator(model, x, no_grad):
    """A no_grad, eval-mode forward of ``model`` on ``x`` (a tinydense or PyTorch model)."""
    def evaluate():
        model.eval()
        with no_grad():
            model(x)
        model.train()
    return evaluate


def torch_densenet_bc(torch, depth, growth_rate=12, num_classes=10):
    """DenseNet-BC for CIFAR in plain PyTorch, laid out as torchvision's DenseNet
    (stem 3x3 conv to 2k channels, bottleneck layers, compression 0.5)."""
    nn = torch.nn
    k, n = growth_rate, (depth - 4) // 6

    class Layer(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.norm1, self.relu1 = nn.BatchNorm2d(c), nn.ReLU(inplace=True)
            self.conv1 = nn.Conv2d(c, 4 * k, 1, bias=False)
            self.norm2, self.relu2 = nn.BatchNorm2d(4 * k), nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(4 * k, k, 3, padding=1, bias=False)

        def forward(self, features):
            out = self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))
            return self.conv2(self.relu2(self.norm2(out)))

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.layers = nn.ModuleList(Layer(c + i * k) for i in range(n))

        def forward(self, x):
            features = [x]
            for layer in self.layers:
                features.append(layer(features))
            return torch.cat(features, 1)

    def transition(c):
        return nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.Conv2d(c, c // 2, 1, bias=False),
                             nn.AvgPool2d(2))

    c = 2 * k
    layers = [nn.Conv2d(3, c, 3, padding=1, bias=False)]
    for i in range(3):
        layers.append(Block(c))
        c += n * k
        if i < 2:
            layers.append(transition(c))
            c //= 2
    layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
               nn.Linear(c, num_classes)]
    return nn.Sequential(*layers)


def _torch_step_fn(depth, batch, threads):
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torch_densenet_bc(torch, depth)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    x_np, y_np = _batch(np, batch)
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)

    def step():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step, _evaluator(model, x, torch.no_grad)


def _timed(f):
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def child(spec):
    """Run one measurement described by ``spec`` (a dict) and return its result."""
    kind, depth, batch, repeats = spec["kind"], spec["depth"], spec["batch"], spec.get("repeats", 0)
    if kind == "memory":            # model and batch built -> one step -> peak
        if spec["framework"] == "torch":
            step = _torch_step_fn(depth, batch, spec["threads"])[0]
        else:
            step, _ = _tinydense_step_fn(depth, spec["efficient"], batch)
        before = _status_mb("VmRSS")
        step()
        return {"rss_before_mb": before, "peak_mb": _status_mb("VmHWM")}
    if kind == "time":
        step, evaluate = _tinydense_step_fn(depth, spec["efficient"], batch)
        step()
        times = [_timed(step) for _ in range(repeats)]
        evaluate()
        evals = [_timed(evaluate) for _ in range(max(3, repeats // 2))]
        return {"step_s": statistics.median(times), "all_steps_s": times,
                "eval_images_per_s": batch / statistics.median(evals)}
    if kind == "compare":           # A B A B in one process: training steps, then eval forwards
        fns = {"tinydense": _tinydense_step_fn(depth, True, batch), "torch": _torch_step_fn(depth, batch, spec["threads"])}
        result = {}
        for what, index in (("step", 0), ("eval", 1)):
            for pair in fns.values():
                pair[index]()       # warm-up
            times = {name: [] for name in fns}
            for _ in range(repeats):
                for name, pair in fns.items():
                    times[name].append(_timed(pair[index]))
            med = {name: statistics.median(t) for name, t in times.items()}
            result.update({f"tinydense_{what}_s": med["tinydense"], f"torch_{what}_s": med["torch"],
                           f"{what}_ratio": med["tinydense"] / med["torch"], f"all_{what}s_s": times})
        result["tinydense_eval_images_per_s"] = batch / result["tinydense_eval_s"]
        result["torch_eval_images_per_s"] = batch / result["torch_eval_s"]
        return result
    if kind == "profile":           # cProfile one step, summed per op
        import cProfile
        import pstats

        import numpy as np

        from tinydense.ops import conv

        step, _ = _tinydense_step_fn(depth, True, batch)
        step()
        profiler = cProfile.Profile()
        total = _timed(lambda: profiler.runcall(step))
        # every xp.matmul call (the convolutions' matrix products) and every call of ops/conv.py's
        # Conv2d (the 3x3 convolutions, matrix products included), timed; summed over the threads
        spent = {"matmul": [], "conv.py": []}

        def timed(f, key):
            def g(*args, **kwargs):
                start = time.perf_counter()
                try:
                    return f(*args, **kwargs)
                finally:
                    spent[key].append(time.perf_counter() - start)
            return g

        originals = np.matmul, conv.Conv2d.forward, conv.Conv2d.backward
        np.matmul = timed(np.matmul, "matmul")
        conv.Conv2d.forward, conv.Conv2d.backward = (timed(f, "conv.py") for f in originals[1:])
        try:
            step_s = _timed(step)
        finally:
            np.matmul, conv.Conv2d.forward, conv.Conv2d.backward = originals
        return {"profiled_step_s": total, "hot_spots": _hot_spots(pstats.Stats(profiler)), "step_s": step_s,
                "matmul_s": sum(spent["matmul"]), "matmul_calls": len(spent["matmul"]),
                "conv_py_s": sum(spent["conv.py"]), "conv_py_calls": len(spent["conv.py"])}
    raise ValueError(f"unknown child kind {kind!r}")


def _hot_spots(stats, n=14):
    """The functions with the most self time. A NumPy call (a matrix product, an
    elementwise loop) counts for the Python function that makes it."""
    rows = []
    for (filename, line, function), (_, calls, tottime, _, _) in stats.stats.items():
        where = f"{Path(filename).parent.name}/{Path(filename).name}:{line}" if filename != "~" else "builtin"
        rows.append({"function": function, "where": where, "calls": calls, "self_s": tottime})
    return sorted(rows, key=lambda r: -r["self_s"])[:n]


# --- parent side -----------------------------------------------------------------------

def run_child(spec, threads, env_extra=None, script=__file__):
    """Run ``script --child SPEC`` in a fresh process with ``threads`` BLAS threads; its last line's JSON."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env.update(env_extra or {})
    spec = dict(spec, threads=threads)
    proc = subprocess.run([sys.executable, script, "--child", json.dumps(spec)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"child {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depths", type=int, nargs="+", default=[40, 100, 190])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5, help="timed steps per configuration (default 5)")
    p.add_argument("--compare-depths", type=int, nargs="+", default=[40, 100],
                   help="depths of the PyTorch A/B comparison (default 40 100)")
    p.add_argument("--compare-repeats", type=int, default=7, help="A B pairs in the PyTorch comparison")
    p.add_argument("--profile-depth", type=int, default=100, help="depth of the where-the-time-goes profile")
    p.add_argument("--plain-max-depth", type=int, default=100,
                   help="deeper plain-mode runs use batch 16, memory scaled x4 (default 100)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--no-ops", action="store_true", help="skip benchmarks/bench_ops.py")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    try:
        import torch  # noqa: F401
        have_torch = not args.no_torch
    except ImportError:
        have_torch = False
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or HERE / "results" / f"bench_train-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"command": " ".join(["python benchmarks/bench_train.py"] + list(argv or sys.argv[1:])),
              "batch": args.batch, "compare_depths": args.compare_depths, "threads": args.threads,
              "repeats": args.repeats,
              "python": platform.python_version(), "cpu_count": os.cpu_count(),
              "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "load_average_start": os.getloadavg(), "runs": []}

    print(f"DenseNet-BC k=12, batch {args.batch}, 32x32, float32, {args.threads} threads; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    print(f"{'depth':>5} {'mode':>9} | {'step s':>7} | {'eval img/s':>10} | {'peak MB':>8} | {'step MB':>9}")
    print("-" * 64)
    for depth in args.depths:
        for efficient in (True, False):
            batch, scale = args.batch, 1
            if not efficient and depth > args.plain_max_depth:
                batch, scale = 16, args.batch // 16
            mem = run_child({"kind": "memory", "framework": "tinydense", "depth": depth, "batch": batch,
                             "efficient": efficient}, args.threads)
            run = {"depth": depth, "memory_efficient": efficient, "memory_batch": batch, "memory_scale": scale,
                   "peak_mb": mem["peak_mb"], "rss_before_mb": mem["rss_before_mb"],
                   "step_mb": (mem["peak_mb"] - mem["rss_before_mb"]) * scale}
            if scale == 1:
                run.update(run_child({"kind": "time", "depth": depth, "batch": batch, "efficient": efficient,
                                      "repeats": args.repeats}, args.threads))
            result["runs"].append(run)
            mode = "efficient" if efficient else "plain"
            step = f"{run['step_s']:7.2f}" if "step_s" in run else f"{'-':>7}"
            evals = f"{run['eval_images_per_s']:10.0f}" if "step_s" in run else f"{'-':>10}"
            peak = f"{run['peak_mb']:8.0f}" if scale == 1 else f"{'-':>8}"
            print(f"{depth:>5} {mode:>9} | {step} | {evals} | {peak} | {run['step_mb']:7.0f}"
                  + (" x4" if scale != 1 else "  "), flush=True)

    _print_linearity(result, args.depths)
    if have_torch:
        result["torch"] = _compare(args)
    result["profile"] = run_child({"kind": "profile", "depth": args.profile_depth, "batch": args.batch},
                                  args.threads)
    _print_profile(result["profile"])
    if not args.no_ops:
        ops_out = out.with_name(out.stem.replace("bench_train", "bench_ops") + ".json")
        cmd = [sys.executable, str(HERE / "bench_ops.py"), "--threads", str(args.threads), "--out", str(ops_out)]
        print("\nper-op convolution table (benchmarks/bench_ops.py):", flush=True)
        subprocess.run(cmd + (["--torch"] if have_torch else []), check=True)
        result["bench_ops"] = json.loads(ops_out.read_text())
    result["load_average_end"] = os.getloadavg()
    out.write_text(json.dumps(result, indent=2))
    png = _plot(result, out.with_suffix(".png"))
    print(f"\nwrote {out}" + (f" and {png}" if png else ""))


def _print_linearity(result, depths):
    for efficient in (True, False):
        by_depth = {r["depth"]: r["step_mb"] for r in result["runs"] if r["memory_efficient"] == efficient}
        if 100 in by_depth and 190 in by_depth:
            ratio = by_depth[190] / by_depth[100]
            result[f"memory_ratio_190_100_{'efficient' if efficient else 'plain'}"] = ratio
            print(f"step memory at depth 190 / depth 100, {'efficient' if efficient else 'plain'}: {ratio:.2f}"
                  f" (linear in depth: {190 - 4}/{100 - 4} = {186 / 96:.2f}; quadratic about {(186 / 96) ** 2:.2f})")


def _compare(args):
    print(f"\nPyTorch A/B: medians of {args.compare_repeats} alternating pairs in one process, training "
          f"steps (glibc's allocator as shipped, and tuned) and eval forwards (as shipped)", flush=True)
    print(f"{'depth':>5} | {'tinydense s':>11} {'torch s':>8} {'ratio':>6} | {'tuned ratio':>11} | "
          f"{'eval img/s':>10} {'torch':>7} {'ratio':>6} | {'torch peak MB':>13}")
    rows = []
    for depth in args.compare_depths:
        spec = {"kind": "compare", "depth": depth, "batch": args.batch, "repeats": args.compare_repeats}
        row = {"depth": depth, "glibc as shipped": run_child(spec, args.threads),
               "tuned glibc": run_child(spec, args.threads, TUNED_MALLOC)}
        mem = run_child({"kind": "memory", "framework": "torch", "depth": depth, "batch": args.batch}, args.threads)
        row["torch_memory"] = {"peak_mb": mem["peak_mb"], "step_mb": mem["peak_mb"] - mem["rss_before_mb"]}
        r, tuned = row["glibc as shipped"], row["tuned glibc"]
        print(f"{depth:>5} | {r['tinydense_step_s']:11.2f} {r['torch_step_s']:8.2f} {r['step_ratio']:6.2f} | "
              f"{tuned['step_ratio']:11.2f} | {r['tinydense_eval_images_per_s']:10.0f} "
              f"{r['torch_eval_images_per_s']:7.0f} {1 / r['eval_ratio']:6.2f} | {mem['peak_mb']:13.0f}", flush=True)
        rows.append(row)
    print("  (eval ratio: tinydense's images/s over PyTorch's; step ratio: tinydense's time over PyTorch's)")
    return rows


def _print_profile(profile):
    print(f"\nwhere the time goes (memory-efficient step, {profile['step_s']:.2f} s): summed over the threads, "
          f"matrix products {profile['matmul_s']:.2f} s ({profile['matmul_calls']} calls), ops/conv.py's "
          f"convolutions {profile['conv_py_s']:.2f} s ({profile['conv_py_calls']} calls, their products included)")
    print(f"under cProfile ({profile['profiled_step_s']:.2f} s), self time per function "
          f"(NumPy work counts for the function that calls it):")
    for r in profile["hot_spots"]:
        print(f"  {r['self_s']:6.2f} s  {r['calls']:5d} calls  {r['function']:24s} {r['where']}")


def _plot(result, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for efficient, style in ((False, "o--"), (True, "o-")):
        runs = sorted((r for r in result["runs"] if r["memory_efficient"] == efficient), key=lambda r: r["depth"])
        ax.plot([r["depth"] for r in runs], [r["step_mb"] / 1024 for r in runs], style,
                label="memory_efficient=" + str(efficient))
        for r in runs:
            if r.get("memory_scale", 1) != 1:
                ax.annotate(f"batch {r['memory_batch']}, x{r['memory_scale']}", (r["depth"], r["step_mb"] / 1024),
                            textcoords="offset points", xytext=(-90, -4), fontsize=8)
    torch_rows = result.get("torch", [])
    if torch_rows:
        ax.plot([r["depth"] for r in torch_rows], [r["torch_memory"]["step_mb"] / 1024 for r in torch_rows], "s",
                label="PyTorch")
    ax.set_xlabel("depth L (DenseNet-BC, k=12)")
    ax.set_ylabel("memory of one training step (GB)")
    ax.set_title(f"batch {result['batch']}, 32x32, float32")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


if __name__ == "__main__":
    main()
