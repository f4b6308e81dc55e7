"""What allreduce costs on paper: the ring algorithm, and when communication dominates.

Ring allreduce (Patarasuk & Yuan, 2009; Baidu's 2017 "bringing HPC techniques to deep
learning"): the N ranks sit on a ring and each buffer is cut into N chunks. In N - 1 steps
of reduce-scatter every rank sends one chunk to its right neighbour and adds the one from
its left; then each rank holds one chunk's full sum. N - 1 steps of allgather pass the sums
around. Each rank sends 2 (N - 1) chunks of bytes / N:

    t_comm(N) = 2 (N - 1) / N x bytes / bandwidth          (latency ignored)

which tends to 2 x bytes / bandwidth: it hardly grows with N. The computation does shrink:
with the global batch fixed, each of N ranks computes 1/N of it, t_compute / N. So
communication dominates (t_comm >= t_compute / N) from

    2 (N - 1) x bytes / bandwidth >= t_compute,   N >= 1 + t_compute x bandwidth / (2 bytes)

(with no overlap of communication and backward; overlapping hides up to the smaller of the two).
"""
from __future__ import annotations

import math

# float32 gradients: parameters x 4 bytes (tinydense's densenet_bc(100, 12) and resnet50()).
DENSENET_BC_100_BYTES = 769_162 * 4
RESNET50_BYTES = 25_557_032 * 4


def ring_allreduce_seconds(nbytes, ranks, gbit_per_s):
    """Seconds for a ring allreduce of ``nbytes`` over ``ranks`` ranks linked at ``gbit_per_s``."""
    if ranks < 1 or nbytes < 0 or gbit_per_s <= 0:
        raise ValueError(f"need ranks >= 1, nbytes >= 0, bandwidth > 0; got {ranks}, {nbytes}, {gbit_per_s}")
    return 2 * (ranks - 1) / ranks * nbytes / (gbit_per_s * 1e9 / 8)


def bytes_sent_per_rank(nbytes, ranks):
    """What each rank sends in a ring allreduce: 2 (N - 1) chunks of nbytes / N."""
    return 2 * (ranks - 1) * nbytes / ranks


def crossover_ranks(step_seconds, nbytes, gbit_per_s):
    """The smallest N at which one step's allreduce takes at least its computation
    (``step_seconds`` of one process, shared among N): N >= 1 + t x bandwidth / (2 bytes)."""
    n = math.ceil(1 + step_seconds * gbit_per_s * 1e9 / 8 / (2 * nbytes))
    while n > 2 and ring_allreduce_seconds(nbytes, n - 1, gbit_per_s) >= step_seconds / (n - 1):
        n -= 1                          # the rounding of the closed form, checked against the definition
    return max(n, 2)


def cost_table(models, bandwidths=(10, 100), ranks=(2, 4, 8, 16, 64)):
    """Markdown lines: for each (name, gradient bytes, seconds per step of one process) and link
    speed, the ring allreduce time at each N, the computation per rank, and the crossover N."""
    head = "| model | link | " + " | ".join(f"N={n}: comm / compute" for n in ranks) + " | comm dominates from |"
    lines = [head, "|" + " --- |" * (len(ranks) + 3)]
    for name, nbytes, step in models:
        for gbit in bandwidths:
            cells = [f"{ring_allreduce_seconds(nbytes, n, gbit) * 1e3:.1f} / {step / n * 1e3:.0f} ms" for n in ranks]
            lines.append(f"| {name} ({nbytes / 1e6:.1f} MB) | {gbit} Gbit/s | " + " | ".join(cells)
                         + f" | N = {crossover_ranks(step, nbytes, gbit)} |")
    return lines
