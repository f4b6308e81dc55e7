"""What the GPU verification scripts share (bench_gpu.py, gpu_parity.py, gpu_profile.py).

Each script takes ``--device cuda`` (the real run, on a machine with an NVIDIA
GPU and CuPy) or ``--device cpu``: the same code on NumPy, a dry run that
leaves only the CUDA calls untested (benchmarks/gpu_verify.sh --cpu runs every
part that way).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))            # bench_train.py's PyTorch DenseNet-BC


def add_device_option(parser, default="cuda"):
    parser.add_argument("--device", choices=("cuda", "cpu"), default=default,
                        help="cuda, or cpu: the same code on NumPy, as a dry run (default: %(default)s)")


def require(device, script):
    """Exit with one line saying why, when ``device`` is "cuda" and no GPU can be used."""
    import tinydense
    if device == "cuda" and not tinydense.cuda.is_available():
        sys.exit(f"{script}: device 'cuda': {tinydense.cuda.unavailable_reason()}")


def synchronize(device):
    """Wait for the GPU (nothing to wait for on the CPU)."""
    if device == "cuda":
        import tinydense
        tinydense.cuda.synchronize()


def batch_arrays(batch, seed=0, size=32, classes=10, dtype="float32"):
    """A reproducible random batch as NumPy arrays: images (batch, 3, size, size), labels (batch,)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, 3, size, size)).astype(dtype), rng.integers(0, classes, batch)


def densenet_bc_setup(depth, growth_rate, batch, device, dtype="float32", memory_efficient=True, seed=0):
    """(model, optimizer, x, y) for a DenseNet-BC training step on ``device``, with the
    paper's optimizer (SGD, Nesterov momentum 0.9, lr 0.1, weight decay 1e-4); the
    weights depend only on ``seed``, not on the device."""
    import numpy as np

    import tinydense
    from tinydense.models import densenet_bc
    from tinydense.optim import SGD
    tinydense.manual_seed(seed)
    model = densenet_bc(depth, growth_rate, memory_efficient=memory_efficient).to(device, np.dtype(dtype))
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    x_np, y_np = batch_arrays(batch, seed, dtype=dtype)
    return model, optimizer, tinydense.tensor(x_np, device=device), tinydense.tensor(y_np, device=device)


def seconds(fn, device):
    """Wall-clock seconds of ``fn()``, the GPU's queue empty before and after."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def write_json(path, data):
    if path:
        Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n")
