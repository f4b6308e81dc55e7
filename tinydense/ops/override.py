"""Run tinydense on your own implementations of its ops (the course's capstone).

    import my_ops                                   # your Function subclasses
    with td.ops.override(my_ops) as report:
        print(report)                               # which ops are yours, which the library's
        loss = F.cross_entropy(model(x), y)         # every implemented op is yours here
        loss.backward()

Each public op function (``conv2d``, ``batch_norm``, ...) validates its
arguments and then calls a ``Function`` class that it looks up in its module
at call time. ``override`` swaps those classes, listed in ``OPS`` below, for
yours while the block runs and puts the library's back when it ends, also
after an exception. So your ops run behind the library's own argument checks.

An op counts as yours when your class runs forward and backward on a small
input without ``NotImplementedError`` (a stub that still raises it is left
out, and the library's op is used). Any other error on that input stops the
``with`` before anything runs: fix the op (its checker in lessons/checks/, one module per lesson,
says what is wrong) or remove it from the file.

Only the plain ops are swapped: the fused ops of the memory-efficient
DenseNet (ops/bn_relu.py, ops/dense_block.py) keep the library's code, so
build models with ``memory_efficient=False`` to run entirely on yours.
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import types

import numpy as np

from ..autograd import Function, Tensor
from .activation import relu
from .conv import conv2d
from .linear import linear
from .loss import cross_entropy, log_softmax
from .norm import batch_norm
from .pool import avg_pool2d, max_pool2d
from .shape import cat

# class name -> the module whose public function looks it up at call time
OPS = {
    "Conv2d": "tinydense.ops.conv",
    "BatchNorm": "tinydense.ops.norm",
    "ReLU": "tinydense.ops.activation",
    "MaxPool2d": "tinydense.ops.pool",
    "AvgPool2d": "tinydense.ops.pool",
    "Cat": "tinydense.ops.shape",
    "Linear": "tinydense.ops.linear",
    "LogSoftmax": "tinydense.ops.loss",
    "CrossEntropy": "tinydense.ops.loss",
}


class OverrideError(ValueError):
    """The given classes cannot replace the library's ops (the message says why)."""


def _probe(name):
    """Run the public function that uses class ``name`` forward and backward on a small
    float64 input (random upstream gradient)."""
    r = np.random.default_rng(0)
    leaves = []

    def t(*shape):
        leaves.append(Tensor(r.standard_normal(shape), requires_grad=True))
        return leaves[-1]

    x4 = t(2, 3, 5, 5)
    calls = {
        "Conv2d": lambda: conv2d(x4, t(4, 3, 3, 3), t(4), stride=1, padding=1),
        "BatchNorm": lambda: batch_norm(x4, np.zeros(3), np.ones(3), t(3), t(3), training=True),
        "ReLU": lambda: relu(x4),
        "MaxPool2d": lambda: max_pool2d(x4, 2, 2),
        "AvgPool2d": lambda: avg_pool2d(x4, 2, 2),
        "Cat": lambda: cat([x4, t(2, 1, 5, 5)], axis=1),
        "Linear": lambda: linear(t(2, 3), t(4, 3), t(4)),
        "LogSoftmax": lambda: log_softmax(t(2, 5), axis=1),
        "CrossEntropy": lambda: cross_entropy(t(2, 5), np.array([1, 4])),
    }
    out = calls[name]()
    out.backward(r.standard_normal(out.shape))
    for leaf in leaves:
        if leaf.grad is not None and np.shape(leaf.grad) != leaf.shape:
            raise ValueError(f"backward gave an input of shape {leaf.shape} a gradient of shape "
                             f"{np.shape(leaf.grad)}")


