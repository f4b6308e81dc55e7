"""Checks of lesson 3, "From AlexNet to DenseNet": a VGG stage's cost, the ResNeXt formula, grouped convolution.

Each ``check_*`` function takes the student's function or ``Function`` class,
compares it with ``tinydense`` (``summary``'s counts of the real layers, or
``F.conv2d`` and central differences) on several cases, and prints one verdict:

    PASS <title>: ...
    FAIL <title>: ...   (what is wrong, and, for the usual mistakes, which one it is)

It never raises, so a notebook with an unfinished exercise still runs to the
end. The backward-pass check reuses the comparison every lesson shares (``common.py``).
Reference solutions are in ``instructor/solutions.py`` (instructors only).
"""
from __future__ import annotations

import math

import numpy as np

import tinydense as td
import tinydense.functional as F
from tinydense import models
from tinydense.models.vgg import make_layers
from tinydense.nn import init

from .common import Case, Failure, check_case, check_dtype, verdict


class _Verdict(Failure):
    """A failed check; its message is the verdict."""


def _call(fn, case, stub):
    """fn(*case), with a verdict instead of an exception."""
    try:
        return fn(*case)
    except NotImplementedError:
        raise _Verdict(f"{stub} is not implemented yet (it raised NotImplementedError). Write {stub} in the "
                       f"cell above, run it, then run this check again.") from None
    except Exception as e:
        raise _Verdict(f"{stub}{case} raised {type(e).__name__}: {e}") from None


def _same(a, b):
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.5e-6)
    except (TypeError, ValueError):
        return False


def _formula_check(title, fn, stub, cases, truth, parts, mistakes, done):
    """Compare fn(*case) with truth(case) (a tuple, one value per name in ``parts``) on
    every case. mistakes: (part index or None for the whole result, wrong(case), what
    that mistake is); every mistake the student's results match on all cases is named.
    Prints the verdict; ``done(results)`` gives the PASS text."""
    def run():
        got = []
        for case in cases:
            value = _call(fn, case, stub)
            value = tuple(value) if isinstance(value, (tuple, list)) else (value,)
            if len(value) != len(parts) or not all(isinstance(v, (int, float, np.integer, np.floating))
                                                   for v in value):
                want = parts[0] if len(parts) == 1 else "(" + ", ".join(parts) + ")"
                raise _Verdict(f"{stub}{case} returned {value if len(value) > 1 else value[0]!r}; return "
                               f"{want}, {'a number' if len(parts) == 1 else 'numbers'}.")
            got.append(value)
        right = [truth(case) for case in cases]
        if all(all(_same(g, r) for g, r in zip(gv, rv)) for gv, rv in zip(got, right)):
            return done(got)
        named = []
        for part, wrong, what in mistakes:
            if part is None:
                hit = all(all(_same(g, w) for g, w in zip(gv, wrong(c))) for gv, c in zip(got, cases))
            else:
                hit = all(_same(gv[part], wrong(c)) for gv, c in zip(got, cases))
                hit = hit and not all(_same(gv[part], rv[part]) for gv, rv in zip(got, right))
            if hit:
                named.append(what)
        i = next(i for i, (gv, rv) in enumerate(zip(got, right)) if not all(_same(g, r) for g, r in zip(gv, rv)))
        show = lambda v: ", ".join(f"{n} {x:,}" if float(x).is_integer() else f"{n} {x}"   # noqa: E731
                                   for n, x in zip(parts, v))
        message = f"for {stub}{cases[i]} the right answer is {show(right[i])}; yours is {show(got[i])}."
        raise _Verdict(message + "".join(f"\n  mistake: {m}" for m in named)
                       + ("" if named else "\n  hint: compare your formula with summary's rows of the layers "
                                           "(td.summary(...).rows) for a small case."))
    return verdict(title, stub, run)


# --- exercise 1: the cost of a VGG stage -------------------------------------------------------

VGG_CASES = [(3, 64, 2, 6), (64, 128, 2, 5), (128, 256, 3, 4), (256, 512, 3, 3), (512, 512, 3, 2),  # VGG-16
             (5, 7, 1, 9), (2, 3, 4, 1), (6, 4, 2, 7)]


