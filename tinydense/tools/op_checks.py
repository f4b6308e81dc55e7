"""A gradient check of every op, on small float64 inputs.

``op_cases()`` is the one table of cases: each names an op, a function of
some inputs that calls it, and the inputs. ``check_all_ops()`` runs
:func:`tinydense.gradcheck` on each (every element, central differences)
and returns one result row per case; ``tinydense gradcheck`` prints them.
Inputs stay away from kinks (ReLU at 0, ties in max pooling), where no
difference quotient is right.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .. import functional as F
from .gradcheck import GradcheckError, gradcheck


@dataclass
class OpCase:
    name: str
    fn: object            # fn(*inputs) -> Tensor
    inputs: tuple         # float64 arrays (checked) and integer arrays (passed through)


@dataclass
class OpResult:
    name: str
    shapes: str
    ok: bool
    seconds: float
    detail: str = ""


def op_cases(seed=0) -> list:
    """The ops and small inputs to check, in the order they are taught."""
    rng = np.random.default_rng(seed)

    def normal(*shape):
        return rng.standard_normal(shape)

    def away_from_zero(*shape):          # |x| >= 0.2: no kink of ReLU / max within eps
        x = normal(*shape)
        return np.sign(x) * (0.2 + np.abs(x))

    def positive(*shape):
        return 0.5 + rng.random(shape)

    bn_stats = (np.zeros(3), np.ones(3))
    labels = rng.integers(0, 5, size=4)
    return [
        OpCase("add (broadcast)", lambda a, b: a + b, (normal(2, 3), normal(3))),
        OpCase("sub (broadcast)", lambda a, b: a - b, (normal(2, 3), normal(2, 1))),
        OpCase("mul (broadcast)", lambda a, b: a * b, (normal(2, 3), normal(1, 3))),
        OpCase("div", lambda a, b: a / b, (normal(2, 3), positive(2, 3))),
        OpCase("neg", lambda a: -a, (normal(2, 3),)),
        OpCase("pow", lambda a: a ** 2.5, (positive(2, 3),)),
        OpCase("matmul", lambda a, b: a @ b, (normal(3, 4), normal(4, 2))),
        OpCase("matmul (batched)", lambda a, b: a @ b, (normal(2, 3, 4), normal(4, 2))),
        OpCase("sum", lambda a: a.sum(axis=1, keepdims=True), (normal(2, 3, 2),)),
        OpCase("mean", lambda a: a.mean(axis=(0, 2)), (normal(2, 3, 2),)),
        OpCase("max", lambda a: a.max(axis=1), (normal(3, 4),)),
        OpCase("reshape, transpose", lambda a: a.reshape(3, 4).transpose(1, 0), (normal(2, 6),)),
        OpCase("getitem (slices)", lambda a: a[1:, ::2], (normal(3, 4),)),
        OpCase("getitem (repeated index)", lambda a: a[np.array([0, 2, 2])], (normal(3, 4),)),
        OpCase("exp", lambda a: a.exp(), (normal(2, 3),)),
        OpCase("log", lambda a: a.log(), (positive(2, 3),)),
        OpCase("sqrt", lambda a: a.sqrt(), (positive(2, 3),)),
        OpCase("sigmoid", lambda a: a.sigmoid(), (normal(2, 3),)),
        OpCase("tanh", lambda a: a.tanh(), (normal(2, 3),)),
        OpCase("relu", F.relu, (away_from_zero(2, 3, 2, 2),)),
        OpCase("linear", F.linear, (normal(4, 3), normal(2, 3), normal(2))),
        OpCase("conv2d 3x3, padding 1", lambda x, w, b: F.conv2d(x, w, b, padding=1),
               (normal(2, 3, 5, 5), normal(4, 3, 3, 3), normal(4))),
        OpCase("conv2d 3x3, stride 2", lambda x, w: F.conv2d(x, w, stride=2),
               (normal(2, 2, 7, 7), normal(3, 2, 3, 3))),
        OpCase("conv2d 1x1", F.conv2d, (normal(2, 4, 3, 3), normal(2, 4, 1, 1))),
        OpCase("batch_norm (training)",
               lambda x, w, b: F.batch_norm(x, bn_stats[0].copy(), bn_stats[1].copy(), w, b, training=True),
               (normal(4, 3, 2, 2), positive(3), normal(3))),
        OpCase("batch_norm (eval)",
               lambda x, w, b: F.batch_norm(x, np.array([0.1, -0.2, 0.3]), np.array([0.5, 1.0, 2.0]), w, b),
               (normal(2, 3, 2, 2), positive(3), normal(3))),
        OpCase("batch_norm (training, 2-D)",
               lambda x: F.batch_norm(x, bn_stats[0].copy(), bn_stats[1].copy(), training=True),
               (normal(5, 3),)),
        OpCase("max_pool2d 2x2", lambda x: F.max_pool2d(x, 2), (normal(2, 2, 4, 4),)),
        OpCase("max_pool2d 3x3, stride 2, padding 1", lambda x: F.max_pool2d(x, 3, 2, 1), (normal(1, 2, 5, 5),)),
        OpCase("avg_pool2d 2x2", lambda x: F.avg_pool2d(x, 2), (normal(2, 2, 4, 4),)),
        OpCase("adaptive_avg_pool2d to 1x1", lambda x: F.adaptive_avg_pool2d(x, 1), (normal(2, 3, 3, 3),)),
        OpCase("cat", lambda a, b: F.cat([a, b], axis=1), (normal(2, 2, 3, 3), normal(2, 1, 3, 3))),
        OpCase("flatten", F.flatten, (normal(2, 3, 2, 2),)),
        OpCase("dropout", lambda x: F.dropout(x, 0.3, training=True), (normal(4, 5),)),
        OpCase("log_softmax", lambda z: F.log_softmax(z, axis=1), (normal(4, 5),)),
        OpCase("cross_entropy", F.cross_entropy, (normal(4, 5), labels)),
    ] + _zoo_op_cases(normal)


# --- issue 11: grouped and dilated convolution, ceil-mode, dilated and adaptive pooling ----------

def _zoo_op_cases(normal):
    """The arguments the lecture's architectures need (ResNeXt's groups, GoogLeNet's ceil-mode
    pools, AlexNet's and VGG's adaptive pools), after the basic cases."""
    return [
        OpCase("conv2d 3x3, groups 2", lambda x, w, b: F.conv2d(x, w, b, padding=1, groups=2),
               (normal(2, 4, 5, 5), normal(6, 2, 3, 3), normal(6))),
        OpCase("conv2d depthwise 3x3, stride 2", lambda x, w: F.conv2d(x, w, stride=2, padding=1, groups=3),
               (normal(1, 3, 6, 6), normal(3, 1, 3, 3))),
        OpCase("conv2d 3x3, dilation 2", lambda x, w: F.conv2d(x, w, padding=2, dilation=2),
               (normal(1, 2, 7, 7), normal(3, 2, 3, 3))),
        OpCase("max_pool2d 3x3, stride 2, ceil_mode", lambda x: F.max_pool2d(x, 3, 2, ceil_mode=True),
               (normal(1, 2, 6, 6),)),
        OpCase("max_pool2d 2x2, dilation 2", lambda x: F.max_pool2d(x, 2, 1, dilation=2), (normal(1, 2, 5, 5),)),
        OpCase("avg_pool2d 3x3/2, ceil_mode, no pad count",
               lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False), (normal(1, 2, 6, 6),)),
        OpCase("adaptive_avg_pool2d to 4x5 (larger)", lambda x: F.adaptive_avg_pool2d(x, (4, 5)),
               (normal(2, 2, 3, 3),)),
        OpCase("adaptive_max_pool2d to 2x3", lambda x: F.adaptive_max_pool2d(x, (2, 3)), (normal(1, 2, 5, 5),)),
    ]


def check_all_ops(cases=None) -> list:
    """Gradient-check every case (default: :func:`op_cases`); one :class:`OpResult` each."""
    results = []
    for case in cases if cases is not None else op_cases():
        shapes = ", ".join("x".join(map(str, x.shape)) for x in case.inputs if x.dtype.kind == "f")
        start = time.perf_counter()
        try:
            gradcheck(case.fn, case.inputs)
            ok, detail = True, ""
        except GradcheckError as e:
            ok, detail = False, str(e)
        results.append(OpResult(case.name, shapes, ok, time.perf_counter() - start, detail))
    return results


def format_table(results) -> str:
    """The results as an aligned text table, failures explained below it."""
    width = max(len(r.name) for r in results)
    swidth = max(len(r.shapes) for r in results)
    lines = [f"{'op':<{width}}  {'input shapes':<{swidth}}  result  seconds",
             f"{'-' * width}  {'-' * swidth}  ------  -------"]
    lines += [f"{r.name:<{width}}  {r.shapes:<{swidth}}  {'ok' if r.ok else 'FAIL':<6}  {r.seconds:7.3f}"
              for r in results]
    failed = [r for r in results if not r.ok]
    lines.append(f"{len(results) - len(failed)} of {len(results)} ops pass the gradient check")
    lines += [f"\n{r.name}: {r.detail}" for r in failed]
    return "\n".join(lines)
