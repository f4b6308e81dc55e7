"""Reference solutions to the exercises of lesson 4 (try them yourself first!).

Each class is the exercise's ``Function`` with the given forward pass and a
finished backward pass. The lessons' tests run every exercise twice: with
the notebook's stub (the check must fail and say why) and with these
classes (the check must pass).
"""
from __future__ import annotations

from tinydense.autograd import Function
from tinydense.backend import get_array_module


class Sigmoid(Function):
    # y = 1 / (1 + e^-x) ; dy/dx = y (1 - y)
    def forward(self, x):
        xp = get_array_module(x)
        self.out = 1 / (1 + xp.exp(-x))
        return self.out

    def backward(self, g):
        return g * self.out * (1 - self.out)


class AvgPool2d(Function):
    # y = mean of each k x k window; every input pixel gets g / k^2 from each window that covers it
    def forward(self, x, kernel_size, stride):
        xp = get_array_module(x)
        N, C, H, W = x.shape
        k, s = kernel_size, stride
        OH, OW = (H - k) // s + 1, (W - k) // s + 1
        y = xp.zeros((N, C, OH, OW), dtype=x.dtype)
        for a in range(k):
            for b in range(k):
                y += x[:, :, a:a + s * OH:s, b:b + s * OW:s]
        self.x_shape, self.k, self.s = x.shape, k, s
        return y / (k * k)

    def backward(self, g):
        xp = get_array_module(g)
        k, s = self.k, self.s
        OH, OW = g.shape[2:]
        gx = xp.zeros(self.x_shape, dtype=g.dtype)
        for a in range(k):
            for b in range(k):   # windows overlap when s < k: the += adds their shares
                gx[:, :, a:a + s * OH:s, b:b + s * OW:s] += g / (k * k)
        return gx


class Cat(Function):
    # y = [x_1, x_2, ...] along channels ; each input's gradient is its slice of g
    def forward(self, *xs):
        xp = get_array_module(*xs)
        self.channels = [x.shape[1] for x in xs]
        return xp.concatenate(xs, axis=1)

    def backward(self, g):
        grads, start = [], 0
        for c in self.channels:
            grads.append(g[:, start:start + c])
            start += c
        return tuple(grads)


class BatchNorm(Function):
    # training mode, per channel over M = N*H*W values:
    # dx = weight / (M sigma) * (M g - sum g - xhat * sum(g xhat)), dweight = sum(g xhat), dbias = sum g
    def forward(self, x, weight, bias, eps=1e-5):
        xp = get_array_module(x)
        mean = x.mean(axis=(0, 2, 3), keepdims=True)
        var = x.var(axis=(0, 2, 3), keepdims=True)
        self.invstd = 1 / xp.sqrt(var + eps)
        self.xhat = (x - mean) * self.invstd
        self.weight = weight.reshape(1, -1, 1, 1)
        return self.weight * self.xhat + bias.reshape(1, -1, 1, 1)

    def backward(self, g):
        M = g.size // g.shape[1]
        sum_g = g.sum(axis=(0, 2, 3), keepdims=True)
        sum_g_xhat = (g * self.xhat).sum(axis=(0, 2, 3), keepdims=True)
        dx = self.weight * self.invstd / M * (M * g - sum_g - self.xhat * sum_g_xhat)
        return dx, sum_g_xhat.reshape(-1), sum_g.reshape(-1)