def _given_classes(ops, classes):
    """name -> class from a module (its own public Function subclasses), a dict, and keywords."""
    given = {}
    if isinstance(ops, types.ModuleType):
        for attr, value in vars(ops).items():
            if (not attr.startswith("_") and inspect.isclass(value) and issubclass(value, Function)
                    and value.__module__ == ops.__name__):
                given[attr] = value
    elif isinstance(ops, dict):
        given.update(ops)
    elif ops is not None:
        raise TypeError(f"override expects a module or a dict of Function classes, got {type(ops).__name__}")
    given.update(classes)
    unknown = sorted(set(given) - set(OPS))
    if unknown:
        raise OverrideError(f"override: {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not an "
                            f"op tinydense can take from you; the names are: {', '.join(OPS)} "
                            f"(spelled exactly so; prefix a helper class's name with _ to keep it out)")
    for name, cls in given.items():
        if not (inspect.isclass(cls) and issubclass(cls, Function)):
            raise OverrideError(f"override: {name} must be a subclass of tinydense.Function, "
                                f"got {cls!r}")
    return given


def _is_default(value, default):
    """True when ``value`` is the library's default (an int default also matches a pair of it:
    conv2d passes ``dilation=(1, 1)`` as readily as ``dilation=1``)."""
    if isinstance(value, (tuple, list)):
        return all(_is_default(v, default) for v in value)
    return value == default


def _fit_signature(name, cls, library):
    """``cls`` ready to stand in for the library's class.

    The public function passes every option of the library's forward. Yours must take
    each option that has no default; one that has a default (conv2d's ``dilation`` and
    ``groups``, say, which a DenseNet never changes) may be left out: calls that pass the
    default then run your class without it, and a call that asks for another value is
    refused with an error naming it, rather than silently computing something else."""
    mine = inspect.signature(cls.forward).parameters
    if any(p.kind is p.VAR_KEYWORD for p in mine.values()):
        return cls
    positional = any(p.kind is p.VAR_POSITIONAL for p in mine.values())
    left_out = {}
    for param in list(inspect.signature(library.forward).parameters.values())[1:]:
        if param.kind is param.VAR_POSITIONAL:
            ok = positional
        elif param.kind is param.VAR_KEYWORD:
            continue
        else:
            ok = param.name in mine or (positional and param.kind is param.POSITIONAL_ONLY)
        if ok:
            continue
        if param.default is param.empty or param.kind is param.VAR_POSITIONAL:
            raise OverrideError(f"override: your {name}.forward{inspect.signature(cls.forward)} does not take "
                                f"'{param.name}', which tinydense's {name}.forward"
                                f"{inspect.signature(library.forward)} takes and the public function passes")
        left_out[param.name] = param.default
    if not left_out:
        return cls
    forward = cls.forward

    def forward_with_defaults(self, *arrays, **options):
        for key, default in left_out.items():
            if key in options and not _is_default(options.pop(key), default):
                raise OverrideError(f"your {name} does not take '{key}' (its forward has no such "
                                    f"parameter), and this call asks for {key}={default!r} to be "
                                    f"something else; add the parameter to your {name}.forward, or run "
                                    f"this model outside td.ops.override")
        return forward(self, *arrays, **options)

    return type(cls.__name__, (cls,), {"forward": forward_with_defaults, "__module__": cls.__module__,
                                       "__doc__": cls.__doc__})


@contextlib.contextmanager
def override(ops=None, /, **classes):
    """Within the block, tinydense's public ops use your ``Function`` classes.

    ops: a module (its public ``Function`` subclasses are taken by name) or a dict
    name -> class; keywords add or replace single classes (``override(ReLU=MyReLU)``).
    Names must be among ``OPS``. Yields a dict name -> "yours" or "library"
    (not implemented yet). The library's classes are restored on exit."""
    given = _given_classes(ops, classes)
    modules = {name: importlib.import_module(OPS[name]) for name in OPS}
    saved = {name: getattr(modules[name], name) for name in OPS}
    report = {name: "library" for name in OPS}
    try:
        for name, cls in given.items():
            setattr(modules[name], name, _fit_signature(name, cls, saved[name]))
            try:
                _probe(name)
            except NotImplementedError:                # a stub: the library keeps this op
                setattr(modules[name], name, saved[name])
                continue
            except Exception as e:
                raise OverrideError(f"override: your {name} failed on a small test input: "
                                    f"{type(e).__name__}: {e}. Run its checker (lessons/checks/, its lesson's module) "
                                    f"to see what is wrong, or leave it as the stub.") from e
            report[name] = "yours"
        yield report
    finally:
        for name, cls in saved.items():
            setattr(modules[name], name, cls)
