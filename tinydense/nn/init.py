"""Initialisation schemes, in place on a Parameter (PyTorch's ``torch.nn.init``).

Each model applies the scheme its reference implementation uses, so that a
tinydense model starts from the same distribution as torchvision's:

    kaiming_normal_(w, mode="fan_out", nonlinearity="relu")   ResNet, VGG convs: N(0, 2 / fan_out)
    normal_(w, 0, 0.01)                                       VGG's linear layers
    trunc_normal_(w, std=0.01, a=-2, b=2)                     GoogLeNet's convs and linear layers
    torch_default_(layer)                                     what PyTorch's Conv2d / Linear start
                                                              with (AlexNet): U(-1/sqrt(fan_in), +)

As in PyTorch, fan_in = weight.shape[1] * kH * kW (C_in/groups * kH * kW: the
inputs one output sums over) and fan_out = weight.shape[0] * kH * kW. Random
numbers come from tinydense's seeded generator (``tinydense.manual_seed``).

``skip_init()`` builds models with zero parameters and no random draws at
all: counting VGG-19's 143 million parameters or listing its state_dict
then takes no time (load real weights afterwards, or initialise again).
"""
from __future__ import annotations

import contextlib
import math

from .. import backend

_skip = False


@contextlib.contextmanager
def skip_init():
    """Within this block every initialiser here leaves its tensor as it is (layers
    create zeros): models build instantly, with all-zero weights."""
    global _skip
    previous, _skip = _skip, True
    try:
        yield
    finally:
        _skip = previous


def _fill(tensor, values):
    tensor.data[...] = values
    return tensor


def _rng(tensor):
    return backend.rng(backend.get_array_module(tensor.data))


def _gain_squared(nonlinearity, param=None):
    if nonlinearity in ("linear", "conv2d", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return (5.0 / 3) ** 2
    if nonlinearity == "relu":
        return 2.0
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return 2.0 / (1 + slope ** 2)
    raise ValueError(f"unknown nonlinearity {nonlinearity!r}: expected 'relu', 'leaky_relu', "
                     f"'linear', 'conv2d', 'sigmoid' or 'tanh'")


def calculate_gain(nonlinearity, param=None):
    """The factor that keeps activations' variance through ``nonlinearity``: sqrt(2)
    for ReLU, sqrt(2 / (1 + a^2)) for leaky ReLU with slope a, 1 for linear layers."""
    return math.sqrt(_gain_squared(nonlinearity, param))


def fans(tensor):
    """(fan_in, fan_out) of a weight (C_out, C_in, kH, kW) or (out, in), as PyTorch counts them."""
    shape = tensor.shape
    if len(shape) < 2:
        raise ValueError(f"fan in and fan out need a weight with at least 2 dimensions, got shape {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _fan(tensor, mode):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    return fans(tensor)[0 if mode == "fan_in" else 1]


def constant_(tensor, value):
    if not _skip:
        tensor.data[...] = value
    return tensor


def zeros_(tensor):
    return constant_(tensor, 0.0)


def ones_(tensor):
    return constant_(tensor, 1.0)


def uniform_(tensor, a=0.0, b=1.0):
    """U(a, b), drawn as mid + (2u - 1) * half-width with u in [0, 1)."""
    if _skip:
        return tensor
    dtype = tensor.data.dtype
    u = _rng(tensor).random(tensor.shape, dtype=dtype)
    values = (2 * u - 1) * dtype.type((b - a) / 2)
    if a + b != 0:
        values += dtype.type((a + b) / 2)
    return _fill(tensor, values)


def normal_(tensor, mean=0.0, std=1.0):
    """N(mean, std^2)."""
    if _skip:
        return tensor
    dtype = tensor.data.dtype
    values = _rng(tensor).standard_normal(tensor.shape, dtype=dtype)
    values *= dtype.type(std)
    if mean != 0:
        values += dtype.type(mean)
    return _fill(tensor, values)


def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0):
    """N(mean, std^2) restricted to [a, b] (absolute bounds, as PyTorch): values outside
    are drawn again until none is left."""
    if _skip:
        return tensor
    if not a < b:
        raise ValueError(f"trunc_normal_: need a < b, got a={a}, b={b}")
    normal_(tensor, mean, std)
    outside = (tensor.data < a) | (tensor.data > b)
    while bool(outside.any()):
        redraw = _rng(tensor).standard_normal(int(outside.sum()), dtype=tensor.data.dtype) * std + mean
        tensor.data[outside] = redraw
        outside = (tensor.data < a) | (tensor.data > b)
    return tensor


def kaiming_normal_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    """He et al. (2015): N(0, gain^2 / fan), fan_in or fan_out."""
    return normal_(tensor, 0.0, math.sqrt(_gain_squared(nonlinearity, a) / _fan(tensor, mode)))


def kaiming_uniform_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    """He et al. (2015), uniform: U(-bound, bound), bound = gain * sqrt(3 / fan)."""
    bound = math.sqrt(3.0 * _gain_squared(nonlinearity, a) / _fan(tensor, mode))
    return uniform_(tensor, -bound, bound)


def xavier_uniform_(tensor, gain=1.0):
    """Glorot & Bengio (2010): U(-bound, bound), bound = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = fans(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound)


def xavier_normal_(tensor, gain=1.0):
    """Glorot & Bengio (2010): N(0, gain^2 * 2 / (fan_in + fan_out))."""
    fan_in, fan_out = fans(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def torch_default_(layer):
    """Reset a Conv2d or Linear to PyTorch's own default: weight kaiming_uniform_ with
    a = sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the bias likewise."""
    kaiming_uniform_(layer.weight, a=math.sqrt(5))
    if layer.bias is not None:
        bound = 1.0 / math.sqrt(fans(layer.weight)[0])
        uniform_(layer.bias, -bound, bound)
    return layer
