"""Checks of lesson 2, convolution: the convolution as loops, im2col, the backward pass of Conv2d,
Winograd's F(2, 3) over a 1-D signal."""
from __future__ import annotations

import numpy as np

import tinydense as td
import tinydense.functional as F

from .common import Case, Failure, check_function, rng, verdict


def check_conv2d(cls):
    """Conv2d.forward(x, weight, bias=None, stride=1, padding=0); backward (dx, dweight[, dbias])."""
    r = rng(12)
    settings = [((2, 3, 5, 5), (4, 3, 3, 3), True, 1, 1, "3x3, stride 1, padding 1, bias"),
                ((1, 2, 7, 6), (3, 2, 3, 2), False, 2, 0, "3x2 kernel, stride 2, no padding"),
                ((2, 3, 4, 5), (2, 3, 1, 1), False, 1, 0, "1x1"),
                ((1, 1, 6, 6), (2, 1, 3, 3), True, (2, 1), (1, 0), "stride (2, 1), padding (1, 0)")]
    cases = []
    for xs, ws, bias, s, p, label in settings:
        arrays = [r.standard_normal(xs), r.standard_normal(ws)] + ([r.standard_normal(ws[0])] if bias else [])
        names = ["x", "weight"] + (["bias"] if bias else [])
        cases.append(Case(label, lambda c, *t, s=s, p=p: c.apply(*t, stride=s, padding=p),
                          lambda *t, s=s, p=p: F.conv2d(*t, stride=s, padding=p), arrays, names))
    return check_function("convolution", cls, cases,
                          advice='lesson 2, section 6 ("The backward pass is two more matrix products"): dweight and dx are each one matrix product with g; dx goes back through col2im, where taps that overlap ADD.')


LOOP_SETTINGS = [((2, 3, 5, 5), (4, 3, 3, 3), 1, 1), ((1, 2, 7, 6), (3, 2, 3, 3), 2, 0),
                 ((2, 1, 4, 4), (2, 1, 1, 1), 1, 0), ((1, 2, 6, 5), (1, 2, 3, 3), 2, 2)]


def check_conv2d_loops(fn, settings=LOOP_SETTINGS, seed=20):
    """conv2d_loops(x, w, b, stride, padding) -> y (N, O, OH, OW), NumPy arrays.
    settings: [(x shape, w shape, stride, padding)]."""
    def run():
        r = rng(seed)
        for xs, ws, s, p in settings:
            x, w, b = r.standard_normal(xs), r.standard_normal(ws), r.standard_normal(ws[0])
            where = f"[x {xs}, w {ws}, stride {s}, padding {p}]"
            y = np.asarray(fn(x, w, b, s, p))
            want = F.conv2d(td.tensor(x), td.tensor(w), td.tensor(b), stride=s, padding=p).numpy()
            if y.shape != want.shape:
                raise Failure(f"the output has shape {y.shape} but should have {want.shape} {where}: output "
                              f"size (H - K + 2P) // S + 1 per axis.")
            if np.allclose(y, want - b.reshape(1, -1, 1, 1), rtol=1e-10, atol=1e-10):
                raise Failure(f"the output misses the bias {where}: add b[o] to every output of filter o.")
            if not np.allclose(y, want, rtol=1e-10, atol=1e-10):
                raise Failure(f"the output values are wrong {where} (largest difference "
                              f"{np.abs(y - want).max():.3g}): window (i, j) starts at input pixel "
                              f"(i*S, j*S) of the zero-padded input, and sums over all input channels.")
        return f"your loops compute the same convolution as F.conv2d in all {len(settings)} cases."
    return verdict("convolution by loops", getattr(fn, "__name__", "conv2d_loops"), run)


def _columns_by_convolution(x, K, stride, padding):
    """The column matrix from tinydense's conv2d: with one filter per (channel, tap) that picks out
    that input value (an identity), output pixel p of filter r is row r of column p."""
    N, C = x.shape[:2]
    rows = C * K * K
    picks = np.eye(rows).reshape(rows, C, K, K)
    y = F.conv2d(td.tensor(x), td.tensor(picks), stride=stride, padding=padding).numpy()
    return y.reshape(N, rows, -1)


def check_im2col(fn, settings=(((2, 3, 5, 5), 3, 1, 1), ((1, 2, 7, 6), 3, 2, 0), ((1, 1, 6, 6), 2, 2, 1)), seed=21):
    """im2col(x, K, stride, padding) -> (N, C*K*K, OH*OW): column p of image n is output pixel p's patch.
    settings: [(x shape, K, stride, padding)]."""
    def run():
        r = rng(seed)
        for xs, K, s, p in settings:
            x = r.standard_normal(xs)
            where = f"[x {xs}, K {K}, stride {s}, padding {p}]"
            cols, want = np.asarray(fn(x, K, s, p)), _columns_by_convolution(x, K, s, p)
            if cols.shape != want.shape:
                hint = (" (rows and columns swapped?)" if cols.shape[1:] == want.shape[:0:-1] else "")
                raise Failure(f"the result has shape {cols.shape} but should have {want.shape} {where}"
                              f"{hint}: one row per (channel, tap), one column per output pixel.")
            if not np.array_equal(cols, want):
                same_set = np.allclose(np.sort(cols, axis=1), np.sort(want, axis=1))
                raise Failure(f"the column matrix has the right shape but wrong entries {where}"
                              + (": the rows are in the wrong order; row (c, a, b) is c*K*K + a*K + b."
                                  if same_set else ": check the stride and the padding of the slices."))
        return f"your column matrices equal the per-pixel definition in all {len(settings)} cases."
    return verdict("im2col", getattr(fn, "__name__", "im2col"), run)


