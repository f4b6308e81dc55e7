"""``train_compare(names, ...)``: the seed notes' DenseNet-201 vs ResNet-50 experiment.

The first seed note ends by training timm's pretrained ``densenet201`` and
``resnet50`` for one epoch on CIFAR-10 at 32x32 (batch 32, SGD with lr 0.001 and
momentum 0.9, a tqdm bar with the loss and the memory, thop's count at batch 128)
and comparing parameters, "FLOPs", training time, memory and accuracy. Here each
model is trained the same way with the training loop's own step
(:func:`tinydense.training.loop.train_step`) and scored with its ``evaluate``:

    params        learnable numbers (``summary``'s total, tools/compare.py's ``count``)
    MACs          multiply-adds for one image and for a batch of 128. thop's
                  ``profile`` reports the same count under the name "FLOPs": its
                  "FLOPs" are multiply-adds (a floating-point count is twice as large)
    s/epoch       wall-clock seconds of one training epoch (the loop only: no data
                  loading from disk, no evaluation)
    peak memory   how much the process's peak resident memory (Linux ``VmHWM``) grew
                  during training, above its resident memory once the data and the
                  model were loaded: the activations kept for backward, the
                  gradients, the momentum buffers, the workspace
    test acc      accuracy on the test images after training

Each model is trained in a fresh child process (``python -m
tinydense.tools.train_compare SPEC``), so one model's memory peak cannot hide the
other's and the two start on the same footing, as the benchmarks measure. Images
are normalised as the seed's code does, ``(x - 0.5) / 0.5`` per channel, and are
not augmented. ``weights`` (a name torchvision publishes, e.g. ``"DEFAULT"``, or a
file per model) starts from pretrained ImageNet weights and replaces the
classifier with a new one for the data set's classes; every weight is then
trained, as in the seed; without ``weights`` the models start from scratch.
"""
from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
import time

from .. import backend, models
from ..data import DataLoader, load_cifar
from ..nn import Linear
from ..optim import SGD
from ..text import format_duration
from ..threads import blas_threads, load_average, set_blas_threads
from ..training.loop import evaluate, train_step

SEED_NORMALISATION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))   # transforms.Normalize((0.5,)*3, (0.5,)*3), as the seed
THOP_BATCH = 128                                             # the seed's thop.profile input: 128 x 3 x 32 x 32


def process_memory_mb(field):
    """VmRSS (now) or VmHWM (the peak since the start or the last reset) of this process, in MB (Linux;
    benchmarks/bench_train.py reads it too)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise OSError(f"{field} is not in /proc/self/status: the peak memory is measured on Linux only")


def _reset_peak():
    """Start VmHWM afresh from the current resident memory (Linux 4.0+: write 5 to clear_refs);
    False where the kernel refuses, and the peak then counts from the process's start."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def new_classifier(model, num_classes):
    """Replace the last Linear layer (``fc`` or ``classifier``) of a pretrained model with a new,
    randomly initialised one for ``num_classes`` classes."""
    for attribute in ("fc", "classifier"):
        head = getattr(model, attribute, None)
        if isinstance(head, Linear):
            setattr(model, attribute, Linear(head.in_features, num_classes))
            return model
    raise ValueError(f"{type(model).__name__} has no Linear fc or classifier to replace for {num_classes} classes")


def build(name, num_classes, weights=None):
    """The model ``name`` for ``num_classes`` classes: from scratch, or with ``weights``
    (models/weights.py: a published name or a file) and a new classifier."""
    builder = getattr(models, name)
    if weights is None:
        return builder(num_classes=num_classes)
    check_weights(name)
    return new_classifier(builder(weights=weights), num_classes)


def check_weights(name):
    """ValueError unless the builder of ``name`` takes ``weights=`` (models/weights.py's
    ``with_weights``: the models torchvision publishes weights for)."""
    if "weights" not in inspect.signature(getattr(models, name), follow_wrapped=False).parameters:
        raise ValueError(f"{name} has no pretrained weights (torchvision publishes none); leave --weights out "
                         f"to train it from scratch")


def spec_data(spec):
    """(training set, test set, the shuffled training loader, the test loader) of a child's ``spec``: the same
    images in the same order for every model (and benchmarks/seed_experiment.py's PyTorch side), normalised as
    the seed."""
    train = load_cifar(spec["dataset"], spec["data_dir"], train=True).head(spec["limit_train"])
    test = load_cifar(spec["dataset"], spec["data_dir"], train=False).head(spec["limit_test"])
    mean, std = SEED_NORMALISATION
    return (train, test, DataLoader(train, spec["batch_size"], shuffle=True, mean=mean, std=std, seed=spec["seed"]),
            DataLoader(test, spec["batch_size"], mean=mean, std=std))


