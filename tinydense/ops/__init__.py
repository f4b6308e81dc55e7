"""Ops with hand-written backward passes, one module per family.

Each op is a ``Function`` subclass (forward and backward side by side) plus
a small public function that validates its arguments; ``tinydense.functional``
collects the public functions. ``override`` (ops/override.py) makes the public
functions run on your own Function classes instead. ``tensor_methods``
attaches the operators and op-running methods to ``Tensor`` (``a + b``,
``x.sum()``, ``x.relu()``): importing this package gives Tensor its arithmetic.
"""
from . import tensor_methods  # noqa: F401  (attaches Tensor's operators and methods)
from .override import OPS, OverrideError, override

__all__ = ["OPS", "OverrideError", "override"]
