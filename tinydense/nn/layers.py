"""The layers the models are built from. Each one holds its parameters and
calls the matching op in ``tinydense.functional``, where the math and the
backward pass live.

Default initialisation follows torchvision's DenseNet: convolution weights
are Kaiming-normal, N(0, 2 / fan_in) with fan_in = C_in/groups * kH * kW,
which keeps the variance of activations roughly constant through ReLU layers
(He et al., 2015); batch norm starts as the identity (weight 1, bias 0);
linear weights are uniform in +-1/sqrt(in_features) and every bias starts
at 0. The other models re-initialise their layers with their own reference's
scheme (``tinydense.nn.init``). Random draws come from tinydense's seeded
generator (``manual_seed``).
"""
from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from ..ops.geometry import pair, window_settings
from . import init
from .module import Module, Parameter


def _positive_int(value, what, layer):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{layer}: {what} must be a positive integer, got {value!r}")
    return int(value)


class Conv2d(Module):
    """2-D convolution: (N, in_channels, H, W) -> (N, out_channels, H', W'),
    H' = (H + 2*padding - dilation*(kernel_size - 1) - 1) // stride + 1.
    ``groups`` splits the channels into that many independent convolutions
    (weight (out_channels, in_channels/groups, kH, kW)); groups=in_channels is depthwise."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True):
        super().__init__()
        self.in_channels = _positive_int(in_channels, "in_channels", "Conv2d")
        self.out_channels = _positive_int(out_channels, "out_channels", "Conv2d")
        self.groups = _positive_int(groups, "groups", "Conv2d")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"Conv2d: groups={groups} must divide in_channels={in_channels} and "
                             f"out_channels={out_channels}")
        self.kernel_size, self.stride, self.padding, self.dilation = window_settings(
            "Conv2d", kernel_size, stride, padding, dilation)
        kh, kw = self.kernel_size
        shape = (self.out_channels, self.in_channels // self.groups, kh, kw)
        self.weight = init.kaiming_normal_(Parameter(np.zeros(shape, dtype=np.float32)), nonlinearity="relu")
        self.bias = Parameter(np.zeros(self.out_channels, dtype=np.float32)) if bias else None

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding,
                        dilation=self.dilation, groups=self.groups)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + ("" if self.bias is not None else ", bias=False")


class BatchNorm2d(Module):
    """Batch normalisation per channel of (N, C, H, W) (or (N, C)) input.

    Parameters weight (1) and bias (0); buffers running_mean (0), running_var (1)
    and num_batches_tracked (how many training batches updated them, as PyTorch).
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.num_features = _positive_int(num_features, "num_features", "BatchNorm2d")
        self.eps, self.momentum = float(eps), float(momentum)
        self.weight = Parameter(np.ones(self.num_features, dtype=np.float32))
        self.bias = Parameter(np.zeros(self.num_features, dtype=np.float32))
        self.register_buffer("running_mean", np.zeros(self.num_features, dtype=np.float32))
        self.register_buffer("running_var", np.ones(self.num_features, dtype=np.float32))
        self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))

    def forward(self, x):
        y = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                         training=self.training, momentum=self.momentum, eps=self.eps)
        self.count_batch()
        return y

    def count_batch(self):
        """In training, count one batch in num_batches_tracked (a 0-d int64 array, updated
        in place): after this layer's state normalised a batch, here or in a fused op."""
        if self.training:
            self.num_batches_tracked += 1

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class ReLU(Module):
    """max(x, 0), elementwise."""

    def forward(self, x):
        return F.relu(x)


class _Pool2d(Module):
    """What the window poolings share: kernel_size, stride (default: kernel_size), padding,
    ceil_mode (round the output size up, PyTorch's rule), checked as ops/geometry.py checks
    them; ``dilation`` for the poolings that take it."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, dilation=None):
        super().__init__()
        self.kernel_size, self.stride, self.padding, dilation_pair = window_settings(
            type(self).__name__, kernel_size, kernel_size if stride is None else stride, padding,
            1 if dilation is None else dilation)
        if dilation is not None:
            self.dilation = dilation_pair
        self.ceil_mode = bool(ceil_mode)

    def extra_repr(self):
        s = f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        return s + (", ceil_mode=True" if self.ceil_mode else "")


class MaxPool2d(_Pool2d):
    """Maximum over kernel_size windows, taps ``dilation`` apart."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        super().__init__(kernel_size, stride, padding, ceil_mode, dilation)

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)

    def extra_repr(self):
        return super().extra_repr() + (f", dilation={self.dilation}" if self.dilation != (1, 1) else "")


class AvgPool2d(_Pool2d):
    """Mean over kernel_size windows (DenseNet's transitions: 2x2, stride 2); padded zeros
    count in the divisor unless ``count_include_pad=False``."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.count_include_pad = bool(count_include_pad)

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad)

    def extra_repr(self):
        return super().extra_repr() + ("" if self.count_include_pad else ", count_include_pad=False")


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed output size; ``AdaptiveAvgPool2d(1)`` is global
    average pooling, (N, C, H, W) -> (N, C, 1, 1)."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = pair(output_size, "output_size")

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveMaxPool2d(AdaptiveAvgPool2d):
    """Max pooling to a fixed output size (the same bins as AdaptiveAvgPool2d)."""

    def forward(self, x):
        return F.adaptive_max_pool2d(x, self.output_size)


class Linear(Module):
    """Fully connected: (N, in_features) -> (N, out_features), y = x W^T + b."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features = _positive_int(in_features, "in_features", "Linear")
        self.out_features = _positive_int(out_features, "out_features", "Linear")
        bound = 1.0 / math.sqrt(self.in_features)
        self.weight = init.uniform_(Parameter(np.zeros((self.out_features, self.in_features), dtype=np.float32)),
                                    -bound, bound)
        self.bias = Parameter(np.zeros(self.out_features, dtype=np.float32)) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}"
                + ("" if self.bias is not None else ", bias=False"))


class Dropout(Module):
    """Zero each value with probability p in training (scaling the rest by 1/(1-p))."""

    def __init__(self, p=0.5):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class Flatten(Module):
    """(N, C, H, W) -> (N, C*H*W): merge every dimension from start_dim on."""

    def __init__(self, start_dim=1):
        super().__init__()
        self.start_dim = int(start_dim)

    def forward(self, x):
        return F.flatten(x, self.start_dim)


class Identity(Module):
    """Returns its input: a placeholder where a model has no layer (e.g. no max pool
    in a CIFAR stem), keeping the other layers' names."""

    def forward(self, x):
        return x
