"""2-D convolution (cross-correlation, as in every deep-learning framework).

    x (N, C, H, W) * weight (O, C, kH, kW) [+ bias (O,)] -> y (N, O, OH, OW)
    OH = (H + 2*pH - kH) // sH + 1          (the lecture's (W - K + 2P) / S + 1)
    y[n, o, i, j] = sum_{c, a, b} weight[o, c, a, b] * xpad[n, c, i*sH + a, j*sW + b] + bias[o]

Backward (g = dL/dy):
    dbias[o]   = sum_{n,i,j} g[n, o, i, j]
    dweight    = sum over pixels of g x (input patch)^T       (a matrix product)
    dx         = "col2im" of weight^T @ g: every patch scatters back to where it came from;
                 for stride 1 this is a convolution of g with the flipped kernel.

All three are matrix products; three ways to lay the data out for them:

1. 1x1, stride 1, no padding (the bottleneck and transition convs of
   DenseNet-BC): a pixel is already a column, so y[n] = W @ x[n] with
   x[n] viewed as (C, H*W). No copy of the input at all.
2. stride 1, any kernel and padding (the 3x3 convs): lay every channel's
   zero-padded images end to end in one long row, so x becomes a
   (C, N*Hf*Wf) matrix. Tap (a, b) of the output at position q then reads
   input position q + a*Wf + b: the patch matrix is kH*kW shifted slices of
   the same matrix, and each product is ONE big matrix multiply over the
   whole batch. Neighbours share their zero padding (the bottom padding of
   one image is the top padding of the next, the right padding of one row
   the left padding of the next row), so each image sits in an
   Hf x Wf = (H + pH) x (W + pW) frame. Outputs at the frame's padding
   positions are computed and thrown away: 6% extra work for 3x3 on
   32x32, 27% on 8x8. See ``_frame``, ``_stack_shifts`` and ``_sum_shifts``.
3. stride > 1 (ImageNet stem, ResNet down-sampling): classic im2col, one
   strided copy per tap into a (C*kH*kW, OH*OW) column matrix per image.
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


def _frame(H, W, ph, pw, OH, OW):
    """Height and width of the frame each image gets in the row layout: the
    image plus its padding on one side (the other side's padding is the next
    frame's), and at least the output size, so output frames do not overlap."""
    return max(H + ph, OH), max(W + pw, OW)


def _image_rows(a, top, left, Hf, Wf, front=0, tail=0):
    """(N, K, h, w) -> (K, front + N*Hf*Wf + tail): channel k's images, each
    placed at (top, left) inside an Hf x Wf frame of zeros, laid end to end in
    one row, with ``front`` and ``tail`` extra zeros so shifted slices fit.
    The transpose to channel-major comes free with this (needed) copy."""
    xp = backend.get_array_module(a)
    N, K, h, w = a.shape
    L = N * Hf * Wf
    rows = xp.zeros((K, front + L + tail), dtype=a.dtype)
    frames = rows[:, front:front + L].reshape(K, N, Hf, Wf)
    frames[:, :, top:top + h, left:left + w] = a.transpose(1, 0, 2, 3)
    return rows


def _from_rows(rows, top, left, h, w, N, Hf, Wf):
    """Inverse of ``_image_rows`` (K, N*Hf*Wf) -> (N, K, h, w): cut each image
    out of its frame; a new contiguous array."""
    K = rows.shape[0]
    frames = rows.reshape(K, N, Hf, Wf)[:, :, top:top + h, left:left + w]
    return frames.transpose(1, 0, 2, 3).copy()


def _stack_shifts(rows, offsets, length):
    """(K, M) -> (T*K, length): block t is rows[:, offsets[t] : offsets[t] + length].
    This IS the im2col matrix, built with T contiguous copies."""
    xp = backend.get_array_module(rows)
    K = rows.shape[0]
    out = xp.empty((len(offsets) * K, length), dtype=rows.dtype)
    for t, off in enumerate(offsets):
        out[t * K:(t + 1) * K] = rows[:, off:off + length]
    return out


def _sum_shifts(products, offsets, K, length):
    """(T*K, M) -> (K, length): sum over t of products[t*K:(t+1)*K, offsets[t] : offsets[t] + length],
    each tap's product added in at its shift (a loop over the taps only)."""
    out = products[0:K, offsets[0]:offsets[0] + length].copy()
    for t in range(1, len(offsets)):
        out += products[t * K:(t + 1) * K, offsets[t]:offsets[t] + length]
    return out


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
            # one BLAS call per image, (O, C) @ (C, H*W), straight into NCHW order. (One big
            # (O, C) @ (C, N*H*W) product runs ~10% faster, but x and y would need transposing
            # copies that cost more than that: measured at DenseNet-BC's shapes, 2 threads.)
            y = xp.matmul(weight.reshape(O, C), x.reshape(N, C, H * W)).reshape(N, O, OH, OW)
        elif (sh, sw) == (1, 1):
            self.path = "rows"
            Hf, Wf = self.frame = _frame(H, W, ph, pw, OH, OW)
            L = N * Hf * Wf
            self.offsets = [a * Wf + b for a in range(kh) for b in range(kw)]
            T = len(self.offsets)
            xrows = _image_rows(x, ph, pw, Hf, Wf, tail=self.offsets[-1])     # (C, L + tail)
            # Whichever side has fewer channels gets the T-fold intermediate (T*min(O, C) rows):
            if O <= C:   # every tap's output at once, (T*O, C) @ (C, L + tail), then T shifted adds
                w_taps = weight.transpose(2, 3, 0, 1).reshape(T * O, C)
                y_rows = _sum_shifts(xp.matmul(w_taps, xrows), self.offsets, O, L)
                self.xrows = xrows
            else:        # T shifted copies of x stacked (im2col), then (O, T*C) @ (T*C, L)
                xcols = _stack_shifts(xrows, self.offsets, L)
                y_rows = xp.matmul(weight.transpose(0, 2, 3, 1).reshape(O, T * C), xcols)
                self.xcols = xcols
            y = _from_rows(y_rows, 0, 0, OH, OW, N, Hf, Wf)
        else:
            self.path = "im2col"
            xpad = _pad(x, ph, pw)
            cols = xp.empty((N, C, kh, kw, OH, OW), dtype=x.dtype)
            for a in range(kh):
                for b in range(kw):
                    cols[:, :, a, b] = xpad[:, :, a:a + sh * OH:sh, b:b + sw * OW:sw]
            self.cols = cols.reshape(N, C * kh * kw, OH * OW)
            y = xp.matmul(weight.reshape(O, -1), self.cols).reshape(N, O, OH, OW)

        if bias is not None:
            y += bias.reshape(1, O, 1, 1)      # y is a new array here: add in place
        return y

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

        elif self.path == "rows":
            Hf, Wf = self.frame
            L, T = N * Hf * Wf, len(self.offsets)
            # g in the same row layout, zero at the thrown-away positions, with `front`
            # zeros ahead so that g shifted right by any tap offset is a slice
            front = self.offsets[-1]
            g_rows = _image_rows(g, 0, 0, Hf, Wf, front=front)              # (O, front + L)
            back = [front - off for off in self.offsets]   # slice at back[t] = g shifted by tap t
            # dx is a stride-1 convolution of g with the flipped kernel:
            #   dxrows[c, q] = sum_t sum_o W[o, c, t] g[o, q - offset_t]
            if O <= C:   # stack the T shifted copies of g (T*O rows): serves dx and dW
                gcols = _stack_shifts(g_rows, back, L)                       # (T*O, L)
                if need_w:   # dW[o, c, t] = sum_q g[o, q - offset_t] x[c, q]
                    gw = xp.matmul(gcols, self.xrows[:, :L].T)               # (T*O, C)
                    gw = gw.reshape(kh, kw, O, C).transpose(2, 3, 0, 1)
                if need_x:   # one product per image on strided views of gcols, so the result
                    # comes out image-major (N, C, Hf*Wf) and needs no transposing copy
                    w_taps = self.weight.transpose(2, 3, 0, 1).reshape(T * O, C)
                    per_image = gcols.reshape(T * O, N, Hf * Wf).transpose(1, 0, 2)
                    dxpad = xp.matmul(w_taps.T, per_image).reshape(N, C, Hf, Wf)
                    gx = dxpad[:, :, ph:ph + H, pw:pw + W].copy()
            else:        # every tap's product with g (T*C rows), then T shifted adds
                if need_w:   # dW[o, (t, c)] = sum_p g[o, p] xcols[(t, c), p]
                    gw = xp.matmul(g_rows[:, front:], self.xcols.T)         # (O, T*C)
                    gw = gw.reshape(O, kh, kw, C).transpose(0, 3, 1, 2)
                if need_x:
                    w_taps_t = self.weight.transpose(2, 3, 1, 0).reshape(T * C, O)
                    dxrows = _sum_shifts(xp.matmul(w_taps_t, g_rows), back, C, L)
                    gx = _from_rows(dxrows, ph, pw, H, W, N, Hf, Wf)

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
                gx = xp.ascontiguousarray(gxpad[:, :, ph:ph + H, pw:pw + W])
        if gw is not None:
            gw = xp.ascontiguousarray(gw)
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
