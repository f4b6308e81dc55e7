"""The workspace, solved: every class of lessons/my_ops_template.py with its backward pass
(instructors only: the student release leaves this folder out).

Each class subclasses the template's, so the forward passes are exactly the
ones students get; only ``backward`` is written here. Usable as a workspace:
``td.ops.override(my_ops_solved)`` and ``tinydense grade lessons/instructor/my_ops_solved.py``.
"""
from __future__ import annotations

import importlib.util
import types
from pathlib import Path

_spec = importlib.util.spec_from_file_location("build_notebooks",
                                               Path(__file__).resolve().parents[1] / "build_notebooks.py")
_build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_build)
_template = types.ModuleType("my_ops_template")             # the template, as students get it
exec(compile(_build.render_template(), "my_ops_template.py", "exec"), _template.__dict__)
get_array_module = _template.get_array_module


class Conv2d(_template.Conv2d):
    # dW = sum_n g[n] @ cols[n]^T, dcols = W^T @ g[n], then col2im: every tap adds back where it was read
    def backward(self, g):
        xp = get_array_module(g)
        N, C, H, W = self.x_shape
        O, _, kh, kw = self.weight.shape
        (sh, sw), (ph, pw) = self.stride, self.padding
        OH, OW = g.shape[2:]
        g_mat = g.reshape(N, O, OH * OW)
        dw = xp.matmul(g_mat, self.cols.transpose(0, 2, 1)).sum(axis=0).reshape(self.weight.shape)
        dcols = xp.matmul(self.weight.reshape(O, -1).T, g_mat).reshape(N, C, kh, kw, OH, OW)
        dxpad = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=g.dtype)
        for a in range(kh):
            for b in range(kw):
                dxpad[:, :, a:a + sh * OH:sh, b:b + sw * OW:sw] += dcols[:, :, a, b]
        return dxpad[:, :, ph:ph + H, pw:pw + W], dw, g.sum(axis=(0, 2, 3))


class BatchNorm(_template.BatchNorm):
    # training: dx = weight * invstd / M * (M g - sum g - xhat sum(g xhat)); eval: dx = weight * invstd * g
    def backward(self, g):
        scale = self.invstd if self.weight is None else self.weight * self.invstd
        sum_g = g.sum(axis=self.axes)
        sum_g_xhat = (g * self.xhat).sum(axis=self.axes)
        if self.training:
            dx = (scale / self.M).reshape(self.shape) * (
                self.M * g - sum_g.reshape(self.shape) - self.xhat * sum_g_xhat.reshape(self.shape))
        else:
            dx = g * scale.reshape(self.shape)
        if self.weight is None:
            return dx, None, None
        return dx, None, None, sum_g_xhat, sum_g


class ReLU(_template.ReLU):
    def backward(self, g):
        return g * (self.out > 0)


def _scatter_taps(self, share):
    """Add share(a, b), the gradient of tap (a, b) of every window, into the padded input's
    gradient; cut the padding off."""
    (kh, kw), (sh, sw), (ph, pw), (OH, OW) = self.geometry
    N, C, H, W = self.x_shape
    dxpad = None
    for a in range(kh):
        for b in range(kw):
            tap = share(a, b)
            if dxpad is None:
                dxpad = get_array_module(tap).zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=tap.dtype)
            dxpad[:, :, a:a + sh * OH:sh, b:b + sw * OW:sw] += tap
    return dxpad[:, :, ph:ph + H, pw:pw + W]


class MaxPool2d(_template.MaxPool2d):
    # each window's gradient goes to the tap that held its maximum
    def backward(self, g):
        kw = self.geometry[0][1]
        return _scatter_taps(self, lambda a, b: g * (self.argmax == a * kw + b))


class AvgPool2d(_template.AvgPool2d):
    # every tap of a window gets g / (kh kw); overlapping windows add their shares
    def backward(self, g):
        kh, kw = self.geometry[0]
        return _scatter_taps(self, lambda a, b: g / (kh * kw))


class Cat(_template.Cat):
    # each input's gradient is its slice of g along the axis
    def backward(self, g):
        xp = get_array_module(g)
        return tuple(xp.split(g, xp.cumsum(self.sizes)[:-1].tolist(), axis=self.axis))


class Linear(_template.Linear):
    # dx = g W, dW = g^T x, db = sum_n g
    def backward(self, g):
        return g @ self.weight, g.T @ self.x, g.sum(axis=0)


class LogSoftmax(_template.LogSoftmax):
    # dz = g - softmax(z) * sum(g) along the axis
    def backward(self, g):
        xp = get_array_module(g)
        return g - xp.exp(self.out) * g.sum(axis=self.axis, keepdims=True)


class CrossEntropy(_template.CrossEntropy):
    # dlogits = (softmax - onehot) / N * g
    def backward(self, g):
        xp = get_array_module(g)
        N = len(self.labels)
        d = self.probs.copy()
        d[xp.arange(N), self.labels] -= 1
        return d * (g / N), None
