"""td.ops.override: the public ops run on given Function classes inside the block, the
library's before and after (also after an exception), stubs are left out, bad input
is refused before anything is swapped, and every class name in OPS still exists."""
from __future__ import annotations

import importlib
import types

import numpy as np
import pytest

import tinydense as td
import tinydense.functional as F
from tinydense.autograd import Function
from tinydense.ops.override import OPS, OverrideError, _probe, override


def _library():
    return {name: getattr(importlib.import_module(module), name) for name, module in OPS.items()}


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_listed_class_exists_and_is_what_its_public_function_calls(name):
    """Fails loudly when an op module renames or stops looking up a class listed in OPS."""
    module = importlib.import_module(OPS[name])
    library = getattr(module, name, None)
    assert library is not None, f"{OPS[name]} has no class {name}: update OPS in tinydense/ops/override.py"
    assert isinstance(library, type) and issubclass(library, Function)
    seen = []

    class Spy(library):
        def forward(self, *args, **kwargs):
            seen.append(name)
            return super().forward(*args, **kwargs)

    with override(**{name: Spy}) as report:
        _probe(name)
    assert seen, f"the public function of {name} did not call the class {OPS[name]}.{name} at call time"
    assert report[name] == "yours"
    assert getattr(module, name) is library


def test_inside_the_block_every_op_is_yours_and_the_library_is_back_after():
    before = _library()
    calls = []

    def spy(cls):
        return type(cls.__name__, (cls,), {"forward": lambda self, *a, **k: (calls.append(cls.__name__),
                                                                              cls.forward(self, *a, **k))[1]})

    with override({name: spy(cls) for name, cls in before.items()}) as report:
        assert set(report.values()) == {"yours"}
        calls.clear()
        model = td.models.densenet_bc(10, 4, memory_efficient=False).double()
        x = td.tensor(np.random.default_rng(0).standard_normal((2, 3, 8, 8)))
        F.cross_entropy(model(x), np.array([1, 2])).backward()
    assert {"Conv2d", "BatchNorm", "ReLU", "AvgPool2d", "Cat", "Linear", "CrossEntropy"} <= set(calls)
    assert _library() == before


def test_classes_come_back_after_an_exception_and_nested_blocks_unwind():
    before = _library()

    class MyReLU(before["ReLU"]):
        pass

    with pytest.raises(RuntimeError, match="boom"):
        with override(ReLU=MyReLU):
            with override(Cat=type("Cat", (before["Cat"],), {})):
                assert importlib.import_module(OPS["ReLU"]).ReLU is MyReLU
                raise RuntimeError("boom")
    assert _library() == before


def test_a_stub_is_left_to_the_library():
    class ReLU(Function):
        def forward(self, x):
            return np.maximum(x, 0)

        def backward(self, g):
            raise NotImplementedError("not yet")

    with override(ReLU=ReLU) as report:
        assert report["ReLU"] == "library"
        assert importlib.import_module(OPS["ReLU"]).ReLU is _library()["ReLU"]


def test_a_module_workspace_gives_its_public_function_classes_only():
    workspace = types.ModuleType("my_ops")
    base = _library()["ReLU"]
    workspace.ReLU = type("ReLU", (base,), {"__module__": "my_ops"})
    workspace._Helper = type("_Helper", (Function,), {"__module__": "my_ops"})   # private: ignored
    workspace.Function = Function                                                # imported: ignored
    with override(workspace) as report:
        assert report["ReLU"] == "yours" and list(report.values()).count("yours") == 1


def test_bad_input_is_refused_before_anything_is_swapped():
    before = _library()
    typo = types.ModuleType("my_ops")
    typo.Conv2D = type("Conv2D", (Function,), {"__module__": "my_ops"})
    with pytest.raises(OverrideError, match="Conv2D is not an op .* Conv2d"):
        with override(typo):
            pass
    with pytest.raises(OverrideError, match="ReLU must be a subclass of tinydense.Function"):
        with override(ReLU=lambda x: x):
            pass
    with pytest.raises(TypeError, match="module or a dict"):
        with override([1, 2]):
            pass

    class NoWeight(Function):
        def forward(self, x, bias=None, stride=1, padding=0):
            return x

    with pytest.raises(OverrideError, match="does not take 'weight'"):
        with override(Conv2d=NoWeight):
            pass

    class Broken(before["ReLU"]):
        def backward(self, g):
            return g[:, :1]

    with pytest.raises(OverrideError, match="your ReLU failed on a small test input"):
        with override(ReLU=Broken):
            pass
    assert _library() == before


@pytest.mark.parametrize("name, bad_call", [
    ("BatchNorm", lambda: F.batch_norm(td.tensor(np.ones((2, 3, 2, 2))), np.zeros(4), np.ones(4), training=True)),
    ("Cat", lambda: F.cat([td.tensor(np.ones((2, 3))), td.tensor(np.ones((3, 3)))], axis=1)),
    ("CrossEntropy", lambda: F.cross_entropy(td.tensor(np.ones((2, 3))), np.array([0, 5]))),
    ("Conv2d", lambda: F.conv2d(td.tensor(np.ones((1, 2, 4, 4))), td.tensor(np.ones((3, 5, 3, 3))))),
    ("Conv2d", lambda: F.conv2d(td.tensor(np.ones((1, 2, 4, 4))), td.tensor(np.ones((3, 2, 3, 3))), stride=0)),
    ("Linear", lambda: F.linear(td.tensor(np.ones((2, 3))), td.tensor(np.ones((4, 5))))),
])
def test_the_library_argument_checks_stay_in_front_of_your_class(name, bad_call):
    class Permissive(Function):             # would accept anything
        def forward(self, *args, **kwargs):
            return np.zeros(1)

        def backward(self, g):
            raise NotImplementedError

    module = importlib.import_module(OPS[name])
    saved = getattr(module, name)
    setattr(module, name, Permissive)       # installed directly: the probe would refuse it
    try:
        with pytest.raises(ValueError):
            bad_call()
    finally:
        setattr(module, name, saved)


def test_an_option_your_class_leaves_out_runs_at_its_default_and_is_refused_otherwise():
    """conv2d passes dilation= and groups= to its class; a student's Conv2d written before
    those existed still runs the calls that leave them at 1, and a call that sets them
    says that the student's class does not take them."""
    library = _library()["Conv2d"]
    seen = []

    class TextbookConv(library):          # the lesson's signature: no dilation, no groups
        def forward(self, x, weight, bias=None, stride=1, padding=0):
            seen.append((stride, padding))
            return super().forward(x, weight, bias, stride=stride, padding=padding)

    x = td.tensor(np.random.default_rng(0).standard_normal((1, 2, 5, 5)))
    w = td.tensor(np.random.default_rng(1).standard_normal((2, 1, 3, 3)))
    with override(Conv2d=TextbookConv) as report:
        assert report["Conv2d"] == "yours"
        seen.clear()
        y = F.conv2d(x, td.tensor(np.ones((3, 2, 3, 3))), padding=1, dilation=(1, 1), groups=1)
        assert seen == [(1, 1)] and y.shape == (1, 3, 5, 5)
        with pytest.raises(OverrideError, match="your Conv2d does not take 'groups'"):
            F.conv2d(x, w, groups=2)
        with pytest.raises(OverrideError, match="your Conv2d does not take 'dilation'"):
            F.conv2d(x, td.tensor(np.ones((3, 2, 3, 3))), dilation=2)
    assert _library()["Conv2d"] is library
