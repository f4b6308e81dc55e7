"""Unpickling files a user gives us, without letting them run code.

``pickle.load`` calls whatever callable a file names: a crafted file can
run ``os.system``. A ``RestrictedUnpickler`` resolves only the
(module, name) pairs on its allow-list and refuses everything else with
``UnpicklingError`` before anything is called.
"""
from __future__ import annotations

import io
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
    """The globals a pickle of plain NumPy arrays refers to, under both the
    NumPy 1 and NumPy 2 module names."""
    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]   # numpy's _reconstruct function
    allowed = {}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = reconstruct
        allowed[(module, "scalar")] = _scalar
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    return allowed


def _scalar(dtype, data=None):
    """Rebuild a pickled NumPy scalar from its dtype and raw bytes."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError(f"refused NumPy scalar of dtype {dtype!r}")
    return np.frombuffer(data, dtype=dtype)[0]


def restricted_loads(data: bytes, allowed, **kwargs):
    return RestrictedUnpickler(io.BytesIO(data), allowed, **kwargs).load()


def load_numpy_pickle(path, encoding="bytes"):
    """Load a pickle that may contain only built-in containers and NumPy arrays
    (the CIFAR "python version" batch files)."""
    with open(path, "rb") as f:
        return RestrictedUnpickler(f, numpy_allowed_globals(), encoding=encoding).load()
