"""Checks of lesson 12, the capstone: the workspace's ops and a DenseNet trained on them."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import tinydense as td
import tinydense.functional as F

from .common import RESULTS, passed
from .l01_autograd import check_linear
from .l02_convolution import check_conv2d
from .l04_batchnorm_relu_pooling import check_avg_pool, check_batch_norm, check_max_pool, check_relu
from .l05_gradient_checking import check_cat
from .l08_training_cifar import check_cross_entropy, check_log_softmax

# the workspace: every op of lessons/student/my_ops.py and its checker
WORKSPACE_CHECKS = {"Conv2d": check_conv2d, "BatchNorm": check_batch_norm, "ReLU": check_relu,
                    "MaxPool2d": check_max_pool, "AvgPool2d": check_avg_pool, "Cat": check_cat,
                    "Linear": check_linear, "LogSoftmax": check_log_softmax, "CrossEntropy": check_cross_entropy}


def load_workspace(path=None):
    """Your workspace as a freshly imported module: ``path``, else $TINYDENSE_WORKSPACE, else
    student/my_ops.py. A missing file is first created from the template (never overwritten)."""
    import importlib.util
    import os
    from pathlib import Path
    path = Path(path or os.environ.get("TINYDENSE_WORKSPACE") or Path("student") / "my_ops.py")
    if not path.exists():
        here = Path(__file__).resolve().parents[1]      # lessons/ (or the student release)
        template = here / "my_ops_template.py"
        if template.exists():                   # the student release ships the template
            text = template.read_text()
        else:                                   # a checkout of the repository: generate it
            spec = importlib.util.spec_from_file_location("build_notebooks", here / "build_notebooks.py")
            build = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(build)
            text = build.render_template()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"created your workspace {path} from the template")
    spec = importlib.util.spec_from_file_location("my_ops", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    print(f"your workspace: {path.resolve()}")
    return module


def check_workspace(module):
    """Run the checker of every op in the workspace module; returns {name: passed}."""
    for name, check in WORKSPACE_CHECKS.items():
        cls = getattr(module, name, None)
        if cls is None:
            RESULTS[name] = False
            print(f"FAIL {name}: your workspace has no class {name} (get a fresh copy of the template "
                  f"with `python lessons/build_notebooks.py --workspace`).")
            continue
        check(cls)
    return {name: passed(name) for name in WORKSPACE_CHECKS}


@dataclass
class Comparison:
    """What compare_training found: MATCH (true) or DIVERGED at ``step``; the ops that were the
    student's; the largest relative difference; the accuracy of the student's network on the
    training batches after its steps."""
    match: bool
    yours: list
    step: int
    difference: float
    accuracy: float

    def __bool__(self):
        return self.match


def compare_training(module, batches, depth=10, growth_rate=4, rtol=1e-8, held_out=None):
    """Train DenseNet-BC (memory_efficient=False, float64) on ``batches`` ([(images, labels)],
    NumPy arrays) twice from the same start, with the library's ops and with ``module``'s
    (through ``td.ops.override``); compare the loss and every parameter gradient step by step.
    Prints MATCH or DIVERGED (the first step and parameter that differ); returns a Comparison
    (true on MATCH) that also says which ops were yours and the accuracy of your network after
    its training steps (what the grader records) on ``held_out`` (images, labels), else on the batches."""
    import contextlib

    from tinydense.models import densenet_bc
    from tinydense.optim import SGD

    def run(ops):
        td.manual_seed(0)
        model = densenet_bc(depth, growth_rate, memory_efficient=False).double()
        opt = SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
        steps = []
        with (td.ops.override(ops) if ops is not None else contextlib.nullcontext({})) as report:
            for images, labels in batches:
                loss = F.cross_entropy(model(td.tensor(np.asarray(images, dtype=np.float64))), labels)
                opt.zero_grad()
                loss.backward()
                steps.append((loss.item(), [(n, np.array(p.grad)) for n, p in model.named_parameters()]))
                opt.step()
            model.eval()
            with td.no_grad():
                scored = [held_out] if held_out is not None else batches
                right = sum(int((model(td.tensor(np.asarray(images, dtype=np.float64))).numpy().argmax(axis=1)
                                 == np.asarray(labels)).sum()) for images, labels in scored)
        return steps, report, right / sum(len(labels) for _, labels in scored)

    library, _, _ = run(None)
    yours, report, accuracy = run(module)
    mine = [name for name, who in report.items() if who == "yours"]
    who = (f"your {', '.join(mine)}" if mine else
           "none of your ops (all are still stubs, so everything ran on the library's: a MATCH says nothing yet)")
    worst = 0.0
    for step, ((loss_lib, grads_lib), (loss_mine, grads_mine)) in enumerate(zip(library, yours), start=1):
        if not np.isclose(loss_mine, loss_lib, rtol=rtol, atol=0):
            print(f"DIVERGED at step {step}: your loss {loss_mine:.12g}, the library's {loss_lib:.12g} "
                  f"(relative difference {abs(loss_mine - loss_lib) / abs(loss_lib):.1e}); the forward pass "
                  f"differs. Ops in use: {who}.")
            return Comparison(False, mine, step, abs(loss_mine - loss_lib) / abs(loss_lib), accuracy)
        for (name, a), (_, b) in zip(grads_mine, grads_lib):
            diff = float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))
            worst = max(worst, diff)
            if diff > rtol:
                print(f"DIVERGED at step {step}: the losses agree ({loss_mine:.12g}) but the gradient of "
                      f"{name} differs by {diff:.1e} relative (the first parameter, in the network's order, "
                      f"whose gradient differs: look at the backward pass of the op that produced it). "
                      f"Ops in use: {who}.")
                return Comparison(False, mine, step, diff, accuracy)
        worst = max(worst, abs(loss_mine - loss_lib) / abs(loss_lib))
    print(f"MATCH: with {who}, the loss and every parameter gradient equal the library's for all "
          f"{len(library)} steps (largest relative difference {worst:.1e}).")
    return Comparison(True, mine, len(library), worst, accuracy)
