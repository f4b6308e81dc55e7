"""Hidden tests: instructors' extra cases (other shapes and seeds) that only ``tinydense grade`` runs,
one for every exercise with a numeric check (each visible check takes its cases as arguments).

Not in the student release (it holds no ``instructor/`` folder). The grader loads this file
by its location as a module of the instructors' ``checks`` package (hence the relative
imports) and runs ``HIDDEN[name]`` on an exercise whose visible check passed, so an answer
written to the visible cases only (their shapes, their seeds) still fails.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

import tinydense.functional as F

from .common import Case, check_function, rng
from .l01_autograd import check_linear, check_mul
from .l02_convolution import check_conv2d_loops, check_im2col, check_winograd_1d
from .l03_architectures import _formula_check, _resnext_truth, _vgg_truth, check_grouped_conv
from .l04_batchnorm_relu_pooling import check_batch_norm
from .l05_gradient_checking import check_cat, check_numeric_gradient
from .l06_dense_connectivity import check_channel_widths, check_densenet_parameters
from .l07_building_densenet import check_dense_block, check_dense_layer, check_transition
from .l08_training_cifar import check_cross_entropy, check_paper_schedule, check_sgd_step
from .l09_feature_reuse import check_long_range_share, usage_matrices
from .l10_memory import check_recompute
from .l13_data_parallel import check_average_gradients, check_combine_statistics, check_ring_allreduce


def _solutions():
    spec = importlib.util.spec_from_file_location("_hidden_solutions", Path(__file__).with_name("solutions.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _unary(title, call, reference, shapes, seed, positive=False):
    r = rng(seed)

    def check(cls):
        cases = []
        for shape in shapes:
            x = r.standard_normal(shape)
            if positive:
                x = np.sign(x) * (0.1 + np.abs(x))          # no kink within gradcheck's step
            cases.append(Case(f"hidden case, shape {shape}", call, reference, [x], ["x"]))
        return check_function(title, cls, cases)
    return check


def _conv(cls):
    r = rng(1012)
    cases = []
    for xs, ws, s, p in [((3, 2, 9, 8), (5, 2, 3, 3), 3, 2), ((1, 4, 6, 7), (2, 4, 2, 3), (1, 2), (0, 1))]:
        arrays = [r.standard_normal(xs), r.standard_normal(ws), r.standard_normal(ws[0])]
        cases.append(Case(f"hidden case, x {xs}, w {ws}, stride {s}, padding {p}",
                          lambda c, *t, s=s, p=p: c.apply(*t, stride=s, padding=p),
                          lambda *t, s=s, p=p: F.conv2d(*t, stride=s, padding=p), arrays, ["x", "weight", "bias"]))
    return check_function("convolution", cls, cases)


def _pool(title, pool):
    def check(cls):
        r = rng(1014)
        cases = [Case(f"hidden case, x {shape}, kernel {k}, stride {s}, padding {p}",
                      lambda c, x, k=k, s=s, p=p: c.apply(x, kernel_size=k, stride=s, padding=p),
                      lambda x, k=k, s=s, p=p: pool(x, k, s, p), [r.standard_normal(shape)], ["x"])
                 for shape, k, s, p in [((3, 2, 9, 7), 3, 3, 1), ((1, 3, 6, 6), (2, 3), (2, 1), 0)]]
        return check_function(title, cls, cases)
    return check


def _long_range_share(fn):
    reference = _solutions().long_range_share
    cases = [(L, usage, reference(usage)) for L, usage in usage_matrices(seed=1027, sizes=(5, 12))]
    return check_long_range_share(fn, cases)


def _formula(title, stub, cases, truth, parts):
    """A formula exercise of lesson 3 on other cases (no named mistakes: those are tables of the visible cases)."""
    return lambda fn: _formula_check(title, fn, stub, cases, truth, parts, [],
                                     lambda got: f"the right values in all {len(cases)} hidden cases.")


def _with(check, **options):
    return lambda obj: check(obj, **options)


# other shapes, sizes and seeds than the visible checks' (shapes of every rank, odd sizes, other axes)
_CONFIGS = [(28, 8, False, 1.0), (64, 16, True, 0.5), (34, 6, False, 0.7), (76, 10, True, 1.0)]
_BOTTLENECK = {"bottleneck": True}

HIDDEN = {
    # lesson 1
    "Mul": _with(check_mul, shapes=((5,), (2, 1, 3, 2)), seed=1010),
    "Linear": _with(check_linear, sizes=((6, 4, 2), (3, 5, 1)), seed=1011),
    # lesson 2
    "conv2d_loops": _with(check_conv2d_loops, settings=[((3, 2, 6, 7), (2, 2, 2, 2), 3, 1),
                                                        ((1, 4, 5, 5), (3, 4, 5, 5), 1, 2)], seed=1020),
    "im2col": _with(check_im2col, settings=[((2, 2, 6, 7), 2, 1, 0), ((1, 3, 8, 8), 3, 3, 2)], seed=1021),
    "Conv2d": _conv,
    "winograd_1d": _with(check_winograd_1d, lengths=(4, 20, 6), seed=1029),
    # lesson 3
    "vgg_stage_cost": _formula("VGG stage cost", "vgg_stage_cost", [(7, 9, 2, 5), (1, 16, 3, 3), (4, 4, 1, 11)],
                               _vgg_truth, ("parameters", "multiply-adds")),
    "resnext_block_macs": _formula("ResNeXt block cost", "resnext_block_macs",
                                   [(32, 4, 8, 5, 6), (16, 2, 4, 4, 3), (48, 3, 12, 3, 7)], _resnext_truth,
                                   ("multiply-adds",)),
    "GroupedConv2d": _with(check_grouped_conv, cases=[("hidden case, groups=3", 3, (2, 6, 5, 4), (9, 2, 2, 3)),
                                                      ("hidden case, depthwise groups=4", 4, (1, 4, 6, 5),
                                                       (4, 1, 3, 3))], seed=1005),
    # lesson 4
    "ReLU": _unary("ReLU", lambda c, x: c.apply(x), lambda x: F.relu(x), [(5,), (2, 3, 4)], 1013, positive=True),
    "MaxPool2d": _pool("max pooling", F.max_pool2d),
    "AvgPool2d": _pool("average pooling", F.avg_pool2d),
    "BatchNorm": _with(check_batch_norm, settings=[("hidden case, training mode", (3, 5, 3, 2), True, True),
                                                   ("hidden case, eval mode, no weight and bias", (4, 3, 2, 2),
                                                    False, False),
                                                   ("hidden case, (N, C) input", (7, 3), True, False)], seed=1017),
    # lesson 5
    "numeric_gradient": _with(check_numeric_gradient, tests=[("tanh", np.tanh, lambda x: 1 - np.tanh(x) ** 2),
                                                             ("x sin x", lambda x: x * np.sin(x),
                                                              lambda x: np.sin(x) + x * np.cos(x))],
                              shape=(2, 5, 3), seed=1022),
    "Sigmoid": _unary("sigmoid", lambda c, x: c.apply(x), lambda x: x.sigmoid(), [(7,), (2, 2, 2, 3)], 1000),
    "Cat": _with(check_cat, groups=[([(3, 2), (3, 1), (3, 4)], 1), ([(2, 2, 3), (2, 2, 1)], 2),
                                    ([(1, 4), (3, 4)], 0)], seed=1016),
    # lesson 6
    "channel_widths": _with(check_channel_widths, configs=_CONFIGS),
    "densenet_parameters": _with(check_densenet_parameters, configs=_CONFIGS),
    # lesson 7
    "DenseLayer": _with(check_dense_layer, cases=[((6, 5), [(1, 6, 3, 4)], _BOTTLENECK),
                                                  ((7, 2), [(3, 3, 4, 3), (3, 4, 4, 3)], _BOTTLENECK)], seed=1023),
    "DenseBlock": _with(check_dense_block, cases=[((2, 5, 2), (1, 5, 3, 5), _BOTTLENECK),
                                                  ((4, 3, 3), (2, 3, 3, 3), _BOTTLENECK)], seed=1024),
    "Transition": _with(check_transition, cases=[((6, 3), (1, 6, 5, 7), {}), ((4, 4), (3, 4, 2, 2), {})], seed=1025),
    # lesson 8
    "LogSoftmax": _unary("log-softmax", lambda c, x: c.apply(x, axis=1), lambda x: F.log_softmax(x, 1),
                         [(2, 7, 3)], 1018),
    "CrossEntropy": _with(check_cross_entropy, sizes=((3, 7), (8, 2)), seed=1019),
    "sgd_step": _with(check_sgd_step, settings=((0.01, 0.99, 0.0), (0.3, 0.7, 5e-3)), shape=(4,), steps=4,
                      seed=1026),
    "paper_schedule": _with(check_paper_schedule, runs=(160, 90, 13, 1)),
    # lesson 9
    "long_range_share": _long_range_share,
    # lesson 10
    "Recompute": _with(check_recompute, shape=(2, 5, 3), seed=1028),
    # lesson 13
    "combine_statistics": _with(check_combine_statistics, sizes=(4, 1, 6, 2), channels=3, seed=1031),
    "average_gradients": _with(check_average_gradients, ranks=3, batch=9, seed=1032),
    "ring_allreduce": _with(check_ring_allreduce, settings=((6, 17), (3, 11), (7, 7)), seed=1033),
}
