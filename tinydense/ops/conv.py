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

All three are matrix products. ``Conv2d`` below computes them in the textbook
way, im2col, for any settings: copy every kH x kW patch of the padded input
into a column (a (C*kH*kW, N*OH*OW) matrix for the whole batch, one strided copy
per tap), multiply by the weight as a (O, C*kH*kW) matrix; backward multiplies
back and "col2im" adds every patch's gradient to where it came from. Two faster layouts give the
same numbers for the common cases; ``Conv2d`` picks them, and they follow it in
this file as methods named after them (a third lives in its own file):

1. ``_forward_1x1``: 1x1, stride 1, no padding (the bottleneck and transition
   convs of DenseNet-BC): a pixel is already a column, so y[n] = W @ x[n] with
   x[n] viewed as (C, H*W). No copy of the input at all. For small images (fewer
   than PER_IMAGE_COLUMNS pixels) those products are thin, and ONE product
   W @ x over the (C, N*H*W) channel-major copy of the batch runs faster.
2. ``_forward_rows``: stride 1, any kernel, padding and dilation (the 3x3
   convs): lay every channel's zero-padded images end to end in one long row,
   so x becomes a (C, N*Hf*Wf) matrix. Tap (a, b) of the output at position q
   then reads input position q + a*dH*Wf + b*dW: the patch matrix is kH*kW
   shifted slices of the same matrix, and each product is ONE big matrix
   multiply over the whole batch. Neighbours share their zero padding (the
   bottom padding of one image is the top padding of the next, the right
   padding of one row the left padding of the next row), so each image sits in
   an Hf x Wf = (H + pH) x (W + pW) frame. Outputs at the frame's padding
   positions are computed and thrown away: 6% extra work for 3x3 on 32x32, 27%
   on 8x8. See ``_frame``, ``_stack_shifts`` and ``_sum_shifts``. The taps'
   product is made a chunk of columns at a time on the fused ops' threads
   (``_taps_then_shifts``), and outside the fused ops the input itself is kept
   for backward, not its padded copy.

3. ``ops/winograd.py`` (its own file, a seam with its own math): 3x3, stride 1,
   padding 1, one group, 128 channels or more: Winograd's F(2x2, 3x3), 2.25x fewer
   multiplications for the same numbers (``winograd.ENABLED = False`` turns it off).

All big temporaries come from tinydense's pool (tinydense/memory.py). About 480
lines, and one file, because the textbook form and the two layouts it explains do
one job together: a student compares them side by side, and they share the weight's
views and the checks; the Winograd seam, with math of its own, has its own file.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import backend, memory
from ..autograd import Function
from . import parallel, winograd
from .geometry import window_geometry


def _matmul(a, b):
    """``xp.matmul(a, b)`` over stacks of matrices. An inner dimension of 1 (depthwise
    convolution, one channel per group) makes it an outer product, which NumPy does not
    hand to BLAS: there a broadcast multiply gives the same numbers 2-3x faster."""
    if a.shape[-1] == 1:
        return a * b
    return backend.get_array_module(a, b).matmul(a, b)


def _transposed(w):
    """A stack of weight matrices (G, a, b) transposed to (G, b, a), copied: small, and OpenBLAS
    multiplies a contiguous matrix up to 2x faster than the transposed view of one (measured at
    ResNeXt's grouped shapes, 2026-12-08)."""
    return backend.get_array_module(w).ascontiguousarray(w.transpose(0, 2, 1))


def _pad(x, ph, pw):
    if ph == 0 and pw == 0:
        return x
    xp = backend.get_array_module(x)
    return xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def _layout(kernel, stride, padding):
    """Which computation ``Conv2d`` runs (module docstring): "1x1", "rows" (stride 1) or
    "im2col" (the textbook form, for every other convolution)."""
    if kernel == (1, 1) and stride == (1, 1) and padding == (0, 0):
        return "1x1"
    return "rows" if stride == (1, 1) else "im2col"


