"""Checks of lesson 5, gradient checking: sigmoid, concatenation, a numeric gradient."""
from __future__ import annotations

import numpy as np

import tinydense.functional as F

from .common import Case, Failure, check_function, rng, verdict


def check_sigmoid(cls):
    """Sigmoid.forward(x) -> 1 / (1 + exp(-x)); backward returns dx."""
    r = rng(0)
    cases = [Case(f"case {i + 1}", lambda c, x: c.apply(x), lambda x: x.sigmoid(), [x], ["x"])
             for i, x in enumerate([r.standard_normal((3, 4)), 4 * r.standard_normal((2, 3, 5))])]
    return check_function("sigmoid", cls, cases,
                          advice='lesson 5, section 6 ("Exercises: two backward passes"): write the derivative of the sigmoid in terms of its output.')


CAT_GROUPS = [([(2, 3, 2, 2), (2, 1, 2, 2)], 1), ([(1, 2, 3, 3), (1, 4, 3, 3), (1, 1, 3, 3)], 1),
              ([(2, 3), (2, 5)], 1), ([(2, 3, 2), (1, 3, 2)], 0)]


def check_cat(cls, groups=CAT_GROUPS, seed=16):
    """Cat.forward(*xs, axis=1) joins tensors along axis; backward returns one dx per input.
    groups: [(the inputs' shapes, axis)]."""
    r = rng(seed)
    cases = []
    for shapes, axis in groups:
        names = [f"x{i}" for i in range(len(shapes))]
        cases.append(Case(f"{len(shapes)} inputs along axis {axis}", lambda c, *xs, a=axis: c.apply(*xs, axis=a),
                          lambda *xs, a=axis: F.cat(list(xs), axis=a), [r.standard_normal(s) for s in shapes],
                          names))
    return check_function("concatenation", cls, cases,
                          advice='lesson 5, section 6 ("Exercises: two backward passes"): concatenation only moves values, so its backward only moves gradients.')


NUMERIC_TESTS = [("sin", np.sin, np.cos), ("x^3", lambda x: x ** 3, lambda x: 3 * x ** 2), ("exp", np.exp, np.exp)]


def check_numeric_gradient(fn, tests=NUMERIC_TESTS, shape=(3, 4), seed=22):
    """numeric_gradient(f, x, g, eps=1e-6) -> d/dx of sum(f(x) * g) by central differences.
    tests: [(label, f, its derivative)], on random x and g of ``shape``."""
    def run():
        r = rng(seed)
        for label, f, df in tests:
            x = r.standard_normal(shape)
            g = r.standard_normal(shape)
            before, g_before = x.copy(), g.copy()
            got = np.asarray(fn(f, x, g))
            if not np.array_equal(g, g_before):
                raise Failure(f"g was changed by your function [{label}]: it is an input; leave it as it is.")
            if not np.array_equal(x, before):
                raise Failure(f"x was changed by your function [{label}]: put every element back "
                              f"after perturbing it.")
            want = g * df(x)
            if got.shape != x.shape:
                raise Failure(f"the result has shape {got.shape}, x has shape {x.shape} [{label}].")
            if np.allclose(got, df(x), rtol=1e-6, atol=1e-8):
                raise Failure(f"your result ignores g [{label}]: differentiate sum(f(x) * g), not sum(f(x)).")
            if np.allclose(got, 2 * want, rtol=1e-5, atol=1e-8):
                raise Failure(f"your gradient is twice the right one [{label}]: a factor 2. See lesson 5, "
                              f"section 1 (\"Finite differences\"): how far apart are the two points of a "
                              f"central difference?")
            err = np.abs(got - want).max() / np.abs(want).max()
            if err > 1e-7:
                kind = (" That is the size of a forward difference's error: use (f(x+eps) - f(x-eps)) / (2 eps)."
                        if err < 1e-4 else "")
                raise Failure(f"your gradient is off by {err:.1e} relative [{label}], more than 1e-7.{kind}")
        return f"central differences, with the upstream gradient, to 1e-7 in all {len(tests)} cases."
    return verdict("numeric gradient", getattr(fn, "__name__", "numeric_gradient"), run)


# the lesson's exercises: the name its stub cell defines -> its check (the grader reads this)
EXERCISES = {"numeric_gradient": check_numeric_gradient, "Sigmoid": check_sigmoid, "Cat": check_cat}
