"""Every network of the lecture against PyTorch: training step, eval throughput, peak memory
and the GEMM floor, and where the time of a ResNet step goes (issue 19).

    python benchmarks/bench_models.py                          # about 10 minutes on 2 quiet cores
    python benchmarks/bench_models.py --models resnet18 --repeats 2 --no-memory --no-profile   # a quick look

Models (32x32 images, 10 classes, float32): CIFAR ResNet-18 (3x3 stem), pre-activation
ResNet-164, CIFAR VGG-16-BN, CIFAR ResNeXt-50 32x4d, DenseNet-BC-40 and -100 (k=12,
memory-efficient). PyTorch's are the same architectures written in plain PyTorch below
(the same layers, shapes and parameter counts, which the script checks; not the same
weights). A step is forward, cross-entropy, backward and SGD (Nesterov momentum 0.9,
weight decay 1e-4), at batch 64 (ResNeXt-50: 16).

Per model, in ONE fresh child process: one warm-up of each, then ``--repeats`` training
steps alternating tinydense, PyTorch, tinydense, ... (median of each, ratio of medians);
then eval forwards (no_grad, eval mode) at batch 64 and 256 the same way, as images/s;
and the best float32 matrix-product rate measured in that child (np.matmul of 2048 x 2048
matrices, best of 5). The GEMM floor of a step is its FLOPs (3 x 2 x multiply-adds x batch:
the forward products and the two of backward) over that rate; the floor ratio is a step's
time over its floor. Peak memory: each framework's step in its own fresh child (VmHWM
after model, batch and one step; "step MB" is the peak less the resident memory before
the step). ``--profile``: per-op time of one ResNet-164 and one ResNet-18 step, tinydense's
ops (every Function's forward and backward timed) beside PyTorch's profiler.

``--textbook`` adds tinydense with its seams off (models/fused_layers.py ``FUSE = False``,
ops/winograd.py ``ENABLED = False``, switched at every step: the frameworks alternate in
one process) to the alternation: what the seams gain. Results go to benchmarks/results/.
Compare runs only on a quiet machine (benchmarks/README.md).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from bench_train import _batch, _evaluator, _status_mb, _timed, run_child, step_for, torch_densenet_bc

HERE = Path(__file__).resolve().parent
MODELS = {   # name -> (tinydense builder, PyTorch builder, batch)
    "resnet18": ("cifar_resnet18()", "resnet(torch, 'basic', (2, 2, 2, 2))", 64),
    "preact_resnet164": ("preact_resnet(164)", "preact_resnet164(torch)", 64),
    "vgg16_bn": ("cifar_vgg16_bn()", "vgg16_bn(torch)", 64),
    "resnext50_32x4d": ("cifar_resnext50_32x4d()", "resnet(torch, 'bottleneck', (3, 4, 6, 3), 32, 4)", 16),
    "densenet_bc40": ("densenet_bc(40)", "torch_densenet_bc(torch, 40)", 64),
    "densenet_bc100": ("densenet_bc(100)", "torch_densenet_bc(torch, 100)", 64),
}


# --- the same architectures in plain PyTorch ----------------------------------------------

def resnet(torch, block, layers, groups=1, width_per_group=64, num_classes=10):
    """torchvision's ResNet / ResNeXt with the CIFAR stem (3x3 conv, no max pool)."""
    nn = torch.nn
    expansion = 1 if block == "basic" else 4

    class Block(nn.Module):
        def __init__(self, cin, planes, stride):
            super().__init__()
            out = planes * expansion
            if block == "basic":
                convs = [(cin, planes, 3, stride, 1), (planes, planes, 3, 1, 1)]
            else:
                w = int(planes * width_per_group / 64) * groups
                convs = [(cin, w, 1, 1, 1), (w, w, 3, stride, groups), (w, out, 1, 1, 1)]
            self.convs = nn.ModuleList(nn.Conv2d(i, o, k, stride=s, padding=k // 2, groups=g, bias=False)
                                       for i, o, k, s, g in convs)
            self.bns = nn.ModuleList(nn.BatchNorm2d(c[1]) for c in convs)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = (nn.Sequential(nn.Conv2d(cin, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
                               if stride != 1 or cin != out else None)

        def forward(self, x):
            out = x
            for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
                out = bn(conv(out))
                if i < len(self.convs) - 1:
                    out = self.relu(out)
            out += x if self.downsample is None else self.downsample(x)
            return self.relu(out)

    mods, cin = [nn.Conv2d(3, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)], 64
    for stage, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
        for i in range(n):
            mods.append(Block(cin, planes, 2 if stage > 0 and i == 0 else 1))
            cin = planes * expansion
    mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*mods)


def preact_resnet164(torch, num_classes=10):
    """He et al.'s pre-activation bottleneck ResNet-164 for CIFAR (18 blocks per stage)."""
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, cin, width, stride):
            super().__init__()
            out = 4 * width
            self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, width, 1, bias=False)
            self.bn2, self.conv2 = nn.BatchNorm2d(width), nn.Conv2d(width, width, 3, stride, 1, bias=False)
            self.bn3, self.conv3 = nn.BatchNorm2d(width), nn.Conv2d(width, out, 1, bias=False)
            self.relu = nn.ReLU(inplace=True)
            self.shortcut = nn.Conv2d(cin, out, 1, stride, bias=False) if stride != 1 or cin != out else None

        def forward(self, x):
            out = self.relu(self.bn1(x))
            shortcut = x if self.shortcut is None else self.shortcut(out)
            out = self.conv1(out)
            out = self.conv2(self.relu(self.bn2(out)))
            return self.conv3(self.relu(self.bn3(out))) + shortcut

    mods, cin = [nn.Conv2d(3, 16, 3, padding=1, bias=False)], 16
    for width, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(18):
            mods.append(Block(cin, width, stride if i == 0 else 1))
            cin = 4 * width
    mods += [nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
             nn.Linear(cin, num_classes)]
    return nn.Sequential(*mods)


