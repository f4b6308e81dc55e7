"""The plain networks' fast path: one seam, three calls.

ResNet (resnet.py), the pre-activation ResNet (preact_resnet.py) and VGG (vgg.py)
are written with their textbook modules (BatchNorm2d, ReLU, ...) and keep them:
the same parameters, buffers and state-dict names. Where a batch norm is followed
by a ReLU, or a residual sum by a ReLU, the models call these functions instead of
the two modules one after the other:

    norm_relu(norm, relu, x)          relu(norm(x))      Conv-BN-ReLU (ResNet, VGG) and
                                                         BN-ReLU-Conv (pre-activation)
    add_relu(relu, a, b)              relu(a + b)        the end of a post-activation block
    sequential(features, x)           features(x), every BatchNorm2d-ReLU pair fused (VGG)

which run the ops of ops/norm_relu.py: the same numbers (1e-10 in float64; float32
differs only in the order of some sums), fewer passes over the data, every pass on
all cores.

The textbook path runs instead, with every module called, whenever the fused op
cannot stand in for it: a forward hook on any of the modules involved
(``tinydense.summary`` sets them), a module that is not exactly BatchNorm2d / ReLU
(a student's replacement), the library's BatchNorm or ReLU op swapped by
``tinydense.ops.override`` (the course's capstone runs entirely on the student's
ops), synchronized batch norm in training (tinydense.distributed: ops/norm.py's batch norm
sends its statistics through ops/stats_reducer.py; BatchNormReLU does not), or an input the
fused op does not take (CuPy arrays, not 4-D). Setting ``FUSE = False``
runs the textbook path everywhere (the tests compare the two; so can a student).
"""
from __future__ import annotations

from ..nn import BatchNorm2d, ReLU, Sequential
from ..ops import activation, norm as norm_ops, stats_reducer
from ..ops.norm import check_batch_norm_args
from ..ops.norm_relu import AddReLU, BatchNormReLU, fits

FUSE = True
_LIBRARY_OPS = (norm_ops.BatchNorm, activation.ReLU)


def _library_ops():
    """Whether fusing is on and the library's own BatchNorm and ReLU ops are in place (not
    swapped by ``override``)."""
    return FUSE and (norm_ops.BatchNorm, activation.ReLU) == _LIBRARY_OPS


def _plain(module, kind):
    return type(module) is kind and not module.has_forward_hooks()


def norm_relu(norm, relu, x):
    """relu(norm(x)) for a BatchNorm2d ``norm`` and a ReLU ``relu``: one op when it can stand in."""
    if not (_plain(norm, BatchNorm2d) and _plain(relu, ReLU) and _library_ops() and norm.weight is not None
            and fits(x.data) and not (norm.training and stats_reducer.synchronized())):
        return relu(norm(x))
    check_batch_norm_args("batch_norm", x.shape, norm.running_mean, norm.running_var, norm.weight, norm.bias,
                          norm.training, norm.momentum)
    out = BatchNormReLU.apply(x, norm.weight, norm.bias, running_mean=norm.running_mean,
                              running_var=norm.running_var, training=norm.training, momentum=norm.momentum,
                              eps=norm.eps)
    norm.count_batch()
    return out


def add_relu(relu, a, b):
    """relu(a + b) for a ReLU ``relu``: one op, one gradient for both, when it can stand in."""
    if not (_plain(relu, ReLU) and _library_ops() and fits(a.data) and fits(b.data)
            and a.shape == b.shape and a.dtype == b.dtype):
        return relu(a + b)
    return AddReLU.apply(a, b)


def sequential(layers, x):
    """layers(x) for a Sequential, each BatchNorm2d directly followed by a ReLU run by ``norm_relu``."""
    if not _library_ops() or type(layers) is not Sequential or layers.has_forward_hooks():
        return layers(x)
    modules = list(layers.children())
    i = 0
    while i < len(modules):
        if i + 1 < len(modules) and type(modules[i]) is BatchNorm2d and type(modules[i + 1]) is ReLU:
            x = norm_relu(modules[i], modules[i + 1], x)
            i += 2
        else:
            x = modules[i](x)
            i += 1
    return x
