"""Models built from ``tinydense.nn``: the architectures of the CNN-architectures
lecture with torchvision's names and parameter layout (AlexNet, VGG, GoogLeNet,
ResNet, ResNeXt, Wide ResNet), SENet with timm's (``se_resnet50`` ...), ZFNet, the DenseNet family, and the CIFAR
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
from .senet import (SqueezeExcite, cifar_se_resnet18, cifar_se_resnet34, cifar_se_resnet50,
                    cifar_se_resnext50_32x4d, se_resnet18, se_resnet34, se_resnet50, se_resnet101, se_resnet152,
                    se_resnext50_32x4d)
from .vgg import (VGG, cifar_vgg11_bn, cifar_vgg16_bn, vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19,
                  vgg19_bn)

from .weights import with_weights

resnet = preact_resnet        # the name `tinydense train --model resnet` and lesson 6 use

# torchvision's published weights, e.g. densenet121(weights="IMAGENET1K_V1") (models/weights.py)
alexnet, googlenet = with_weights(alexnet), with_weights(googlenet)
vgg11, vgg11_bn, vgg13, vgg13_bn = (with_weights(b) for b in (vgg11, vgg11_bn, vgg13, vgg13_bn))
vgg16, vgg16_bn, vgg19, vgg19_bn = (with_weights(b) for b in (vgg16, vgg16_bn, vgg19, vgg19_bn))
resnet18, resnet34, resnet50, resnet101, resnet152 = (with_weights(b) for b in (resnet18, resnet34, resnet50,
                                                                                 resnet101, resnet152))
resnext50_32x4d, resnext101_32x8d, resnext101_64x4d = (with_weights(b) for b in (resnext50_32x4d, resnext101_32x8d,
                                                                                 resnext101_64x4d))
wide_resnet50_2, wide_resnet101_2 = with_weights(wide_resnet50_2), with_weights(wide_resnet101_2)
densenet121, densenet161, densenet169, densenet201 = (with_weights(b) for b in (densenet121, densenet161,
                                                                                densenet169, densenet201))

__all__ = ["AlexNet", "BasicBlock", "Bottleneck", "DenseBlock", "DenseLayer", "DenseNet", "EfficientDenseBlock",
           "EfficientTransition", "GoogLeNet",
           "GoogLeNetOutputs", "Inception", "InceptionAux", "PreActBlock", "PreActBottleneck", "PreActResNet",
           "ResNet", "SqueezeExcite", "Transition", "VGG", "ZFNet", "alexnet", "alexnet_2012", "cifar_resnet18", "cifar_resnet34", "cifar_resnet50",
           "cifar_resnext50_32x4d", "cifar_se_resnet18", "cifar_se_resnet34", "cifar_se_resnet50",
           "cifar_se_resnext50_32x4d", "cifar_vgg11_bn", "cifar_vgg16_bn", "densenet", "densenet121", "densenet161",
           "densenet169", "densenet201", "densenet264", "densenet_bc", "googlenet", "preact_resnet", "resnet",
           "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
           "resnext101_64x4d", "se_resnet18", "se_resnet34", "se_resnet50", "se_resnet101", "se_resnet152",
           "se_resnext50_32x4d", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
           "wide_resnet50_2", "wide_resnet101_2", "zfnet"]
