"""DenseNet-BC training step on an NVIDIA GPU: tinydense (CuPy) against PyTorch (cuDNN).

    python benchmarks/bench_gpu.py                      # L=100 and L=40, k=12, batch 64, 10 A/B pairs
    python benchmarks/bench_gpu.py --depths 100 --pairs 20 --json bench.json
    python benchmarks/bench_gpu.py --device cpu --depths 16 --batch 4 --pairs 2   # dry run on NumPy

A step is tinydense.training.train_step, the training loop's own step (forward,
cross-entropy, backward, SGD with Nesterov momentum and weight decay, the
correct count), and the same in PyTorch eager on the same architecture
(benchmarks/bench_train.py's, torchvision's layout) with cudnn.benchmark. The
steps are timed alternately in one process (tinydense, PyTorch, PyTorch-TF32,
tinydense, ...), each with the GPU's queue empty before and after; the report
is the median of each and the ratio of medians. "PyTorch" is strict float32
(TF32 off, as tinydense's CuPy matrix products); "PyTorch-TF32" is PyTorch's
default, where cuDNN may use TF32 for convolutions.

Peak GPU memory of one step, measured after the timings: tinydense's with
tinydense.cuda.PeakMemory (the most bytes CuPy's pool had in use at once,
tinydense's own buffer pool included) against torch.cuda.max_memory_allocated;
and what each pool holds (CuPy's total_bytes, torch.cuda.max_memory_reserved).
"""
from __future__ import annotations

import argparse
import statistics
import sys

import gpu_common


def _torch_steps(torch, depth, growth_rate, x_np, y_np, device):
    """{name: step function} of PyTorch's DenseNet-BC, and the model (None without PyTorch)."""
    from bench_train import torch_densenet_bc
    if device == "cuda" and not torch.cuda.is_available():
        print("PyTorch sees no GPU: timing tinydense only")
        return {}
    torch.manual_seed(0)
    model = torch_densenet_bc(torch, depth, growth_rate).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    x, y = torch.from_numpy(x_np).to(device), torch.from_numpy(y_np).to(device)

    def step():
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.detach(), (logits.argmax(1) == y).sum()

    if device == "cpu":
        return {"pytorch": step}
    torch.backends.cudnn.benchmark = True

    def strict():
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        return step()

    def tf32():
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, False   # PyTorch's defaults
        return step()
    return {"pytorch": strict, "pytorch-tf32": tf32}


def bench_depth(depth, args):
    import tinydense
    from tinydense.training import train_step
    device = args.device
    model, optimizer, x, y = gpu_common.densenet_bc_setup(depth, args.growth_rate, args.batch, device)
    x_np, y_np = gpu_common.batch_arrays(args.batch)
    steps = {"tinydense": lambda: train_step(model, optimizer, x, y)}
    try:
        import torch
    except ImportError:
        torch = None
        print("PyTorch not installed: timing tinydense only")
    if torch is not None:
        steps.update(_torch_steps(torch, depth, args.growth_rate, x_np, y_np, device))

    for _ in range(args.warmup):          # CuPy compiles its kernels, cuDNN picks its algorithms
        for step in steps.values():
            gpu_common.seconds(step, device)
    times = {name: [] for name in steps}
    for _ in range(args.pairs):
        for name, step in steps.items():
            times[name].append(gpu_common.seconds(step, device))

    result = {"depth": depth, "growth_rate": args.growth_rate, "batch": args.batch, "device": device,
              "parameters": sum(p.size for p in model.parameters()),
              "median_ms": {n: 1e3 * statistics.median(t) for n, t in times.items()},
              "min_ms": {n: 1e3 * min(t) for n, t in times.items()}, "steps": len(times["tinydense"])}
    tdms = result["median_ms"]["tinydense"]
    result["ratio"] = {n: tdms / ms for n, ms in result["median_ms"].items() if n != "tinydense"}

    if device == "cuda":                   # memory: one more step of each, measured
        with tinydense.cuda.PeakMemory() as peak:
            gpu_common.seconds(steps["tinydense"], device)
        result["memory_mib"] = {"tinydense_peak": peak.bytes / 2**20, "tinydense_before_step": peak.start / 2**20,
                                "cupy_pool_held": tinydense.cuda.memory_pool_peak_bytes() / 2**20}
        if "pytorch" in steps:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            gpu_common.seconds(steps["pytorch"], device)
            result["memory_mib"].update(pytorch_peak=torch.cuda.max_memory_allocated() / 2**20,
                                        pytorch_before_step=before / 2**20,
                                        pytorch_reserved=torch.cuda.max_memory_reserved() / 2**20)
    return result


def report(r):
    lines = [f"DenseNet-BC L={r['depth']} k={r['growth_rate']} ({r['parameters']:,} parameters), batch {r['batch']}, "
             f"on {r['device']}, float32, median of {r['steps']} alternating steps:"]
    for name, ms in r["median_ms"].items():
        ratio = f"   tinydense / {name} = {r['ratio'][name]:.2f}x" if name in r["ratio"] else ""
        lines.append(f"  {name:13s} {ms:9.2f} ms  (min {r['min_ms'][name]:.2f}){ratio}")
    m = r.get("memory_mib")
    if m:
        lines.append(f"  peak GPU memory of one step: tinydense {m['tinydense_peak']:.0f} MiB "
                     f"({m['tinydense_before_step']:.0f} held before it; CuPy's pool holds {m['cupy_pool_held']:.0f})"
                     + (f", PyTorch {m['pytorch_peak']:.0f} MiB ({m['pytorch_before_step']:.0f} before; "
                        f"reserved {m['pytorch_reserved']:.0f})" if "pytorch_peak" in m else ""))
    elif r["device"] == "cpu":
        lines.append("  (GPU memory: not measured on the CPU)")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    gpu_common.add_device_option(p)
    p.add_argument("--depths", type=int, nargs="+", default=[100, 40])
    p.add_argument("--growth-rate", type=int, default=12)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--pairs", type=int, default=10, help="timed rounds (one step of each) (default: 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default: 2)")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    gpu_common.require(args.device, "bench_gpu")
    results = []
    for depth in args.depths:
        results.append(bench_depth(depth, args))
        print(report(results[-1]), flush=True)
        gpu_common.write_json(args.json, results)       # after each depth: a timeout keeps what was done
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
