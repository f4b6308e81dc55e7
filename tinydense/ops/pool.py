"""Pooling: max, average, and adaptive (global) average.

    x (N, C, H, W) -> y (N, C, OH, OW),  OH = (H + 2*padding - k) // stride + 1
Every window is read as kH*kW strided slices of the padded input (one
slice per tap), so forward and backward loop over the taps only, never
over pixels or images.
"""
from __future__ import annotations

import numbers

from .. import backend
from ..autograd import Function
from .conv import _pair, conv_output_size


def _pool_geometry(x, kernel_size, stride, padding, name):
    if x.ndim != 4:
        raise ValueError(f"{name} expects input of shape (N, C, H, W), got shape {tuple(x.shape)}")
    kh, kw = _pair(kernel_size, "kernel_size")
    sh, sw = _pair(kernel_size if stride is None else stride, "stride")
    ph, pw = _pair(padding, "padding")
    if min(kh, kw, sh, sw) < 1 or min(ph, pw) < 0:
        raise ValueError(f"{name} needs kernel_size, stride >= 1 and padding >= 0, got "
                         f"kernel_size={kernel_size}, stride={stride}, padding={padding}")
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(f"{name}: padding {padding} must be at most half the kernel size {kernel_size}")
    H, W = x.shape[2:]
    if kh > H + 2 * ph or kw > W + 2 * pw:
        raise ValueError(f"{name}: kernel {kh}x{kw} is larger than the padded input "
                         f"{H + 2 * ph}x{W + 2 * pw} (input shape {tuple(x.shape)})")
    OH, OW = conv_output_size(H, kh, sh, ph), conv_output_size(W, kw, sw, pw)
    return (kh, kw), (sh, sw), (ph, pw), (OH, OW)


def _taps(kh, kw, sh, sw, OH, OW):
    """The slice of the padded input that tap (a, b) of every window reads."""
    for a in range(kh):
        for b in range(kw):
            yield (slice(None), slice(None), slice(a, a + sh * OH, sh), slice(b, b + sw * OW, sw))


class MaxPool2d(Function):
    # y = max over each window ; the gradient goes to the (first) maximal element
    def forward(self, x, kernel_size, stride=None, padding=0):
        xp = backend.get_array_module(x)
        (kh, kw), (sh, sw), (ph, pw), (OH, OW) = _pool_geometry(x, kernel_size, stride, padding, "max_pool2d")
        N, C, H, W = x.shape
        xpad = x
        if ph or pw:
            xpad = xp.full((N, C, H + 2 * ph, W + 2 * pw), -xp.inf, dtype=x.dtype)
            xpad[:, :, ph:ph + H, pw:pw + W] = x
        y = None
        argmax = xp.zeros((N, C, OH, OW), dtype=xp.int8 if kh * kw < 128 else xp.int32)
        for t, window in enumerate(_taps(kh, kw, sh, sw, OH, OW)):
            v = xpad[window]
            if y is None:
                y = v.copy()
                continue
            better = v > y           # strict: ties keep the first maximum, as PyTorch
            xp.copyto(y, v, where=better)
            argmax[better] = t
        self.argmax, self.geometry, self.x_shape = argmax, ((kh, kw), (sh, sw), (ph, pw), (OH, OW)), x.shape
        return y

    def backward(self, g):
        xp = backend.get_array_module(g)
        (kh, kw), (sh, sw), (ph, pw), (OH, OW) = self.geometry
        N, C, H, W = self.x_shape
        gxpad = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=g.dtype)
        for t, window in enumerate(_taps(kh, kw, sh, sw, OH, OW)):
            gxpad[window] += g * (self.argmax == t)
        return gxpad[:, :, ph:ph + H, pw:pw + W]


