"""Constant padding, PyTorch's ``F.pad``: ``pad`` lists (before, after) widths from the LAST
axis backwards: (left, right) pads the last axis, (left, right, top, bottom) the last two.

    forward:  y = x surrounded by ``value``
    backward: dx = g with the padding cut off
"""
from __future__ import annotations

import numbers

from .. import backend
from ..autograd import Function, Tensor


class Pad(Function):
    def forward(self, x, widths, value=0.0):
        xp = backend.get_array_module(x)
        self.inside = tuple(slice(lo, lo + n) for (lo, _), n in zip(widths, x.shape))
        return xp.pad(x, widths, constant_values=x.dtype.type(value))

    def backward(self, g):
        return g[self.inside]


def pad(input, pad, mode="constant", value=0.0):
    """Pad ``input`` by ``pad`` = (last_before, last_after, second_last_before, ...) with ``value``."""
    shape = tuple((input.data if isinstance(input, Tensor) else input).shape)
    pad = tuple(pad)
    if mode != "constant":
        raise ValueError(f"pad: only mode='constant' is provided, got {mode!r}")
    if len(pad) % 2 or len(pad) // 2 > len(shape):
        raise ValueError(f"pad: {pad} must hold a (before, after) pair for each of at most {len(shape)} "
                         f"axes (input shape {shape})")
    if any(not isinstance(p, numbers.Integral) or p < 0 for p in pad):
        raise ValueError(f"pad: widths must be non-negative integers, got {pad} (cropping is not provided)")
    pairs = [(int(pad[i]), int(pad[i + 1])) for i in range(0, len(pad), 2)]
    widths = [(0, 0)] * (len(shape) - len(pairs)) + pairs[::-1]
    return Pad.apply(input, widths=tuple(widths), value=value)
