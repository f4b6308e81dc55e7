"""Run PyTorch code on tinydense without editing it.

    python -m tinydense.tools.as_torch script.py [its arguments]

runs ``script.py`` (and every module it imports) with PyTorch's module names pointing at
tinydense's: ``import torch`` gives ``tinydense``, ``torch.nn`` gives ``tinydense.nn``,
``torchvision`` gives ``tinydense.vision`` and so on (``ALIASES``). That is the import swap
of README's "Coming from PyTorch", done once for a whole project instead of line by line.
Nothing of PyTorch is imported, and nothing needs to be installed.

What has no tinydense counterpart gets a stand-in that says what it does (``STAND_INS``):
``torch.backends.cudnn`` (its flags are accepted and mean nothing) and
``torch.utils.checkpoint.checkpoint`` (calls the function: no recomputation).

``load_definitions(path, names)`` runs only some classes and functions of a file (with
the file's absolute imports), e.g. torchvision's ``_DenseLayer`` and ``_DenseBlock``, whose
module also imports things that are not about the model.
"""
from __future__ import annotations

import ast
import importlib
import runpy
import sys
import types

ALIASES = {
    "torch": "tinydense",
    "torch.nn": "tinydense.nn",
    "torch.nn.functional": "tinydense.nn.functional",
    "torch.nn.init": "tinydense.nn.init",
    "torch.optim": "tinydense.optim",
    "torch.optim.lr_scheduler": "tinydense.optim.lr_scheduler",
    "torch.autograd": "tinydense.autograd",
    "torch.cuda": "tinydense.cuda",
    "torch.utils": "tinydense.utils",
    "torch.utils.data": "tinydense.utils.data",
    "torchvision": "tinydense.vision",
    "torchvision.datasets": "tinydense.vision.datasets",
    "torchvision.transforms": "tinydense.vision.transforms",
    "torchvision.models": "tinydense.vision.models",
}


def _checkpoint(function, *args, **kwargs):
    """``torch.utils.checkpoint.checkpoint`` stand-in: calls ``function`` (tinydense's
    memory-efficient DenseNet has its own recomputation, in ops/dense_block.py)."""
    kwargs.pop("use_reentrant", None)
    return function(*args, **kwargs)


def _stand_ins():
    cudnn = types.ModuleType("torch.backends.cudnn", "cuDNN's flags: accepted, without effect in tinydense")
    cudnn.benchmark, cudnn.deterministic, cudnn.enabled = False, False, True
    backends = types.ModuleType("torch.backends", "stand-in: holds cudnn")
    backends.cudnn = cudnn
    checkpoint = types.ModuleType("torch.utils.checkpoint", "stand-in: checkpoint(f, *args) calls f(*args)")
    checkpoint.checkpoint = _checkpoint
    return {"torch.backends": backends, "torch.backends.cudnn": cudnn, "torch.utils.checkpoint": checkpoint}


STAND_INS = ("torch.backends", "torch.backends.cudnn", "torch.utils.checkpoint")


def install() -> None:
    """Put tinydense's modules (and the stand-ins) in ``sys.modules`` under PyTorch's names.
    Refuses if the real PyTorch is already imported in this process."""
    real = sys.modules.get("torch")
    if real is not None and not getattr(real, "__name__", "").startswith("tinydense"):
        raise RuntimeError("PyTorch itself is imported in this process; run the script in a fresh one")
    for name, target in ALIASES.items():
        sys.modules[name] = importlib.import_module(target)
    stand_ins = _stand_ins()
    sys.modules.update(stand_ins)
    # `import torch.backends.cudnn as cudnn` reads attributes of the parent module
    for name, module in stand_ins.items():
        parent, _, child = name.rpartition(".")
        if not hasattr(sys.modules[parent], child):
            setattr(sys.modules[parent], child, module)


def run_script(path, argv=()) -> dict:
    """Run the file ``path`` as ``__main__`` with ``sys.argv = [path, *argv]``, its own
    folder first on the import path (as ``python path`` does). Returns its globals."""
    install()
    folder = str(__import__("pathlib").Path(path).resolve().parent)
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv, sys.path[:0] = [str(path), *argv], [folder]
    try:
        return runpy.run_path(str(path), run_name="__main__")
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path


def load_definitions(path, names, namespace=None) -> dict:
    """Run the absolute imports of the Python file ``path`` and the top-level classes and
    functions called ``names`` (unchanged, in the file's order); return the namespace.
    Relative imports and everything else in the file are left out."""
    install()
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=str(path))
    wanted = set(names)
    kept = [node for node in tree.body
            if isinstance(node, ast.Import) or (isinstance(node, ast.ImportFrom) and not node.level)
            or (isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name in wanted)]
    missing = wanted - {node.name for node in kept if isinstance(node, (ast.ClassDef, ast.FunctionDef))}
    if missing:
        raise ValueError(f"{path} defines no top-level {sorted(missing)}")
    namespace = {} if namespace is None else namespace
    exec(compile(ast.Module(body=kept, type_ignores=[]), str(path), "exec"), namespace)
    return namespace


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    run_script(argv[0], argv[1:])


if __name__ == "__main__":
    main()
