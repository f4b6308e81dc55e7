"""A gradient check of every op, on small float64 inputs.

``op_cases()`` is the one table of cases: each names an op, a function of
some inputs that calls it, and the inputs. ``check_all_ops()`` runs
:func:`tinydense.gradcheck` on each (every element, central differences)
and returns one result row per case; ``tinydense gradcheck`` prints them.
Inputs stay away from kinks (ReLU at 0, ties in max pooling), where no
difference quotient is right.

The table covers every op a model can run, the fused ones the memory-efficient
DenseNet trains with included (ops/bn_relu.py, ops/dense_block.py), in
training and eval mode; tests/test_gradcheck.py checks that every ``Function``
in tinydense appears in some case's graph (or in ``NOT_IN_THE_TABLE``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .. import functional as F
from ..ops.bn_relu import batch_norm_relu_conv1x1
from ..ops.dense_block import LayerSpec, NormState, dense_block
from ..ops.elementwise import where
from ..ops.norm_relu import AddReLU, BatchNormReLU
from .gradcheck import GradcheckError, gradcheck

# Functions no case checks, and why.
NOT_IN_THE_TABLE = {
    "Cast": "changes the dtype: a float64 gradient check cannot pass through float32",
    "ToDevice": "moves between CPU and GPU: tests/test_ops.py checks it where a GPU is present",
    "_CtxNode": "runs the backward of a Function written PyTorch's way, by its author: "
                "tests/test_torch_autograd.py checks an example",
}


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

    def dense_block_case(bottleneck, training, drop_rate):
        """A dense block of 2 layers (3 input channels, growth rate 2, bottleneck width 2):
        (function, inputs) with the block input first, then every layer's parameters."""
        inputs, layers, c = [normal(2, 3, 3, 3)], [], 3
        for _ in range(2):
            convs = [(c, 2, 1), (2, 2, 3)] if bottleneck else [(c, 2, 3)]
            norms = []
            for cin, cout, size in convs:
                inputs += [positive(cin), 0.5 * normal(cin), 0.5 * normal(cout, cin, size, size)]
                norms.append(NormState(0.1 * normal(cin), positive(cin), 0.1, 1e-5))
            layers.append(LayerSpec(tuple(norms), (1, 1), drop_rate))
            c += 2
        return (lambda x, *params: dense_block(x, params, layers, training=training)), tuple(inputs)

    def bn_relu_conv1x1(training, pool=False):
        stats = (bn_stats[0].copy(), bn_stats[1].copy()) if training else (np.array([0.1, -0.2, 0.3]),
                                                                           np.array([0.5, 1.0, 2.0]))
        return lambda x, w, b, cw: batch_norm_relu_conv1x1(x, *stats, w, b, cw, training=training, pool=pool)

    negative_first = positive(3) * np.array([-1, 1, 1])      # one scale < 0: the unfolded path
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
        OpCase("adaptive_avg_pool2d to 2x2", lambda x: F.adaptive_avg_pool2d(x, 2), (normal(2, 2, 5, 5),)),
        OpCase("cat", lambda a, b: F.cat([a, b], axis=1), (normal(2, 2, 3, 3), normal(2, 1, 3, 3))),
        OpCase("flatten", F.flatten, (normal(2, 3, 2, 2),)),
        OpCase("dropout", lambda x: F.dropout(x, 0.3, training=True), (normal(4, 5),)),
        OpCase("log_softmax", lambda z: F.log_softmax(z, axis=1), (normal(4, 5),)),
        OpCase("cross_entropy", F.cross_entropy, (normal(4, 5), labels)),
        # the ops PyTorch code calls (torch_api.py, the Tensor methods of ops/tensor_methods.py)
        OpCase("softmax", lambda z: F.softmax(z, dim=1), (normal(4, 5),)),
        OpCase("nll_loss (sum)", lambda z, y: F.nll_loss(z, y, reduction="sum"), (normal(4, 5), labels)),
        OpCase("cross_entropy (none, label smoothing)",
               lambda z, y: F.cross_entropy(z, y, reduction="none", label_smoothing=0.1), (normal(4, 5), labels)),
        OpCase("mse_loss", F.mse_loss, (normal(2, 3), normal(2, 3))),
        OpCase("pad", lambda x: F.pad(x, (1, 2, 0, 1), value=0.5), (normal(2, 2, 3),)),
        OpCase("max along dim (gather)", lambda a: a.max(1).values, (normal(3, 4),)),
        OpCase("topk", lambda a: a.topk(2, dim=0).values, (normal(4, 3),)),
        OpCase("clamp", lambda a: a.clamp(-0.5, 0.5), (normal(3, 4),)),
        OpCase("abs", lambda a: a.abs(), (away_from_zero(3, 4),)),
        OpCase("where (broadcast)", lambda a, b: where(a > 0, a, b), (away_from_zero(2, 3), normal(3))),
        OpCase("expand", lambda a: a.expand(2, 3, 4), (normal(3, 1),)),
        OpCase("clone", lambda a: a.clone() * a, (normal(2, 3),)),
        # the fused ops of the memory-efficient DenseNet (models/efficient_densenet.py)
        OpCase("batch_norm_relu_conv1x1 (training)", bn_relu_conv1x1(True),
               (normal(2, 3, 3, 3), positive(3), normal(3), normal(4, 3, 1, 1))),
        OpCase("batch_norm_relu_conv1x1 (eval, a negative scale)", bn_relu_conv1x1(False),
               (normal(2, 3, 3, 3), negative_first, normal(3), normal(4, 3, 1, 1))),
        OpCase("batch_norm_relu_conv1x1, avg_pool2d 2x2 (training)", bn_relu_conv1x1(True, pool=True),
               (normal(2, 3, 4, 4), positive(3), normal(3), normal(4, 3, 1, 1))),
        # the plain networks' fused ops (models/fused_layers.py)
        OpCase("batch_norm + relu as one op (training)",
               lambda x, w, b: BatchNormReLU.apply(x, w, b, running_mean=np.zeros(3), running_var=np.ones(3),
                                                   training=True), (normal(2, 3, 3, 3), positive(3), normal(3))),
        OpCase("batch_norm + relu as one op (eval)",
               lambda x, w, b: BatchNormReLU.apply(x, w, b, running_mean=np.array([0.1, -0.2, 0.3]),
                                                   running_var=np.array([0.5, 1.0, 2.0])),
               (normal(2, 3, 3, 3), negative_first, normal(3))),
        OpCase("add + relu as one op", AddReLU.apply, (away_from_zero(2, 3, 2, 2), away_from_zero(2, 3, 2, 2))),
        OpCase("dense_block (bottleneck, training, dropout)", *dense_block_case(True, True, 0.3)),
        OpCase("dense_block (bottleneck, eval)", *dense_block_case(True, False, 0.0)),
        OpCase("dense_block (basic, training)", *dense_block_case(False, True, 0.0)),
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
