"""Ops with hand-written backward passes, one module per family.

Each op is a ``Function`` subclass (forward and backward side by side) plus
a small public function that validates its arguments; ``tinydense.functional``
collects the public functions. ``override`` (ops/override.py) makes the public
functions run on your own Function classes instead.
"""
from .override import OPS, OverrideError, override

__all__ = ["OPS", "OverrideError", "override"]
