"""Tensor's operators and methods that run an op: ``a + b``, ``x.sum()``, ``x.relu()``, ``x.to("cuda")``.

``Tensor`` (autograd.py) is the graph's core and knows no op; the ops are built
on top of it (ops -> autograd). Each method here is a line that calls an op's
``Function`` (``Add.apply``) or public function (``relu``), and ``TENSOR_METHODS``
at the bottom is the one table that attaches them all to ``Tensor``, when
``tinydense.ops`` is imported (as DeZero's ``setup_variable`` does). To give
Tensor a new method that runs an op, write it here and add it to the table.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import backend
from ..autograd import Tensor
from .activation import relu
from .arithmetic import (Add, Cast, Div, Exp, GetItem, Log, MatMul, Max, Mean, Mul, Neg, Pow, Reshape, Sigmoid,
                         Sub, Sum, Tanh, ToDevice, Transpose, normalize_axis)
from .shape import flatten


def as_tensor_like(other, like: Tensor) -> Tensor:
    """Turn a Python/NumPy scalar or array into a constant Tensor of ``like``'s
    dtype and device (``x * 2`` must stay float32, not become float64)."""
    if isinstance(other, Tensor):
        return other
    xp = backend.get_array_module(like.data)
    if isinstance(other, numbers.Number) or (hasattr(other, "dtype") and other.dtype.kind in "biuf"):
        return Tensor(xp.asarray(other, dtype=like.dtype))
    raise TypeError(f"cannot combine a Tensor with {type(other).__name__}")


# --- arithmetic: a op b and b op a (b a scalar or array: x * 2, 1 - x) ---------
def _binary(op, name):
    """Tensor's ``__name__`` and ``__rname__``: ``op`` on (self, other) and on (other, self)."""
    def method(self, other):
        return op.apply(self, as_tensor_like(other, self))

    def reflected(self, other):
        return op.apply(as_tensor_like(other, self), self)
    method.__name__, reflected.__name__ = f"__{name}__", f"__r{name}__"
    return method, reflected


add, radd = _binary(Add, "add")
sub, rsub = _binary(Sub, "sub")
mul, rmul = _binary(Mul, "mul")
truediv, rtruediv = _binary(Div, "truediv")
matmul, rmatmul = _binary(MatMul, "matmul")


def neg(self):
    return Neg.apply(self)


def power(self, exponent):
    if not isinstance(exponent, numbers.Real):
        raise TypeError(f"tensor ** exponent needs a real scalar exponent, got {type(exponent).__name__}")
    return Pow.apply(self, exponent=float(exponent))


def getitem(self, index):
    if isinstance(index, Tensor):
        index = index.data
    return GetItem.apply(self, index=index)


# --- reductions ------------------------------------------------------------
def reduce_sum(self, axis=None, keepdims=False):
    return Sum.apply(self, axis=axis, keepdims=keepdims)


def reduce_mean(self, axis=None, keepdims=False):
    return Mean.apply(self, axis=axis, keepdims=keepdims)


def reduce_max(self, axis=None, keepdims=False):
    return Max.apply(self, axis=axis, keepdims=keepdims)


def argmax(self, axis=None):
    """Indices of the maxima (a plain integer tensor: no gradient)."""
    if axis is not None:
        axis = normalize_axis(axis, self.ndim, "argmax")
    return Tensor(self.data.argmax(axis=axis))


# --- shapes ------------------------------------------------------------------
def reshape(self, *shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return Reshape.apply(self, shape=shape)


def flatten_from_0(self, start_dim=0, end_dim=-1):
    """Like F.flatten, but from dimension 0 by default (as torch.Tensor.flatten)."""
    return flatten(self, start_dim, end_dim)


def transpose(self, *axes):
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    return Transpose.apply(self, axes=axes or None)


# --- elementwise functions -----------------------------------------------------
def exp(self):
    return Exp.apply(self)


def log(self):
    return Log.apply(self)


def sqrt(self):
    return self ** 0.5


def sigmoid(self):
    return Sigmoid.apply(self)


def tanh(self):
    return Tanh.apply(self)


# --- dtype and device: gradients flow back through the move --------------------
def to(self, device=None, dtype=None):
    """A copy on another device and/or with another dtype (self if nothing changes)."""
    out = self
    if dtype is not None and np.dtype(dtype) != self.dtype:
        out = Cast.apply(out, dtype=np.dtype(dtype))
    if device is not None and backend.check_device(device) != self.device:
        out = ToDevice.apply(out, device=backend.check_device(device))
    return out


def as_float32(self):
    return to(self, dtype=np.float32)


def as_float64(self):
    return to(self, dtype=np.float64)


def cpu(self):
    return to(self, "cpu")


def cuda(self):
    return to(self, "cuda")


# Tensor attribute -> the function above (or the op's public function) that it runs.
TENSOR_METHODS = {
    "__add__": add, "__radd__": radd, "__sub__": sub, "__rsub__": rsub,
    "__mul__": mul, "__rmul__": rmul, "__truediv__": truediv, "__rtruediv__": rtruediv,
    "__matmul__": matmul, "__rmatmul__": rmatmul, "__neg__": neg, "__pow__": power,
    "__getitem__": getitem,
    "sum": reduce_sum, "mean": reduce_mean, "max": reduce_max, "argmax": argmax,
    "reshape": reshape, "view": reshape, "flatten": flatten_from_0, "transpose": transpose,
    "T": property(transpose),
    "exp": exp, "log": log, "sqrt": sqrt, "relu": relu, "sigmoid": sigmoid, "tanh": tanh,
    "to": to, "float": as_float32, "double": as_float64, "cpu": cpu, "cuda": cuda,
}

for _name, _method in TENSOR_METHODS.items():
    setattr(Tensor, _name, _method)
