"""The checks of lesson 13 (data parallelism): the reference solutions pass, and wrong answers
fail with a message that names the mistake (three or more per checker, as for every lesson)."""
from __future__ import annotations

import numpy as np
import pytest

from test_lessons import CHECKS, solutions

L13 = CHECKS["l13_data_parallel"]
S = solutions


def _named(fn, name):
    fn.__name__ = name
    return fn


def _mean_of_means(counts, sums, squares):
    means = sums / counts[:, None]
    return means.mean(axis=0), (squares / counts[:, None]).mean(axis=0) - means.mean(axis=0) ** 2


def _unbiased(counts, sums, squares):
    n = counts.sum()
    mean = sums.sum(axis=0) / n
    return mean, (squares.sum(axis=0) - n * mean ** 2) / (n - 1)


def _mean_of_variances(counts, sums, squares):
    n = counts.sum()
    means = sums / counts[:, None]
    return sums.sum(axis=0) / n, (squares / counts[:, None] - means ** 2).mean(axis=0)


def _changes_inputs(counts, sums, squares):
    sums /= counts.sum()
    return S.combine_statistics(counts, sums * counts.sum(), squares)


def _summed(grads):
    return [sum(per_rank) for per_rank in zip(*grads)]


def _rank_zero(grads):
    return [g.copy() for g in grads[0]]


def _flattened(grads):
    return [np.mean([g.mean() for g in per_rank]) for per_rank in zip(*grads)]


def _in_place(grads):
    for per_rank in zip(*grads):
        per_rank[0][...] = sum(per_rank) / len(grads)
    return [g.copy() for g in grads[0]]


def _to_everyone(buffers, send):
    N = len(buffers)
    total = sum(send(r, d, buffers[r]) for r in range(N) for d in range(N) if d != r) / (N - 1)
    return [total] * N


def _reduce_scatter_only(buffers, send):
    N = len(buffers)
    chunks = [np.array_split(b.copy(), N) for b in buffers]
    for step in range(N - 1):
        arrived = [(r, (r - step) % N, send(r, (r + 1) % N, chunks[r][(r - step) % N])) for r in range(N)]
        for r, c, data in arrived:
            chunks[(r + 1) % N][c] = chunks[(r + 1) % N][c] + data
    return [np.concatenate(c) for c in chunks]


def _whole_buffers(buffers, send):
    """The right sums, by passing whole buffers around the ring N - 1 times."""
    N = len(buffers)
    totals, passing = [b.copy() for b in buffers], [b.copy() for b in buffers]
    for _ in range(N - 1):
        passing = [send((r - 1) % N, r, passing[(r - 1) % N]) for r in range(N)]
        totals = [t + p for t, p in zip(totals, passing)]
    return totals


def _whole_buffers_twice(buffers, send):
    """The right sums and as many messages as a ring allreduce, but each a whole buffer."""
    totals = _whole_buffers(buffers, send)
    for r in range(len(buffers)):
        for _ in range(len(buffers) - 1):
            send(r, (r + 1) % len(buffers), totals[r])
    return totals


WRONG = {
    "check_combine_statistics": [(_mean_of_means, "average of the ranks' means"), (_unbiased, "unbiased variance"),
                                 (_mean_of_variances, "averages the ranks' variances"),
                                 (_changes_inputs, "changed its inputs in place")],
    "check_average_gradients": [(_summed, "4 times too large"), (_rank_zero, "rank 0's alone"),
                                (_flattened, "average over the ranks, parameter by parameter"),
                                (_in_place, "changed the ranks' gradients in place")],
    "check_ring_allreduce": [(_to_everyone, "only to its right neighbour"),
                             (_reduce_scatter_only, "is not the sum of every rank's buffer"),
                             (_whole_buffers, "a ring allreduce takes 2 (N - 1) steps"),
                             (_whole_buffers_twice, "should be one chunk of the buffer")],
}
NAMES = {"check_combine_statistics": "combine_statistics", "check_average_gradients": "average_gradients",
         "check_ring_allreduce": "ring_allreduce"}


def test_every_checker_of_the_lesson_is_tested_here():
    assert set(WRONG) == {name for name in vars(L13) if name.startswith("check_")}
    assert set(L13.EXERCISES) == set(NAMES.values()) and all(len(v) >= 3 for v in WRONG.values())


@pytest.mark.parametrize("checker", list(WRONG))
def test_the_reference_solution_passes(checker, capsys):
    ok, _, message = getattr(L13, checker)(getattr(S, NAMES[checker]))
    assert ok, message


@pytest.mark.parametrize("checker, answer, words", [(c, a, w) for c, cases in WRONG.items() for a, w in cases],
                         ids=[f"{c}-{i}" for c, cases in WRONG.items() for i in range(len(cases))])
def test_a_wrong_answer_fails_naming_the_mistake(checker, answer, words, capsys):
    ok, _, message = getattr(L13, checker)(_named(answer, NAMES[checker]))
    assert not ok and words in message, message
    assert capsys.readouterr().out.startswith("FAIL ")
