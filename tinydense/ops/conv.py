"""2-D convolution (cross-correlation, as in every deep-learning framework).

    x (N, C, H, W) * weight (O, C, kH, kW) [+ bias (O,)] -> y (N, O, OH, OW)
    OH = (H + 2*pH - kH) // sH + 1          (the lecture's (W - K + 2P) / S + 1)
    y[n, o, i, j] = sum_{c, a, b} weight[o, c, a, b] * xpad[n, c, i*sH + a, j*sW + b] + bias[o]

Backward (g = dL/dy):
    dbias[o]   = sum_{n,i,j} g[n, o, i, j]
    dweight    = sum_n g[n] @ cols[n]^T        (cols: the input patches, see below)
    dx         = "col2im" of weight^T @ g: every patch scatters back to where it came from

All three are matrix products; three ways to lay the data out for them:

1. 1x1, stride 1, no padding (the bottleneck and transition convs of
   DenseNet-BC): a pixel is already a column, so y[n] = W @ x[n] with
   x[n] viewed as (C, H*W). No column matrix at all.
2. stride 1, any kernel and padding (the 3x3 convs): flatten each padded
   image to one row of length Hp*Wp. Tap (a, b) of output pixel p then
   reads input element p + a*Wp + b, so the whole patch matrix is just kH*kW
   shifted slices of the same row: a strided view, no im2col copy of the
   input. Rows whose column index falls past the real width are computed
   and thrown away ((Wp - OW)/Wp extra work). See ``tap_matmul``.
3. any stride (ImageNet stem, ResNet down-sampling): classic im2col, one
   strided copy per tap into a (C*kH*kW, OH*OW) column matrix.
"""
from __future__ import annotations

import numbers

from .. import backend
from ..autograd import Function


def _pair(value, name):
    if isinstance(value, numbers.Integral):
        value = (int(value), int(value))
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, numbers.Integral) for v in value)):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    return int(value[0]), int(value[1])


def conv_output_size(size, kernel, stride, padding):
    """(size + 2*padding - kernel) // stride + 1, for one spatial axis."""
    return (size + 2 * padding - kernel) // stride + 1


def tap_matmul(w_taps, src, offsets, length):
    """out[n, o, p] = sum_t w_taps[t] @ src[n, :, p + offsets[t]]  for p < length.

    w_taps: (T, O, C), src: (N, C, S) -> out (N, O, length). One matrix
    product either way; we stack the T taps on whichever side has fewer
    channels, so the big intermediate stays small:
      O <= C: (T*O, C) @ src gives every tap's output, then T shifted adds;
      O >  C: T shifted copies of src stacked to (T*C, length), then one product.
    """
    xp = backend.get_array_module(src)
    T, O, C = w_taps.shape
    N = src.shape[0]
    if O <= C:
        per_tap = xp.matmul(w_taps.reshape(T * O, C), src).reshape(N, T, O, -1)
        out = per_tap[:, 0, :, offsets[0]:offsets[0] + length].copy()
        for t in range(1, T):
            out += per_tap[:, t, :, offsets[t]:offsets[t] + length]
        return out
    cols = xp.empty((N, T, C, length), dtype=src.dtype)
    for t in range(T):
        cols[:, t] = src[:, :, offsets[t]:offsets[t] + length]
    w_flat = w_taps.transpose(1, 0, 2).reshape(O, T * C)
    return xp.matmul(w_flat, cols.reshape(N, T * C, length))