class _Counted:
    """A number that counts (in ``tally[0]``) every multiplication of a value made from the signal d
    by a value made from the filter g. Products with plain constants (the 1/2 of G) are not counted:
    they fold into the filter's transform, which is made once per filter."""
    __slots__ = ("value", "data", "filt", "tally")

    def __init__(self, value, data, filt, tally):
        self.value, self.data, self.filt, self.tally = value, data, filt, tally

    def _parts(self, other):
        if isinstance(other, _Counted):
            return other.value, other.data, other.filt
        return other, False, False

    def _new(self, value, data, filt):
        return _Counted(value, self.data or data, self.filt or filt, self.tally)

    def __add__(self, other):
        v, d, f = self._parts(other)
        return self._new(self.value + v, d, f)

    def __radd__(self, other):
        v, d, f = self._parts(other)
        return self._new(v + self.value, d, f)

    def __sub__(self, other):
        v, d, f = self._parts(other)
        return self._new(self.value - v, d, f)

    def __rsub__(self, other):
        v, d, f = self._parts(other)
        return self._new(v - self.value, d, f)

    def __mul__(self, other):
        v, d, f = self._parts(other)
        if (self.data and f) or (self.filt and d):
            self.tally[0] += 1
        return self._new(self.value * v, d, f)

    __rmul__ = __mul__

    def __truediv__(self, other):
        v, d, f = self._parts(other)
        if (self.data and f) or (self.filt and d):
            self.tally[0] += 1
        return self._new(self.value / v, d, f)

    def __neg__(self):
        return self._new(-self.value, False, False)

    def __pos__(self):
        return self

    def __float__(self):
        return float(self.value)


def check_winograd_1d(fn, lengths=(2, 8, 14), seed=22):
    """winograd_1d(d, g) -> y of length n = len(d) - 2 (n even), y[i] = d[i] g[0] + d[i+1] g[1] + d[i+2] g[2],
    by F(2, 3) tile by tile: at most 4 products of a signal value with a filter value per 2 outputs.
    lengths: the output lengths n tried."""
    def run():
        r, counts = rng(seed), []
        for n in lengths:
            d, g = r.standard_normal(n + 2), r.standard_normal(3)
            where = f"[d of length {n + 2}, g of length 3]"
            want = np.correlate(d, g, "valid")               # the direct sum, n outputs
            y = np.asarray(fn(d.copy(), g.copy()), dtype=float)
            if y.shape != want.shape:
                raise Failure(f"the result has shape {y.shape} but should have {want.shape} {where}: n + 2 inputs "
                              f"give n outputs, 2 per tile; tile t reads d[2t] .. d[2t+3] (tiles overlap by 2).")
            if np.allclose(y, np.convolve(d, g, "valid"), rtol=1e-10, atol=1e-12):
                raise Failure(f"you computed the convolution with the flipped filter {where}: y[i] is "
                              f"d[i] g[0] + d[i+1] g[1] + d[i+2] g[2] (deep learning's convolution does not flip, "
                              f"section 1).")
            wrong = ~np.isclose(y, want, rtol=1e-10, atol=1e-12)
            if wrong.any():
                i = int(np.argmax(wrong))
                t = i // 2
                raise Failure(f"y[{i}] is {y[i]:.6g} but should be {want[i]:.6g} {where}: y[{i}] is output "
                              f"{i % 2} of tile {t}, which reads d[{2 * t}] .. d[{2 * t + 3}]; its outputs are "
                              f"m1 + m2 + m3 and m2 - m3 - m4 (section 9).")
            tally = [0]
            dc = np.array([_Counted(v, True, False, tally) for v in d], dtype=object)
            gc = np.array([_Counted(v, False, True, tally) for v in g], dtype=object)
            yc = np.array([float(v) for v in np.asarray(fn(dc, gc), dtype=object).ravel()])
            if not np.allclose(yc, want, rtol=1e-10, atol=1e-12):
                raise Failure(f"with numbers that count their multiplications your function gave other values "
                              f"{where}: use only +, -, * and / on d and g.")
            if tally[0] == 0:
                raise Failure(f"no product of a signal value with a filter value could be counted {where}: the "
                              f"check passes numbers that count their multiplications; keep d and g as they come "
                              f"(no float(), no np.asarray(..., dtype=float)).")
            if tally[0] > 2 * n:
                direct = " (3 per output: the direct sum)" if tally[0] == 3 * n else ""
                raise Failure(f"your function multiplied signal values by filter values {tally[0]} times for "
                              f"{n} outputs{direct} {where}; F(2, 3) needs 4 per tile of 2 outputs: m1 .. m4, with "
                              f"the filter's transform (g0 + g1 + g2)/2 and (g0 - g1 + g2)/2 made once.")
            counts.append(f"{tally[0]} for {n}")
        return (f"your F(2, 3) equals the direct sum; multiplications for outputs: {', '.join(counts)} "
                f"(the direct sum: 3 per output).")
    return verdict("Winograd F(2, 3)", getattr(fn, "__name__", "winograd_1d"), run)


# the lesson's exercises: the name its stub cell defines -> its check (the grader reads this)
EXERCISES = {"conv2d_loops": check_conv2d_loops, "im2col": check_im2col, "Conv2d": check_conv2d,
             "winograd_1d": check_winograd_1d}
