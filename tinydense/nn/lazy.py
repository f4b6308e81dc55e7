"""Lazy layers: ``LazyConv2d``, ``LazyBatchNorm2d``, ``LazyLinear`` (PyTorch's, used by d2l).

A lazy layer is made without its input size; its first forward reads it from the input
(channels ``x.shape[1]``, or features ``x.shape[-1]``), builds the ordinary layer with it
(the same initialisation, from the seeded generator), takes over that layer's parameters,
buffers and attributes, and becomes that class (``type(layer) is Conv2d`` afterwards, as in
PyTorch). Until then it has no parameters: run one batch through the model before making
the optimizer (PyTorch asks the same). The new parameters take the input's device and
floating-point dtype.
"""
from __future__ import annotations

from .layers import BatchNorm2d, Conv2d, Linear
from .module import Module

_REGISTRIES = ("_parameters", "_buffers", "_modules", "_forward_hooks", "training")


class _LazyLayer(Module):
    becomes = None                  # the class the layer turns into

    def __init__(self, *args, **kwargs):
        super().__init__()
        self._lazy_args = (args, kwargs)

    def input_size(self, x) -> int:
        return x.shape[1]

    def forward(self, x):
        args, kwargs = self._lazy_args
        if not hasattr(x, "shape") or len(x.shape) < 2:
            raise ValueError(f"{type(self).__name__} needs an input of at least 2 dimensions to infer its size, "
                             f"got shape {tuple(getattr(x, 'shape', ()))}")
        full = self.becomes(self.input_size(x), *args, **kwargs)
        dtype = x.dtype if x.dtype.kind == "f" else None
        full.to(device=x.device, dtype=dtype)
        for name, value in full.__dict__.items():
            if name not in _REGISTRIES:
                object.__setattr__(self, name, value)
        self._parameters.update(full._parameters)
        self._buffers.update(full._buffers)
        del self.__dict__["_lazy_args"]
        self.__class__ = self.becomes
        return self.forward(x)

    def extra_repr(self):
        args, kwargs = self._lazy_args
        return ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()])


class LazyConv2d(_LazyLayer):
    """Conv2d(in_channels from the first input, out_channels, kernel_size, ...)."""
    becomes = Conv2d

    def __init__(self, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True):
        super().__init__(out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                         groups=groups, bias=bias)


class LazyBatchNorm2d(_LazyLayer):
    """BatchNorm2d(num_features from the first input, eps, momentum)."""
    becomes = BatchNorm2d

    def __init__(self, eps=1e-5, momentum=0.1):
        super().__init__(eps=eps, momentum=momentum)


class LazyLinear(_LazyLayer):
    """Linear(in_features from the first input's last axis, out_features, bias)."""
    becomes = Linear

    def __init__(self, out_features, bias=True):
        super().__init__(out_features, bias=bias)

    def input_size(self, x) -> int:
        return x.shape[-1]
