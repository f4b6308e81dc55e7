"""Optimisation: SGD, Adam and AdamW with PyTorch's parameter groups, and the
learning-rate schedules of ``torch.optim.lr_scheduler`` (also at ``optim.lr_scheduler``)."""
from . import lr_scheduler
from .adam import Adam, AdamW
from .lr_scheduler import (CosineAnnealingLR, ExponentialLR, LambdaLR, LRScheduler, MultiStepLR, OneCycleLR,
                           StepLR)
from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["Adam", "AdamW", "CosineAnnealingLR", "ExponentialLR", "LRScheduler", "LambdaLR", "MultiStepLR",
           "OneCycleLR", "Optimizer", "SGD", "StepLR", "lr_scheduler"]
