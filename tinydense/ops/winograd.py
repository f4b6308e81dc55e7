"""Winograd's minimal filtering F(2x2, 3x3): a 3x3 convolution with 2.25x fewer multiplications.

The seam behind ``Conv2d`` (ops/conv.py) for 3x3 kernels, stride 1, padding 1, no
dilation, one group, and enough channels (``applies``): the convolutions of
ResNet-18 and VGG from 128 channels on. It gives the textbook numbers (to
rounding: 1e-15 relative in float64, tests/test_winograd.py).

Cut the output into 2x2 tiles. The 2x2 tile at (2i, 2j) needs the 4x4 patch d of
the padded input at (2i, 2j) (neighbouring patches overlap by 2). Lavin & Gray
(2016) write the tile's four outputs as

    Y = A^T [ (G w G^T) * (B^T d B) ] A            (* elementwise; w the 3x3 kernel)

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]      (4x4)
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]         (4x3)
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]                                   (2x4)

16 multiplications per tile and channel pair instead of 4 * 9 = 36. Summed over
the input channels c, the 16 positions (k, l) of the 4x4 tile are 16 independent
matrix products, one per position:

    forward    U = G w G^T: (16, O, C)    V = B^T d B: (16, P, C)      M = V @ U^T: (16, P, O)    y = A^T M A
    backward   Gt = A g A^T: (16, P, O)   dU = Gt^T @ V: (16, O, C) -> dW = G^T dU G
               dV = Gt @ U: (16, P, C) -> dx = B dV B^T, each 4x4 patch added back where it came from

(P = N * tiles per image, channels last; the backward passes are the transposes of the
forward's three linear maps.) The transforms are additions and subtractions over strided
views of whole arrays, one 4x4 position at a time; each runs on ``parallel.threads()``
ranges of images at once, and the 16 products are shared among the same threads, BLAS
one thread each. V is made again in backward from the input rather than kept (4 times
the input's size). Measured (2026-12-08, 2 threads, batch 64, forward + backward):
256 channels at 8x8 and 512 at 4x4 about 0.6 of the row layout's time, 128 at 16x16 about
0.9; ResNet-18's and VGG-16-BN's steps 0.84x and 0.83x.
"""
from __future__ import annotations

import numpy as np

from .. import memory
from . import parallel

# The smallest channel count (input and output) that takes this seam: below it the
# transforms' passes over 4x-sized arrays cost more than the products save (measured
# 2026-12-08, 2 threads, batch 64: ResNet-18 with 64 on took 1.04x its step with 128 on).
MIN_CHANNELS = 128
ENABLED = True      # False: every convolution takes ops/conv.py's other forms (tests, benchmarks)

_G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]])
_GG = np.kron(_G, _G)        # (16, 9): row 4k + l, column 3a + b is G[k, a] * G[l, b]


def applies(x_shape, weight_shape, stride, padding, dilation, groups, xp):
    """Whether a convolution takes this seam (NumPy arrays only: CuPy has cuDNN's own)."""
    O, Cg, kh, kw = weight_shape
    return (ENABLED and xp is np and not parallel.inside() and (kh, kw) == (3, 3) and stride == (1, 1) and padding == (1, 1)
            and dilation == (1, 1) and groups == 1 and min(O, Cg) >= MIN_CHANNELS)


def _tiles(H, W):
    return (H + 1) // 2, (W + 1) // 2


def _in_parts(n, task):
    """task(lo, hi) over ``parallel.split(n)`` ranges at once (BLAS one thread each)."""
    parallel.parallel(lambda i, lo, hi: task(lo, hi), parallel.split(n))


# --- the three transforms and their transposes ------------------------------------------------
# They work channels-last: a tile's 16 values for all channels are 16 arrays (N, th, tw, C)
# whose last axis, the channels, is the long contiguous one (a (N, C, th, tw) layout would put
# the 2 to 8 tiles of a row innermost, and NumPy's loops are slow on such short rows).
def _weight_transform(w):
    """U = G w G^T for every (o, c): (O, C, 3, 3) -> (16, O, C), one (16, 9) @ (9, O*C) product."""
    O, C = w.shape[:2]
    return (_GG.astype(w.dtype) @ w.reshape(O * C, 9).T).reshape(16, O, C)


