"""Train kuangliu/pytorch-cifar's DenseNet with its own ``main.py`` on tinydense.

    python benchmarks/pytorch_cifar.py --source PATH/TO/pytorch-cifar --data-dir DIR [--epochs 1]

``--source`` is a checkout of https://github.com/kuangliu/pytorch-cifar (MIT licence; it is
not copied into this repository). Its ``main.py`` and ``models/densenet.py`` run as written:
``import torch`` ... ``import torchvision`` give tinydense's modules
(tinydense/tools/as_torch.py), and nothing is imported from PyTorch. Three lines are changed,
in memory, and printed before the run:

    net = SimpleDLA()                     ->  net = densenet_cifar()      (the model, as its comments invite)
    root='./data'                         ->  root=<--data-dir>
    range(start_epoch, start_epoch+200)   ->  range(start_epoch, start_epoch+<--epochs>)

and two modules are stand-ins: ``models`` holds only ``models/densenet.py`` (the other
architectures are not needed), and ``utils.progress_bar`` prints one line per epoch
(kuangliu's asks the terminal for its width with ``stty``, which fails without one).
The cosine schedule keeps ``T_max=200``, as written. The checkpoint ``main.py`` saves goes
to ``<--work-dir>/checkpoint/ckpt.pth`` in tinydense's pickle-free format and is read back.

On the course's subset (5085 training, 1017 test images) one epoch takes several minutes on
two CPU cores; a model that learns ends it above the 10% of guessing.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import sys
import time
import types
from pathlib import Path

import tinydense
from tinydense.tools import as_torch

EDITS = [  # (what the line says in main.py, what it becomes); each must match exactly once
    (r"^net = (?!net\.)\w+\([^)]*\)$", "net = densenet_cifar()"),
    (r"range\(start_epoch, start_epoch\s*\+\s*200\)", "range(start_epoch, start_epoch + {epochs})"),
]


def progress_bar(current, total, msg=None):
    """One line per pass over the data, at its last batch (stand-in for kuangliu's utils.progress_bar)."""
    if current == total - 1:
        print(f"  {total} batches | {msg}", flush=True)


def load_models(source: Path) -> None:
    """Make ``from models import *`` give models/densenet.py's names."""
    spec = importlib.util.spec_from_file_location("models.densenet", source / "models" / "densenet.py")
    densenet = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(densenet)
    package = types.ModuleType("models", "stand-in package: kuangliu's models/densenet.py only")
    names = [n for n in vars(densenet) if not n.startswith("_") and n not in ("math", "torch", "nn", "F",
                                                                             "Variable")]
    package.__dict__.update({n: getattr(densenet, n) for n in names})
    package.__all__ = names
    sys.modules["models"], sys.modules["models.densenet"] = package, densenet


def edited_main(source: Path, data_dir: str, epochs: int) -> str:
    text = (source / "main.py").read_text()
    for pattern, replacement in EDITS:
        replacement = replacement.format(epochs=epochs)
        matches = re.findall(pattern, text, flags=re.M)
        if len(matches) != 1:
            raise SystemExit(f"main.py: expected one line matching {pattern!r}, found {len(matches)}: "
                             f"this version of main.py differs from the one this script knows")
        print(f"  edit: {matches[0]}  ->  {replacement}")
        text = re.sub(pattern, replacement, text, flags=re.M)
    count = text.count("root='./data'")
    if count == 0:
        raise SystemExit("main.py: no root='./data' found")
    print(f"  edit: root='./data' ({count}x)  ->  root={data_dir!r}")
    return text.replace("root='./data'", f"root={data_dir!r}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, type=Path, help="a checkout of kuangliu/pytorch-cifar")
    parser.add_argument("--data-dir", default=os.environ.get("TINYDENSE_DATA", "data"),
                        help="the directory holding cifar-10-batches-py/")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--work-dir", type=Path, default=Path("."), help="where checkpoint/ is written")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    source, data_dir = args.source.resolve(), str(Path(args.data_dir).resolve())
    as_torch.install()
    tinydense.manual_seed(args.seed)
    utils = types.ModuleType("utils", "stand-in for kuangliu's utils.py: progress_bar only")
    utils.progress_bar = progress_bar
    sys.modules["utils"] = utils
    load_models(source)
    code = compile(edited_main(source, data_dir, args.epochs), str(source / "main.py"), "exec")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    os.chdir(args.work_dir)
    saved_argv, sys.argv = sys.argv, [str(source / "main.py")]
    start = time.perf_counter()
    try:
        namespace = {"__name__": "__main__", "__file__": str(source / "main.py")}
        exec(code, namespace)
    finally:
        sys.argv = saved_argv
    print(f"{args.epochs} epoch(s) in {time.perf_counter() - start:.0f} s; best test accuracy "
          f"{namespace['best_acc']:.2f}%")
    saved = tinydense.load("checkpoint/ckpt.pth")
    print(f"checkpoint/ckpt.pth: epoch {saved['epoch']}, acc {saved['acc']:.2f}, "
          f"{len(saved['net'])} arrays in 'net'")


if __name__ == "__main__":
    main()
