"""Tensor's operators and methods that run an op: ``a + b``, ``x.sum()``, ``x.relu()``, ``x.to("cuda")``.

``Tensor`` (autograd.py) is the graph's core and knows no op; the ops are built
on top of it (ops -> autograd). Each method here is a line that calls an op's
``Function`` (``Add.apply``) or public function (``relu``), and ``TENSOR_METHODS``
at the bottom is the one table that attaches them all to ``Tensor``, when
``tinydense.ops`` is imported (as DeZero's ``setup_variable`` does). To give
Tensor a new method that runs an op, write it here and add it to the table.

The second half is PyTorch's Tensor API (``dim=``/``keepdim=``, ``size(d)``, views,
``max(dim)``, in-place methods ...), so that PyTorch code runs unchanged. That makes this
module longer than ~400 lines on purpose: one table, one place to look for any method of
Tensor; each method is a few lines that call an op.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import backend
from ..autograd import Tensor, is_grad_enabled
from .activation import relu
from .arithmetic import (Add, Cast, Div, Exp, GetItem, Log, MatMul, Max, Mean, Mul, Neg, Pow, Reshape, Sigmoid,
                         Sub, Sum, Tanh, ToDevice, Transpose, normalize_axis)
from .dims import axis_or_dim
from .elementwise import abs as absolute
from .elementwise import clamp, where
from .loss import log_softmax
from .select import gather, max_along, min_along, topk
from .shape import flatten
from .softmax import softmax
from .views import Clone, Expand


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


# --- reductions: PyTorch's dim=/keepdim= or NumPy's axis=/keepdims= (ops/dims.py) -----
def _keep(keepdim, keepdims):
    return bool(keepdim if keepdims is None else keepdims)


def reduce_sum(self, dim=None, keepdim=False, axis=None, keepdims=None):
    return Sum.apply(self, axis=axis_or_dim(axis, dim, "sum"), keepdims=_keep(keepdim, keepdims))


def reduce_mean(self, dim=None, keepdim=False, axis=None, keepdims=None):
    return Mean.apply(self, axis=axis_or_dim(axis, dim, "mean"), keepdims=_keep(keepdim, keepdims))


def reduce_max(self, dim=None, keepdim=False, axis=None, keepdims=None):
    """``x.max()``: the largest value. ``x.max(dim)``: PyTorch's ``(values, indices)`` along dim.
    ``x.max(axis=...)``: NumPy's, the values only (the gradient split over ties).
    ``x.max(other)``: the elementwise maximum."""
    if isinstance(dim, Tensor):
        return where(self >= dim, self, dim)
    if dim is not None:
        if axis is not None:
            raise TypeError("max: give dim (values and indices) or axis (values), not both")
        return max_along(self, dim, _keep(keepdim, keepdims))
    return Max.apply(self, axis=axis, keepdims=_keep(keepdim, keepdims))


def reduce_min(self, dim=None, keepdim=False, axis=None, keepdims=None):
    """Like ``max``, for the smallest values (min = -max(-x) without dim)."""
    if isinstance(dim, Tensor):
        return where(self <= dim, self, dim)
    if dim is not None:
        if axis is not None:
            raise TypeError("min: give dim (values and indices) or axis (values), not both")
        return min_along(self, dim, _keep(keepdim, keepdims))
    return -Max.apply(-self, axis=axis, keepdims=_keep(keepdim, keepdims))


def _arg(self, dim, keepdim, axis, along, flat, name):
    dim = axis_or_dim(axis, dim, name)
    if dim is None:
        return Tensor(flat(self.data))
    return along(self, dim, keepdim, op=name).indices


def argmax(self, dim=None, keepdim=False, axis=None):
    """Indices of the maxima (a plain int64 tensor: no gradient); of the flattened tensor without dim."""
    return _arg(self, dim, keepdim, axis, max_along, lambda a: a.argmax(), "argmax")


def argmin(self, dim=None, keepdim=False, axis=None):
    return _arg(self, dim, keepdim, axis, min_along, lambda a: a.argmin(), "argmin")


# --- shapes ------------------------------------------------------------------
def reshape(self, *shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return Reshape.apply(self, shape=shape)


def flatten_from_0(self, start_dim=0, end_dim=-1):
    """Like F.flatten, but from dimension 0 by default (as torch.Tensor.flatten)."""
    return flatten(self, start_dim, end_dim)


def transpose(self, *axes):
    """Two axes given apart swap them, PyTorch's ``transpose(d0, d1)`` (so ``w.transpose(0, 1)``
    of a matrix is its transpose, as in PyTorch code). Otherwise a NumPy permutation of the axes:
    ``x.transpose(2, 0, 1)``, ``x.transpose((0, 1))``; none: reverse them."""
    if len(axes) == 2 and not isinstance(axes[0], (tuple, list)):
        d0, d1 = (normalize_axis(a, self.ndim, "transpose") for a in axes)
        order = list(range(self.ndim))
        order[d0], order[d1] = d1, d0
        axes = tuple(order)
    elif len(axes) == 1 and isinstance(axes[0], (tuple, list)):
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
def to(self, *args, device=None, dtype=None, non_blocking=False, copy=False):
    """A copy on another device and/or with another dtype (self if nothing changes), taken
    as PyTorch takes them: ``to("cuda")``, ``to(tinydense.float64)``, ``to("cuda", tinydense.float32)``,
    ``to(other_tensor)`` (its device and dtype), or by keyword."""
    for arg in args:
        if isinstance(arg, Tensor):
            device, dtype = arg.device, arg.dtype
        elif isinstance(arg, str) and device is None:
            device = arg
        elif not isinstance(arg, str) and dtype is None:
            dtype = arg
        else:
            raise TypeError(f"Tensor.to: got {arg!r} besides device={device!r}, dtype={dtype!r}")
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


# --- PyTorch's Tensor API (dims, views, dtypes, comparisons, one-element conversions) --
class Size(int):
    """``x.size``: the number of elements (an int, NumPy's meaning) that can also be called,
    PyTorch's way: ``x.size()`` is the shape, ``x.size(d)`` the length of dimension d."""

    def __new__(cls, tensor):
        size = super().__new__(cls, int(tensor.data.size))
        size.shape = tuple(tensor.data.shape)
        return size

    def __call__(self, dim=None):
        if dim is None:
            return self.shape
        return self.shape[normalize_axis(dim, len(self.shape), "size")]


def numel(self):
    return int(self.data.size)


def dim(self):
    return self.data.ndim


def _sizes(shape):
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape


def permute(self, *dims):
    """Reorder the dimensions: ``x.permute(0, 2, 3, 1)`` (NCHW -> NHWC)."""
    return Transpose.apply(self, axes=_sizes(dims))


def unsqueeze(self, dim):
    """A new axis of length 1 at ``dim`` (-1: last)."""
    d = normalize_axis(dim, self.ndim + 1, "unsqueeze")
    return Reshape.apply(self, shape=self.shape[:d] + (1,) + self.shape[d:])


def squeeze(self, dim=None):
    """Drop axes of length 1 (only ``dim``, if given; one of another length stays, as PyTorch)."""
    if dim is None:
        shape = tuple(n for n in self.shape if n != 1)
    else:
        d = normalize_axis(dim, max(self.ndim, 1), "squeeze")
        shape = self.shape[:d] + self.shape[d + 1:] if self.ndim and self.shape[d] == 1 else self.shape
    return Reshape.apply(self, shape=shape)


def expand(self, *sizes):
    """Broadcast to ``sizes`` (-1 keeps a dimension); the gradient sums back (ops/views.py)."""
    sizes = _sizes(sizes)
    lead = len(sizes) - self.ndim
    if lead < 0:
        raise ValueError(f"expand: {len(sizes)} sizes for a {self.ndim}-D tensor of shape {self.shape}")
    shape = tuple(self.shape[i - lead] if n == -1 and i >= lead else n for i, n in enumerate(sizes))
    return Expand.apply(self, shape=shape)


def contiguous(self):
    return self


def clone(self):
    """A copy that stays in the graph (its gradient flows back to self)."""
    return Clone.apply(self)


def _cast_without_grad(dtype):
    def method(self):
        return Tensor(self.data.astype(dtype))    # integer and bool tensors carry no gradient
    return method


as_int64, as_int32, as_bool = _cast_without_grad(np.int64), _cast_without_grad(np.int32), _cast_without_grad(bool)


def as_float16(self):
    return to(self, dtype=np.float16)


def _one_element(self, kind):
    if self.data.size != 1:
        raise ValueError(f"{kind}() of a tensor needs exactly one element, got shape {self.shape}; "
                         f"reduce it first (.sum(), .any(), .all())")
    return self.data.reshape(()).item()


def to_float(self):
    return float(_one_element(self, "float"))


def to_int(self):
    return int(_one_element(self, "int"))


def to_bool(self):
    return bool(_one_element(self, "bool"))


def _comparison(name):
    def method(self, other):
        return getattr(self, name)(other)
    return method


def softmax_method(self, dim=None, axis=None):
    return softmax(self, dim=dim, axis=axis)


def log_softmax_method(self, dim=None, axis=None):
    return log_softmax(self, dim=dim, axis=axis)


def topk_method(self, k, dim=-1, largest=True, sorted=True):
    return topk(self, k, dim, largest, sorted)


def gather_method(self, dim, index):
    return gather(self, dim, index)


def clamp_method(self, min=None, max=None):
    return clamp(self, min, max)


# --- in place: only where no recorded graph can be broken ------------------------------
def _check_in_place(self, name):
    """In-place changes are allowed under ``no_grad`` on leaves (initialising or updating
    parameters) and on tensors that need no gradient; refused on a tensor that requires one
    while the graph is being recorded (its old values may be needed by backward), and on a
    tensor computed by a graph that has not been backpropagated yet."""
    if self._creator is not None and not self._creator.released:
        raise RuntimeError(f"{name}: this tensor was computed by {type(self._creator).__name__}, part of a "
                           f"graph whose backward has not run; changing it in place would corrupt that "
                           f"backward. Use the out-of-place form (x = x + y) or .detach() first")
    if self.requires_grad and is_grad_enabled():
        raise RuntimeError(f"{name}: a leaf tensor that requires grad cannot be changed in place while "
                           f"the graph is recorded; do it inside `with tinydense.no_grad():` (as an optimizer "
                           f"or an initialiser does)")


def _write(self, name, values):
    _check_in_place(self, name)
    xp = backend.get_array_module(self.data)
    self.data[...] = xp.asarray(values).astype(self.dtype, copy=False)
    return self


def _operand(other):
    return other.data if isinstance(other, Tensor) else other


def zero_(self):
    return _write(self, "zero_", 0)


def fill_(self, value):
    return _write(self, "fill_", _operand(value))


def copy_(self, src):
    src = _operand(src)
    if not hasattr(src, "shape"):
        src = np.asarray(src)
    np.broadcast_shapes(tuple(src.shape), self.shape)
    return _write(self, "copy_", backend.to_device(src, self.device))


def add_(self, other, alpha=1):
    return _write(self, "add_", self.data + alpha * _operand(other))


def sub_(self, other, alpha=1):
    return _write(self, "sub_", self.data - alpha * _operand(other))


def mul_(self, other):
    return _write(self, "mul_", self.data * _operand(other))


def div_(self, other):
    return _write(self, "div_", self.data / _operand(other))


def clamp_(self, min=None, max=None):
    return _write(self, "clamp_", backend.get_array_module(self.data).clip(self.data, min, max))


def normal_(self, mean=0.0, std=1.0):
    """Fill with N(mean, std^2) from tinydense's seeded generator."""
    xp = backend.get_array_module(self.data)
    return _write(self, "normal_", backend.rng(xp).standard_normal(self.shape) * std + mean)


def uniform_(self, a=0.0, b=1.0):
    """Fill with U(a, b) from tinydense's seeded generator."""
    xp = backend.get_array_module(self.data)
    return _write(self, "uniform_", a + (b - a) * backend.rng(xp).random(self.shape))


# Tensor attribute -> the function above (or the op's public function) that it runs.
TENSOR_METHODS = {
    "__add__": add, "__radd__": radd, "__sub__": sub, "__rsub__": rsub,
    "__mul__": mul, "__rmul__": rmul, "__truediv__": truediv, "__rtruediv__": rtruediv,
    "__matmul__": matmul, "__rmatmul__": rmatmul, "__neg__": neg, "__pow__": power,
    "__getitem__": getitem,
    "sum": reduce_sum, "mean": reduce_mean, "max": reduce_max, "argmax": argmax,
    "reshape": reshape, "view": reshape, "flatten": flatten_from_0, "transpose": transpose,
    "T": property(transpose), "t": transpose,
    "exp": exp, "log": log, "sqrt": sqrt, "relu": relu, "sigmoid": sigmoid, "tanh": tanh,
    "to": to, "float": as_float32, "double": as_float64, "cpu": cpu, "cuda": cuda,
    # PyTorch's Tensor API
    "min": reduce_min, "argmin": argmin, "size": property(Size), "numel": numel, "dim": dim,
    "permute": permute, "unsqueeze": unsqueeze, "squeeze": squeeze, "expand": expand,
    "contiguous": contiguous, "clone": clone,
    "half": as_float16, "long": as_int64, "int": as_int32, "bool": as_bool,
    "__float__": to_float, "__int__": to_int, "__bool__": to_bool,
    "eq": _comparison("__eq__"), "ne": _comparison("__ne__"), "lt": _comparison("__lt__"),
    "le": _comparison("__le__"), "gt": _comparison("__gt__"), "ge": _comparison("__ge__"),
    "softmax": softmax_method, "log_softmax": log_softmax_method, "topk": topk_method,
    "gather": gather_method, "clamp": clamp_method, "clip": clamp_method, "abs": absolute, "__abs__": absolute,
    "zero_": zero_, "fill_": fill_, "copy_": copy_, "add_": add_, "sub_": sub_, "mul_": mul_, "div_": div_,
    "clamp_": clamp_, "normal_": normal_, "uniform_": uniform_,
}

for _name, _method in TENSOR_METHODS.items():
    setattr(Tensor, _name, _method)