def _weight_transform_t(dU):
    """dW = G^T dU G for every (o, c): (16, O, C) -> (O, C, 3, 3), one (O*C, 16) @ (16, 9) product."""
    O, C = dU.shape[1:]
    return (dU.reshape(16, O * C).T @ _GG.astype(dU.dtype)).reshape(O, C, 3, 3)


def _input_transform(x, xpad, V, lo, hi):
    """V[k, l] = (B^T d B)[k, l] of every 4x4 patch d, images lo..hi: x (N, C, H, W) ->
    V (4, 4, N, th, tw, C), through xpad (N, 2th + 2, 2tw + 2, C), x zero-padded channels-last.
    Rows first (r_k = B^T's row k applied to the patch rows), then columns."""
    _, _, H, W = x.shape
    th, tw = V.shape[3:5]
    xpad = xpad[lo:hi]
    xpad[:, :1] = 0
    xpad[:, H + 1:] = 0
    xpad[:, :, :1] = 0
    xpad[:, :, W + 1:] = 0
    xpad[:, 1:H + 1, 1:W + 1] = x[lo:hi].transpose(0, 2, 3, 1)
    d = [xpad[:, k:k + 2 * th:2] for k in range(4)]            # patch row k of every tile, (n, th, W', C)
    for k, r in enumerate((d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3])):
        c = [r[:, :, l:l + 2 * tw:2] for l in range(4)]        # ... and its column l, (n, th, tw, C)
        out = V[k, :, lo:hi]
        np.subtract(c[0], c[2], out=out[0])
        np.add(c[1], c[2], out=out[1])
        np.subtract(c[2], c[1], out=out[2])
        np.subtract(c[1], c[3], out=out[3])


def _input_transform_t(dV, dxpad, dx, lo, hi):
    """The transpose: every patch's dd = B dV B^T added back where the patch came from, images
    lo..hi: dV (4, 4, N, th, tw, C) -> dx (N, C, H, W), summed in dxpad (N, 2th + 2, 2tw + 2, C)."""
    _, _, H, W = dx.shape
    th, tw = dV.shape[3:5]
    dxpad = dxpad[lo:hi]
    dxpad.fill(0)
    q = dV[:, :, lo:hi]
    # B's row a of the 4 tile rows: (1,0,0,0), (0,1,-1,1), (-1,1,1,0), (0,0,0,-1)
    for a, e in enumerate((q[0], q[1] - q[2] + q[3], q[1] + q[2] - q[0], -q[3])):
        for b, dd in enumerate((e[0], e[1] - e[2] + e[3], e[1] + e[2] - e[0], -e[3])):
            dxpad[:, a:a + 2 * th:2, b:b + 2 * tw:2] += dd
    dx[lo:hi] = dxpad[:, 1:H + 1, 1:W + 1].transpose(0, 3, 1, 2)


def _output_transform(M, y, lo, hi):
    """y = A^T m A of every tile, images lo..hi: M (4, 4, N, th, tw, O) -> y (N, O, 2th, 2tw)."""
    N, O, th, tw = y.shape[0], y.shape[1], M.shape[3], M.shape[4]
    m = M[:, :, lo:hi]
    tiles = y.reshape(N, O, th, 2, tw, 2)[lo:hi].transpose(3, 5, 0, 2, 4, 1)     # (2, 2, n, th, tw, O)
    for a, s in enumerate((m[0] + m[1] + m[2], m[1] - m[2] - m[3])):         # A^T's rows over the tile rows
        np.add(s[0] + s[1], s[2], out=tiles[a, 0])                             # ... and over its columns
        np.subtract(s[1] - s[2], s[3], out=tiles[a, 1])


