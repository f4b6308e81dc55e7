"""Unpickling files a user gives us, without letting them run code.

``pickle.load`` calls whatever callable a file names: a crafted file can
run ``os.system``. A ``RestrictedUnpickler`` resolves only the
(module, name) pairs on its allow-list and refuses everything else with
``UnpicklingError`` before anything is called.
"""
from __future__ import annotations

import math
import pickle

import numpy as np


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only globals in ``allowed``:
    a dict {(module, name): object}."""

    def __init__(self, file, allowed, **kwargs):
        super().__init__(file, **kwargs)
        self.allowed = allowed

    def find_class(self, module, name):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused to load {module}.{name}: this file tries to use something a data "
                f"file never needs (only {sorted(f'{m}.{n}' for m, n in self.allowed)} are allowed)"
            ) from None


def numpy_allowed_globals():
    """The globals a pickle of built-in containers and plain NumPy arrays refers to,
    under every pickle protocol (0 to 5) and both the NumPy 1 and NumPy 2 module names:

    numpy ``_reconstruct``, ``ndarray``, ``dtype``, ``scalar``   arrays and scalars (all protocols)
    ``_codecs.encode(text, "latin1")``     how protocols 0-2 store a bytes object
    ``bytes()``                            ... and an empty one
    numpy ``_frombuffer``                  how protocol 5 stores a contiguous array

    The last three are stand-ins that accept only those exact uses.
    """
    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]   # numpy's _reconstruct function
    allowed = {}
    for numpy_core in ("numpy.core", "numpy._core"):
        allowed[(f"{numpy_core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{numpy_core}.multiarray", "scalar")] = _scalar
        allowed[(f"{numpy_core}.numeric", "_frombuffer")] = _frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    allowed[("_codecs", "encode")] = _latin1_encode
    for builtins in ("builtins", "__builtin__"):           # protocols 0-2 write Python 2's name
        allowed[(builtins, "bytes")] = _empty_bytes
    return allowed


def _scalar(dtype, data=None):
    """Rebuild a pickled NumPy scalar from its dtype and raw bytes."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError(f"refused NumPy scalar of dtype {dtype!r}")
    return np.frombuffer(data, dtype=dtype)[0]


def _latin1_encode(text, encoding="utf-8", errors="strict"):
    """Stands in for ``_codecs.encode``. Protocols 0-2 have no bytes type, so they
    store ``b`` as ``_codecs.encode(b.decode("latin1"), "latin1")``; only that is
    allowed (other codecs, zlib or bz2, could inflate a few bytes into gigabytes)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError(
            f"refused _codecs.encode({type(text).__name__}, {encoding!r}, {errors!r}): a data file "
            f"uses it only to store bytes, as latin1 text")
    return text.encode("latin1")


def _empty_bytes(*args):
    """Stands in for ``bytes``: protocols 0-2 store b"" as ``bytes()``. With an
    argument (``bytes(10**12)`` allocates a terabyte) it is refused."""
    if args:
        raise pickle.UnpicklingError(f"refused bytes{args!r}: a data file calls bytes() only for b''")
    return b""


def _frombuffer(buf, dtype, shape, order):
    """Stands in for numpy's ``_frombuffer``: protocol 5 stores a contiguous array as
    ``_frombuffer(its bytes, dtype, shape, order)``. Only numeric dtypes (an object
    array would be built from raw pointers) and a shape that matches the bytes."""
    if not isinstance(buf, (bytes, bytearray)):
        raise pickle.UnpicklingError(f"refused _frombuffer of a {type(buf).__name__}: bytes expected")
    if not isinstance(dtype, np.dtype) or dtype.hasobject or dtype.itemsize == 0:
        raise pickle.UnpicklingError(f"refused _frombuffer with dtype {dtype!r}: numeric dtypes only")
    if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)) or order not in ("C", "F"):
        raise pickle.UnpicklingError(f"refused _frombuffer with shape {shape!r} and order {order!r}")
    if math.prod(shape) * dtype.itemsize != len(buf):
        raise pickle.UnpicklingError(f"refused _frombuffer: shape {shape} of {dtype} needs "
                                     f"{math.prod(shape) * dtype.itemsize} bytes, the file has {len(buf)}")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)


def load_numpy_pickle(path, encoding="bytes"):
    """Load a pickle that may contain only built-in containers and NumPy arrays
    (the CIFAR "python version" batch files)."""
    with open(path, "rb") as f:
        return RestrictedUnpickler(f, numpy_allowed_globals(), encoding=encoding).load()
