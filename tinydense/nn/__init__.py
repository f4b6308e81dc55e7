"""Layers and models as objects that own their parameters (PyTorch's ``torch.nn``)."""
from .containers import ModuleList, Sequential
from . import init
from .layers import (AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten,
                     Identity, Linear, MaxPool2d, ReLU, Sigmoid)
from .module import IncompatibleKeys, Module, Parameter

__all__ = ["AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "AvgPool2d", "BatchNorm2d", "Conv2d", "Dropout", "Flatten",
           "Identity", "IncompatibleKeys", "Linear", "MaxPool2d", "Module", "ModuleList", "Parameter", "ReLU",
           "Sequential", "Sigmoid", "init"]
