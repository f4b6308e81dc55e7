"""Pooling: max, average, and adaptive (fixed output size) max and average.

    x (N, C, H, W) -> y (N, C, OH, OW)
    OH = (H + 2*padding - dilation*(k - 1) - 1) // stride + 1          (floor mode)
    ceil_mode=True rounds up instead, so a last, partial window covers the
    bottom/right edge; PyTorch's rule keeps that window only if it starts
    inside the input or the left padding (never wholly in the right padding).

Every window is read as kH*kW strided slices of the padded input (one
slice per tap), so forward and backward loop over the taps only, never
over pixels or images. The input is padded far enough on the bottom/right
for ceil mode's partial windows (with -inf for max, zeros for average).

Average pooling divides by the window size kH*kW (``count_include_pad=True``,
PyTorch's default: padded zeros count, the ceil-mode overhang beyond the
padding does not) or by the number of real input elements in the window
(``count_include_pad=False``). The divisor is a row count times a column
count, so it is one (OH, OW) table.

Adaptive pooling splits the input into output_size bins, cell i covering
rows floor(i*H/OH) .. ceil((i+1)*H/OH) - 1 (PyTorch's rule; with OH > H
the bins repeat input rows).
"""
from __future__ import annotations

from .. import backend
from ..autograd import Function, Tensor
from .geometry import pair, window_geometry


def _pool_geometry(x, kernel_size, stride, padding, dilation, ceil_mode, name):
    """((kh, kw), (sh, sw), (ph, pw), (dh, dw), (OH, OW)) of a pooling call, checked
    (ops/geometry.py, and pooling's own rules: padding at most half the kernel, no window
    that reads only padding)."""
    if x.ndim != 4:
        raise ValueError(f"{name} expects input of shape (N, C, H, W), got shape {tuple(x.shape)}")
    geometry = window_geometry(name, x.shape, kernel_size, kernel_size if stride is None else stride, padding,
                               dilation, ceil_mode)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (OH, OW) = geometry
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(f"{name}: padding {padding} must be at most half the kernel size {kernel_size}")
    H, W = x.shape[2:]
    for axis, k, st, p, d, n, out in (("row", kh, sh, ph, dh, H, OH), ("column", kw, sw, pw, dw, W, OW)):
        for i in range(out) if d > 1 else ():   # spaced taps can all miss the input (never with d = 1)
            if all(not 0 <= i * st - p + a * d < n for a in range(k)):
                raise ValueError(f"{name}: with dilation {dilation} the window at output {axis} {i} reads "
                                 f"only padding (input shape {tuple(x.shape)}, kernel_size={kernel_size}, "
                                 f"stride={stride}, padding={padding})")
    return geometry


def _padded(x, geometry, fill):
    """x padded with ``fill``: padding on the top/left, and on the bottom/right whatever
    the last window needs (the padding, or more in ceil mode; rows no window reads are cut)."""
    xp = backend.get_array_module(x)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (OH, OW) = geometry
    N, C, H, W = x.shape
    rows, cols = (OH - 1) * sh + dh * (kh - 1) + 1, (OW - 1) * sw + dw * (kw - 1) + 1   # what windows read
    if (ph, pw) == (0, 0) and rows <= H and cols <= W:
        return x
    out = xp.full((N, C, max(rows, ph + H), max(cols, pw + W)), fill, dtype=x.dtype)
    out[:, :, ph:ph + H, pw:pw + W] = x
    return out


def _taps(geometry):
    """The slice of the padded input that tap (a, b) of every window reads."""
    (kh, kw), (sh, sw), _, (dh, dw), (OH, OW) = geometry
    for a in range(kh):
        for b in range(kw):
            yield (slice(None), slice(None), slice(a * dh, a * dh + sh * OH, sh),
                   slice(b * dw, b * dw + sw * OW, sw))


def _unpad(gxpad, geometry, x_shape):
    (_, _, (ph, pw), _, _), (H, W) = geometry, x_shape[2:]
    return gxpad[:, :, ph:ph + H, pw:pw + W]


