"""Channel-major matrices: the memory layout of the fused ops (ops/bn_relu.py,
ops/dense_block.py), and what they do on it besides the arithmetic of the fold
(ops/bn_relu_fold.py): per-channel batch statistics, column chunks, 2x2 pooling.

A channel-major array is laid out (C, N, H, W), and seen as a (C, R) matrix,
R = N*H*W (``as_matrix``): channel c's values are row c. Batch statistics are
then row sums, and a 1x1 convolution over the whole batch is ONE matrix
product, y = W @ z with W (O, C). A per-channel vector (C,) broadcasts against
the matrix as a (C, 1) column (``per_row``).

Batch statistics here are batch norm's (ops/norm.py's ``batch_statistics``),
computed row by row: the mean summed in float64, the variance in float64 over
partial sums of SQUARES_BLOCK float32 squares (good to about 1e-7, with no
float64 temporary of the input's size).
"""
from __future__ import annotations

from .. import backend, memory
from . import parallel, stats_reducer


def per_row(vector):
    """A vector of one value per row (C,), shaped (C, 1) to broadcast against a (C, R) matrix."""
    return vector.reshape(-1, 1)


def as_matrix(a):
    """A channel-major (C, N, H, W) array as its (C, N*H*W) matrix (a view)."""
    return a.reshape(a.shape[0], -1)


def channel_major(x):
    """x (N, C, H, W) as a channel-major (C, N, H, W) array: a view when x's memory is
    laid out that way, else a transposing copy into a pooled scratch array."""
    cm = x.transpose(1, 0, 2, 3)
    if cm.flags.c_contiguous:
        return cm
    copy = memory.scratch(cm.shape, x.dtype, like=x)
    copy[...] = cm
    return copy


# --- batch statistics, one channel per row ------------------------------------------
SQUARES_BLOCK = 1024


def sums_of_squares(a):
    """The sum of each row's squares of a (C, R), float64 over partial sums of
    SQUARES_BLOCK values (no temporary of a's size)."""
    xp = backend.get_array_module(a)
    C, R = a.shape
    whole = R - R % SQUARES_BLOCK
    total = xp.zeros(C, dtype=xp.float64)
    if whole:
        blocks = a[:, :whole].reshape(C, -1, SQUARES_BLOCK)
        total += xp.einsum("cbr,cbr->cb", blocks, blocks).sum(axis=1, dtype=xp.float64)
    if whole < R:
        total += xp.einsum("cr,cr->c", a[:, whole:], a[:, whole:])
    return total


def centre_rows(x, out):
    """Batch norm's statistics of x (C, R), one channel per row: returns the rows' mean and
    biased variance (float64 vectors) and writes x - mean (in x's dtype) into ``out``.
    In the calling thread."""
    xp = backend.get_array_module(x)
    count = x.shape[1]
    mean = xp.einsum("cr->c", x, dtype=xp.float64) / count
    xp.subtract(x, per_row(mean.astype(x.dtype)), out=out)
    return mean, sums_of_squares(out) / count


def centre_rows_threaded(x, out):
    """``centre_rows``, the rows shared among the threads (ops/parallel.py); the whole batch's
    with synchronized batch norm (``whole_batch_rows``)."""
    xp = backend.get_array_module(x)
    parts = parallel.parallel(lambda i, lo, hi: centre_rows(x[lo:hi], out[lo:hi]), parallel.split(x.shape[0]))
    return whole_batch_rows(x.shape[1], *(xp.concatenate(values) for values in zip(*parts)), out)


def whole_batch_rows(count, mean, var, centred):
    """With synchronized batch norm (ops/stats_reducer.py, data parallelism): the mean and variance
    of the whole batch across the processes, and ``centred`` (x less this shard's ``mean``) made
    x less the whole batch's mean, in place. Otherwise (mean, var) as they are."""
    if not stats_reducer.synchronized():
        return mean, var
    _, mean_all, var_all = stats_reducer.global_statistics(count, mean, var)
    centred -= per_row((mean_all - mean).astype(centred.dtype))
    return mean_all, var_all


def column_slice(v, lo, hi, mean=None, out=None):
    """Columns lo..hi of v (C, R); with ``mean`` (one value per row, in v's dtype), those
    columns less the mean, written into ``out`` (the centred values ``centre_rows`` made)."""
    if mean is None:
        return v[:, lo:hi]
    return backend.get_array_module(v).subtract(v[:, lo:hi], per_row(mean), out=out[:, :hi - lo])


# --- columns a chunk at a time ----------------------------------------------------------
# The 1x1 kernels work on CHUNK columns at a time: their scratch arrays are
# C x CHUNK, not C x R (DenseNet-BC-100's first block: 7 MB instead of 56 MB),
# and each chunk's passes stay in the cache.
CHUNK = 8192


def chunk_width(unit=1):
    """Columns per chunk: about CHUNK, a multiple of ``unit``."""
    return max(unit, CHUNK - CHUNK % unit)


def chunks(lo, hi, unit=1):
    """lo..hi in pieces of ``chunk_width(unit)`` columns (the last one shorter)."""
    step = chunk_width(unit)
    return [(a, min(a + step, hi)) for a in range(lo, hi, step)]


def thread_ranges(R, unit=1):
    """The columns 0..R as one range per thread, each a multiple of ``unit`` columns."""
    return [(lo * unit, hi * unit) for lo, hi in parallel.split(R // unit)]


def chunk_scratch(v, width):
    """A pooled scratch array of v's rows and at most ``width`` columns."""
    return memory.scratch((v.shape[0], min(width, v.shape[1])), v.dtype, like=v)


# --- 2x2 average pooling of image rows ---------------------------------------------------
def pool_2x2(Z, width, out):
    """out (C, r/4) <- the 2x2 averages of Z (C, r), whose columns are pairs of image rows
    ``width`` wide: the order of AvgPool2d(2)'s sum (ops/pool.py), then times 1/4."""
    xp = backend.get_array_module(Z)
    C, r = Z.shape
    taps = Z.reshape(C, r // (2 * width), 2, width // 2, 2)
    pooled = out.reshape(C, r // (2 * width), width // 2)
    xp.add(taps[:, :, 0, :, 0], taps[:, :, 0, :, 1], out=pooled)
    pooled += taps[:, :, 1, :, 0]
    pooled += taps[:, :, 1, :, 1]
    pooled *= Z.dtype.type(0.25)
    return out


def unpool_2x2(d, width, out):
    """out (C, r) <- the gradient of ``pool_2x2``: each of a window's 4 values gets d / 4."""
    C, r = out.shape
    taps = out.reshape(C, r // (2 * width), 2, width // 2, 2)
    quarter = (d * d.dtype.type(0.25)).reshape(C, r // (2 * width), width // 2)
    for a in (0, 1):
        for b in (0, 1):
            taps[:, :, a, :, b] = quarter
    return out
