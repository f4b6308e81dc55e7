"""Checks of lesson 1, autograd: the backward passes of multiplication and of a linear layer."""
from __future__ import annotations

import tinydense.functional as F

from .common import Case, check_function, rng


def check_mul(cls):
    """Mul.forward(a, b) -> a * b (same shapes); backward returns (da, db)."""
    r = rng(10)
    cases = [Case(f"shapes {s}", lambda c, a, b: c.apply(a, b), lambda a, b: a * b,
                  [r.standard_normal(s), r.standard_normal(s)], ["a", "b"]) for s in [(3, 4), (2, 3, 5)]]
    return check_function("multiplication", cls, cases,
                          advice='lesson 1, section 5 ("The same in tinydense"): each input\'s gradient is g times the derivative of a * b by that input.')


def check_linear(cls):
    """Linear.forward(x, weight, bias=None) -> x @ weight.T + bias; backward (dx, dweight, dbias)."""
    r = rng(11)
    cases = [
        Case("with bias", lambda c, x, w, b: c.apply(x, w, b), lambda x, w, b: F.linear(x, w, b),
             [r.standard_normal((4, 3)), r.standard_normal((5, 3)), r.standard_normal(5)], ["x", "weight", "bias"]),
        Case("without bias, batch 1", lambda c, x, w: c.apply(x, w), lambda x, w: F.linear(x, w),
             [r.standard_normal((1, 2)), r.standard_normal((3, 2))], ["x", "weight"]),
    ]
    return check_function("linear layer", cls, cases,
                          advice='lesson 1, section 5 ("The same in tinydense"): write out one output element, differentiate it by one weight and by one input, then read the sums as matrix products (a gradient has its input\'s shape).')


# the lesson's exercises: the name its stub cell defines -> its check (the grader reads this)
EXERCISES = {"Mul": check_mul, "Linear": check_linear}
