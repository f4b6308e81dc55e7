"""Models built from ``tinydense.nn``: the DenseNet family and a ResNet baseline."""
from .densenet import (DenseBlock, DenseLayer, DenseNet, Transition, densenet, densenet121, densenet161,
                       densenet169, densenet201, densenet264, densenet_bc)
from .efficient_densenet import EfficientDenseBlock, EfficientTransition
from .resnet import PreActBlock, PreActBottleneck, ResNet, resnet

__all__ = ["DenseBlock", "DenseLayer", "DenseNet", "EfficientDenseBlock", "EfficientTransition", "PreActBlock", "PreActBottleneck", "ResNet", "Transition",
           "densenet", "densenet121", "densenet161", "densenet169", "densenet201", "densenet264",
           "densenet_bc", "resnet"]
