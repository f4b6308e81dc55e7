"""Checks of lesson 9, feature reuse: reading the reuse matrix."""
from __future__ import annotations

import numpy as np


from .common import Failure, rng, verdict


def _long_range_share(usage):
    L = usage.shape[0] - 1
    shares = [usage[:l - 2, l - 1].sum() / usage[:l, l - 1].sum() for l in range(4, L + 1)]
    return float(np.mean(shares))


def check_long_range_share(fn):
    """long_range_share(usage) -> the mean, over layers l >= 4, of the share of layer l's weight
    that reads sources more than two layers back (usage: the (L+1, L+1) reuse matrix)."""
    def run():
        r = rng(27)
        for L in (4, 6, 9):
            usage = np.full((L + 1, L + 1), np.nan)
            for col in range(L + 1):
                usage[:col + 1, col] = r.random(col + 1) + 0.1
            got, want = fn(usage.copy()), _long_range_share(usage)
            if np.isclose(got, want, rtol=1e-10):
                continue
            if not np.isfinite(got):
                raise Failure(f"L={L}: got {got}: the matrix holds NaN where a layer cannot see a source; "
                              f"sum only the sources layer l reads (rows 0 .. l-1 of column l-1).")
            raise Failure(f"L={L}: got {got:.6f}, expected {want:.6f}. Column l-1 is layer l; its sources "
                          f"are rows 0 .. l-1; 'more than two layers back' are rows 0 .. l-3; leave out "
                          f"the last column (the reader) and average over layers 4 .. L.")
        return "the right share for blocks of 4, 6 and 9 layers."
    return verdict("long-range share", getattr(fn, "__name__", "long_range_share"), run)


# the lesson's exercises: the name its stub cell defines -> its check (the grader reads this)
EXERCISES = {"long_range_share": check_long_range_share}
