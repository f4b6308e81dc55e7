"""Ops with hand-written backward passes, one module per family.

Each op is a ``Function`` subclass (forward and backward side by side) plus
a small public function that validates its arguments; ``tinydense.functional``
collects the public functions.
"""
