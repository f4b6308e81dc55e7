"""Checks of lesson 1, autograd: the backward passes of multiplication and of a linear layer."""
from __future__ import annotations

import tinydense.functional as F

from .common import Case, check_function, rng


def check_mul(cls, shapes=((3, 4), (2, 3, 5)), seed=10):
    """Mul.forward(a, b) -> a * b (same shapes); backward returns (da, db)."""
    r = rng(seed)
    cases = [Case(f"shapes {s}", lambda c, a, b: c.apply(a, b), lambda a, b: a * b,
                  [r.standard_normal(s), r.standard_normal(s)], ["a", "b"]) for s in shapes]
    return check_function("multiplication", cls, cases,
                          advice='lesson 1, section 5 ("The same in tinydense"): each input\'s gradient is g times the derivative of a * b by that input.')


def check_linear(cls, sizes=((4, 3, 5), (1, 2, 3)), seed=11):
    """Linear.forward(x, weight, bias=None) -> x @ weight.T + bias; backward (dx, dweight, dbias).
    sizes: (batch, in, out) with a bias, then without one."""
    r = rng(seed)
    (n, i, o), (n2, i2, o2) = sizes
    cases = [
        Case("with bias", lambda c, x, w, b: c.apply(x, w, b), lambda x, w, b: F.linear(x, w, b),
             [r.standard_normal((n, i)), r.standard_normal((o, i)), r.standard_normal(o)], ["x", "weight", "bias"]),
        Case(f"without bias, batch {n2}", lambda c, x, w: c.apply(x, w), lambda x, w: F.linear(x, w),
             [r.standard_normal((n2, i2)), r.standard_normal((o2, i2))], ["x", "weight"]),
    ]
    return check_function("linear layer", cls, cases,
                          advice='lesson 1, section 5 ("The same in tinydense"): write out one output element, differentiate it by one weight and by one input, then read the sums as matrix products (a gradient has its input\'s shape).')


# the lesson's exercises: the name its stub cell defines -> its check (the grader reads this)
EXERCISES = {"Mul": check_mul, "Linear": check_linear}
