"""2-D convolution (cross-correlation, as in every deep-learning framework).

    x (N, C, H, W) * weight (O, C/G, kH, kW) [+ bias (O,)] -> y (N, O, OH, OW)
    OH = (H + 2*pH - dH*(kH - 1) - 1) // sH + 1     (the lecture's (W - K + 2P) / S + 1 when dH = 1)
    y[n, o, i, j] = sum_{c, a, b} weight[o, c, a, b] * xpad[n, g*C/G + c, i*sH + a*dH, j*sW + b*dW] + bias[o]
                    where g = o // (O/G) is the group output channel o belongs to

Dilation d spreads the taps d pixels apart (a 3x3 kernel with d = 2 covers
5x5). Groups G split the channels into G independent convolutions: group g
maps input channels g*C/G .. (g+1)*C/G - 1 to output channels g*O/G .. ;
G = 1 is the ordinary convolution, G = C ("depthwise") filters every channel
on its own, and ResNeXt's 32 groups of 4 channels sit in between. The
weight has C/G input channels, so grouping divides parameters and
multiply-adds by G. Every matrix below carries a leading group axis, and
the G products are ONE batched ``xp.matmul`` on (G, ...) stacks.

Backward (g = dL/dy):
    dbias[o]   = sum_{n,i,j} g[n, o, i, j]
    dweight    = sum over pixels of g x (input patch)^T       (a matrix product, per group)
    dx         = "col2im" of weight^T @ g: every patch scatters back to where it came from;
                 for stride 1 this is a convolution of g with the flipped kernel.

All three are matrix products; three ways to lay the data out for them:

1. 1x1, stride 1, no padding (the bottleneck and transition convs of
   DenseNet-BC): a pixel is already a column, so y[n] = W @ x[n] with
   x[n] viewed as (C, H*W). No copy of the input at all.
2. stride 1, any kernel, padding and dilation (the 3x3 convs): lay every
   channel's zero-padded images end to end in one long row, so x becomes a
   (C, N*Hf*Wf) matrix. Tap (a, b) of the output at position q then reads
   input position q + a*dH*Wf + b*dW: the patch matrix is kH*kW shifted
   slices of the same matrix, and each product is ONE big matrix multiply
   over the whole batch. Neighbours share their zero padding (the bottom
   padding of one image is the top padding of the next, the right padding
   of one row the left padding of the next row), so each image sits in an
   Hf x Wf = (H + pH) x (W + pW) frame. Outputs at the frame's padding
   positions are computed and thrown away: 6% extra work for 3x3 on
   32x32, 27% on 8x8. See ``_frame``, ``_stack_shifts`` and ``_sum_shifts``.
3. stride > 1 (ImageNet stem, ResNet down-sampling): classic im2col, one
   strided copy per tap into a (C*kH*kW, OH*OW) column matrix per image.
"""
from __future__ import annotations

import math
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


def conv_output_size(size, kernel, stride, padding, dilation=1, ceil_mode=False):
    """Output length along one spatial axis, PyTorch's rule for convolution and pooling:
    (size + 2*padding - dilation*(kernel - 1) - 1) // stride + 1, rounded up with
    ``ceil_mode`` (pooling) except that the last window must start inside the input or
    the left padding. Below 1 where no window fits."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and out > 0 and (out - 1) * stride >= size + padding:
        out -= 1                      # that window would start in the right padding: drop it
    return out


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


def _matmul(a, b):
    """``xp.matmul(a, b)`` over stacks of matrices. An inner dimension of 1 (depthwise
    convolution, one channel per group) makes it an outer product, which NumPy does not
    hand to BLAS: there a broadcast multiply gives the same numbers 2-3x faster."""
    if a.shape[-1] == 1:
        return a * b
    return backend.get_array_module(a, b).matmul(a, b)


def _stack_shifts(rows, offsets, length):
    """(G, K, M) -> (G, T*K, length): block t is rows[:, :, offsets[t] : offsets[t] + length].
    This IS the im2col matrix of every group, built with T contiguous copies."""
    xp = backend.get_array_module(rows)
    G, K = rows.shape[:2]
    out = xp.empty((G, len(offsets) * K, length), dtype=rows.dtype)
    for t, off in enumerate(offsets):
        out[:, t * K:(t + 1) * K] = rows[:, :, off:off + length]
    return out


def _sum_shifts(products, offsets, K, length):
    """(G, T*K, M) -> (G, K, length): sum over t of products[:, t*K:(t+1)*K, offsets[t] : offsets[t] + length],
    each tap's product added in at its shift (a loop over the taps only)."""
    out = products[:, 0:K, offsets[0]:offsets[0] + length].copy()
    for t in range(1, len(offsets)):
        out += products[:, t * K:(t + 1) * K, offsets[t]:offsets[t] + length]
    return out


