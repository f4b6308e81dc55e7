"""Hidden tests: instructors' extra cases (other shapes and seeds) that only ``tinydense grade`` runs.

Not in the student release (it holds no ``instructor/`` folder). The grader loads this file
by its location as a module of the instructors' ``checks`` package (hence the relative
imports) and runs ``HIDDEN[name]`` on an exercise whose visible check passed, so an answer
written to the visible cases only (their shapes, their seeds) still fails.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

import tinydense.functional as F

from .common import Case, check_function, rng
from .l09_feature_reuse import check_long_range_share, usage_matrices


def _solutions():
    spec = importlib.util.spec_from_file_location("_hidden_solutions", Path(__file__).with_name("solutions.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _unary(title, call, reference, shapes, seed, positive=False):
    r = rng(seed)

    def check(cls):
        cases = []
        for shape in shapes:
            x = r.standard_normal(shape)
            if positive:
                x = np.sign(x) * (0.1 + np.abs(x))          # no kink within gradcheck's step
            cases.append(Case(f"hidden case, shape {shape}", call, reference, [x], ["x"]))
        return check_function(title, cls, cases)
    return check


def _conv(cls):
    r = rng(1012)
    cases = []
    for xs, ws, s, p in [((3, 2, 9, 8), (5, 2, 3, 3), 3, 2), ((1, 4, 6, 7), (2, 4, 2, 3), (1, 2), (0, 1))]:
        arrays = [r.standard_normal(xs), r.standard_normal(ws), r.standard_normal(ws[0])]
        cases.append(Case(f"hidden case, x {xs}, w {ws}, stride {s}, padding {p}",
                          lambda c, *t, s=s, p=p: c.apply(*t, stride=s, padding=p),
                          lambda *t, s=s, p=p: F.conv2d(*t, stride=s, padding=p), arrays, ["x", "weight", "bias"]))
    return check_function("convolution", cls, cases)


def _pool(title, pool):
    def check(cls):
        r = rng(1014)
        cases = [Case(f"hidden case, x {shape}, kernel {k}, stride {s}, padding {p}",
                      lambda c, x, k=k, s=s, p=p: c.apply(x, kernel_size=k, stride=s, padding=p),
                      lambda x, k=k, s=s, p=p: pool(x, k, s, p), [r.standard_normal(shape)], ["x"])
                 for shape, k, s, p in [((3, 2, 9, 7), 3, 3, 1), ((1, 3, 6, 6), (2, 3), (2, 1), 0)]]
        return check_function(title, cls, cases)
    return check


def _long_range_share(fn):
    reference = _solutions().long_range_share
    cases = [(L, usage, reference(usage)) for L, usage in usage_matrices(seed=1027, sizes=(5, 12))]
    return check_long_range_share(fn, cases)


HIDDEN = {
    "ReLU": _unary("ReLU", lambda c, x: c.apply(x), lambda x: F.relu(x), [(5,), (2, 3, 4)], 1013, positive=True),
    "Sigmoid": _unary("sigmoid", lambda c, x: c.apply(x), lambda x: x.sigmoid(), [(7,), (2, 2, 2, 3)], 1000),
    "LogSoftmax": _unary("log-softmax", lambda c, x: c.apply(x, axis=1), lambda x: F.log_softmax(x, 1),
                         [(2, 7, 3)], 1018),
    "Conv2d": _conv,
    "MaxPool2d": _pool("max pooling", F.max_pool2d),
    "AvgPool2d": _pool("average pooling", F.avg_pool2d),
    "long_range_share": _long_range_share,
}
