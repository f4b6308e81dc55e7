"""Reference solutions to every exercise of the lessons (instructors only: the student
release leaves this folder out). The name of each is the name of its exercise stub.

The op classes of the workspace are in my_ops_solved.py and re-exported here.
The lessons' tests run every exercise twice: with the notebook's stub (the
check must fail and say why) and with these (the check must pass).
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np

import tinydense as td
import tinydense.functional as F
import tinydense.nn as nn
from tinydense import Function
from tinydense.backend import get_array_module

_spec = importlib.util.spec_from_file_location("my_ops_solved", Path(__file__).with_name("my_ops_solved.py"))
my_ops_solved = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(my_ops_solved)
Conv2d, BatchNorm, ReLU = my_ops_solved.Conv2d, my_ops_solved.BatchNorm, my_ops_solved.ReLU
MaxPool2d, AvgPool2d, Cat = my_ops_solved.MaxPool2d, my_ops_solved.AvgPool2d, my_ops_solved.Cat
Linear, LogSoftmax, CrossEntropy = my_ops_solved.Linear, my_ops_solved.LogSoftmax, my_ops_solved.CrossEntropy


# --- autograd --------------------------------------------------------------------------

class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        return g * self.b, g * self.a


# --- convolution -----------------------------------------------------------------------

def conv2d_loops(x, w, b, stride=1, padding=0):
    N, C, H, W = x.shape
    O, _, K, _ = w.shape
    OH, OW = (H - K + 2 * padding) // stride + 1, (W - K + 2 * padding) // stride + 1
    xpad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    y = np.zeros((N, O, OH, OW), dtype=x.dtype)
    for n in range(N):
        for o in range(O):
            for i in range(OH):
                for j in range(OW):
                    total = b[o]
                    for c in range(C):
                        for a in range(K):
                            for bb in range(K):
                                total += w[o, c, a, bb] * xpad[n, c, i * stride + a, j * stride + bb]
                    y[n, o, i, j] = total
    return y


def im2col(x, K, stride=1, padding=0):
    N, C, H, W = x.shape
    OH, OW = (H - K + 2 * padding) // stride + 1, (W - K + 2 * padding) // stride + 1
    xpad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    cols = np.empty((N, C, K, K, OH, OW), dtype=x.dtype)
    for a in range(K):
        for bb in range(K):
            cols[:, :, a, bb] = xpad[:, :, a:a + stride * OH:stride, bb:bb + stride * OW:stride]
    return cols.reshape(N, C * K * K, OH * OW)


def winograd_1d(d, g):
    # tile t: outputs y[2t], y[2t+1] from d[2t] .. d[2t+3] (tiles overlap by 2), F(2, 3):
    # the filter's transform once, then 4 products per tile (slices: every tile at once)
    u = (g[0], (g[0] + g[1] + g[2]) / 2, (g[0] - g[1] + g[2]) / 2, g[2])
    d0, d1, d2, d3 = d[0:-2:2], d[1:-1:2], d[2::2], d[3::2]
    m1, m2, m3, m4 = (d0 - d2) * u[0], (d1 + d2) * u[1], (d2 - d1) * u[2], (d1 - d3) * u[3]
    y = np.empty(len(d) - 2, dtype=np.result_type(d, g))
    y[0::2] = m1 + m2 + m3
    y[1::2] = m2 - m3 - m4
    return y



# --- From AlexNet to DenseNet (the architectures lesson) -----------------------------

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


# --- gradient checking -----------------------------------------------------------------

def numeric_gradient(f, x, g, eps=1e-6):
    grad = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        old = x[idx]
        x[idx] = old + eps
        plus = (f(x) * g).sum()
        x[idx] = old - eps
        minus = (f(x) * g).sum()
        x[idx] = old
        grad[idx] = (plus - minus) / (2 * eps)
    return grad


class Sigmoid(Function):
    def forward(self, x):
        xp = get_array_module(x)
        self.out = 0.5 * (xp.tanh(0.5 * x) + 1)     # the same function, without overflow
        return self.out

    def backward(self, g):
        return g * self.out * (1 - self.out)


# --- dense connectivity ----------------------------------------------------------------

def channel_widths(depth, growth_rate, bottleneck, compression):
    n = (depth - 4) // (6 if bottleneck else 3)
    channels = 2 * growth_rate if bottleneck and compression < 1 else 16
    widths = [channels]
    for block in range(3):
        channels += n * growth_rate
        widths.append(channels)
        if block < 2:
            channels = int(math.floor(compression * channels))
            widths.append(channels)
    return widths


def densenet_parameters(depth, growth_rate, bottleneck, compression):
    k = growth_rate
    n = (depth - 4) // (6 if bottleneck else 3)
    widths = channel_widths(depth, growth_rate, bottleneck, compression)
    total = 3 * 9 * widths[0]                                   # stem: 3x3 conv, no bias
    for block, start in enumerate(widths[0::2]):                # the input width of each block
        for l in range(n):
            c = start + l * k
            total += 2 * c + (4 * k * c + 2 * 4 * k + 9 * 4 * k * k if bottleneck else 9 * c * k)
        if block < 2:                                           # transition: BN and 1x1 conv
            total += 2 * widths[2 * block + 1] + widths[2 * block + 1] * widths[2 * block + 2]
    return total + 2 * widths[-1] + 10 * widths[-1] + 10       # norm5, classifier


# --- building DenseNet -----------------------------------------------------------------

class DenseLayer(nn.Module):
    def __init__(self, in_channels, growth_rate):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, 4 * growth_rate, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(4 * growth_rate)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(4 * growth_rate, growth_rate, 3, padding=1, bias=False)

    def forward(self, features):
        x = self.conv1(self.relu1(self.norm1(F.cat(features, axis=1))))
        return self.conv2(self.relu2(self.norm2(x)))


class DenseBlock(nn.Module):
    def __init__(self, num_layers, in_channels, growth_rate):
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", DenseLayer(in_channels + i * growth_rate, growth_rate))

    def forward(self, x):
        features = [x]
        for layer in self.children():
            features.append(layer(features))
        return F.cat(features, axis=1)


class Transition(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pool = nn.AvgPool2d(2, 2)

    def forward(self, x):
        return self.pool(self.conv(self.relu(self.norm(x))))


# --- training --------------------------------------------------------------------------

def sgd_step(p, g, buffer, lr, momentum, weight_decay):
    g = g + weight_decay * p
    buffer = g.copy() if buffer is None else momentum * buffer + g
    return p - lr * (g + momentum * buffer), buffer


def paper_schedule(epochs, base_lr=0.1):
    milestones = {max(1, epochs // 2), max(1, 3 * epochs // 4)}
    return [base_lr * 0.1 ** sum(m <= e for m in milestones) for e in range(epochs)]


# --- feature reuse ---------------------------------------------------------------------

def long_range_share(usage):
    L = usage.shape[0] - 1
    return float(np.mean([usage[:l - 2, l - 1].sum() / usage[:l, l - 1].sum() for l in range(4, L + 1)]))


# --- memory ----------------------------------------------------------------------------

class Recompute(Function):
    def forward(self, *arrays, fn):
        self.arrays, self.fn = arrays, fn
        with td.no_grad():
            return fn(*[td.Tensor(a) for a in arrays], recompute=False).data

    def backward(self, g):
        inputs = [td.Tensor(a, requires_grad=need) for a, need in zip(self.arrays, self.needs_grad)]
        self.fn(*inputs, recompute=True).backward(g)
        return tuple(x.grad if need else None for x, need in zip(inputs, self.needs_grad))


# --- data parallelism (lesson 13): in solutions_data_parallel.py ----------------------
_spec = importlib.util.spec_from_file_location("solutions_data_parallel",
                                               Path(__file__).with_name("solutions_data_parallel.py"))
_data_parallel = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_data_parallel)
combine_statistics, average_gradients, ring_allreduce = (_data_parallel.combine_statistics,
                                                         _data_parallel.average_gradients,
                                                         _data_parallel.ring_allreduce)
