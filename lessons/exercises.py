"""Checks for the backward-pass exercises of lesson 4.

Each ``check_*`` function takes the student's ``Function`` subclass, runs it
on a few small float64 inputs and compares its backward pass with central
differences through ``tinydense.gradcheck``. It prints one verdict:

    PASS sigmoid: ...
    FAIL sigmoid: ...   (which gradient is wrong, at which index, numeric vs
                         analytic, the relative error, and a hint)

and never raises, so a notebook with an unfinished exercise still runs to
the end. Reference solutions live in ``solutions.py``: try first.
"""
from __future__ import annotations

import re

import numpy as np

import tinydense as td
import tinydense.functional as F


class _Failure(Exception):
    """One failed step of a check; its message is the verdict."""


def _tensors(arrays):
    return [td.Tensor(np.array(a, dtype=np.float64), requires_grad=True) for a in arrays]


def _describe(arrays, names):
    return ", ".join(f"{n} {tuple(np.shape(a))}" for n, a in zip(names, arrays))


def _hint(name, mine, right):
    """A guess at what kind of mistake turns ``right`` into ``mine``."""
    if not np.any(mine):
        return f"your gradient of {name} is all zeros"
    if np.allclose(mine, -right, rtol=1e-6, atol=1e-9):
        return f"your gradient of {name} has the wrong sign"
    scale = float(np.vdot(mine, right) / max(np.vdot(right, right), 1e-300))
    if np.allclose(mine, scale * right, rtol=1e-6, atol=1e-9):
        return f"your gradient of {name} is {scale:.6g} times the right one everywhere (a missing or extra factor?)"
    wrong = ~np.isclose(mine, right, rtol=1e-5, atol=1e-8)
    return (f"your gradient of {name} is wrong at {int(wrong.sum())} of {wrong.size} elements; "
            f"the largest difference is {float(np.abs(mine - right).max()):.3g}")


def _check_case(cls, call, reference, arrays, names, label):
    """Run forward and backward of ``cls`` on one input and compare.

    call(cls, *tensors) -> Tensor runs the student's op;
    reference(*tensors) -> Tensor computes the same with tinydense's own ops.
    Raises _Failure with the verdict text when something is wrong.
    """
    where = f"[{label}: {_describe(arrays, names)}]"
    mine_in, ref_in = _tensors(arrays), _tensors(arrays)
    try:
        out = call(cls, *mine_in)
    except Exception as e:
        raise _Failure(f"forward raised {type(e).__name__}: {e} {where}. The forward pass is given: "
                       f"run its cell again unchanged.") from None
    expected = reference(*ref_in)
    if out.shape != expected.shape or not np.allclose(out.numpy(), expected.numpy(), rtol=1e-10, atol=1e-12):
        raise _Failure(f"forward gives a different result from tinydense's own op {where}; the forward "
                       f"pass is given, so restore it and change only backward.")

    g = np.random.default_rng(1).standard_normal(out.shape)
    try:
        out.backward(g)
    except NotImplementedError:
        raise _Failure("backward is not implemented yet (it raised NotImplementedError). Write "
                       f"{cls.__name__}.backward in the cell above, run it, then run this check again.") from None
    except Exception as e:
        raise _Failure(f"backward raised {type(e).__name__}: {e} {where}") from None
    expected.backward(g)

    for name, x, ref in zip(names, mine_in, ref_in):
        if x.grad is None:
            raise _Failure(f"backward returned no gradient for {name} {where}: return one gradient per "
                           f"input of forward, in the same order ({', '.join(names)}).")
        if tuple(np.shape(x.grad)) != x.shape:
            raise _Failure(f"the gradient of {name} has shape {tuple(np.shape(x.grad))} but {name} has "
                           f"shape {x.shape} {where}: a gradient always has its input's shape.")

    try:
        td.gradcheck(lambda *ts: call(cls, *ts), _tensors(arrays))
    except td.GradcheckError as e:
        detail = re.sub(r"input (\d+) \(shape",
                        lambda m: f"gradient of {names[int(m.group(1))]} (shape", str(e))
        hints = [_hint(n, np.asarray(x.grad), np.asarray(r.grad))
                 for n, x, r in zip(names, mine_in, ref_in)
                 if not np.allclose(np.asarray(x.grad), np.asarray(r.grad), rtol=1e-5, atol=1e-8)]
        raise _Failure(f"backward disagrees with central differences {where}.\n  {detail}"
                       + "".join(f"\n  hint: {h}" for h in hints)) from None


