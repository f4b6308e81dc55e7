"""PyTorch's top-level functions, so that ``import tinydense as torch`` runs PyTorch code.

Creation: ``tensor`` (autograd.py), ``as_tensor``, ``from_numpy``, ``zeros``/``ones``/``full``/
``empty``/``eye``/``arange``/``linspace`` and the ``_like`` forms, ``rand``/``randn``/``randint``/
``randperm`` (from tinydense's seeded generator: ``manual_seed`` makes them repeat).
Math: ``cat``, ``stack``, ``flatten``, ``softmax``, ``log_softmax``, ``argmax``/``argmin``,
``max``/``min`` (with ``dim``: ``(values, indices)``), ``sum``, ``mean``, ``exp``, ``log``, ``sqrt``,
``matmul``, ``where``, ``clamp``, ``abs``, ``topk``, ``gather``, ``numel``, ``is_tensor``.
Files: ``save``/``load`` (tinydense's pickle-free checkpoint; ``load`` also reads a PyTorch
``.pth`` state_dict through the restricted reader of pth.py).

Every function is a thin front to an op in tinydense/ops/ (where the backward passes live)
or to NumPy; dtypes are NumPy's (``tinydense.float32 is numpy.float32``). Differences from
PyTorch are listed in README's "Coming from PyTorch".
"""
from __future__ import annotations

import builtins
import numbers
import os
import zipfile

import numpy as np

from . import backend, checkpoint, pth
from .autograd import Tensor
from .ops import select
from .ops.arithmetic import MatMul, Max, Mean, Sum, normalize_axis
from .ops.dims import axis_or_dim
from .ops.elementwise import abs, clamp, where  # noqa: A004
from .ops.loss import log_softmax
from .ops.select import gather, topk
from .ops.shape import cat as _cat
from .ops.shape import flatten as _flatten
from .ops.softmax import softmax

# --- dtypes: NumPy's, under PyTorch's names ------------------------------------------------
float16 = half = np.float16
float32 = np.float32
float64 = double = np.float64
int8, int16, int32, int64, uint8 = np.int8, np.int16, np.int32, np.int64, np.uint8
long = np.int64
bool = np.bool_


class device(str):
    """A device name: ``device("cuda")`` is the string ``"cuda"`` with ``.type`` (tinydense
    devices are plain strings, "cpu" or "cuda"; "cuda:0" is "cuda")."""

    def __new__(cls, name="cpu"):
        return super().__new__(cls, backend.check_device(str(name)))

    @property
    def type(self):
        return str(self)


def _placed(array, device_name):
    return backend.to_device(array, device_name) if device_name is not None else array


def _shape(size):
    """``zeros(2, 3)`` and ``zeros((2, 3))`` both mean shape (2, 3)."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    if any(not isinstance(n, numbers.Integral) or n < 0 for n in size):
        raise ValueError(f"a size must be non-negative integers, got {size}")
    return tuple(int(n) for n in size)


def _make(array, dtype, device_name, requires_grad):
    array = array.astype(np.dtype(dtype), copy=False) if dtype is not None else array
    return Tensor(_placed(array, device_name), requires_grad=requires_grad)


# --- creation ---------------------------------------------------------------------------------
def as_tensor(data, dtype=None, device=None) -> Tensor:
    """A Tensor over ``data`` without a copy where none is needed (a Tensor stays itself)."""
    if isinstance(data, Tensor) and dtype is None and device is None:
        return data
    array = data.data if isinstance(data, Tensor) else data
    if not hasattr(array, "dtype"):
        array = np.asarray(array)
        array = array.astype(np.float32) if array.dtype == np.float64 and dtype is None else array
    return _make(array, dtype, device, False)


def from_numpy(array) -> Tensor:
    """A Tensor sharing ``array``'s memory (and dtype)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy expects a numpy.ndarray, got {type(array).__name__}")
    return Tensor(array)


