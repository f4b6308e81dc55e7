"""Layers and models as objects that own their parameters (PyTorch's ``torch.nn``)."""
from .containers import DataParallel, ModuleDict, ModuleList, Sequential
from . import functional, init
from .activation import LogSoftmax, Sigmoid, Softmax, Tanh
from .layers import (AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten,
                     Identity, Linear, MaxPool2d, ReLU)
from .lazy import LazyBatchNorm2d, LazyConv2d, LazyLinear
from .loss import CrossEntropyLoss, MSELoss, NLLLoss
from .module import IncompatibleKeys, Module, Parameter

__all__ = ["AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "AvgPool2d", "BatchNorm2d", "Conv2d", "CrossEntropyLoss",
           "DataParallel", "Dropout", "Flatten", "Identity", "IncompatibleKeys", "LazyBatchNorm2d", "LazyConv2d",
           "LazyLinear", "Linear", "LogSoftmax", "MSELoss", "MaxPool2d", "Module", "ModuleDict", "ModuleList",
           "NLLLoss", "Parameter", "ReLU", "Sequential", "Sigmoid", "Softmax", "Tanh", "functional", "init"]