def _run_check(title, cls, cases):
    """Run every case; print PASS or the first FAIL. Never raises."""
    try:
        for label, call, reference, arrays, names in cases:
            _check_case(cls, call, reference, arrays, names, label)
    except _Failure as failure:
        print(f"FAIL {title}: {failure}")
        return
    except Exception as e:   # a bug we did not foresee: still a verdict, not a traceback
        print(f"FAIL {title}: the check could not run your code: {type(e).__name__}: {e}")
        return
    print(f"PASS {title}: forward and backward agree with tinydense and with central differences "
          f"in all {len(cases)} cases.")


def _rng(seed=0):
    return np.random.default_rng(seed)


def check_sigmoid(cls):
    """Sigmoid.forward(x) -> 1 / (1 + exp(-x)); backward returns dx."""
    r = _rng(0)
    cases = [
        (f"case {i + 1}", lambda c, x: c.apply(x), lambda x: x.sigmoid(), [x], ["x"])
        for i, x in enumerate([r.standard_normal((3, 4)), 4 * r.standard_normal((2, 3, 5))])
    ]
    _run_check("sigmoid", cls, cases)


def check_avg_pool(cls):
    """AvgPool2d.forward(x, kernel_size, stride) on (N, C, H, W), no padding; backward returns dx."""
    r = _rng(1)
    settings = [((2, 3, 4, 4), 2, 2, "non-overlapping 2x2 windows"),
                ((1, 2, 5, 5), 3, 1, "overlapping 3x3 windows, stride 1"),
                ((2, 1, 7, 6), 3, 2, "3x3 windows, stride 2")]
    cases = []
    for shape, k, s, label in settings:
        cases.append((label,
                      lambda c, x, k=k, s=s: c.apply(x, kernel_size=k, stride=s),
                      lambda x, k=k, s=s: F.avg_pool2d(x, k, s),
                      [r.standard_normal(shape)], ["x"]))
    _run_check("average pooling", cls, cases)


def check_cat(cls):
    """Cat.forward(*xs) joins (N, C_i, H, W) tensors along channels; backward returns one dx per input."""
    r = _rng(2)
    groups = [[(2, 3, 2, 2), (2, 1, 2, 2)], [(1, 2, 3, 3), (1, 4, 3, 3), (1, 1, 3, 3)]]
    cases = []
    for shapes in groups:
        names = [f"x{i}" for i in range(len(shapes))]
        cases.append((f"{len(shapes)} inputs", lambda c, *xs: c.apply(*xs),
                      lambda *xs: F.cat(list(xs), axis=1),
                      [r.standard_normal(s) for s in shapes], names))
    _run_check("channel concatenation", cls, cases)


def check_batch_norm(cls):
    """BatchNorm.forward(x, weight, bias) in training mode on (N, C, H, W); backward returns
    (dx, dweight, dbias)."""
    r = _rng(3)
    cases = []
    for shape in [(4, 3, 2, 2), (2, 2, 3, 5)]:
        C = shape[1]
        arrays = [r.standard_normal(shape) * 2 + 1, 1 + 0.5 * r.standard_normal(C), r.standard_normal(C)]
        cases.append(("training mode", lambda c, x, w, b: c.apply(x, w, b),
                      lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
                      arrays, ["x", "weight", "bias"]))
    _run_check("batch norm", cls, cases)
