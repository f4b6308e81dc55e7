"""DenseNet-BC training step on an NVIDIA GPU: tinydense (CuPy) against PyTorch (cuDNN).

    python benchmarks/bench_gpu.py                 # L=100 k=12, batch 64, 10 A/B pairs
    python benchmarks/bench_gpu.py --depth 40

Both step functions build the same architecture (PyTorch's by hand, as in
bench_train.py), run forward, cross-entropy, backward and an SGD update on
the GPU, and are timed alternately (A B A B ...) with a device synchronise
around each step; the report is the ratio of medians (issue target: at most
3x PyTorch). Also reports CuPy's memory-pool size after the steps. Exits with
a clear message on a machine without CUDA.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depth", type=int, default=100)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--pairs", type=int, default=10)
    args = p.parse_args(argv)

    import numpy as np

    import tinydense
    import tinydense.functional as F
    from tinydense.models import densenet_bc
    from tinydense.optim import SGD

    if not tinydense.cuda.is_available():
        sys.exit("bench_gpu: CUDA not available (needs an NVIDIA GPU and CuPy: pip install -e '.[gpu]')")

    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((args.batch, 3, 32, 32), dtype=np.float32)
    y_np = rng.integers(0, 10, args.batch)

    tinydense.manual_seed(0)
    model = densenet_bc(args.depth).to("cuda")
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    x, y = tinydense.tensor(x_np, device="cuda"), tinydense.backend.to_device(y_np, "cuda")

    def td_step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        tinydense.cuda.synchronize()

    steps = {"tinydense": td_step}
    try:
        import torch
        from bench_train import torch_densenet_bc
        if torch.cuda.is_available():
            torch.backends.cudnn.benchmark = True
            tmodel = torch_densenet_bc(torch, args.depth).cuda()
            topt = torch.optim.SGD(tmodel.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
            tx, ty = torch.from_numpy(x_np).cuda(), torch.from_numpy(y_np).cuda()

            def torch_step():
                topt.zero_grad()
                torch.nn.functional.cross_entropy(tmodel(tx), ty).backward()
                topt.step()
                torch.cuda.synchronize()
            steps["pytorch"] = torch_step
    except ImportError:
        print("PyTorch not installed: timing tinydense only")

    for f in steps.values():          # warm-up (CuPy compiles kernels, cuDNN picks algorithms)
        f(), f()
    times = {name: [] for name in steps}
    for _ in range(args.pairs):
        for name, f in steps.items():
            start = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - start)

    print(f"DenseNet-BC L={args.depth} k=12, batch {args.batch}, on {tinydense.cuda.device_count()} GPU(s)")
    for name, ts in times.items():
        print(f"  {name:10s} median step {statistics.median(ts) * 1e3:8.1f} ms  "
              f"(min {min(ts) * 1e3:.1f}, max {max(ts) * 1e3:.1f}, {len(ts)} steps)")
    if "pytorch" in times:
        ratio = statistics.median(times["tinydense"]) / statistics.median(times["pytorch"])
        print(f"  ratio tinydense / pytorch: {ratio:.2f}x (target <= 3x)")
    print(f"  CuPy memory pool: {tinydense.cuda.memory_pool_peak_bytes() / 2**20:.0f} MiB held")


if __name__ == "__main__":
    main()