def train_epochs(spec, loader, step, label=""):
    """Run ``step(x, y) -> loss`` over ``loader`` for ``spec["epochs"]`` epochs, with a progress bar
    showing the loss and the memory. Returns (seconds per epoch, peak memory growth in MB, whether the
    peak could be reset, the last epoch's mean loss): the table's measurements."""
    from tqdm import tqdm
    before = process_memory_mb("VmRSS")
    reset = _reset_peak()
    seconds = []
    for epoch in range(spec["epochs"]):
        loss_sum, steps, start = 0.0, 0, time.perf_counter()
        bar = tqdm(loader, desc=f"{label}{spec['name']} epoch {epoch + 1}/{spec['epochs']}", unit="batch",
                   disable=not spec["progress"], leave=False)
        for x, y in bar:
            loss_sum, steps = loss_sum + float(step(x, y)), steps + 1
            bar.set_postfix({"loss": f"{loss_sum / steps:.4f}", "memory (MB)": f"{process_memory_mb('VmRSS'):.0f}"})
        seconds.append(time.perf_counter() - start)
    peak = process_memory_mb("VmHWM")
    return sum(seconds) / len(seconds), max(peak - before, 0.0), reset, loss_sum / max(steps, 1)


def train_one(spec) -> dict:
    """The child's work for one model (``spec``: a dict of train_compare's settings and ``name``
    and ``weights``): count, train ``epochs`` epochs with a progress bar, test. Returns the row."""
    from .compare import count
    if spec.get("threads"):
        set_blas_threads(spec["threads"])
    train, test, loader, test_loader = spec_data(spec)
    backend.manual_seed(spec["seed"])                       # the initial (or the new classifier's) weights
    model = build(spec["name"], train.num_classes, spec["weights"])
    params, macs = count(model, 32)[:2]
    optimizer = SGD(model.parameters(), lr=spec["lr"], momentum=spec["momentum"])
    model.train()
    seconds, peak_mb, reset, loss = train_epochs(spec, loader, lambda x, y: train_step(model, optimizer, x, y)[0])
    result = evaluate(model, test_loader, test.num_classes)
    return {"name": spec["name"], "weights": spec["weights"], "params": params, "macs": macs,
            "seconds": seconds, "peak_mb": peak_mb, "peak_reset": reset,
            "train_loss": loss, "test_acc": result["acc"], "load": load_average(),
            "threads": blas_threads(), "train_images": len(train), "test_images": len(test)}