def vgg16_bn(torch, num_classes=10):
    nn = torch.nn
    mods, cin = [], 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if v == "M":
            mods.append(nn.MaxPool2d(2, 2))
        else:
            mods += [nn.Conv2d(cin, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            cin = v
    mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)]
    return nn.Sequential(*mods)


# --- child side ------------------------------------------------------------------------------

def _build(name, framework, threads):
    """(model, step, x, evaluator maker) of one framework's model ``name``."""
    import numpy as np

    batch = MODELS[name][2]
    if framework == "torch":
        import torch

        torch.set_num_threads(threads)
        torch.manual_seed(0)
        model = eval(MODELS[name][1])
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
        x_np, y_np = _batch(np, batch)
        x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)

        def step():
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        params = sum(p.numel() for p in model.parameters())
        return step, lambda b: _evaluator(model, torch.from_numpy(_batch(np, b)[0]), torch.no_grad), params
    import tinydense
    from tinydense import models
    from tinydense.models import fused_layers
    from tinydense.ops import winograd

    def seams(f):
        """f with the speed seams on (tinydense) or off (textbook), set at every call: the
        frameworks alternate in one process and the switches are module-level."""
        def run():
            fused_layers.FUSE = winograd.ENABLED = framework != "textbook"
            return f()
        return run

    tinydense.manual_seed(0)
    model = eval("models." + MODELS[name][0])
    step = seams(step_for(model, batch)[0])
    params = sum(p.size for p in model.parameters())
    return step, lambda b: seams(_evaluator(model, tinydense.tensor(_batch(np, b)[0]), tinydense.no_grad)), params


def _best_sgemm_gflops(n=2048, tries=5):
    import numpy as np

    a, b = (np.random.default_rng(i).standard_normal((n, n), dtype=np.float32) for i in range(2))
    a @ b
    return 2 * n ** 3 / min(_timed(lambda: a @ b) for _ in range(tries)) / 1e9


def _alternate(fns, repeats):
    for f in fns.values():
        f()                                  # warm-up
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            times[k].append(_timed(f))
    return {k: statistics.median(t) for k, t in times.items()}, times


def child(spec):
    name, threads = spec["model"], spec["threads"]
    frameworks = spec["frameworks"]
    if spec["kind"] == "memory":
        step = _build(name, frameworks[0], threads)[0]
        before = _status_mb("VmRSS")
        step()
        return {"peak_mb": _status_mb("VmHWM"), "step_mb": _status_mb("VmHWM") - before}
    if spec["kind"] == "profile":
        return _profile(name, frameworks[0], threads)
    built = {f: _build(name, f, threads) for f in frameworks}
    from tinydense import models, summary

    macs = summary(eval("models." + MODELS[name][0]), (3, 32, 32)).total_macs
    result = {"params": {f: b[2] for f, b in built.items()}, "macs_per_image": macs,
              "step_gflop": 6 * macs * MODELS[name][2] / 1e9, "sgemm_gflops_before": _best_sgemm_gflops()}
    result["step_s"], result["all_step_s"] = _alternate({f: b[0] for f, b in built.items()}, spec["repeats"])
    for eval_batch in (64, 256):
        med, _ = _alternate({f: b[1](eval_batch) for f, b in built.items()}, spec["eval_repeats"])
        result[f"eval{eval_batch}_images_per_s"] = {f: eval_batch / t for f, t in med.items()}
    result["sgemm_gflops"] = max(result["sgemm_gflops_before"], _best_sgemm_gflops())
    return result