def zeros(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _make(np.zeros(_shape(size), dtype=dtype or np.float32), None, device, requires_grad)


def ones(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _make(np.ones(_shape(size), dtype=dtype or np.float32), None, device, requires_grad)


def empty(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Like ``zeros`` (PyTorch leaves the values unset; tinydense gives zeros, never garbage)."""
    return zeros(*size, dtype=dtype, device=device, requires_grad=requires_grad)


def _dtype_of_value(value):
    if isinstance(value, (builtins.bool, np.bool_)):
        return np.bool_
    return np.int64 if isinstance(value, numbers.Integral) else np.float32


def full(size, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor of ``size`` filled with ``fill_value`` (dtype from the value: int64, float32 or bool)."""
    return _make(np.full(_shape((size,)), fill_value, dtype=dtype or _dtype_of_value(fill_value)), None, device,
                 requires_grad)


def eye(n, m=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _make(np.eye(n, m, dtype=dtype or np.float32), None, device, requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False) -> Tensor:
    """start, start + step, ... below end (int64 for integer arguments, else float32)."""
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ValueError("arange: step must be non-zero")
    integral = all(isinstance(v, numbers.Integral) for v in (start, end, step))
    return _make(np.arange(start, end, step, dtype=dtype or (np.int64 if integral else np.float32)), None, device,
                 requires_grad)


def linspace(start, end, steps, dtype=None, device=None, requires_grad=False) -> Tensor:
    """``steps`` evenly spaced values from start to end, both included."""
    if not isinstance(steps, numbers.Integral) or steps < 0:
        raise ValueError(f"linspace: steps must be a non-negative integer, got {steps!r}")
    return _make(np.linspace(start, end, steps, dtype=np.float64), dtype or np.float32, device, requires_grad)


def _like(t, dtype, device_name):
    data = t.data if isinstance(t, Tensor) else np.asarray(t)
    return data.shape, dtype or data.dtype, device_name or backend.device_of(data)


def _like_of(make):
    """``make`` (zeros, ones, rand, randn) with the shape, and by default the dtype and
    device, of ``input``."""
    def like(input, dtype=None, device=None, requires_grad=False) -> Tensor:
        shape, dtype, where_ = _like(input, dtype, device)
        return make(shape, dtype=dtype, device=where_, requires_grad=requires_grad)
    like.__name__, like.__doc__ = f"{make.__name__}_like", f"``{make.__name__}`` shaped like ``input``."
    return like


def full_like(input, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    shape, dtype, where_ = _like(input, dtype, device)
    return full(shape, fill_value, dtype=dtype, device=where_, requires_grad=requires_grad)


# --- random: tinydense's seeded generators ----------------------------------------------------------
def _random(draw, size, dtype, device_name, requires_grad):
    xp = backend.module_for(backend.check_device(device_name or "cpu"))
    dtype = np.dtype(dtype or np.float32)
    if dtype.kind != "f":
        raise TypeError(f"random floats need a floating-point dtype, got {dtype}")
    return Tensor(draw(backend.rng(xp), _shape(size), dtype), requires_grad=requires_grad)


def rand(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Uniform in [0, 1)."""
    return _random(lambda g, s, d: g.random(s, dtype=d), size, dtype, device, requires_grad)


def randn(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Standard normal N(0, 1)."""
    return _random(lambda g, s, d: g.standard_normal(s, dtype=d), size, dtype, device, requires_grad)


zeros_like, ones_like, rand_like, randn_like = (_like_of(make) for make in (zeros, ones, rand, randn))
empty_like = zeros_like


def randint(low=0, high=None, size=None, dtype=None, device=None) -> Tensor:
    """Integers in [low, high): ``randint(10, (3,))`` or ``randint(2, 10, (3,))`` (int64)."""
    if size is None:                        # randint(high, size)
        low, high, size = 0, low, high
    if high is None or size is None:
        raise TypeError("randint needs high and size: randint(high, size) or randint(low, high, size)")
    if not low < high:
        raise ValueError(f"randint: need low < high, got low={low}, high={high}")
    values = backend.rng(np).integers(low, high, size=_shape((size,)), dtype=np.int64)
    return _make(values, dtype, device, False)


def randperm(n, dtype=None, device=None) -> Tensor:
    """The integers 0 .. n-1 in a random order (int64)."""
    if not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"randperm: n must be a non-negative integer, got {n!r}")
    return _make(backend.rng(np).permutation(int(n)).astype(np.int64), dtype, device, False)


# --- math -------------------------------------------------------------------------------------------
def is_tensor(obj) -> builtins.bool:
    return isinstance(obj, Tensor)


def numel(input) -> int:
    return int(input.data.size)


def cat(tensors, dim=0, axis=None) -> Tensor:
    """Concatenate along ``dim`` (PyTorch's default 0; ``tinydense.functional.cat`` defaults to 1)."""
    return _cat(tensors, axis=axis_or_dim(axis, dim, "cat", default=0))


def stack(tensors, dim=0) -> Tensor:
    """Join same-shaped tensors along a new axis ``dim`` (a reshape and a ``cat``: their backward
    passes give the gradient)."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack needs at least one tensor")
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1:
        raise ValueError(f"stack: every tensor must have the same shape, got {sorted(shapes)}")
    shape = tensors[0].shape
    axis = normalize_axis(dim, len(shape) + 1, "stack")
    return _cat([t.reshape(shape[:axis] + (1,) + shape[axis:]) for t in tensors], axis=axis)


def flatten(input, start_dim=0, end_dim=-1) -> Tensor:
    """Merge dimensions start_dim..end_dim (PyTorch's default: all; ``F.flatten`` starts at 1)."""
    return _flatten(input, start_dim, end_dim)


def _reduce(op, input, dim, keepdim, axis, name):
    return op.apply(input, axis=axis_or_dim(axis, dim, name), keepdims=keepdim)


def sum(input, dim=None, keepdim=False, axis=None) -> Tensor:
    return _reduce(Sum, input, dim, keepdim, axis, "sum")


def mean(input, dim=None, keepdim=False, axis=None) -> Tensor:
    return _reduce(Mean, input, dim, keepdim, axis, "mean")


def _extreme(input, dim, keepdim, along, elementwise, reduce):
    if isinstance(dim, Tensor):                       # torch.max(a, b): elementwise
        return elementwise(input, dim)
    if dim is None:
        return reduce(input)
    return along(input, dim, keepdim)


def max(input, dim=None, keepdim=False):
    """The largest value; with ``dim``, ``(values, indices)`` along it; ``max(a, b)`` elementwise."""
    return _extreme(input, dim, keepdim, select.max_along, lambda a, b: where(a >= b, a, b),
                    lambda a: Max.apply(a, axis=None))


def min(input, dim=None, keepdim=False):
    """The smallest value; with ``dim``, ``(values, indices)`` along it; ``min(a, b)`` elementwise."""
    return _extreme(input, dim, keepdim, select.min_along, lambda a, b: where(a <= b, a, b),
                    lambda a: -Max.apply(-a, axis=None))


def argmax(input, dim=None, keepdim=False) -> Tensor:
    """Index of the largest value (of the flattened tensor without ``dim``); int64, no gradient."""
    if dim is None:
        return Tensor(np.int64(input.data.argmax()))
    return select.max_along(input, dim, keepdim, op="argmax").indices


def argmin(input, dim=None, keepdim=False) -> Tensor:
    if dim is None:
        return Tensor(np.int64(input.data.argmin()))
    return select.min_along(input, dim, keepdim, op="argmin").indices


def matmul(input, other) -> Tensor:
    return MatMul.apply(input, other)


def exp(input) -> Tensor:
    return input.exp()


def log(input) -> Tensor:
    return input.log()


def sqrt(input) -> Tensor:
    return input.sqrt()


clip = clamp

# --- files ------------------------------------------------------------------------------------------
def save(obj, f) -> None:
    """Write dicts/lists/tuples of arrays, tensors and plain values to ``f`` in tinydense's
    pickle-free format (an .npz archive, whatever the file's name: ``ckpt.pth`` too)."""
    checkpoint.save(obj, f)


def _is_pytorch_file(path) -> builtins.bool:
    """A zip with a ``data.pkl`` entry (torch.save since 1.6), or a pickle that starts with
    PyTorch's legacy magic number (protocol 2, a 10-byte integer)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("data.pkl") for name in archive.namelist())
    with open(path, "rb") as file:
        return file.read(4) == b"\x80\x02\x8a\x0a"


def load(f, map_location=None, weights_only=True):
    """Read a file written by :func:`save`, or a PyTorch ``.pth`` state_dict (through the
    restricted reader of pth.py: tensors only, nothing in the file runs). Arrays come back as
    NumPy arrays (``map_location`` and ``weights_only`` are accepted; loading is always weights-only)."""
    path = os.fspath(f)
    if os.path.isfile(path) and _is_pytorch_file(path):
        return pth.load_pth(path)
    return checkpoint.load(path)


__all__ = ["abs", "arange", "argmax", "argmin", "as_tensor", "bool", "cat", "clamp", "clip", "device", "double", "empty",
           "empty_like", "exp", "eye", "flatten", "float16", "float32", "float64", "from_numpy", "full", "full_like",
           "gather", "half", "int16", "int32", "int64", "int8", "is_tensor", "linspace", "load", "log",
           "log_softmax", "long", "matmul", "max", "mean", "min", "numel", "ones", "ones_like", "rand", "rand_like",
           "randint", "randn", "randn_like", "randperm", "save", "softmax", "sqrt", "stack", "sum", "topk",
           "uint8", "where", "zeros", "zeros_like"]
