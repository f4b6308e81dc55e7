"""Optimisation: SGD (PyTorch's rule) and the step learning-rate schedule."""
from .lr_scheduler import MultiStepLR
from .sgd import SGD

__all__ = ["MultiStepLR", "SGD"]
