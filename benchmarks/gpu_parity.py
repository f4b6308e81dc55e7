"""Do the CPU (NumPy) and the GPU (CuPy) compute the same thing?

    python benchmarks/gpu_parity.py                 # CPU against GPU
    python benchmarks/gpu_parity.py --device cpu    # dry run: CPU against CPU (the same code, exact)

1. float64, a small DenseNet-BC, memory_efficient False and True: the same
   weights and batch on both devices, two training steps (SGD with Nesterov
   momentum and weight decay). Compared: the loss of each step, the gradient
   of every parameter and of the input, the running statistics, and the
   weights after the updates. Each array's largest difference relative to its
   largest value must be at most --tol (1e-10): both devices add in
   different orders, so they agree to float64 rounding, ~1e-15, not exactly.
2. float32, DenseNet-BC L=40: --steps training steps on the same batches
   (the CIFAR-10 subset's first images if --data-dir is given, else a random
   batch) on both devices; the loss curves must agree within --curve-tol
   relative (float32 rounding, grown by training: "within noise").

Prints one line per check and a verdict; exit status 1 if any check fails.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

import gpu_common


def _relative(a, b):
    """max |a - b| / max |a| (absolute when a is all zeros)."""
    scale = float(np.abs(a).max()) if a.size else 0.0
    diff = float(np.abs(a - b).max()) if a.size else 0.0
    return diff / scale if scale > 0 else diff


def _run_float64(device, memory_efficient, args):
    """Everything the two steps produce, as NumPy arrays, keyed by name."""
    import tinydense
    from tinydense.training import train_step
    model, optimizer, x, y = gpu_common.densenet_bc_setup(args.depth, args.growth_rate, args.batch, device,
                                                          dtype="float64", memory_efficient=memory_efficient)
    x.requires_grad_()
    out = {}
    for step in (1, 2):
        x.grad = None
        loss, correct = train_step(model, optimizer, x, y)
        out[f"step {step} loss"] = tinydense.backend.to_numpy(loss)
        out[f"step {step} input grad"] = tinydense.backend.to_numpy(x.grad)
        if step == 1:                      # the gradients of step 1 (step 2's replace them)
            out.update({f"grad {n}": tinydense.backend.to_numpy(p.grad) for n, p in model.named_parameters()})
    out.update({f"after {n}": tinydense.backend.to_numpy(a) for n, a in model.state_dict().items()})
    return out


def check_float64(args):
    """[(memory_efficient, worst name, worst relative difference, number of arrays)]"""
    other = "cpu" if args.device == "cpu" else "cuda"
    rows = []
    for efficient in (False, True):
        ref, got = _run_float64("cpu", efficient, args), _run_float64(other, efficient, args)
        assert ref.keys() == got.keys(), sorted(set(ref) ^ set(got))
        diffs = {k: _relative(ref[k], got[k]) for k in ref}
        worst = max(diffs, key=diffs.get)
        rows.append((efficient, worst, diffs[worst], len(diffs)))
    return rows


def _curve(device, args, images, labels):
    from tinydense import backend, tensor
    from tinydense.training import train_step
    model, optimizer, _, _ = gpu_common.densenet_bc_setup(40, 12, args.curve_batch, device)
    losses = []
    n = len(images) // args.curve_batch
    for step in range(args.steps):
        i = step % n * args.curve_batch
        x = tensor(images[i:i + args.curve_batch], device=device)
        y = tensor(labels[i:i + args.curve_batch], device=device)
        losses.append(float(backend.to_numpy(train_step(model, optimizer, x, y)[0])))
    return np.array(losses)


def check_curve(args):
    count = args.curve_batch * min(args.steps, 4)
    if args.data_dir:
        from tinydense.data import DataLoader, load_cifar
        train = load_cifar("cifar10", args.data_dir, train=True, download=False).head(count)
        mean, std = train.channel_stats()
        x, y = next(iter(DataLoader(train, count, mean=mean, std=std)))
        images, labels, source = x.numpy(), y.numpy(), f"the first {count} images of {args.data_dir}"
    else:
        images, labels = gpu_common.batch_arrays(count, seed=1)
        source = f"{count} random images"
    other = "cpu" if args.device == "cpu" else "cuda"
    ref, got = _curve("cpu", args, images, labels), _curve(other, args, images, labels)
    return ref, got, source


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    gpu_common.add_device_option(p)
    p.add_argument("--depth", type=int, default=16, help="float64 check: DenseNet-BC depth (default: 16)")
    p.add_argument("--growth-rate", type=int, default=6)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--tol", type=float, default=1e-10)
    p.add_argument("--steps", type=int, default=10, help="float32 curve: training steps (default: 10)")
    p.add_argument("--curve-batch", type=int, default=32)
    p.add_argument("--curve-tol", type=float, default=1e-2)
    p.add_argument("--data-dir", help="directory holding cifar-10-batches-py/ (default: random images)")
    args = p.parse_args(argv)
    gpu_common.require(args.device, "gpu_parity")
    other = "CPU" if args.device == "cpu" else "GPU"
    ok = True
    print(f"1. float64, DenseNet-BC L={args.depth} k={args.growth_rate}, batch {args.batch}, two SGD steps, "
          f"CPU against {other} (tolerance {args.tol:g} relative to each array's largest value):")
    for efficient, worst, diff, count in check_float64(args):
        passed = diff <= args.tol
        ok &= passed
        print(f"   memory_efficient={efficient!s:5}: {count} arrays (losses, gradients, input gradients, "
              f"weights and running statistics after the steps); largest difference {diff:.2e} in {worst}: "
              f"{'PASS' if passed else 'FAIL'}", flush=True)
    if args.steps:
        ref, got, source = check_curve(args)
        diff = float(np.max(np.abs(ref - got) / np.abs(ref)))
        passed = diff <= args.curve_tol
        ok &= passed
        print(f"2. float32, DenseNet-BC L=40 k=12, {args.steps} steps of batch {args.curve_batch} on {source}:")
        print(f"   CPU loss: {' '.join(f'{v:.5f}' for v in ref)}")
        print(f"   {other} loss: {' '.join(f'{v:.5f}' for v in got)}")
        print(f"   largest relative difference {diff:.2e} (tolerance {args.curve_tol:g}): "
              f"{'PASS' if passed else 'FAIL'}")
    print(f"parity: {'PASS' if ok else 'FAIL'}")
    return ok


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