def _vgg_truth(case):
    """(parameters, multiply-adds) of the stage's convolutions, from summary of the real layers."""
    c_in, c, n, size = case
    with init.skip_init():
        stage = make_layers((c,) * n, in_channels=c_in)
    rows = [r for r in td.summary(stage, (c_in, size, size)).rows if r["type"] == "Conv2d"]
    return sum(r["params"] for r in rows), sum(r["macs"] for r in rows)


def _table(cases, values):
    """A wrong answer given by its value in every case (the student release holds no formula)."""
    by_case = dict(zip(cases, values))
    return lambda case: by_case[case]


VGG_MISTAKES = [   # (part, its wrong value in each of VGG_CASES, what that mistake is)
    (0, _table(VGG_CASES, [38592, 221184, 1474560, 5898240, 7077888, 315, 297, 360]),
     'your parameters leave out the biases: each conv has one per output channel (c of them)'),
    (0, _table(VGG_CASES, [4416, 24832, 164608, 656896, 787968, 42, 45, 48]),
     'your parameters miss the factor 9: each (input channel, output channel) pair has a 3x3 kernel, 9 '
     'weights'),
    (0, _table(VGG_CASES, [73856, 295168, 1770240, 7079424, 7079424, 448, 336, 296]),
     'your parameters treat the first conv as c -> c: it takes the c_in channels of the stage before'),
    (1, _table(VGG_CASES, [154368, 614400, 2621440, 5898240, 3145728, 2835, 33, 1960]),
     'your multiply-adds miss the factor 9: each output value is a sum over a 3x3 window of every input '
     'channel'),
    (1, _table(VGG_CASES, [2654208, 7372800, 28311552, 63700992, 28311552, 35721, 324, 14112]),
     'your multiply-adds treat the first conv as c -> c: it takes the c_in channels of the stage before'),
    (1, _table(VGG_CASES, [38592, 221184, 1474560, 5898240, 7077888, 315, 297, 360]),
     'your multiply-adds do not depend on the image size: each of the size x size output pixels (of every '
     'output channel) costs 9 x (input channels) multiply-adds'),
    (1, _table(VGG_CASES, [2778624, 11059200, 47185920, 106168320, 56623104, 51030, 594, 35280]),
     'your multiply-adds are twice the right number: you counted each multiplication and addition '
     "separately (FLOPs); tinydense's summary, like the lecture's tables, counts a multiply-add once"),
    (1, _table(VGG_CASES, [1393920, 5536000, 23605248, 53097984, 28317696, 26082, 309, 18032]),
     'your multiply-adds add one per output value for the bias; summary counts the products of the weights'
     ' only (the bias additions are not multiply-adds)'),
    (None, lambda k: _vgg_truth(k)[::-1],
     'you returned (multiply-adds, parameters): return (parameters, multiply-adds)'),
]


def check_vgg_stage(fn):
    """vgg_stage_cost(c_in, c, n_convs, size) -> (parameters, multiply-adds) of a VGG stage's
    n_convs 3x3 convolutions (padding 1, with bias; the first c_in -> c, the rest c -> c)
    at size x size, against summary of the stage built by tinydense.models.vgg.make_layers."""
    def done(results):
        stages = [(3, 64, 2, 224), (64, 128, 2, 112), (128, 256, 3, 56), (256, 512, 3, 28), (512, 512, 3, 14)]
        macs = ", ".join(f"{fn(*s)[1] / 1e9:.2f}" for s in stages)
        same = ", ".join(f"{fn(c, c, 1, s)[1] / 1e9:.3f}" for c, s in ((64, 224), (128, 112), (256, 56), (512, 28)))
        return (f"parameters and multiply-adds agree with summary in all {len(VGG_CASES)} cases. VGG-16's five "
                f"stages at 224x224 cost {macs} G multiply-adds; one C -> C conv of stages 1 to 4 (half the "
                f"image and twice the channels each time) costs {same} G: the same.")
    return _formula_check("VGG stage cost", fn, "vgg_stage_cost", VGG_CASES, _vgg_truth,
                          ("parameters", "multiply-adds"), VGG_MISTAKES, done)


# --- exercise 2: the lecture's ResNeXt formula ----------------------------------------------------

RESNEXT_CASES = [(64, 4, 24, 14, 14), (64, 32, 4, 14, 14), (64, 1, 64, 7, 9), (128, 32, 8, 6, 5),
                 (16, 3, 5, 5, 7), (32, 2, 6, 3, 4)]