class MaxPool2d(Function):
    # y = max over each window ; the gradient goes to the (first) maximal element
    def forward(self, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        xp = backend.get_array_module(x)
        geometry = _pool_geometry(x, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d")
        (kh, kw), _, _, _, (OH, OW) = geometry
        xpad = _padded(x, geometry, -xp.inf)
        y = None
        argmax = xp.zeros(x.shape[:2] + (OH, OW), dtype=xp.int8 if kh * kw < 128 else xp.int32)
        for t, window in enumerate(_taps(geometry)):
            v = xpad[window]
            if y is None:
                y = v.copy()
                continue
            better = v > y           # strict: ties keep the first maximum, as PyTorch
            xp.copyto(y, v, where=better)
            argmax[better] = t
        self.argmax, self.geometry, self.x_shape, self.padded_shape = argmax, geometry, x.shape, xpad.shape
        return y

    def backward(self, g):
        xp = backend.get_array_module(g)
        gxpad = xp.zeros(self.padded_shape, dtype=g.dtype)
        for t, window in enumerate(_taps(self.geometry)):
            gxpad[window] += g * (self.argmax == t)
        return _unpad(gxpad, self.geometry, self.x_shape)


class AvgPool2d(Function):
    # y = sum over each window / divisor ; dx: every input element gets g / divisor
    # from each window that contains it
    def forward(self, x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        xp = backend.get_array_module(x)
        geometry = _pool_geometry(x, kernel_size, stride, padding, 1, ceil_mode, "avg_pool2d")
        xpad = _padded(x, geometry, 0)
        y = xp.zeros(x.shape[:2] + geometry[-1], dtype=x.dtype)
        for window in _taps(geometry):
            y += xpad[window]
        self.scale = _inverse_divisor(geometry, x.shape[2:], count_include_pad, x)
        y *= self.scale
        self.geometry, self.x_shape, self.padded_shape = geometry, x.shape, xpad.shape
        return y

    def backward(self, g):
        xp = backend.get_array_module(g)
        (kh, kw), (sh, sw), (ph, pw), _, (OH, OW) = self.geometry
        N, C, H, W = self.x_shape
        g = g * self.scale
        if (kh, kw) == (sh, sw) and (ph, pw) == (0, 0) and H == kh * OH and W == kw * OW:
            # non-overlapping windows that tile the input (DenseNet's 2x2 transitions): a plain repeat
            return xp.repeat(xp.repeat(g, kh, axis=2), kw, axis=3)
        gxpad = xp.zeros(self.padded_shape, dtype=g.dtype)
        for window in _taps(self.geometry):
            gxpad[window] += g
        return _unpad(gxpad, self.geometry, self.x_shape)


def _inverse_divisor(geometry, size, count_include_pad, like):
    """1 / (the number of elements each window averages): a scalar when every window
    has kH*kW, else an (OH, OW) table, rows counted times columns counted."""
    xp = backend.get_array_module(like)
    (kh, kw), (sh, sw), (ph, pw), _, (OH, OW) = geometry
    counts = []
    for k, s, p, n, out in ((kh, sh, ph, size[0], OH), (kw, sw, pw, size[1], OW)):
        start = xp.arange(out) * s - p                     # first row of each window, input coordinates
        end = xp.minimum(start + k, n + p)                 # ceil mode's overhang past the padding never counts
        if not count_include_pad:
            start, end = xp.maximum(start, 0), xp.minimum(end, n)
        counts.append(end - start)
    if bool((counts[0] == kh).all()) and bool((counts[1] == kw).all()):
        return like.dtype.type(1.0 / (kh * kw))
    return (1.0 / (counts[0][:, None] * counts[1][None, :])).astype(like.dtype)


class GlobalAvgPool2d(Function):
    # y[n, c] = mean over H, W of x[n, c] (kept as (N, C, 1, 1)) ; dx = g / (H*W) everywhere
    def forward(self, x):
        self.x_shape = x.shape
        return x.mean(axis=(2, 3), keepdims=True)

    def backward(self, g):
        xp = backend.get_array_module(g)
        H, W = self.x_shape[2:]
        return xp.broadcast_to(g * g.dtype.type(1.0 / (H * W)), self.x_shape)


def _bins(size, out):
    """PyTorch's adaptive bins: cell i covers floor(i*size/out) .. ceil((i+1)*size/out) - 1."""
    return [slice((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def _bin_matrix(size, out, like):
    """(out, size) matrix whose row i averages bin i: y = P @ x pools one axis."""
    xp = backend.get_array_module(like)
    P = xp.zeros((out, size), dtype=like.dtype)
    for i, b in enumerate(_bins(size, out)):
        P[i, b] = 1.0 / (b.stop - b.start)
    return P


class AdaptiveAvgPool2d(Function):
    # Averaging over a bin of rows and a bin of columns is separable: with Ph (OH, H) and
    # Pw (OW, W) the bin-averaging matrices, y[n, c] = Ph @ x[n, c] @ Pw^T, two matrix products
    # for the whole batch ; dx[n, c] = Ph^T @ g[n, c] @ Pw.
    def forward(self, x, output_size):
        H, W = x.shape[2:]
        OH, OW = output_size
        self.Ph, self.Pw = _bin_matrix(H, OH, x), _bin_matrix(W, OW, x)
        return self.Ph @ x @ self.Pw.T

    def backward(self, g):
        return self.Ph.T @ g @ self.Pw


class AdaptiveMaxPool2d(Function):
    # y[n, c, i, j] = max over bin (i, j) ; the gradient goes to the (first) maximal element.
    # A loop over the output cells, which are few (output_size is small).
    def forward(self, x, output_size):
        xp = backend.get_array_module(x)
        N, C, H, W = x.shape
        OH, OW = output_size
        self.cells = [(rows, cols) for rows in _bins(H, OH) for cols in _bins(W, OW)]
        y = xp.empty((N, C, OH * OW), dtype=x.dtype)
        self.argmax = xp.empty((N, C, OH * OW), dtype=xp.int64)
        for k, (rows, cols) in enumerate(self.cells):
            window = x[:, :, rows, cols].reshape(N, C, -1)        # row-major: ties go to the first
            self.argmax[:, :, k] = window.argmax(axis=2)
            y[:, :, k] = xp.take_along_axis(window, self.argmax[:, :, k:k + 1], axis=2)[:, :, 0]
        self.x_shape = x.shape
        return y.reshape(N, C, OH, OW)

    def backward(self, g):
        xp = backend.get_array_module(g)
        N, C = g.shape[:2]
        g = g.reshape(N, C, -1)
        gx = xp.zeros(self.x_shape, dtype=g.dtype)
        n, c = xp.meshgrid(xp.arange(N), xp.arange(C), indexing="ij")
        for k, (rows, cols) in enumerate(self.cells):     # one winner per (n, c) and cell; bins may
            width = cols.stop - cols.start                # overlap, so cells add up one after another
            i, j = self.argmax[:, :, k] // width + rows.start, self.argmax[:, :, k] % width + cols.start
            gx[n, c, i, j] += g[:, :, k]
        return gx


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Max pooling. x (N, C, H, W); stride defaults to kernel_size; padding with -inf;
    ``dilation`` spaces the taps; ``ceil_mode`` rounds the output size up (see the module docstring)."""
    return MaxPool2d.apply(x, kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation,
                           ceil_mode=ceil_mode)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """Average pooling. x (N, C, H, W); stride defaults to kernel_size; zero padding, counted
    in the divisor unless ``count_include_pad=False``; ``ceil_mode`` as for max pooling."""
    return AvgPool2d.apply(x, kernel_size=kernel_size, stride=stride, padding=padding, ceil_mode=ceil_mode,
                           count_include_pad=count_include_pad)


def _adaptive_output_size(x, output_size, name):
    shape = (x.data if isinstance(x, Tensor) else x).shape
    if len(shape) != 4:
        raise ValueError(f"{name} expects input of shape (N, C, H, W), got shape {tuple(shape)}")
    oh, ow = pair(output_size, "output_size")
    if oh < 1 or ow < 1:
        raise ValueError(f"{name}: output size {oh}x{ow} must be at least 1x1 (input shape {tuple(shape)})")
    if shape[2] < 1 or shape[3] < 1:
        raise ValueError(f"{name}: input of shape {tuple(shape)} has no pixels to pool")
    return oh, ow


def adaptive_avg_pool2d(x, output_size):
    """Average pooling to a fixed output size (PyTorch's bins; an output larger than the
    input repeats input pixels); ``output_size=1`` is global average pooling
    (N, C, H, W) -> (N, C, 1, 1)."""
    oh, ow = _adaptive_output_size(x, output_size, "adaptive_avg_pool2d")
    if (oh, ow) == (1, 1):
        return GlobalAvgPool2d.apply(x)
    return AdaptiveAvgPool2d.apply(x, output_size=(oh, ow))


def adaptive_max_pool2d(x, output_size):
    """Max pooling to a fixed output size, with adaptive_avg_pool2d's bins."""
    return AdaptiveMaxPool2d.apply(x, output_size=_adaptive_output_size(x, output_size, "adaptive_max_pool2d"))
