"""Reference solutions to lesson 13's exercises (data parallelism); solutions.py re-exports them."""
from __future__ import annotations

import numpy as np


def combine_statistics(counts, sums, sums_of_squares):
    n = counts.sum()
    mean = sums.sum(axis=0) / n
    return mean, sums_of_squares.sum(axis=0) / n - mean ** 2


def average_gradients(grads):
    return [sum(per_rank) / len(grads) for per_rank in zip(*grads)]


def ring_allreduce(buffers, send):
    N = len(buffers)
    chunks = [np.array_split(b.copy(), N) for b in buffers]
    for step in range(N - 1):      # reduce-scatter: rank r passes chunk r - step on, adding what arrives
        arrived = [(r, (r - step) % N, send(r, (r + 1) % N, chunks[r][(r - step) % N])) for r in range(N)]
        for r, c, data in arrived:
            chunks[(r + 1) % N][c] = chunks[(r + 1) % N][c] + data
    for step in range(N - 1):      # allgather: rank r holds chunk r + 1's sum; pass the sums around
        arrived = [(r, (r + 1 - step) % N, send(r, (r + 1) % N, chunks[r][(r + 1 - step) % N])) for r in range(N)]
        for r, c, data in arrived:
            chunks[(r + 1) % N][c] = data
    return [np.concatenate(c) for c in chunks]