def _by_tap(weight, G, rows, cols):
    """The weight (O, C/G, kH, kW) as one matrix per group, (G, rows, cols): ``rows`` and
    ``cols`` name the axes "o" (O/G outputs), "c" (C/G inputs) and "t" (the kH*kW taps)
    in memory order, e.g. ("to", "c") -> (G, T*O/G, C/G) with row t*O/G + o."""
    O, Cg, kh, kw = weight.shape
    size = {"o": O // G, "c": Cg, "t": kh * kw}
    w = weight.reshape(G, O // G, Cg, kh * kw).transpose(0, *(1 + "oct".index(a) for a in rows + cols))
    return w.reshape(G, math.prod(size[a] for a in rows), math.prod(size[a] for a in cols))


def _from_tap(w, G, rows, cols, weight_shape):
    """Inverse of ``_by_tap``: a (G, rows, cols) matrix back to (O, C/G, kH, kW)."""
    O, Cg, kh, kw = weight_shape
    size = {"o": O // G, "c": Cg, "t": kh * kw}
    order = rows + cols
    w = w.reshape(G, *(size[a] for a in order)).transpose(0, *(1 + order.index(a) for a in "oct"))
    return w.reshape(weight_shape)


class Conv2d(Function):
    def forward(self, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        (sh, sw), (ph, pw), (dh, dw), (OH, OW) = _geometry(x, weight, bias, stride, padding, dilation, groups)
        N, C, H, W = x.shape
        O, Cg, kh, kw = weight.shape
        G, Og = groups, O // groups
        self.x_shape, self.stride, self.padding, self.dilation = x.shape, (sh, sw), (ph, pw), (dh, dw)
        self.weight, self.has_bias, self.groups = weight, bias is not None, G
        xp = backend.get_array_module(x)

        if kh == kw == 1 and (sh, sw) == (1, 1) and (ph, pw) == (0, 0):
            self.path = "1x1"
            self.x = x
            # one BLAS call per image and group, (O/G, C/G) @ (C/G, H*W), straight into NCHW order.
            # (One big (O, C) @ (C, N*H*W) product runs ~10% faster, but x and y would need
            # transposing copies that cost more than that: measured at DenseNet-BC's shapes, 2 threads.)
            y = _matmul(weight.reshape(G, Og, Cg), x.reshape(N, G, Cg, H * W)).reshape(N, O, OH, OW)
        elif (sh, sw) == (1, 1):
            self.path = "rows"
            Hf, Wf = self.frame = _frame(H, W, ph, pw, OH, OW)
            L = N * Hf * Wf
            self.offsets = [a * dh * Wf + b * dw for a in range(kh) for b in range(kw)]
            xrows = _image_rows(x, ph, pw, Hf, Wf, tail=self.offsets[-1]).reshape(G, Cg, -1)  # (G, C/G, L + tail)
            # Whichever side has fewer channels gets the T-fold intermediate (T*min(O, C)/G rows):
            if Og <= Cg:   # every tap's output at once, (T*O/G, C/G) @ (C/G, L + tail), then T shifted adds
                y_rows = _sum_shifts(_matmul(_by_tap(weight, G, "to", "c"), xrows), self.offsets, Og, L)
                self.xrows = xrows
            else:          # T shifted copies of x stacked (im2col), then (O/G, T*C/G) @ (T*C/G, L)
                xcols = _stack_shifts(xrows, self.offsets, L)
                y_rows = _matmul(_by_tap(weight, G, "o", "tc"), xcols)
                self.xcols = xcols
            y = _from_rows(y_rows.reshape(O, L), 0, 0, OH, OW, N, Hf, Wf)
        else:
            self.path = "im2col"
            xpad = _pad(x, ph, pw)
            cols = xp.empty((N, C, kh, kw, OH, OW), dtype=x.dtype)
            for a in range(kh):
                for b in range(kw):
                    cols[:, :, a, b] = xpad[:, :, a * dh:a * dh + sh * OH:sh, b * dw:b * dw + sw * OW:sw]
            self.cols = cols.reshape(N, G, Cg * kh * kw, OH * OW)
            y = _matmul(weight.reshape(G, Og, -1), self.cols).reshape(N, O, OH, OW)

        if bias is not None:
            y += bias.reshape(1, O, 1, 1)      # y is a new array here: add in place
        return y

    def backward(self, g):
        xp = backend.get_array_module(g)
        N, C, H, W = self.x_shape
        O, Cg, kh, kw = self.weight.shape
        G, Og = self.groups, O // self.groups
        (sh, sw), (ph, pw), (dh, dw) = self.stride, self.padding, self.dilation
        OH, OW = g.shape[2:]
        need_x, need_w = self.needs_grad[0], self.needs_grad[1]
        gx = gw = None
        gb = g.sum(axis=(0, 2, 3)) if self.has_bias and self.needs_grad[2] else None

        if self.path == "1x1":
            g_flat = g.reshape(N, G, Og, H * W)
            if need_w:   # dW = sum_n g[n] @ x[n]^T, per group
                x_flat = self.x.reshape(N, G, Cg, H * W)
                gw = _matmul(g_flat, x_flat.transpose(0, 1, 3, 2)).sum(axis=0).reshape(self.weight.shape)
            if need_x:   # dx[n] = W^T @ g[n], per group
                gx = _matmul(self.weight.reshape(G, Og, Cg).transpose(0, 2, 1), g_flat).reshape(N, C, H, W)

        elif self.path == "rows":
            Hf, Wf = self.frame
            L = N * Hf * Wf
            # g in the same row layout, zero at the thrown-away positions, with `front`
            # zeros ahead so that g shifted right by any tap offset is a slice
            front = self.offsets[-1]
            g_rows = _image_rows(g, 0, 0, Hf, Wf, front=front).reshape(G, Og, -1)   # (G, O/G, front + L)
            back = [front - off for off in self.offsets]   # slice at back[t] = g shifted by tap t
            # dx is a stride-1 convolution of g with the flipped kernel:
            #   dxrows[c, q] = sum_t sum_o W[o, c, t] g[o, q - offset_t]
            if Og <= Cg:   # stack the T shifted copies of g (T*O/G rows): serves dx and dW
                gcols = _stack_shifts(g_rows, back, L)                                  # (G, T*O/G, L)
                if need_w:   # dW[o, c, t] = sum_q g[o, q - offset_t] x[c, q]
                    gw = _matmul(gcols, self.xrows[:, :, :L].transpose(0, 2, 1))      # (G, T*O/G, C/G)
                    gw = _from_tap(gw, G, "to", "c", self.weight.shape)
                if need_x:   # one product per image on strided views of gcols, so the result
                    # comes out image-major (N, C, Hf*Wf) and needs no transposing copy
                    w_taps = _by_tap(self.weight, G, "to", "c").transpose(0, 2, 1)          # (G, C/G, T*O/G)
                    per_image = gcols.reshape(G, -1, N, Hf * Wf).transpose(2, 0, 1, 3)  # (N, G, T*O/G, Hf*Wf)
                    dxpad = _matmul(w_taps, per_image).reshape(N, C, Hf, Wf)
                    gx = dxpad[:, :, ph:ph + H, pw:pw + W].copy()
            else:          # every tap's product with g (T*C/G rows), then T shifted adds
                if need_w:   # dW[o, (t, c)] = sum_p g[o, p] xcols[(t, c), p]
                    gw = _matmul(g_rows[:, :, front:], self.xcols.transpose(0, 2, 1))  # (G, O/G, T*C/G)
                    gw = _from_tap(gw, G, "o", "tc", self.weight.shape)
                if need_x:
                    products = _matmul(_by_tap(self.weight, G, "tc", "o"), g_rows)        # (G, T*C/G, front + L)
                    dxrows = _sum_shifts(products, back, Cg, L).reshape(C, L)
                    gx = _from_rows(dxrows, ph, pw, H, W, N, Hf, Wf)

        else:  # im2col
            g_flat = g.reshape(N, G, Og, OH * OW)
            if need_w:
                gw = _matmul(g_flat, self.cols.transpose(0, 1, 3, 2)).sum(axis=0).reshape(self.weight.shape)
            if need_x:   # col2im: every tap adds its patch gradient back (a loop over taps only)
                w_t = self.weight.reshape(G, Og, -1).transpose(0, 2, 1)                 # (G, C/G*T, O/G)
                dcols = _matmul(w_t, g_flat).reshape(N, C, kh, kw, OH, OW)
                gxpad = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=g.dtype)
                for a in range(kh):
                    for b in range(kw):
                        gxpad[:, :, a * dh:a * dh + sh * OH:sh, b * dw:b * dw + sw * OW:sw] += dcols[:, :, a, b]
                gx = xp.ascontiguousarray(gxpad[:, :, ph:ph + H, pw:pw + W])
        if gw is not None:
            gw = xp.ascontiguousarray(gw)
        return gx, gw, gb


def _pad(x, ph, pw):
    if ph == 0 and pw == 0:
        return x
    xp = backend.get_array_module(x)
    return xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def _check_conv_inputs(x, weight, bias, groups=1):
    if x.ndim != 4:
        raise ValueError(f"conv2d expects input of shape (N, C, H, W), got {x.ndim}-D shape {tuple(x.shape)}")
    if weight.ndim != 4:
        raise ValueError(f"conv2d expects weight of shape (C_out, C_in/groups, kH, kW), got shape "
                         f"{tuple(weight.shape)}")
    if not isinstance(groups, numbers.Integral) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"conv2d: groups must be a positive integer, got {groups!r}")
    C, O = x.shape[1], weight.shape[0]
    if C % groups or O % groups:
        raise ValueError(f"conv2d: groups={groups} must divide both the input channels ({C}, input shape "
                         f"{tuple(x.shape)}) and the output channels ({O}, weight shape {tuple(weight.shape)})")
    if C != weight.shape[1] * groups:
        wants = f"{weight.shape[1]}" if groups == 1 else f"{weight.shape[1]} x groups={groups} = {weight.shape[1] * groups}"
        raise ValueError(f"conv2d: input has {C} channels (shape {tuple(x.shape)}) but weight "
                         f"expects {wants} (shape {tuple(weight.shape)})"
                         + ("" if groups == 1 else f"; its second axis must be C_in / groups = {C // groups}"))
    if bias is not None and tuple(bias.shape) != (O,):
        raise ValueError(f"conv2d: bias must have shape ({O},), got {tuple(bias.shape)}")
    if x.dtype != weight.dtype:
        raise TypeError(f"conv2d: input dtype {x.dtype} differs from weight dtype {weight.dtype}")


def _geometry(x, weight, bias, stride, padding, dilation, groups):
    """Check a convolution's arguments (ValueError/TypeError naming them); returns
    (stride, padding, dilation, output size), each an (h, w) pair of ints."""
    _check_conv_inputs(x, weight, bias, groups)
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    if sh < 1 or sw < 1 or ph < 0 or pw < 0 or dh < 1 or dw < 1:
        raise ValueError(f"conv2d needs stride >= 1, padding >= 0 and dilation >= 1, got stride={stride}, "
                         f"padding={padding}, dilation={dilation}")
    H, W = x.shape[2:]
    kh, kw = weight.shape[2:]
    OH, OW = conv_output_size(H, kh, sh, ph, dh), conv_output_size(W, kw, sw, pw, dw)
    if OH < 1 or OW < 1:
        spread = f" (dilation {dh},{dw} spreads it to {dh * (kh - 1) + 1}x{dw * (kw - 1) + 1})" if (dh, dw) != (1, 1) else ""
        raise ValueError(f"conv2d kernel {kh}x{kw}{spread} is larger than the padded input "
                         f"{H + 2 * ph}x{W + 2 * pw} (input {H}x{W}, padding {ph},{pw})")
    return (sh, sw), (ph, pw), (dh, dw), (OH, OW)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution. x (N, C, H, W), weight (O, C/groups, kH, kW), bias (O,) or None;
    stride, padding and dilation an int or an (h, w) pair; ``groups`` splits the channels
    into that many independent convolutions (``groups=C``: depthwise). Returns (N, O, OH, OW)."""
    _geometry(x, weight, bias, stride, padding, dilation, groups)    # checked here, before any op runs
    args = (x, weight) if bias is None else (x, weight, bias)
    return Conv2d.apply(*args, stride=stride, padding=padding, dilation=dilation, groups=groups)
