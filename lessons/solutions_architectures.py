"""Reference solutions to the exercises of the lesson "From AlexNet to DenseNet"
(try them yourself first!).

The lessons' tests run every exercise twice: with the notebook's stub (the
check must fail and say why) and with these (the check must pass).
"""
from __future__ import annotations

from tinydense.autograd import Function
from tinydense.backend import get_array_module


def vgg_stage_cost(c_in, c, n_convs, size):
    # n_convs 3x3 convs with bias and padding 1 at size x size: the first c_in -> c, the others c -> c.
    # params: 9 weights per (input, output) channel pair, one bias per output channel;
    # multiply-adds: each of the c * size^2 outputs of a conv costs 9 * (its input channels)
    params = (9 * c_in * c + c) + (n_convs - 1) * (9 * c * c + c)
    macs = size * size * (9 * c_in * c + (n_convs - 1) * 9 * c * c)
    return params, macs


def resnext_block_macs(C, G, c, H, W):
    # G paths on 4C channels at H x W, each 1x1 4C -> c, 3x3 c -> c, 1x1 c -> 4C:
    # per path and output pixel 4C*c + 9*c*c + c*4C multiply-adds
    return (4 * C * c + 9 * c * c + 4 * C * c) * H * W * G


class GroupedConv2d(Function):
    # x (N, C, H, W), w (O, C/G, kh, kw), G groups; stride 1, no padding -> y (N, O, H-kh+1, W-kw+1).
    # Group g's O/G outputs see only its C/G input channels:
    #   y[n, g, o, i, j] = sum over c, a, b of x[n, g, c, i+a, j+b] * w[g, o, c, a, b]
    def forward(self, x, w, groups):
        xp = get_array_module(x)
        N, C, H, W = x.shape
        O, Cg, kh, kw = w.shape
        G = groups
        OH, OW = H - kh + 1, W - kw + 1
        # windows[n, g, c, i, j, a, b] = x[n, g*Cg + c, i + a, j + b]  (a view: nothing is copied)
        windows = xp.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
        self.windows = windows.reshape(N, G, Cg, OH, OW, kh, kw)
        self.wg, self.x_shape = w.reshape(G, O // G, Cg, kh, kw), x.shape
        return xp.einsum("ngcijab,gocab->ngoij", self.windows, self.wg).reshape(N, O, OH, OW)

    def backward(self, g):
        # dw[g, o, c, a, b] = sum over n, i, j of g[n, g, o, i, j] * x[n, g, c, i+a, j+b]
        # dx[n, g, c, i+a, j+b] += sum over o of g[n, g, o, i, j] * w[g, o, c, a, b]   (each tap (a, b))
        xp = get_array_module(g)
        G, Og, Cg, kh, kw = self.wg.shape
        N, _, OH, OW = g.shape
        gg = g.reshape(N, G, Og, OH, OW)
        dw = xp.einsum("ngoij,ngcijab->gocab", gg, self.windows).reshape(G * Og, Cg, kh, kw)
        dx = xp.zeros((N, G, Cg) + tuple(self.x_shape[2:]), dtype=g.dtype)
        for a in range(kh):
            for b in range(kw):      # tap (a, b) of every window at once: one slice of dx
                dx[:, :, :, a:a + OH, b:b + OW] += xp.einsum("ngoij,goc->ngcij", gg, self.wg[..., a, b])
        return dx.reshape(self.x_shape), dw
