"""The seed notes' DenseNet-201 vs ResNet-50 experiment in tinydense AND PyTorch, one command.

    python benchmarks/seed_experiment.py                          # tinydense only, without torch
    PYTHONPATH=$PWD /work/torchvenv/bin/python benchmarks/seed_experiment.py     # both frameworks

The first seed note fine-tunes ``densenet201`` and ``resnet50`` for one epoch on
CIFAR-10 at 32x32 (batch 32, SGD lr 0.001 momentum 0.9) and finds DenseNet about 3x
slower and lighter on memory than ResNet on an RTX 3090. On a CPU the ratios differ;
this script measures them in both frameworks in the same run, so the lesson can say
which of the seed's observations is the architecture's and which the framework's.

tinydense's side is ``tinydense compare A B --train DATASET`` itself
(:func:`tinydense.tools.train_compare.train_compare`). PyTorch's side trains
torchvision's models of the same names the same way: each model in a fresh child
process (this script with ``--child``), the same images in the same order (tinydense's
``DataLoader`` with the same seed hands both frameworks their batches, normalised as
``(x - 0.5) / 0.5``), cross-entropy, ``torch.optim.SGD`` with the same lr and momentum,
the same clock around the training loop and the same memory reading (growth of
``VmHWM`` during training). Parameters and multiply-adds are tinydense's count (the
architectures are the same: the script checks that PyTorch's parameter count agrees).
``--weights`` gives both sides the same pretrained file (models/weights.py's cache or
a file of yours; the classifier is replaced, every weight trained).

PyTorch is optional: without ``torch`` and ``torchvision`` importable the script says
so and runs tinydense's side only. torchvision's wheel on this machine does not match
torch's build ("operator torchvision::nms does not exist" when it registers its ops);
the models need none of those ops, so an empty ``torchvision._meta_registrations`` is
put in place before the import.

Writes ``benchmarks/results/seed_experiment.json`` (git-ignored).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import types
from pathlib import Path

from tinydense.cli import TRAIN_COMPARE_OPTIONS
from tinydense.data import default_data_dir
from tinydense.threads import load_average
from tinydense.tools.train_compare import (THOP_BATCH, _run_child, check_options, spec_data, train_compare,
                                           train_epochs)

RESULTS = Path(__file__).resolve().parent / "results"
SCRIPT = Path(__file__).resolve()


def import_torch():
    """(torch, torchvision), or ImportError saying what is missing (see the module's docstring)."""
    import torch
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    import torchvision
    return torch, torchvision


def torch_missing():
    """None when PyTorch's side can run in this Python, else why not (one line)."""
    try:
        import_torch()
    except ImportError as e:
        return f"{type(e).__name__}: {e}"
    return None


def torch_model(name, num_classes, weights):
    """torchvision's ``name`` for ``num_classes`` classes: from scratch, or loaded with the same
    weights tinydense's side loads (a published name or a file) and given a new classifier."""
    torch, torchvision = import_torch()
    builder = getattr(torchvision.models, name)
    if weights is None:
        return builder(num_classes=num_classes)
    from tinydense.models.weights import _state_for
    model = builder()                                            # the 1000 ImageNet classes, as published
    state = _state_for(name, weights, {}, (), False)             # the file tinydense's side reads, as NumPy
    model.load_state_dict({k: torch.as_tensor(v.copy()) for k, v in state.items()})
    attribute = "fc" if hasattr(model, "fc") else "classifier"
    setattr(model, attribute, torch.nn.Linear(getattr(model, attribute).in_features, num_classes))
    return model


def train_torch(spec) -> dict:
    """The PyTorch child's work for one model: train_compare's ``train_one`` with PyTorch doing
    the forward, backward and update. Returns a row with train_one's keys (``macs``: None)."""
    torch, torchvision = import_torch()
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    train, test, loader, test_loader = spec_data(spec)
    torch.manual_seed(spec["seed"])
    model = torch_model(spec["name"], train.num_classes, spec["weights"])
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = torch.optim.SGD(model.parameters(), lr=spec["lr"], momentum=spec["momentum"])
    batch = lambda x, y: (torch.from_numpy(x.data), torch.from_numpy(y.data).long())      # noqa: E731

    def step(x, y):
        x, y = batch(x, y)
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    model.train()
    seconds, peak_mb, reset, loss = train_epochs(spec, loader, step, label="PyTorch ")
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in test_loader:
            x, y = batch(x, y)
            correct += int((model(x).argmax(1) == y).sum())
    return {"name": spec["name"], "weights": spec["weights"], "params": params, "macs": None,
            "seconds": seconds, "peak_mb": peak_mb, "peak_reset": reset,
            "train_loss": loss, "test_acc": correct / max(len(test), 1), "load": load_average(),
            "threads": torch.get_num_threads(), "train_images": len(train), "test_images": len(test),
            "torch": torch.__version__, "torchvision": torchvision.__version__}


def child(spec_json) -> int:
    """``--child SPEC``: one JSON line, the row or ``{"error": ...}`` (as train_compare's child)."""
    spec = json.loads(spec_json)
    try:
        row = train_torch(spec)
    except (ValueError, OSError, ImportError, RuntimeError) as e:
        print(json.dumps({"error": f"PyTorch: {type(e).__name__}: " + " ".join(str(e).split())}))
        return 1
    print(json.dumps(row))
    return 0


def ratio(a, b):
    """a / b, NaN when b is 0 or either is missing."""
    return a / b if a is not None and b else math.nan


def ratios(rows) -> dict:
    """The first model's time and peak memory over the second's, in one framework's rows."""
    first, second = rows[0], rows[1]
    return {"seconds": ratio(first["seconds"], second["seconds"]), "peak_mb": ratio(first["peak_mb"], second["peak_mb"])}


def table(ours, theirs=None) -> str:
    """One table: each model's count (tinydense's), and tinydense's and (where ``theirs``, PyTorch's
    rows, is given) PyTorch's seconds per epoch, peak memory growth and test accuracy; then the
    first model over the second, in each framework. Markdown, so it pastes into a lesson."""
    frameworks = [("tinydense", ours)] + ([("PyTorch", theirs)] if theirs else [])
    header = ["model", "params (M)", "M MACs/image", f"G MACs/{THOP_BATCH}"]
    for column in ("s/epoch", "peak MB", "test acc %"):
        header += [f"{framework} {column}" for framework, _ in frameworks]
    lines = [header]
    for i, row in enumerate(ours):
        cells = [row["name"], f"{row['params'] / 1e6:.2f}", f"{row['macs'] / 1e6:.1f}",
                 f"{row['macs'] * THOP_BATCH / 1e9:.2f}"]
        cells += [f"{rows[i]['seconds']:.1f}" for _, rows in frameworks]
        cells += [f"{rows[i]['peak_mb']:.0f}" for _, rows in frameworks]
        cells += [f"{100 * rows[i]['test_acc']:.2f}" for _, rows in frameworks]
        lines.append(cells)
    if len(ours) == 2:
        name = f"**{ours[0]['name']} / {ours[1]['name']}**"
        cells = [name, f"{ratio(ours[0]['params'], ours[1]['params']):.2f}x",
                 f"{ratio(ours[0]['macs'], ours[1]['macs']):.2f}x", ""]
        for key in ("seconds", "peak_mb"):
            cells += [f"**{ratios(rows)[key]:.2f}x**" for _, rows in frameworks]
        lines.append(cells + [""] * len(frameworks))
    text = ["| " + " | ".join(line) + " |" for line in lines]
    text.insert(1, "| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |")
    return "\n".join(text)


def params_agree(ours, theirs) -> list:
    """Lines saying, per model, whether PyTorch's parameter count equals tinydense's."""
    return [f"{a['name']}: {a['params']:,} parameters in both frameworks" if a["params"] == b["params"] else
            f"{a['name']}: PARAMETER COUNTS DIFFER: tinydense {a['params']:,}, PyTorch {b['params']:,}"
            for a, b in zip(ours, theirs)]


def run_torch(names, settings, data_dir, weights, threads, progress, log) -> list:
    """PyTorch's rows: each model in a fresh ``python seed_experiment.py --child SPEC``."""
    rows = []
    for name, w in zip(names, weights):
        start = time.perf_counter()
        log(f"PyTorch: training {name} ({'pretrained: ' + str(w) if w else 'from scratch'}) in a fresh process ...")
        spec = dict(settings, name=name, weights=None if w is None else str(w), data_dir=str(data_dir),
                    threads=threads, progress=progress)
        rows.append(_run_child(spec, [sys.executable, str(SCRIPT), "--child"]))
        log(f"  PyTorch {name}: done in {time.perf_counter() - start:.0f} s")
    return rows


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="*", default=["densenet201", "resnet50"],
                   help="zoo models that torchvision has too (default: densenet201 resnet50)")
    p.add_argument("--train", default="cifar10", choices=("cifar10", "cifar100"), help="data set (default: cifar10)")
    for option, kind, default, text in TRAIN_COMPARE_OPTIONS:          # compare --train's, the seed's defaults
        p.add_argument(option, type=kind, default=default, help=f"{text} (default: {'all' if default is None else default})")
    p.add_argument("--weights", nargs="+", help="pretrained weights, as compare --train takes them")
    p.add_argument("--data-dir", help="the data set's folder (default: $TINYDENSE_DATA, else data/)")
    p.add_argument("--threads", type=int, help="BLAS / PyTorch threads (default: each library's own)")
    p.add_argument("--no-torch", action="store_true", help="tinydense's side only")
    p.add_argument("--out", type=Path, default=RESULTS / "seed_experiment.json", help="the JSON file to write")
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    if args.child:
        return child(args.child)
    log = lambda text: print(text, file=sys.stderr, flush=True)       # noqa: E731
    data_dir = default_data_dir(args.data_dir)
    settings = {option[2:].replace("-", "_"): getattr(args, option[2:].replace("-", "_"))
                for option, *_ in TRAIN_COMPARE_OPTIONS}
    weights = check_options(args.models, args.train, args.epochs, args.batch_size, args.lr, args.momentum,
                            args.weights, args.limit_train, args.limit_test)      # bad values: refused here
    missing = "--no-torch" if args.no_torch else torch_missing()
    if missing:
        log(f"PyTorch's side is skipped ({missing}); tinydense's side only. For both: "
            f"pip install torch torchvision, or run this script with a Python that has them")
    progress = sys.stderr.isatty()
    ours = train_compare(args.models, args.train, data_dir, weights=args.weights, threads=args.threads,
                         progress=progress, log=log, **settings)
    theirs = None
    if not missing:
        theirs = run_torch(args.models, dict(settings, dataset=args.train), data_dir, weights, args.threads,
                           progress, log)
    print(ours)
    print()
    print(table(ours.rows, theirs))
    if theirs:
        print("\n".join(params_agree(ours.rows, theirs)))
        print(f"PyTorch {theirs[0]['torch']} (torchvision {theirs[0]['torchvision']}), {theirs[0]['threads']} "
              f"thread(s); tinydense {ours.rows[0]['threads'] or 'default'} BLAS thread(s). Same images, same order, "
              f"same optimiser; MACs are tinydense's count.")
    else:
        print(f"PyTorch: not measured ({missing}).")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {"settings": dict(ours.settings, limit_test=args.limit_test, seed=args.seed, threads=args.threads),
              "cpus": os.cpu_count(), "tinydense": ours.rows, "pytorch": theirs, "pytorch_skipped": missing,
              "ratios": {"tinydense": ratios(ours.rows) if len(ours.rows) == 2 else None,
                         "pytorch": ratios(theirs) if theirs and len(theirs) == 2 else None}}
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
