"""Checks of lesson 9, feature reuse: reading the reuse matrix."""
from __future__ import annotations

import numpy as np

from .common import Failure, rng, verdict


# the right shares of the matrices usage_matrices() draws, by the instructors' solution (not shipped)
EXPECTED = {4: 0.22159652458549658, 6: 0.5672658666785589, 9: 0.6375835092979479}


def usage_matrices(seed=27, sizes=(4, 6, 9)):
    """[(L, reuse matrix)]: random weights where layer l can read a source, NaN elsewhere."""
    r, matrices = rng(seed), []
    for L in sizes:
        usage = np.full((L + 1, L + 1), np.nan)
        for col in range(L + 1):
            usage[:col + 1, col] = r.random(col + 1) + 0.1
        matrices.append((L, usage))
    return matrices


def check_long_range_share(fn, cases=None):
    """long_range_share(usage) -> the mean, over layers l >= 4, of the share of layer l's weight
    that reads sources more than two layers back (usage: the (L+1, L+1) reuse matrix).
    cases: [(L, usage, right share)], default the matrices of usage_matrices() and EXPECTED."""
    cases = cases or [(L, usage, EXPECTED[L]) for L, usage in usage_matrices()]

    def run():
        for L, usage, want in cases:
            got = fn(usage.copy())
            if np.isclose(got, want, rtol=1e-10):
                continue
            if not np.isfinite(got):
                raise Failure(f"L={L}: got {got}: the matrix holds NaN where a layer cannot see a source; "
                              f"sum only the sources layer l reads (rows 0 .. l-1 of column l-1).")
            raise Failure(f"L={L}: got {got:.6f}, expected {want:.6f}. Column l-1 is layer l; its sources "
                          f"are rows 0 .. l-1; 'more than two layers back' are rows 0 .. l-3; leave out "
                          f"the last column (the reader) and average over layers 4 .. L.")
        return f"the right share for blocks of {', '.join(str(L) for L, _, _ in cases)} layers."
    return verdict("long-range share", getattr(fn, "__name__", "long_range_share"), run)


# the lesson's exercises: the name its stub cell defines -> its check (the grader reads this)
EXERCISES = {"long_range_share": check_long_range_share}