def _output_transform_t(g, Gt, lo, hi):
    """The transpose: Gt = A g A^T of every 2x2 tile of g, images lo..hi:
    g (N, O, 2th, 2tw) -> Gt (4, 4, N, th, tw, O). A's rows: (1, 0), (1, 1), (1, -1), (0, -1)."""
    N, O = g.shape[:2]
    th, tw = Gt.shape[3:5]
    t = g.reshape(N, O, th, 2, tw, 2)[lo:hi].transpose(3, 5, 0, 2, 4, 1)       # (2, 2, n, th, tw, O)
    for k, u in enumerate((t[0], t[0] + t[1], t[0] - t[1], -t[1])):
        out = Gt[k, :, lo:hi]
        out[0] = u[0]
        np.add(u[0], u[1], out=out[1])
        np.subtract(u[0], u[1], out=out[2])
        np.negative(u[1], out=out[3])


# --- the convolution -----------------------------------------------------------------------
def _even(a, th, tw):
    """a (N, K, H, W) with a zero row / column appended where H or W is odd."""
    N, K, H, W = a.shape
    if (H, W) == (2 * th, 2 * tw):
        return a
    out = np.zeros((N, K, 2 * th, 2 * tw), a.dtype)
    out[:, :, :H, :W] = a
    return out


def _products(a, b, out):
    """out[k] = a[k] @ b[k] for the 16 positions, split among the threads."""
    def part(lo, hi):
        np.matmul(a[lo:hi], b[lo:hi], out=out[lo:hi])
    _in_parts(16, part)
    return out


def _input_tiles(x, th, tw):
    """V = B^T d B of every patch, (16, N*th*tw, C), from the pool (tinydense/memory.py)."""
    N, C = x.shape[:2]
    V = memory.scratch((4, 4, N, th, tw, C), x.dtype)
    xpad = memory.scratch((N, 2 * th + 2, 2 * tw + 2, C), x.dtype)
    _in_parts(N, lambda lo, hi: _input_transform(x, xpad, V, lo, hi))
    return V.reshape(16, -1, C)


def forward(x, weight):
    """y = conv2d(x, weight, padding=1) for x (N, C, H, W), weight (O, C, 3, 3): (N, O, H, W)."""
    N, C, H, W = x.shape
    O = weight.shape[0]
    th, tw = _tiles(H, W)
    y = np.empty((N, O, 2 * th, 2 * tw), x.dtype)
    with parallel.own_threads(x):
        V = _input_tiles(x, th, tw)                                                     # (16, P, C)
        U = _weight_transform(weight).transpose(0, 2, 1)                                # (16, C, O)
        M = _products(V, U, memory.scratch((16, V.shape[1], O), x.dtype))
        M = M.reshape(4, 4, N, th, tw, O)
        _in_parts(N, lambda lo, hi: _output_transform(M, y, lo, hi))
    return y if (2 * th, 2 * tw) == (H, W) else y[:, :, :H, :W].copy()


def backward(x, weight, g, need_x, need_w):
    """(dx, dW) of ``forward`` for the output gradient g (N, O, H, W); None where not needed."""
    N, C, H, W = x.shape
    O = weight.shape[0]
    th, tw = _tiles(H, W)
    g = _even(g, th, tw)
    Gt = memory.scratch((4, 4, N, th, tw, O), g.dtype)
    dx = dw = None
    with parallel.own_threads(g):
        _in_parts(N, lambda lo, hi: _output_transform_t(g, Gt, lo, hi))
        Gt = Gt.reshape(16, -1, O)                                                      # (16, P, O)
        if need_w:   # dU = Gt^T @ V (summed over tiles and images), dW = G^T dU G
            V = _input_tiles(x, th, tw)
            dw = _weight_transform_t(_products(Gt.transpose(0, 2, 1), V, np.empty((16, O, C), g.dtype)))
            del V
        if need_x:   # dV = Gt @ U, then every patch added back
            dV = _products(Gt, _weight_transform(weight), memory.scratch((16, Gt.shape[1], C), g.dtype))
            dV = dV.reshape(4, 4, N, th, tw, C)
            dx = np.empty((N, C, H, W), g.dtype)
            dxpad = memory.scratch((N, 2 * th + 2, 2 * tw + 2, C), g.dtype)
            _in_parts(N, lambda lo, hi: _input_transform_t(dV, dxpad, dx, lo, hi))
    return dx, dw