def _run_child(spec, command=None) -> dict:
    """:func:`train_one` in a fresh ``python -m tinydense.tools.train_compare`` (or ``command``, an
    argv that takes the spec as its last argument and answers the same way: benchmarks/seed_experiment.py's
    PyTorch side); its progress bar goes to this process's stderr, its row comes back as one JSON line."""
    command = command or [sys.executable, "-m", "tinydense.tools.train_compare"]
    proc = subprocess.run([*command, json.dumps(spec)],
                          stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    lines = proc.stdout.strip().splitlines()
    answer = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    if proc.returncode != 0 or "error" in answer or "name" not in answer:
        error = answer.get("error", f"the training process failed (exit status {proc.returncode})")
        raise ValueError(f"compare --train: {spec['name']}: " + (error if len(error) < 600 else error[:600] + " ..."))
    return answer


def _positive(value, what, kind=int):
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
            or (kind is int and value != int(value)):
        raise ValueError(f"compare --train: {what} must be a positive {'integer' if kind is int else 'number'}, "
                         f"got {value!r}")
    return kind(value)


def check_options(names, dataset, epochs, batch_size, lr, momentum, weights, limit_train, limit_test):
    """ValueError naming the value, before any work; returns the weights per model (None: from scratch)."""
    from ..training import DATASETS
    if not names:
        raise ValueError("compare --train: give at least one model")
    if dataset not in DATASETS:
        raise ValueError(f"compare --train: unknown data set {dataset!r}; give one of {', '.join(DATASETS)}")
    for value, what in ((epochs, "epochs"), (batch_size, "batch-size")):
        _positive(value, what)
    _positive(lr, "lr", float)
    for value, what in ((limit_train, "limit-train"), (limit_test, "limit-test")):
        if value is not None:
            _positive(value, what)
    if not 0 <= momentum < 1:
        raise ValueError(f"compare --train: momentum must be in [0, 1), got {momentum!r}")
    if weights is None or isinstance(weights, (str, os.PathLike)):
        return [weights] * len(names)
    weights = list(weights)
    if len(weights) == 1:
        return weights * len(names)
    if len(weights) != len(names):
        raise ValueError(f"compare --train: {len(weights)} --weights for {len(names)} models: give one name for "
                         f"all (e.g. DEFAULT) or one file per model, in the models' order")
    return weights


def train_compare(names, dataset="cifar10", data_dir=None, epochs=1, batch_size=32, lr=0.001, momentum=0.9,
                  weights=None, limit_train=None, limit_test=None, seed=0, threads=None, progress=False,
                  log=None):
    """Train each model of ``names`` in its own child process (see the module's docstring) and
    return a :class:`TrainComparison`. ``data_dir`` must already hold the data set."""
    weights = check_options(names, dataset, epochs, batch_size, lr, momentum, weights, limit_train, limit_test)
    train = load_cifar(dataset, data_dir, train=True).head(limit_train)          # missing data: refused here,
    load_cifar(dataset, data_dir, train=False)                                   # before any child starts
    for name, w in zip(names, weights):
        if w is not None:
            check_weights(name)
    say = log or (lambda text: None)
    rows = []
    for name, w in zip(names, weights):
        start = time.perf_counter()
        say(f"training {name} ({'pretrained: ' + str(w) if w else 'from scratch'}) for {epochs} epoch(s) on "
            f"{len(train)} {dataset} images, batch {batch_size}, in a fresh process ...")
        spec = {"name": name, "weights": None if w is None else str(w), "dataset": dataset,
                "data_dir": str(data_dir), "epochs": epochs, "batch_size": batch_size, "lr": lr,
                "momentum": momentum, "limit_train": limit_train, "limit_test": limit_test, "seed": seed,
                "threads": threads, "progress": progress}
        rows.append(_run_child(spec))
        say(f"  {name}: done in {format_duration(time.perf_counter() - start)}")
    return TrainComparison(rows, dict(dataset=dataset, epochs=epochs, batch_size=batch_size, lr=lr,
                                      momentum=momentum, limit_train=limit_train))


class TrainComparison:
    """The result of :func:`train_compare`: ``rows`` (dicts, see :func:`train_one`), the settings,
    and ``str()`` the seed's table with its notes."""

    def __init__(self, rows, settings):
        self.rows, self.settings = rows, settings

    def __str__(self):
        s = self.settings
        header = ("model", "start", "params (M)", "M MACs/image", f"G MACs/{THOP_BATCH}", "s/epoch",
                  "peak memory (MB)", "test acc %")
        cells = [(r["name"], "pretrained" if r["weights"] else "scratch", f"{r['params'] / 1e6:.2f}",
                  f"{r['macs'] / 1e6:.1f}", f"{r['macs'] * THOP_BATCH / 1e9:.2f}", f"{r['seconds']:.1f}",
                  f"{r['peak_mb']:.0f}", f"{100 * r['test_acc']:.2f}") for r in self.rows]
        widths = [max(len(row[i]) for row in [header] + cells) for i in range(len(header))]
        fmt = lambda row: "  ".join(c.ljust(w) if i < 2 else c.rjust(w)               # noqa: E731
                                    for i, (c, w) in enumerate(zip(row, widths)))
        rule = "-" * len(fmt(header))
        first = self.rows[0]
        limit = f" (the first {s['limit_train']}: --limit-train)" if s["limit_train"] else ""
        loads = [r["load"] for r in self.rows if r.get("load") is not None]
        notes = [f"{s['dataset']} at 32x32: {first['train_images']} training images{limit}, "
                 f"{first['test_images']} test images; {s['epochs']} epoch(s), batch {s['batch_size']}, SGD lr "
                 f"{s['lr']:g} momentum {s['momentum']:g}, no augmentation, images normalised as (x - 0.5) / 0.5; "
                 f"each model "
                 + ("from pretrained weights (" + ", ".join(f"{r['name']}: {r['weights']}" for r in self.rows)
                    + ") with a new classifier, every weight trained" if any(r["weights"] for r in self.rows)
                    else "from scratch (random initial weights: no --weights)") + ".",
                 f"MACs: multiply-adds (summary's count); thop's profile() calls the same count \"FLOPs\", and the "
                 f"seed's numbers are for its input of {THOP_BATCH} images (G MACs/{THOP_BATCH}).",
                 f"s/epoch: the training loop only, on this machine's CPU (float32, "
                 f"{first['threads'] or 'default'} BLAS threads"
                 + (f"; 1-minute load average {min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} CPUs"
                    if loads else "") + ").",
                 "peak memory: growth of the process's peak resident memory during training (VmHWM), each "
                 "model in a fresh process; CPU memory, where the seed read the GPU's."]
        if len(self.rows) == 2:
            a, b = self.rows
            ratio = lambda key: a[key] / b[key] if b[key] else float("nan")              # noqa: E731
            notes.append(f"{a['name']} / {b['name']}: {ratio('params'):.2f}x the parameters, {ratio('macs'):.2f}x "
                         f"the multiply-adds, {ratio('seconds'):.2f}x the time per epoch, {ratio('peak_mb'):.2f}x "
                         f"the peak memory.")
        wrap = lambda text: textwrap.fill(text, width=max(100, len(rule)), subsequent_indent="      ")  # noqa: E731
        return "\n".join([rule, fmt(header), rule] + [fmt(c) for c in cells] + [rule] + [wrap(n) for n in notes])

    __repr__ = __str__


def main(argv=None) -> int:
    """The child: ``python -m tinydense.tools.train_compare SPEC`` prints one JSON line, the row or
    ``{"error": ...}``."""
    spec = json.loads((sys.argv[1:] if argv is None else argv)[0])
    from ..data import DownloadError
    try:
        row = train_one(spec)
    except (ValueError, OSError, DownloadError) as e:
        print(json.dumps({"error": " ".join(str(e).split())}))
        return 1
    except MemoryError:
        print(json.dumps({"error": f"out of memory training at batch {spec['batch_size']}: use a smaller "
                                   f"--batch-size"}))
        return 1
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