def _resnext_truth(case):
    """summary's multiply-adds of torchvision's Bottleneck with 4C channels in and out and G
    groups of c channels (planes C, base_width 64c/C)."""
    C, G, c, H, W = case
    with init.skip_init():
        block = models.Bottleneck(4 * C, C, groups=G, base_width=64 * c // C)
    assert block.conv2.weight.shape == (G * c, c, 3, 3), case
    return (td.summary(block, (4 * C, H, W)).total_macs,)


RESNEXT_MISTAKES = [   # (part, its wrong value in each of RESNEXT_CASES, what that mistake is)
    (0, _table(RESNEXT_CASES, [27396096, 27496448, 8773632, 16834560, 181650, 89280]),
     'twice the right number: you counted each multiplication and addition separately (FLOPs); the '
     "lecture's formula, like summary, counts a multiply-add once"),
    (0, _table(RESNEXT_CASES, [3424512, 429632, 4386816, 263040, 30275, 22320]),
     'that is one path: the block has G of them'),
    (0, _table(RESNEXT_CASES, [25890816, 41746432, 4386816, 25559040, 138075, 52416]),
     'you counted the 3x3 conv as an ordinary one on all G*c channels: in a grouped conv each output '
     'channel sees only the c channels of its own group'),
    (0, _table(RESNEXT_CASES, [8881152, 7325696, 3354624, 4485120, 57225, 26208]),
     'you counted one 1x1 conv per path: there are two, 4C -> c before the 3x3 and c -> 4C after it'),
    (0, _table(RESNEXT_CASES, [6472704, 4114432, 2838528, 2519040, 40425, 16992]),
     "the block's input and output have 4C channels, not C: each 1x1 conv costs 4C*c per pixel"),
    (0, _table(RESNEXT_CASES, [10085376, 12945408, 2322432, 7925760, 69825, 37728]),
     'the 3x3 conv costs 9 multiply-adds per (input, output) channel pair and pixel: the factor 9 is '
     'missing'),
    (0, _table(RESNEXT_CASES, [69888, 70144, 69632, 280576, 2595, 3720]),
     'your count does not depend on the image size: every conv here works at each of the H x W pixels'),
]


def check_resnext_macs(fn):
    """resnext_block_macs(C, G, c, H, W) -> multiply-adds of a ResNeXt block (4C channels in
    and out, G paths of 1x1 4C -> c, 3x3 c -> c, 1x1 c -> 4C) at H x W, against summary of
    tinydense's Bottleneck with groups=G of c channels."""
    def done(results):
        lecture = [fn(64, 4, 24, 56, 56), fn(64, 32, 4, 56, 56), fn(64, 1, 64, 56, 56)]
        return (f"your count agrees with summary in all {len(RESNEXT_CASES)} cases. At 56x56 with C=64: "
                f"G=4, c=24: {lecture[0] / 1e6:.1f} M; G=32, c=4: {lecture[1] / 1e6:.1f} M; the ResNet "
                f"bottleneck (G=1, c=64): {lecture[2] / 1e6:.1f} M multiply-adds.")
    return _formula_check("ResNeXt block cost", fn, "resnext_block_macs", RESNEXT_CASES, _resnext_truth,
                          ("multiply-adds",), RESNEXT_MISTAKES, done)


# --- exercise 3: the backward pass of grouped convolution ------------------------------------------

GROUPED_CASES = [  # label, groups, x shape, w shape
    ("groups=1", 1, (2, 3, 5, 6), (4, 3, 3, 3)),
    ("groups=2", 2, (3, 4, 6, 5), (6, 2, 3, 3)),
    ("groups=2, 2x2 kernel", 2, (2, 6, 5, 7), (4, 3, 2, 2)),
    ("depthwise: groups=C", 3, (2, 3, 5, 5), (3, 1, 3, 3)),
    ("groups=C, two filters per channel", 5, (1, 5, 4, 6), (10, 1, 3, 2)),
]


def _grads(cls, groups, x, w, g):
    """The student's (dx, dw) for upstream gradient g, or None if backward does not run."""
    try:
        xt, wt = td.Tensor(x.copy(), requires_grad=True), td.Tensor(w.copy(), requires_grad=True)
        cls.apply(xt, wt, groups=groups).backward(g)
        return xt.grad, wt.grad
    except Exception:
        return None


def _reference_grads(groups, x, w, g):
    xt, wt = td.Tensor(x.copy(), requires_grad=True), td.Tensor(w.copy(), requires_grad=True)
    F.conv2d(xt, wt, groups=groups).backward(g)
    return xt.grad, wt.grad


def _close(a, b):
    return a is not None and np.shape(a) == np.shape(b) and np.allclose(a, b, rtol=1e-6, atol=1e-9)


def _grouped_hints(cls, groups, x, w, passed):
    """What kind of mistake the student's backward makes, for the usual ones."""
    rng = np.random.default_rng(7)
    shape = F.conv2d(td.Tensor(x), td.Tensor(w), groups=groups).shape
    g1, g2 = rng.standard_normal(shape), rng.standard_normal(shape)
    mine, other = _grads(cls, groups, x, w, g1), _grads(cls, groups, x, w, g2)
    if mine is None or len(mine) != 2:
        return []
    dx, dw = mine
    right_dx, right_dw = _reference_grads(groups, x, w, g1)
    hints = []
    if x.shape != w.shape and np.shape(dx) == w.shape and np.shape(dw) == x.shape:
        hints.append("your first gradient has w's shape and your second x's: return (dx, dw), in the order of "
                     "forward's inputs")
    if other is not None and all(a is not None for a in mine + other) and \
            all(np.shape(a) == np.shape(b) and np.allclose(a, b) for a, b in zip(mine, other)):
        hints.append("your gradients are the same for two different upstream gradients g: backward must "
                     "multiply by g (did you use ones, or the forward's output, in its place?)")
    flipped_dx, _ = _reference_grads(groups, x, w[..., ::-1, ::-1].copy(), g1)
    if w.shape[2] * w.shape[3] > 1 and _close(dx, flipped_dx) and not _close(dx, right_dx):
        hints.append("your dx is what the kernel flipped in space gives: output pixel (i, j) read input pixel "
                     "(i+a, j+b) through w[..., a, b], so that is where its gradient goes back")
    if x.shape[0] > 1 and _close(dw, right_dw / x.shape[0]):
        hints.append(f"your dw is the right one divided by the batch size {x.shape[0]}: the loss adds up every "
                     f"image's contribution, so sum over the batch, do not average")
    if groups > 1 and 1 in passed and not hints:
        hints.append(f"your backward is right with groups=1 but not with groups={groups}: group g's outputs "
                     f"send gradient only to group g's input channels, through group g's own weights")
    return hints


def check_grouped_conv(cls, cases=GROUPED_CASES, seed=5):
    """GroupedConv2d.forward(x, w, groups) -> conv2d(x, w, groups=groups) with stride 1 and
    no padding; backward returns (dx, dw). Checked against F.conv2d and central differences
    (tinydense.gradcheck) with groups 1, 2 and C, odd sizes and non-square kernels."""
    def run():
        rng = np.random.default_rng(seed)
        passed, checked = [], []
        for label, groups, xs, ws in cases:
            x, w = rng.standard_normal(xs), rng.standard_normal(ws)
            case = Case(label, lambda c, x, w, G=groups: c.apply(x, w, groups=G),
                        lambda x, w, G=groups: F.conv2d(x, w, groups=G), [x, w], ["x", "w"])
            try:
                check_case(cls, case, seed=groups)
            except Failure as failure:
                hints = _grouped_hints(cls, groups, x, w, passed)
                raise Failure(str(failure) + "".join(f"\n  mistake: {h}" for h in hints)) from None
            passed.append(groups)
            checked.append(case)
        for i, case in enumerate(checked):          # once the values are right: float32 stays float32
            check_dtype(cls, case, seed=i)
        return (f"forward and backward agree with tinydense's conv2d and with central differences "
                f"in all {len(cases)} cases (groups {', '.join(str(g) for g in sorted({c[1] for c in cases}))}).")
    return verdict("grouped convolution", cls.__name__, run)


# the lesson's exercises: the name its stub cell defines -> its check (the grader reads this)
EXERCISES = {"vgg_stage_cost": check_vgg_stage, "resnext_block_macs": check_resnext_macs, "GroupedConv2d": check_grouped_conv}
