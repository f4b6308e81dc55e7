"""PyTorch's ``dim=`` and NumPy's ``axis=``: two names for one argument.

Every function that takes an axis accepts either keyword (``x.sum(dim=1)`` and
``x.sum(axis=1)`` are the same call); giving both with different values is an error.
"""
from __future__ import annotations


def axis_or_dim(axis, dim, op, default=None):
    """The axis an op was given as ``axis=`` or ``dim=`` (``default`` if neither)."""
    if axis is not None and dim is not None and axis != dim:
        raise TypeError(f"{op}: got axis={axis!r} and dim={dim!r}; they name the same argument, give one")
    if dim is not None:
        return dim
    return default if axis is None else axis
