"""Models built from ``tinydense.nn``: the architectures of the CNN-architectures
lecture with torchvision's names and parameter layout (AlexNet, VGG, GoogLeNet,
ResNet, ResNeXt, Wide ResNet), ZFNet, the DenseNet family, and the CIFAR
pre-activation ResNet the DenseNet paper compares with.

``resnet(depth)`` is that pre-activation CIFAR ResNet (``preact_resnet``, the
``--model resnet`` of ``tinydense train``); torchvision's ImageNet ResNets are
``resnet18`` ... ``resnet152``.
"""
from .alexnet import AlexNet, ZFNet, alexnet, alexnet_2012, zfnet
from .densenet import (DenseNet, densenet, densenet121, densenet161, densenet169, densenet201, densenet264,
                       densenet_bc)
from .densenet_blocks import DenseBlock, DenseLayer, Transition
from .efficient_densenet import EfficientDenseBlock, EfficientTransition
from .googlenet import GoogLeNet, GoogLeNetOutputs, Inception, InceptionAux, googlenet
from .preact_resnet import PreActBlock, PreActBottleneck, PreActResNet, preact_resnet
from .resnet import (BasicBlock, Bottleneck, ResNet, cifar_resnet18, cifar_resnet34, cifar_resnet50,
                     cifar_resnext50_32x4d, resnet18, resnet34, resnet50, resnet101, resnet152, resnext50_32x4d,
                     resnext101_32x8d, resnext101_64x4d, wide_resnet50_2, wide_resnet101_2)
from .vgg import (VGG, cifar_vgg11_bn, cifar_vgg16_bn, vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19,
                  vgg19_bn)

resnet = preact_resnet        # the name `tinydense train --model resnet` and lesson 6 use

__all__ = ["AlexNet", "BasicBlock", "Bottleneck", "DenseBlock", "DenseLayer", "DenseNet", "EfficientDenseBlock",
           "EfficientTransition", "GoogLeNet",
           "GoogLeNetOutputs", "Inception", "InceptionAux", "PreActBlock", "PreActBottleneck", "PreActResNet",
           "ResNet", "Transition", "VGG", "ZFNet", "alexnet", "alexnet_2012", "cifar_resnet18", "cifar_resnet34", "cifar_resnet50",
           "cifar_resnext50_32x4d", "cifar_vgg11_bn", "cifar_vgg16_bn", "densenet", "densenet121", "densenet161",
           "densenet169", "densenet201", "densenet264", "densenet_bc", "googlenet", "preact_resnet", "resnet",
           "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
           "resnext101_64x4d", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
           "wide_resnet50_2", "wide_resnet101_2", "zfnet"]