class Conv2d(Function):
    """The convolution: forward and backward in the textbook im2col form; for 1x1 and
    stride-1 convolutions the faster layouts below (``_forward_1x1``, ``_forward_rows``
    and their backward), which give the same numbers."""

    def forward(self, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        (sh, sw), (ph, pw), (dh, dw), (OH, OW) = _geometry(x, weight, bias, stride, padding, dilation, groups)
        N, C, H, W = x.shape
        O, Cg, kh, kw = weight.shape
        G, Og = groups, O // groups
        self.x_shape, self.stride, self.padding, self.dilation = x.shape, (sh, sw), (ph, pw), (dh, dw)
        self.weight, self.has_bias, self.groups = weight, bias is not None, G
        xp = backend.get_array_module(x)
        self.path = _layout((kh, kw), (sh, sw), (ph, pw))
        if winograd.applies(x.shape, weight.shape, (sh, sw), (ph, pw), (dh, dw), G, xp):
            self.path = "winograd"      # 3x3, stride 1, many channels: ops/winograd.py, the same numbers

        if self.path == "im2col":
            # cols[c, a, b, n, i, j] = xpad[n, c, i*sH + a*dH, j*sW + b*dW]: one strided copy per tap,
            # the (C*kH*kW, N*OH*OW) matrix of the whole batch (as CS231n's im2col)
            xpad = _pad(x, ph, pw).transpose(1, 0, 2, 3)                       # (C, N, H + 2pH, W + 2pW) view
            cols = _pooled((C, kh, kw, N, OH, OW), x.dtype, x, keep=True)
            for a in range(kh):
                for b in range(kw):
                    cols[:, a, b] = xpad[:, :, a * dh:a * dh + sh * OH:sh, b * dw:b * dw + sw * OW:sw]
            self.cols = cols.reshape(G, Cg * kh * kw, N * OH * OW)
            # ONE product per group over all images: (O/G, C/G*kH*kW) @ (C/G*kH*kW, N*OH*OW)
            y = _from_channel_major(_matmul(weight.reshape(G, Og, -1), self.cols), N, OH, OW)
        elif self.path == "winograd":
            self.x = x
            y = winograd.forward(x, weight)
        elif self.path == "1x1":
            y = self._forward_1x1(x, weight)
        else:
            y = self._forward_rows(x, weight, OH, OW)

        if bias is not None:
            y += bias.reshape(1, O, 1, 1)      # y is a new array here: add in place
        return y

    def backward(self, g):
        xp = backend.get_array_module(g)
        need_x, need_w = self.needs_grad[0], self.needs_grad[1]
        gb = g.sum(axis=(0, 2, 3)) if self.has_bias and self.needs_grad[2] else None

        if self.path == "im2col":
            N, C, H, W = self.x_shape
            O, Cg, kh, kw = self.weight.shape
            G, Og = self.groups, O // self.groups
            (sh, sw), (ph, pw), (dh, dw) = self.stride, self.padding, self.dilation
            OH, OW = g.shape[2:]
            g_cm = _channel_major(g, G)                                             # (G, O/G, N*OH*OW)
            gx = gw = None
            if need_w:   # dW = g @ cols^T, per group: one product over every image's columns
                gw = _matmul(g_cm, self.cols.transpose(0, 2, 1)).reshape(self.weight.shape)
            if need_x:   # col2im: every tap adds its patch gradient back (a loop over taps only)
                w_t = _transposed(self.weight.reshape(G, Og, -1))                        # (G, C/G*T, O/G)
                dcols = _matmul(w_t, g_cm).reshape(C, kh, kw, N, OH, OW)
                gxpad = _pooled((C, N, H + 2 * ph, W + 2 * pw), g.dtype, g)
                gxpad.fill(0)
                for a in range(kh):
                    for b in range(kw):
                        gxpad[:, :, a * dh:a * dh + sh * OH:sh, b * dw:b * dw + sw * OW:sw] += dcols[:, a, b]
                gx = gxpad[:, :, ph:ph + H, pw:pw + W].transpose(1, 0, 2, 3).copy()
        elif self.path == "winograd":
            gx, gw = winograd.backward(self.x, self.weight, g, need_x, need_w)
        elif self.path == "1x1":
            gx, gw = self._backward_1x1(g, need_x, need_w)
        else:
            gx, gw = self._backward_rows(g, need_x, need_w)

        if gw is not None:
            gw = xp.ascontiguousarray(gw)
        return gx, gw, gb

    # --- layout 1: 1x1, stride 1, no padding --------------------------------------------
    def _forward_1x1(self, x, weight):
        N, C, H, W = x.shape
        O, Cg = weight.shape[:2]
        G, Og = self.groups, O // self.groups
        self.x = x
        if H * W < PER_IMAGE_COLUMNS:   # small images: ONE (O/G, C/G) @ (C/G, N*H*W) product per group
            return _from_channel_major(_matmul(weight.reshape(G, Og, Cg), _channel_major(x, G)), N, H, W)
        # one BLAS call per image and group, (O/G, C/G) @ (C/G, H*W), straight into NCHW order.
        # (One big (O, C) @ (C, N*H*W) product runs ~10% faster, but x and y would need
        # transposing copies that cost more than that: measured at DenseNet-BC's shapes, 2 threads.)
        return _matmul(weight.reshape(G, Og, Cg), x.reshape(N, G, Cg, H * W)).reshape(N, O, H, W)

    def _backward_1x1(self, g, need_x, need_w):
        N, C, H, W = self.x_shape
        O, Cg = self.weight.shape[:2]
        G, Og = self.groups, O // self.groups
        w_t = _transposed(self.weight.reshape(G, Og, Cg))                    # (G, C/G, O/G)
        gx = gw = None
        if H * W < PER_IMAGE_COLUMNS:   # the same two products over channel-major copies of g and x
            g_cm = _channel_major(g, G)                                      # (G, O/G, N*H*W)
            if need_w:
                gw = _matmul(g_cm, _channel_major(self.x, G).transpose(0, 2, 1)).reshape(self.weight.shape)
            if need_x:
                gx = _from_channel_major(_matmul(w_t, g_cm), N, H, W)
            return gx, gw
        g_flat = g.reshape(N, G, Og, H * W)
        if need_w:   # dW = sum_n g[n] @ x[n]^T, per group
            x_flat = self.x.reshape(N, G, Cg, H * W)
            gw = _matmul(g_flat, x_flat.transpose(0, 1, 3, 2)).sum(axis=0).reshape(self.weight.shape)
        if need_x:   # dx[n] = W^T @ g[n], per group
            gx = _matmul(w_t, g_flat).reshape(N, C, H, W)
        return gx, gw

    # --- layout 2: stride 1, images end to end in rows ----------------------------------
    def _forward_rows(self, x, weight, OH, OW):
        N, C, H, W = x.shape
        O, Cg, kh, kw = weight.shape
        G, Og = self.groups, O // self.groups
        (ph, pw), (dh, dw) = self.padding, self.dilation
        Hf, Wf = self.frame = _frame(H, W, ph, pw, OH, OW)
        L = N * Hf * Wf
        self.offsets = [a * dh * Wf + b * dw for a in range(kh) for b in range(kw)]
        # Whichever side has fewer channels gets the T-fold intermediate (T*min(O, C)/G rows):
        keep_rows = Og <= Cg        # then backward needs xrows (else the shifted copies xcols)
        # Outside the fused ops, x itself is kept and xrows made again in backward (one copy,
        # and one activation fewer kept for backward); the fused ops reuse their buffers, so
        # there the op keeps its own copy.
        rebuild = keep_rows and not parallel.inside()
        xrows = _image_rows(x, ph, pw, Hf, Wf, tail=self.offsets[-1],
                            keep=keep_rows and not rebuild).reshape(G, Cg, -1)
        if keep_rows and Cg >= TAPS_MIN_CHANNELS:   # every tap's output at once, (T*O/G, C/G) @ (C/G, L + tail),
            y_rows = _taps_then_shifts(_taps_outputs_by_inputs(weight, G), xrows, self.offsets, Og, L)  # T shifted adds
            self.xrows, self.x = (None, x) if rebuild else (xrows, None)
        elif keep_rows:  # few channels per group (ResNeXt's 4 to 16): a product over C/G terms is too thin;
            # the T shifted copies of x as scratch, (O/G, T*C/G) @ (T*C/G, L)
            y_rows = _matmul(_outputs_by_taps_inputs(weight, G), _stack_shifts(xrows, self.offsets, L))
            self.xrows, self.x = (None, x) if rebuild else (xrows, None)
        else:          # T shifted copies of x stacked (im2col), then (O/G, T*C/G) @ (T*C/G, L)
            xcols = _stack_shifts(xrows, self.offsets, L, keep=True)
            y_rows = _matmul(_outputs_by_taps_inputs(weight, G), xcols)
            self.xcols = xcols
        return _from_rows(y_rows.reshape(O, L), 0, 0, OH, OW, N, Hf, Wf)

    def _backward_rows(self, g, need_x, need_w):
        N, C, H, W = self.x_shape
        O, Cg = self.weight.shape[:2]
        G, Og = self.groups, O // self.groups
        ph, pw = self.padding
        Hf, Wf = self.frame
        L = N * Hf * Wf
        gx = gw = None
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
                xrows = self.xrows if self.xrows is not None else _image_rows(self.x, ph, pw, Hf, Wf)
                gw = _matmul(gcols, xrows.reshape(G, Cg, -1)[:, :, :L].transpose(0, 2, 1))   # (G, T*O/G, C/G)
                gw = _weight_from_taps_outputs(gw, self.weight.shape)
            if need_x:
                w_taps = _transposed(_taps_outputs_by_inputs(self.weight, G))         # (G, C/G, T*O/G)
                if Hf * Wf >= PER_IMAGE_COLUMNS:   # one product per image on strided views of gcols:
                    # the result comes out image-major (N, C, Hf*Wf), no transposing copy needed
                    per_image = gcols.reshape(G, -1, N, Hf * Wf).transpose(2, 0, 1, 3)  # (N, G, T*O/G, Hf*Wf)
                    dxpad = _matmul(w_taps, per_image).reshape(N, C, Hf, Wf)
                    gx = dxpad[:, :, ph:ph + H, pw:pw + W].copy()
                else:      # small images: one (C/G, T*O/G) @ (T*O/G, L) product, then the transposing copy
                    gx = _from_rows(_matmul(w_taps, gcols).reshape(C, L), ph, pw, H, W, N, Hf, Wf)
        else:          # every tap's product with g (T*C/G rows), then T shifted adds
            if need_w:   # dW[o, (t, c)] = sum_p g[o, p] xcols[(t, c), p]
                gw = _matmul(g_rows[:, :, front:], self.xcols.transpose(0, 2, 1))  # (G, O/G, T*C/G)
                gw = _weight_from_outputs_by_taps(gw, self.weight.shape)
            if need_x:
                products = _matmul(_taps_inputs_by_outputs(self.weight, G), g_rows)   # (G, T*C/G, front + L)
                dxrows = _sum_shifts(products, back, Cg, L).reshape(C, L)
                gx = _from_rows(dxrows, ph, pw, H, W, N, Hf, Wf)
        return gx, gw


# --- the row layout's helpers --------------------------------------------------------------
# Per-image products from images of this many pixels (frame positions) on (32x32 images:
# 1024, 33*33 framed); below it they are too thin, and one product over the whole batch plus
# transposing copies is faster (ResNets' 16x16, 8x8 and 4x4 stages): the 1x1 layout's
# products and the row layout's dx.
PER_IMAGE_COLUMNS = 1024
# The row layout's taps product has C/G terms per output: from this many on (below it, the
# shifted copies of x are stacked instead, T*C/G terms; ResNeXt's grouped convs, 2026-12-08).
TAPS_MIN_CHANNELS = 16


def _pooled(shape, dtype, like, keep=False):
    """An uninitialised array from the pool (tinydense/memory.py): ``keep`` (for backward,
    ``memory.empty``) or scratch; a new one in the fused ops' worker threads (ops/parallel.py)."""
    if parallel.in_worker():
        return backend.get_array_module(like).empty(shape, dtype)
    return (memory.empty if keep else memory.scratch)(shape, dtype, like=like)


def _channel_major(a, G):
    """(N, C, H, W) -> (G, C/G, N*H*W): a transposing copy (pooled scratch)."""
    N, C, H, W = a.shape
    out = _pooled((G, C // G, N, H * W), a.dtype, a)
    out[...] = a.reshape(N, G, C // G, H * W).transpose(1, 2, 0, 3)
    return out.reshape(G, C // G, N * H * W)


def _from_channel_major(a, N, H, W):
    """(G, K, N*H*W) -> (N, G*K, H, W): the transposing copy back (a new array)."""
    G, K = a.shape[:2]
    return a.reshape(G * K, N, H, W).transpose(1, 0, 2, 3).copy()


# The taps' product of the row layout, (T*O/G, C/G) @ (C/G, L + tail), is T times the output's size:
# it is made ROWS_CHUNK columns at a time, so that each piece is summed while it is in the
# cache, the pieces shared among the fused ops' threads (ops/parallel.py).
ROWS_CHUNK = 1024
# ... when the product is big enough: T*O/G * C/G at least this (a 3x3 conv of 64 channels);
# thinner ones (the pre-activation ResNet's 16 and 32 channels) ran slower split (2026-12-07).
THREADED_TAPS = 9 * 64 * 64


def _taps_then_shifts(w_taps, xrows, offsets, K, length):
    """(G, T*K, C) @ (G, C, length + tail) summed at the taps' shifts: ``_sum_shifts`` of the whole
    product, ROWS_CHUNK output columns at a time. Returns (G, K, length)."""
    xp = backend.get_array_module(xrows)
    if xp is not np or parallel.inside() or w_taps.shape[1] * w_taps.shape[2] < THREADED_TAPS:
        return _sum_shifts(_matmul(w_taps, xrows), offsets, K, length)
    out = _pooled((xrows.shape[0], K, length), xrows.dtype, xrows)
    tail = offsets[-1]

    def part(i, lo, hi):
        for a in range(lo, hi, ROWS_CHUNK):
            b = min(a + ROWS_CHUNK, hi)
            out[:, :, a:b] = _sum_shifts(_matmul(w_taps, xrows[:, :, a:b + tail]), offsets, K, b - a)

    with parallel.own_threads(xrows):
        parallel.parallel(part, parallel.split(length))
    return out


def _copy_into(out, a):
    out[...] = a
    return out


def _frame(H, W, ph, pw, OH, OW):
    """Height and width of the frame each image gets in the row layout: the
    image plus its padding on one side (the other side's padding is the next
    frame's), and at least the output size, so output frames do not overlap."""
    return max(H + ph, OH), max(W + pw, OW)


def _image_rows(a, top, left, Hf, Wf, front=0, tail=0, keep=False):
    """(N, K, h, w) -> (K, front + N*Hf*Wf + tail): channel k's images, each
    placed at (top, left) inside an Hf x Wf frame of zeros, laid end to end in
    one row, with ``front`` and ``tail`` extra zeros so shifted slices fit.
    The transpose to channel-major comes free with this (needed) copy. The array
    comes from the pool (tinydense/memory.py): ``keep`` it for backward, or scratch."""
    N, K, h, w = a.shape
    L = N * Hf * Wf
    rows = _pooled((K, front + L + tail), a.dtype, a, keep)
    rows.fill(0)
    frames = rows[:, front:front + L].reshape(K, N, Hf, Wf)
    frames[:, :, top:top + h, left:left + w] = a.transpose(1, 0, 2, 3)
    return rows


def _from_rows(rows, top, left, h, w, N, Hf, Wf):
    """Inverse of ``_image_rows`` (K, N*Hf*Wf) -> (N, K, h, w): cut each image
    out of its frame; a new contiguous array."""
    K = rows.shape[0]
    frames = rows.reshape(K, N, Hf, Wf)[:, :, top:top + h, left:left + w]
    return frames.transpose(1, 0, 2, 3).copy()


def _stack_shifts(rows, offsets, length, keep=False):
    """(G, K, M) -> (G, T*K, length): block t is rows[:, :, offsets[t] : offsets[t] + length].
    This IS the im2col matrix of every group, built with T contiguous copies (into an array
    from the pool: ``keep`` it for backward, or scratch)."""
    G, K = rows.shape[:2]
    out = _pooled((G, len(offsets) * K, length), rows.dtype, rows, keep)
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


# The weight (O, C/G, kH, kW) as one matrix per group, its T = kH*kW taps t = a*kW + b
# stacked with the outputs o (O/G) or the inputs c (C/G); and back.
def _per_group(weight, G):
    """(O, C/G, kH, kW) -> (G, O/G, C/G, T)."""
    O, Cg, kh, kw = weight.shape
    return weight.reshape(G, O // G, Cg, kh * kw)


def _taps_outputs_by_inputs(weight, G):
    """(G, T*O/G, C/G): row t*O/G + o, column c."""
    w = _per_group(weight, G)
    return w.transpose(0, 3, 1, 2).reshape(G, -1, w.shape[2])


def _outputs_by_taps_inputs(weight, G):
    """(G, O/G, T*C/G): row o, column t*C/G + c."""
    w = _per_group(weight, G)
    return w.transpose(0, 1, 3, 2).reshape(G, w.shape[1], -1)


def _taps_inputs_by_outputs(weight, G):
    """(G, T*C/G, O/G): row t*C/G + c, column o."""
    w = _per_group(weight, G)
    return w.transpose(0, 3, 2, 1).reshape(G, -1, w.shape[1])


def _weight_from_taps_outputs(w, weight_shape):
    """Inverse of ``_taps_outputs_by_inputs``: (G, T*O/G, C/G) -> (O, C/G, kH, kW)."""
    O, Cg, kh, kw = weight_shape
    G = w.shape[0]
    return w.reshape(G, kh * kw, O // G, Cg).transpose(0, 2, 3, 1).reshape(weight_shape)


def _weight_from_outputs_by_taps(w, weight_shape):
    """Inverse of ``_outputs_by_taps_inputs``: (G, O/G, T*C/G) -> (O, C/G, kH, kW)."""
    O, Cg, kh, kw = weight_shape
    G = w.shape[0]
    return w.reshape(G, O // G, kh * kw, Cg).transpose(0, 1, 3, 2).reshape(weight_shape)


# --- checks ------------------------------------------------------------------------------------
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
    _, stride, padding, dilation, out = window_geometry("conv2d", x.shape, tuple(weight.shape[2:]), stride, padding,
                                                       dilation)
    return stride, padding, dilation, out


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution. x (N, C, H, W), weight (O, C/groups, kH, kW), bias (O,) or None;
    stride, padding and dilation an int or an (h, w) pair; ``groups`` splits the channels
    into that many independent convolutions (``groups=C``: depthwise). Returns (N, O, OH, OW)."""
    _geometry(x, weight, bias, stride, padding, dilation, groups)    # checked here, before any op runs
    args = (x, weight) if bias is None else (x, weight, bias)
    return Conv2d.apply(*args, stride=stride, padding=padding, dilation=dilation, groups=groups)
