"""Time conv2d forward + backward at DenseNet-BC's shapes, and grouped and
depthwise convolutions at ResNeXt-50's.

    python benchmarks/bench_ops.py [--threads 2] [--repeats 15] [--torch] [--cases densenet|grouped|all]

DenseNet cases (batch 64, 32x32 images, float32, no bias, as in a CIFAR
DenseNet-BC): the bottleneck 1x1 convs C -> 48 for C in 24, 48, 120, 216 and
the 3x3 48 -> 12 conv with padding 1 (growth rate 12). Grouped cases (batch
``--grouped-batch``, 8 by default, ImageNet sizes): ResNeXt-50 32x4d's 3x3
convs (32 groups of 4 channels at 56x56, of 8 at 28x28 with stride 2 as the
first block of layer2 has it, of 16 at 14x14), depthwise 3x3 convs, and the
ungrouped 3x3 conv of ResNet-50's layer1 for comparison. For each case we time
``y = conv2d(x, w); y.backward(g)`` (x and w both need gradients) and the
forward pass alone under ``no_grad``, and print the median of
``--repeats`` runs after one warm-up run.

With ``--torch`` (PyTorch installed: ``pip install torch``) the same
work is timed in PyTorch, alternating with tinydense in the same process,
so both see the same machine load; the table then shows the ratio
tinydense / PyTorch. The two alternate in blocks of ``--block`` runs, each
block after one untimed run: OpenBLAS's and OpenMP's worker threads spin
for a while after a call, and switching library on every run let one
library's idle spinners slow the other down (by 2x and more, measured).
Results also go to benchmarks/results/ as JSON.

The thread count must be fixed before NumPy (OpenBLAS) or PyTorch start,
so this script sets the environment variables first and imports later.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

CASES = [  # name, C_in, C_out, kernel, padding  (stride 1, groups 1, at --batch, --size)
    ("1x1 24->48", 24, 48, 1, 0),
    ("1x1 48->48", 48, 48, 1, 0),
    ("1x1 120->48", 120, 48, 1, 0),
    ("1x1 216->48", 216, 48, 1, 0),
    ("3x3 48->12 pad 1", 48, 12, 3, 1),
]
GROUPED_CASES = [  # name, C_in = C_out, image size, stride, groups  (3x3, padding 1, at --grouped-batch)
    ("ResNeXt 3x3 128, 32x4, 56", 128, 56, 1, 32),
    ("ResNeXt 3x3/2 256, 32x8, 56", 256, 56, 2, 32),
    ("ResNeXt 3x3 512, 32x16, 14", 512, 14, 1, 32),
    ("depthwise 3x3 64, 56", 64, 56, 1, 64),
    ("depthwise 3x3/2 128, 56", 128, 56, 2, 128),
    ("ResNet-50 3x3 64, 56", 64, 56, 1, 1),
]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="BLAS / PyTorch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per case (default 15)")
    parser.add_argument("--block", type=int, default=5, help="runs in a row before switching library (default 5)")
    parser.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--size", type=int, default=32, help="image height and width (default 32)")
    parser.add_argument("--grouped-batch", type=int, default=8, help="batch size of the grouped cases (default 8)")
    parser.add_argument("--cases", choices=("densenet", "grouped", "all"), default="all",
                        help="which cases to time (default all)")
    parser.add_argument("--torch", action="store_true", help="also time PyTorch, interleaved")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON file to write (default benchmarks/results/bench_ops-<time>.json)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import numpy as np

    import tinydense
    import tinydense.functional as F

    torch = None
    if args.torch:
        try:
            import torch
        except ImportError:
            sys.exit("--torch: PyTorch is not installed (pip install torch)")
        torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    N, S = args.batch, args.size
    todo = []   # (row description, N, C, O, size, kernel, stride, padding, groups)
    if args.cases in ("densenet", "all"):
        todo += [({"case": name, "C_in": C, "C_out": O, "kernel": k, "padding": pad}, N, C, O, S, k, 1, pad, 1)
                 for name, C, O, k, pad in CASES]
    if args.cases in ("grouped", "all"):
        todo += [({"case": name, "C_in": C, "C_out": C, "kernel": 3, "padding": 1, "stride": st, "groups": G,
                   "batch": args.grouped_batch, "size": size}, args.grouped_batch, C, C, size, 3, st, 1, G)
                 for name, C, size, st, G in GROUPED_CASES]
    rows = []
    for row, n, C, O, size, k, stride, pad, groups in todo:
        options = dict(stride=stride, padding=pad, groups=groups)
        out = (size + 2 * pad - k) // stride + 1
        x_np = rng.standard_normal((n, C, size, size), dtype=np.float32)
        w_np = (rng.standard_normal((O, C // groups, k, k)) / np.sqrt(C // groups * k * k)).astype(np.float32)
        g_np = rng.standard_normal((n, O, out, out), dtype=np.float32)
        x = tinydense.tensor(x_np, requires_grad=True)
        w = tinydense.tensor(w_np, requires_grad=True)

        def td_step():
            x.grad = w.grad = None
            F.conv2d(x, w, **options).backward(g_np)

        def td_forward():
            with tinydense.no_grad():
                F.conv2d(x, w, **options)

        timers = {"tinydense fwd": td_forward, "tinydense fwd+bwd": td_step}
        if torch is not None:
            tx = torch.from_numpy(x_np).requires_grad_()
            tw = torch.from_numpy(w_np).requires_grad_()
            tg = torch.from_numpy(g_np)

            def torch_step():
                tx.grad = tw.grad = None
                torch.nn.functional.conv2d(tx, tw, **options).backward(tg)

            timers["torch fwd+bwd"] = torch_step
        times = {key: [] for key in timers}
        while len(times["tinydense fwd"]) < args.repeats:   # alternate, so load hits every timer
            for key, f in timers.items():
                f()                                          # untimed: the other library's threads settle
                for _ in range(min(args.block, args.repeats - len(times[key]))):
                    start = time.perf_counter()
                    f()
                    times[key].append(time.perf_counter() - start)
        row.update({f"{key} ms": 1e3 * statistics.median(t) for key, t in times.items()})
        row["all runs ms"] = {key: [round(1e3 * v, 3) for v in t] for key, t in times.items()}
        if torch is not None:
            row["ratio"] = row["tinydense fwd+bwd ms"] / row["torch fwd+bwd ms"]
        rows.append(row)
        print_row(row, header=len(rows) == 1, with_torch=torch is not None)

    info = {
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "threads": args.threads, "repeats": args.repeats, "block": args.block, "batch": N, "size": S,
        "grouped_batch": args.grouped_batch,
        "numpy": np.__version__, "torch": torch.__version__ if torch is not None else None,
        "python": platform.python_version(), "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "results": rows,
    }
    out = args.out or Path(__file__).parent / "results" / f"bench_ops-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(info, indent=2))
    print(f"\nmedians of {args.repeats} runs, float32, {args.threads} threads (DenseNet cases: N={N}, {S}x{S}; "
          f"grouped cases: N={args.grouped_batch}); wrote {out}")


def print_row(row, header, with_torch):
    columns = ["case", "tinydense fwd ms", "tinydense fwd+bwd ms"]
    if with_torch:
        columns += ["torch fwd+bwd ms", "ratio"]
    if header:
        print(" | ".join(f"{c:>28}" for c in columns))
        print("-|-".join("-" * 28 for _ in columns))
    print(" | ".join(f"{row[c]:>28}" if isinstance(row[c], str) else f"{row[c]:>28.2f}" for c in columns))


if __name__ == "__main__":
    main()
