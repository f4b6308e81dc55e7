"""Run the PyTorch code of d2l's DenseNet chapter on tinydense.

    python benchmarks/d2l_densenet.py --chapter PATH/TO/d2l-en/chapter_convolutional-modern/densenet.md

``--chapter`` is the chapter's markdown from a checkout of https://github.com/d2l-ai/d2l-en
(not copied into this repository). Every code cell of the PyTorch tab runs as written, in
order, in one namespace, with ``torch`` ... giving tinydense's modules
(tinydense/tools/as_torch.py); a cell ending in an expression prints it, as the notebook
shows it. Both of the chapter's forms are read: the current one (``%%tab pytorch``,
``tab.selected('pytorch')``, ``nn.LazyConv2d``) and the earlier one (``#@tab pytorch``,
sizes given by hand).

The ``d2l`` library is not PyTorch: its four names the chapter uses get small stand-ins
here (``Classifier``, a Module whose forward runs ``self.net``; ``add_to_class``;
``init_cnn``, Xavier-uniform weights of Linear and Conv2d; ``save_hyperparameters``). The
training cell (``d2l.Trainer`` on Fashion-MNIST, a download) is left out; instead the model
takes a few SGD steps on one random batch of 96x96 one-channel images, and the losses are
printed (they fall when the model and its gradients work).
"""
from __future__ import annotations

import argparse
import ast
import inspect
import re
import sys
import types

import tinydense
from tinydense.tools import as_torch

CELL = re.compile(r"```\{\.python \.input[^}]*\}\n(.*?)```", re.S)
TAB = re.compile(r"^(?:%%tab|#@tab)\s+(.*)$")
TRAINING = ("d2l.Trainer", "train_ch6", "load_data_fashion_mnist")


def pytorch_cells(markdown: str) -> list:
    """The code of the cells the PyTorch tab shows (a cell without a tab line is MXNet's)."""
    cells = []
    for body in CELL.findall(markdown):
        lines = body.rstrip("\n").split("\n")
        match = TAB.match(lines[0]) if lines else None
        tabs = {t.strip() for t in match.group(1).split(",")} if match else set()
        if not tabs & {"pytorch", "all"}:
            continue
        code = "\n".join(line for line in lines[1:] if not line.startswith("%"))
        if not any(word in code for word in TRAINING):
            cells.append(code)
    return cells


def d2l_stand_in():
    nn = tinydense.nn

    class HyperParameters:
        def save_hyperparameters(self, ignore=()):
            frame = inspect.currentframe().f_back
            for name, value in frame.f_locals.items():
                if name not in set(ignore) | {"self"} and not name.startswith("_"):
                    setattr(self, name, value)

    class Classifier(nn.Module, HyperParameters):
        def forward(self, X):
            return self.net(X)

    def add_to_class(Class):
        def wrapper(obj):
            setattr(Class, obj.__name__, obj)
        return wrapper

    def init_cnn(module):
        if type(module) == nn.Linear or type(module) == nn.Conv2d:
            nn.init.xavier_uniform_(module.weight)

    module = types.ModuleType("d2l.torch", "stand-ins for the d2l library's names the DenseNet chapter uses")
    module.Classifier, module.Module, module.add_to_class, module.init_cnn = Classifier, Classifier, add_to_class, init_cnn
    package = types.ModuleType("d2l")
    package.torch = module
    return package, module


class Tab:
    """d2lbook's ``tab``: this run shows the PyTorch tab."""

    @staticmethod
    def selected(*names):
        return "pytorch" in names


def run_cells(cells, namespace) -> None:
    for i, code in enumerate(cells):
        tree = ast.parse(code)
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, f"<cell {i}>", "exec"), namespace)
        if last is not None:
            value = eval(compile(ast.Expression(last.value), f"<cell {i}>", "eval"), namespace)
            print(f"[cell {i}] {ast.unparse(last.value)} -> {value}")


def train_a_little(namespace, steps=4, batch=8):
    """A few SGD steps of the chapter's model on one random batch (d2l's Trainer's place)."""
    torch, nn = tinydense, tinydense.nn
    net = namespace["DenseNet"](lr=0.01) if "DenseNet" in namespace else namespace["net"]
    X, y = torch.randn(batch, 1, 96, 96), torch.randint(0, 10, (batch,))
    net(X)                                        # the lazy layers learn their sizes (d2l's apply_init)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    loss_fn, losses = nn.CrossEntropyLoss(), []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_fn(net(X), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    print(f"model: {sum(p.numel() for p in net.parameters())} parameters; losses on one batch: "
          + ", ".join(f"{v:.3f}" for v in losses))
    return losses


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chapter", required=True, help="chapter_convolutional-modern/densenet.md of d2l-en")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    as_torch.install()
    sys.modules["d2l"], sys.modules["d2l.torch"] = d2l_stand_in()
    tinydense.manual_seed(args.seed)
    with open(args.chapter, encoding="utf-8") as f:
        cells = pytorch_cells(f.read())
    print(f"{len(cells)} PyTorch cells")
    namespace = {"tab": Tab(), "__name__": "d2l_chapter"}
    run_cells(cells, namespace)
    return train_a_little(namespace)


if __name__ == "__main__":
    main()