def _profile(name, framework, threads):
    """Self time per op of one training step (after a warm-up)."""
    step = _build(name, framework, threads)[0]
    step()
    if framework == "torch":
        import torch

        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            total = _timed(step)
        rows = sorted(((e.key, e.self_cpu_time_total / 1e6, e.count) for e in prof.key_averages()), key=lambda r: -r[1])
        return {"step_s": total, "ops": rows[:16]}
    from tinydense.autograd import Function

    spent = {}
    classes, todo = [], [Function]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        classes.append(cls)
    originals = {}
    for cls in classes:
        for method in ("forward", "backward"):
            if method in cls.__dict__:
                f = cls.__dict__[method]
                originals[(cls, method)] = f

                def timed(self, *a, _f=f, _key=f"{cls.__name__}.{method}", **k):
                    start = time.perf_counter()
                    try:
                        return _f(self, *a, **k)
                    finally:
                        total, calls = spent.get(_key, (0.0, 0))
                        spent[_key] = (total + time.perf_counter() - start, calls + 1)
                setattr(cls, method, timed)
    try:
        total = _timed(step)
    finally:
        for (cls, method), f in originals.items():
            setattr(cls, method, f)
    rows = sorted(((k, t, c) for k, (t, c) in spent.items()), key=lambda r: -r[1])
    return {"step_s": total, "ops": rows[:16]}


# --- parent side ------------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5, help="alternating training steps per framework")
    p.add_argument("--eval-repeats", type=int, default=3)
    p.add_argument("--textbook", action="store_true", help="also tinydense with its seams off (fused_layers.FUSE, winograd.ENABLED)")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    frameworks = ["tinydense", "torch"] + (["textbook"] if args.textbook else [])
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    result = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "threads": args.threads, "load_average_start":
              os.getloadavg(), "OPENBLAS_CORETYPE": coretype, "models": {}}
    print(f"{args.threads} threads, float32, 32x32; OPENBLAS_CORETYPE={coretype or '(not set)'}; "
          f"load average {os.getloadavg()[0]:.2f}; medians of {args.repeats} alternating steps\n")
    print(f"{'model':>17} {'batch':>5} | {'td step':>7} {'pt step':>7} {'ratio':>5} | {'eval64 td/pt':>12} "
          f"{'eval256 td/pt':>13} | {'GFLOP':>5} {'floor s':>7} {'td/floor':>8} {'pt/floor':>8}"
          + (" | textbook s" if args.textbook else ""))
    for name in args.models:
        plain = [f for f in frameworks if f != "textbook" or not name.startswith("densenet")]   # FUSE: plain nets
        r = run_child({"kind": "compare", "model": name, "frameworks": plain, "repeats": args.repeats,
                       "eval_repeats": args.eval_repeats}, args.threads, script=__file__)
        floor = r["step_gflop"] / r["sgemm_gflops"]
        s, e64, e256 = r["step_s"], r["eval64_images_per_s"], r["eval256_images_per_s"]
        r.update(floor_s=floor, step_ratio=s["tinydense"] / s["torch"])
        print(f"{name:>17} {MODELS[name][2]:>5} | {s['tinydense']:7.2f} {s['torch']:7.2f} {r['step_ratio']:5.2f} | "
              f"{e64['tinydense'] / e64['torch']:12.2f} {e256['tinydense'] / e256['torch']:13.2f} | "
              f"{r['step_gflop']:5.0f} {floor:7.2f} {s['tinydense'] / floor:8.2f} {s['torch'] / floor:8.2f}"
              + (f" | {s['textbook']:.2f}" if "textbook" in s else ""), flush=True)
        if r["params"]["tinydense"] != r["params"]["torch"]:
            print(f"   parameter counts differ: {r['params']}")
        result["models"][name] = r
    print(f"  (eval: tinydense images/s over PyTorch's; best sgemm {r['sgemm_gflops']:.0f} GFLOP/s)")
    if not args.no_memory:
        print(f"\npeak memory of one step, fresh child each (MB): {'tinydense':>20} {'PyTorch':>20}")
        for name in args.models:
            mem = {f: run_child({"kind": "memory", "model": name, "frameworks": [f]}, args.threads,
                                script=__file__) for f in ("tinydense", "torch")}
            result["models"][name]["memory"] = mem
            print(f"{name:>17}: " + "  ".join(f"peak {m['peak_mb']:6.0f} step {m['step_mb']:6.0f}"
                                              for m in mem.values()), flush=True)
    if not args.no_profile:
        for name in ("preact_resnet164", "resnet18"):
            prof = {f: run_child({"kind": "profile", "model": name, "frameworks": [f]}, args.threads,
                                 script=__file__) for f in ("tinydense", "torch")}
            result.setdefault("profile", {})[name] = prof
            print(f"\nwhere the time goes, one {name} step: tinydense {prof['tinydense']['step_s']:.2f} s "
                  f"(per op, self time incl. BLAS), PyTorch {prof['torch']['step_s']:.2f} s (profiler, self CPU)")
            for a, b in zip(prof["tinydense"]["ops"], prof["torch"]["ops"]):
                print(f"  {a[0]:>26} {a[1]:6.3f} s {a[2]:4d} | {b[0]:>34} {b[1]:6.3f} s {b[2]:4d}")
    result["load_average_end"] = os.getloadavg()
    out = args.out or HERE / "results" / f"bench_models-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
