"""Checks of lesson 4: the backward passes of ReLU, max and average pooling, and batch norm."""
from __future__ import annotations

import numpy as np

import tinydense.functional as F

from .common import Case, away_from_zero, check_function, rng


def check_relu(cls):
    """ReLU.forward(x) -> max(x, 0); backward returns dx."""
    r = rng(13)
    cases = [Case(f"shape {s}", lambda c, x: c.apply(x), lambda x: F.relu(x), [away_from_zero(r, *s)], ["x"])
             for s in [(3, 4), (2, 3, 3, 5)]]
    return check_function("ReLU", cls, cases,
                          advice='lesson 4, section 1 ("ReLU"): the gradient passes where the input was positive.')


def _pool_cases(r, pool):
    settings = [((2, 3, 4, 4), 2, 2, 0, "non-overlapping 2x2 windows"),
                ((1, 2, 5, 5), 3, 1, 0, "overlapping 3x3 windows, stride 1"),
                ((2, 1, 7, 6), 3, 2, 1, "3x3 windows, stride 2, padding 1"),
                ((1, 2, 5, 7), (3, 2), (1, 2), 0, "3x2 windows, stride (1, 2)")]
    return [Case(label, lambda c, x, k=k, s=s, p=p: c.apply(x, kernel_size=k, stride=s, padding=p),
                 lambda x, k=k, s=s, p=p: pool(x, k, s, p), [r.permutation(np.prod(shape)).reshape(shape)
                                                             / np.prod(shape) + r.standard_normal(shape)],
                 ["x"]) for shape, k, s, p, label in settings]


def check_max_pool(cls):
    """MaxPool2d.forward(x, kernel_size, stride=None, padding=0); backward returns dx."""
    r = rng(14)
    ties = [Case(f"tied maxima (only the first gets the gradient), {label}",
                 lambda c, x, k=k, s=s: c.apply(x, kernel_size=k, stride=s), lambda x, k=k, s=s: F.max_pool2d(x, k, s),
                 [r.integers(0, 3, shape).astype(float)], ["x"], options={"gradcheck": False})   # no derivative there
            for shape, k, s, label in [((2, 2, 4, 4), 2, 2, "2x2 windows"), ((1, 2, 5, 5), 3, 1, "overlapping 3x3")]]
    return check_function("max pooling", cls, _pool_cases(r, F.max_pool2d) + ties,
                          advice='lesson 4, section 2 ("Max pooling routes, average pooling spreads"): each window\'s gradient goes to the one tap argmax recorded (the first maximum on ties); overlapping windows ADD.')


def check_avg_pool(cls):
    """AvgPool2d.forward(x, kernel_size, stride=None, padding=0); backward returns dx."""
    return check_function("average pooling", cls, _pool_cases(rng(15), F.avg_pool2d),
                          advice='lesson 4, section 2 ("Max pooling routes, average pooling spreads"): every tap of a window gets an equal share; overlapping windows ADD.')


BATCH_NORM_CASES = [("training mode", (4, 3, 2, 2), True, True),
                    ("training mode, odd shape", (2, 2, 3, 5), True, True),
                    ("training mode, no weight and bias", (3, 2, 2, 3), True, False),
                    ("eval mode (running statistics)", (2, 3, 3, 3), False, True),
                    ("training mode, (N, C) input", (5, 4), True, True)]


def check_batch_norm(cls, settings=BATCH_NORM_CASES, seed=17):
    """BatchNorm.forward(x, running_mean, running_var, weight=None, bias=None, training=False,
    momentum=0.1, eps=1e-5); backward returns (dx, None, None, dweight, dbias), or (dx, None, None).
    settings: [(label, x shape, training, with weight and bias)]."""
    r = rng(seed)

    def case(label, shape, training, affine):
        C = shape[1]
        x = r.standard_normal(shape) * 2 + 1
        stats0 = (r.standard_normal(C) * 0.5, 0.5 + r.random(C))
        mine, theirs = [s.copy() for s in stats0], [s.copy() for s in stats0]
        arrays = [x] + ([1 + 0.5 * r.standard_normal(C), r.standard_normal(C)] if affine else [])
        names = ["x"] + (["weight", "bias"] if affine else [])

        def call(c, x, *wb):
            mine[0][...], mine[1][...] = stats0
            return c.apply(x, mine[0], mine[1], *wb, training=training, momentum=0.1, eps=1e-5)

        def reference(x, *wb):
            theirs[0][...], theirs[1][...] = stats0
            return F.batch_norm(x, theirs[0], theirs[1], *wb, training=training, momentum=0.1, eps=1e-5)

        def extra():
            if not (np.allclose(mine[0], theirs[0], rtol=1e-12) and np.allclose(mine[1], theirs[1], rtol=1e-12)):
                return "forward updated the running statistics differently from tinydense (the forward is given)"
        return Case(label, call, reference, arrays, names,
                    slots=["x", "running_mean", "running_var"] + names[1:], extra=extra)

    cases = [case(*setting) for setting in settings]
    return check_function("batch norm", cls, cases,
                          advice='lesson 4, sections 4 ("Batch norm: deriving the backward pass": the mean and variance depend on x too, so dx has three terms) and 5 (eval mode: the statistics are constants).')


# the lesson's exercises: the name its stub cell defines -> its check (the grader reads this)
EXERCISES = {"ReLU": check_relu, "MaxPool2d": check_max_pool, "AvgPool2d": check_avg_pool, "BatchNorm": check_batch_norm}