class Conv2d(Function):
    def forward(self, x, weight, bias=None, stride=1, padding=0):
        _check_conv_inputs(x, weight, bias)
        (sh, sw), (ph, pw) = _pair(stride, "stride"), _pair(padding, "padding")
        if sh < 1 or sw < 1 or ph < 0 or pw < 0:
            raise ValueError(f"conv2d needs stride >= 1 and padding >= 0, got stride={stride}, padding={padding}")
        N, C, H, W = x.shape
        O, _, kh, kw = weight.shape
        if kh > H + 2 * ph or kw > W + 2 * pw:
            raise ValueError(f"conv2d kernel {kh}x{kw} is larger than the padded input "
                             f"{H + 2 * ph}x{W + 2 * pw} (input {H}x{W}, padding {ph},{pw})")
        OH, OW = conv_output_size(H, kh, sh, ph), conv_output_size(W, kw, sw, pw)
        self.x_shape, self.stride, self.padding = x.shape, (sh, sw), (ph, pw)
        self.weight, self.has_bias = weight, bias is not None
        xp = backend.get_array_module(x)

        if kh == kw == 1 and (sh, sw) == (1, 1) and (ph, pw) == (0, 0):
            self.path = "1x1"
            self.x = x
            y = xp.matmul(weight.reshape(O, C), x.reshape(N, C, H * W))
        elif (sh, sw) == (1, 1):
            self.path = "taps"
            Hp, Wp = H + 2 * ph, W + 2 * pw
            # padded image as one row per channel, plus kw-1 zeros so the last tap's slice fits
            xflat = xp.zeros((N, C, Hp * Wp + kw - 1), dtype=x.dtype)
            xflat[:, :, :Hp * Wp].reshape(N, C, Hp, Wp)[:, :, ph:ph + H, pw:pw + W] = x
            self.xflat, self.Wp = xflat, Wp
            self.offsets = [a * Wp + b for a in range(kh) for b in range(kw)]
            w_taps = weight.transpose(2, 3, 0, 1).reshape(kh * kw, O, C)
            y = tap_matmul(w_taps, xflat, self.offsets, OH * Wp)
            y = y.reshape(N, O, OH, Wp)[:, :, :, :OW]
        else:
            self.path = "im2col"
            xpad = _pad(x, ph, pw)
            cols = xp.empty((N, C, kh, kw, OH, OW), dtype=x.dtype)
            for a in range(kh):
                for b in range(kw):
                    cols[:, :, a, b] = xpad[:, :, a:a + sh * OH:sh, b:b + sw * OW:sw]
            self.cols = cols.reshape(N, C * kh * kw, OH * OW)
            y = xp.matmul(weight.reshape(O, -1), self.cols)

        y = y.reshape(N, O, OH, OW)
        if bias is not None:
            y = y + bias.reshape(1, O, 1, 1)
        return xp.ascontiguousarray(y)

    def backward(self, g):
        xp = backend.get_array_module(g)
        N, C, H, W = self.x_shape
        O, _, kh, kw = self.weight.shape
        (sh, sw), (ph, pw) = self.stride, self.padding
        OH, OW = g.shape[2:]
        need_x, need_w = self.needs_grad[0], self.needs_grad[1]
        gx = gw = None
        gb = g.sum(axis=(0, 2, 3)) if self.has_bias and self.needs_grad[2] else None

        if self.path == "1x1":
            g_flat = g.reshape(N, O, H * W)
            if need_w:   # dW = sum_n g[n] @ x[n]^T
                gw = xp.matmul(g_flat, self.x.reshape(N, C, H * W).transpose(0, 2, 1)).sum(axis=0)
                gw = gw.reshape(self.weight.shape)
            if need_x:   # dx[n] = W^T @ g[n]
                gx = xp.matmul(self.weight.reshape(O, C).T, g_flat).reshape(N, C, H, W)

        elif self.path == "taps":
            Wp, L = self.Wp, OH * self.Wp
            Hp = H + 2 * ph
            g_rows = xp.zeros((N, O, OH, Wp), dtype=g.dtype)   # zeros in the thrown-away columns
            g_rows[:, :, :, :OW] = g
            g_rows = g_rows.reshape(N, O, L)
            if need_w:   # dW[:, :, a, b] = sum_n g[n] @ (input rows shifted by tap (a, b))^T
                gw = xp.empty((kh * kw, O, C), dtype=g.dtype)
                for t, off in enumerate(self.offsets):
                    shifted = self.xflat[:, :, off:off + L]
                    gw[t] = xp.matmul(g_rows, shifted.transpose(0, 2, 1)).sum(axis=0)
                gw = gw.reshape(kh, kw, O, C).transpose(2, 3, 0, 1)
            if need_x:   # transposed conv: dxpad[q] = sum_t W_t^T g[q - off_t]
                front = self.offsets[-1]
                g_ext = xp.zeros((N, O, front + Hp * Wp), dtype=g.dtype)
                g_ext[:, :, front:front + L] = g_rows
                w_taps_t = self.weight.transpose(2, 3, 1, 0).reshape(kh * kw, C, O)
                back_offsets = [front - off for off in self.offsets]
                gxpad = tap_matmul(w_taps_t, g_ext, back_offsets, Hp * Wp)
                gx = gxpad.reshape(N, C, Hp, Wp)[:, :, ph:ph + H, pw:pw + W]

        else:  # im2col
            g_flat = g.reshape(N, O, OH * OW)
            if need_w:
                gw = xp.matmul(g_flat, self.cols.transpose(0, 2, 1)).sum(axis=0).reshape(self.weight.shape)
            if need_x:   # col2im: every tap adds its patch gradient back (a loop over taps only)
                dcols = xp.matmul(self.weight.reshape(O, -1).T, g_flat).reshape(N, C, kh, kw, OH, OW)
                gxpad = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=g.dtype)
                for a in range(kh):
                    for b in range(kw):
                        gxpad[:, :, a:a + sh * OH:sh, b:b + sw * OW:sw] += dcols[:, :, a, b]
                gx = gxpad[:, :, ph:ph + H, pw:pw + W]
        if gx is not None:
            gx = xp.ascontiguousarray(gx)
        return gx, gw, gb


def _pad(x, ph, pw):
    if ph == 0 and pw == 0:
        return x
    xp = backend.get_array_module(x)
    return xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def _check_conv_inputs(x, weight, bias):
    if x.ndim != 4:
        raise ValueError(f"conv2d expects input of shape (N, C, H, W), got {x.ndim}-D shape {tuple(x.shape)}")
    if weight.ndim != 4:
        raise ValueError(f"conv2d expects weight of shape (C_out, C_in, kH, kW), got shape {tuple(weight.shape)}")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"conv2d: input has {x.shape[1]} channels (shape {tuple(x.shape)}) but weight "
                         f"expects {weight.shape[1]} (shape {tuple(weight.shape)})")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"conv2d: bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    if x.dtype != weight.dtype:
        raise TypeError(f"conv2d: input dtype {x.dtype} differs from weight dtype {weight.dtype}")


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """2-D convolution. x (N, C, H, W), weight (O, C, kH, kW), bias (O,) or None;
    stride and padding an int or an (h, w) pair; returns (N, O, OH, OW)."""
    args = (x, weight) if bias is None else (x, weight, bias)
    return Conv2d.apply(*args, stride=stride, padding=padding)