class AvgPool2d(Function):
    # y = mean over each window, padded zeros counted in the divisor (PyTorch's default)
    # dx: every input element gets g / (kH*kW) from each window that contains it
    def forward(self, x, kernel_size, stride=None, padding=0):
        xp = backend.get_array_module(x)
        (kh, kw), (sh, sw), (ph, pw), (OH, OW) = _pool_geometry(x, kernel_size, stride, padding, "avg_pool2d")
        xpad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
        y = xp.zeros(x.shape[:2] + (OH, OW), dtype=x.dtype)
        for window in _taps(kh, kw, sh, sw, OH, OW):
            y += xpad[window]
        y *= x.dtype.type(1.0 / (kh * kw))
        self.geometry, self.x_shape = ((kh, kw), (sh, sw), (ph, pw), (OH, OW)), x.shape
        return y

    def backward(self, g):
        xp = backend.get_array_module(g)
        (kh, kw), (sh, sw), (ph, pw), (OH, OW) = self.geometry
        N, C, H, W = self.x_shape
        g = g * g.dtype.type(1.0 / (kh * kw))
        if (kh, kw) == (sh, sw) and (ph, pw) == (0, 0) and H == kh * OH and W == kw * OW:
            # non-overlapping windows that tile the input (DenseNet's 2x2 transitions): a plain repeat
            return xp.repeat(xp.repeat(g, kh, axis=2), kw, axis=3)
        gxpad = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=g.dtype)
        for window in _taps(kh, kw, sh, sw, OH, OW):
            gxpad[window] += g
        return gxpad[:, :, ph:ph + H, pw:pw + W]


class GlobalAvgPool2d(Function):
    # y[n, c] = mean over H, W of x[n, c] (kept as (N, C, 1, 1)) ; dx = g / (H*W) everywhere
    def forward(self, x):
        self.x_shape = x.shape
        return x.mean(axis=(2, 3), keepdims=True)

    def backward(self, g):
        xp = backend.get_array_module(g)
        H, W = self.x_shape[2:]
        return xp.broadcast_to(g * g.dtype.type(1.0 / (H * W)), self.x_shape)


class AdaptiveAvgPool2d(Function):
    # output cell (i, j) averages rows floor(i*H/OH) .. ceil((i+1)*H/OH)-1 (and likewise columns),
    # PyTorch's bins. Loops over the output cells, which are few (output_size is small).
    def forward(self, x, output_size):
        xp = backend.get_array_module(x)
        N, C, H, W = x.shape
        OH, OW = output_size
        self.bins = [(_bin(i, H, OH), _bin(j, W, OW)) for i in range(OH) for j in range(OW)]
        self.x_shape, self.out_hw = x.shape, (OH, OW)
        y = xp.empty((N, C, OH * OW), dtype=x.dtype)
        for k, (rows, cols) in enumerate(self.bins):
            y[:, :, k] = x[:, :, rows, cols].mean(axis=(2, 3))
        return y.reshape(N, C, OH, OW)

    def backward(self, g):
        xp = backend.get_array_module(g)
        N, C = g.shape[:2]
        g = g.reshape(N, C, -1)
        gx = xp.zeros(self.x_shape, dtype=g.dtype)
        for k, (rows, cols) in enumerate(self.bins):
            count = (rows.stop - rows.start) * (cols.stop - cols.start)
            gx[:, :, rows, cols] += (g[:, :, k] / count)[:, :, None, None]
        return gx


def _bin(i, size, out):
    return slice((i * size) // out, -((-(i + 1) * size) // out))


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max pooling. x (N, C, H, W); stride defaults to kernel_size; padding with -inf."""
    return MaxPool2d.apply(x, kernel_size=kernel_size, stride=stride, padding=padding)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """Average pooling. x (N, C, H, W); stride defaults to kernel_size; zero padding,
    counted in the divisor (count_include_pad=True, PyTorch's default)."""
    return AvgPool2d.apply(x, kernel_size=kernel_size, stride=stride, padding=padding)


def adaptive_avg_pool2d(x, output_size):
    """Average pooling to a fixed output size; ``output_size=1`` is global average
    pooling (N, C, H, W) -> (N, C, 1, 1)."""
    from ..autograd import Tensor
    shape = (x.data if isinstance(x, Tensor) else x).shape
    if len(shape) != 4:
        raise ValueError(f"adaptive_avg_pool2d expects input of shape (N, C, H, W), got shape {tuple(shape)}")
    oh, ow = _pair(output_size, "output_size")
    if oh < 1 or ow < 1 or oh > shape[2] or ow > shape[3]:
        raise ValueError(f"adaptive_avg_pool2d: output size {oh}x{ow} must be between 1 and the "
                         f"input size {shape[2]}x{shape[3]}")
    if (oh, ow) == (1, 1):
        return GlobalAvgPool2d.apply(x)
    return AdaptiveAvgPool2d.apply(x, output_size=(oh, ow))
