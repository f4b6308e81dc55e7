"""torch.nn and torch.nn.functional names: losses against their formulas, Softmax, pad, Lazy
layers, ModuleDict, apply, buffers, ReLU(inplace), DataParallel."""
from collections import OrderedDict

import numpy as np
import pytest

import tinydense as td
import tinydense.nn.functional as F
from tinydense import Tensor, nn


def T(a, grad=False):
    return Tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


Z = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0], [-2.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
Y = np.array([0, 2, 1, 1])


def _log_softmax(z):
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_cross_entropy_loss_matches_pytorchs_definition(reduction, eps):
    logp = _log_softmax(Z)
    # PyTorch: (1 - eps) * (-logp[y]) + eps * mean_k(-logp[k]), then the reduction
    per_sample = (1 - eps) * -logp[np.arange(4), Y] + eps * -logp.mean(axis=1)
    expected = {"mean": per_sample.mean(), "sum": per_sample.sum(), "none": per_sample}[reduction]
    z = T(Z, grad=True)
    loss = nn.CrossEntropyLoss(reduction=reduction, label_smoothing=eps)(z, td.tensor(Y))
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-13)
    # gradient: d/dz = softmax - target distribution ((1 - eps) onehot + eps / K), per sample
    weights = {"mean": np.full(4, 0.25), "sum": np.ones(4), "none": np.array([1.0, -2.0, 0.5, 3.0])}[reduction]
    loss.backward(weights if reduction == "none" else None)
    target = (1 - eps) * np.eye(3)[Y] + eps / 3
    np.testing.assert_allclose(z.grad, (np.exp(logp) - target) * weights[:, None], rtol=1e-12, atol=1e-15)


def test_nll_and_mse_losses():
    logp = _log_softmax(Z)
    assert nn.NLLLoss()(T(logp), td.tensor(Y)).item() == pytest.approx(-logp[np.arange(4), Y].mean(), rel=1e-14)
    np.testing.assert_allclose(F.nll_loss(T(logp), Y, reduction="none").numpy(), -logp[np.arange(4), Y])
    a, b = np.array([[1.0, 2.0], [3.0, 5.0]]), np.array([[0.0, 2.0], [1.0, 1.0]])
    assert nn.MSELoss()(T(a), T(b)).item() == pytest.approx(21 / 4)        # (1 + 0 + 4 + 16) / 4
    assert F.mse_loss(T(a), T(b), reduction="sum").item() == 21.0
    x = T(a, grad=True)
    F.mse_loss(x, T(b)).backward()
    np.testing.assert_allclose(x.grad, 2 * (a - b) / 4)
    with pytest.raises(ValueError, match="reduction must be one of"):
        nn.MSELoss(reduction="avg")
    with pytest.raises(ValueError, match="nll_loss: labels must lie in \\[0, 3\\)"):
        F.nll_loss(T(logp), np.array([0, 1, 2, 3]))
    with pytest.raises(TypeError, match="integer class labels"):
        nn.CrossEntropyLoss(label_smoothing=0.1)(T(Z), T([0.0, 1.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="same shape|they must match"):
        F.mse_loss(T(a), T(b[0]))


def test_softmax_sigmoid_modules_and_pad():
    np.testing.assert_allclose(nn.Softmax(dim=1)(T(Z)).numpy(), np.exp(_log_softmax(Z)), rtol=1e-14)
    np.testing.assert_allclose(nn.LogSoftmax(dim=1)(T(Z)).numpy(), _log_softmax(Z), rtol=1e-14)
    np.testing.assert_allclose(nn.Sigmoid()(T([0.0, 2.0])).numpy(), 1 / (1 + np.exp(-np.array([0.0, 2.0]))))
    np.testing.assert_allclose(nn.Tanh()(T([0.5])).numpy(), np.tanh([0.5]))
    x = np.arange(12.0).reshape(1, 3, 4)
    # (left, right) of the last axis, then (top, bottom) of the one before
    np.testing.assert_array_equal(F.pad(T(x), (1, 2, 0, 1), value=-1.0).numpy(),
                                  np.pad(x, [(0, 0), (0, 1), (1, 2)], constant_values=-1.0))
    with pytest.raises(ValueError, match="only mode='constant'"):
        F.pad(T(x), (1, 1), mode="reflect")


def test_lazy_layers_take_their_size_from_the_first_input_and_become_ordinary_layers():
    td.manual_seed(0)
    conv, bn, lin = nn.LazyConv2d(4, kernel_size=3, padding=1), nn.LazyBatchNorm2d(), nn.LazyLinear(2)
    assert list(conv.parameters()) == [] and repr(conv).startswith("LazyConv2d(4, 3, stride=1, padding=1")
    model = nn.Sequential(conv, bn, nn.ReLU(), nn.Flatten(), lin).double()
    bn.eval()                                   # set before the first forward: kept afterwards
    y = model(td.randn(2, 3, 5, 5, dtype=td.float64))
    assert type(conv) is nn.Conv2d and conv.in_channels == 3 and conv.weight.shape == (4, 3, 3, 3)
    assert type(bn) is nn.BatchNorm2d and bn.num_features == 4 and not bn.training
    assert type(lin) is nn.Linear and lin.in_features == 100 and lin.out_features == 2
    assert y.shape == (2, 2) and conv.weight.dtype == np.float64       # the input's dtype
    assert list(model.state_dict())[:2] == ["0.weight", "0.bias"]
    # the same initialisation as the ordinary layer drawn at that moment
    td.manual_seed(5)
    lazy = nn.LazyLinear(3)
    lazy(td.zeros(1, 4))
    td.manual_seed(5)
    np.testing.assert_array_equal(lazy.weight.data, nn.Linear(4, 3).weight.data)


def test_module_tree_helpers():
    net = nn.Sequential(OrderedDict([("conv", nn.Conv2d(1, 2, 3)), ("relu", nn.ReLU(inplace=True))]))
    net.add_module("head", nn.Sequential(nn.Flatten(), nn.Linear(2, 1)))
    assert [n for n, _ in net.named_modules()] == ["", "conv", "relu", "head", "head.0", "head.1"]
    assert [type(m).__name__ for m in net.children()] == ["Conv2d", "ReLU", "Sequential"]
    assert net.relu.inplace and net.conv.in_channels == 1 and net.conv.out_channels == 2
    visited = []
    net.apply(lambda m: visited.append(type(m).__name__))
    assert visited == ["Conv2d", "ReLU", "Flatten", "Linear", "Sequential", "Sequential"]   # children first
    heads = nn.ModuleDict({"a": nn.Linear(2, 3)})
    heads["b"] = nn.Linear(3, 1)
    assert list(heads) == ["a", "b"] and "b" in heads and len(heads) == 2
    assert [k for k, _ in heads.named_parameters()] == ["a.weight", "a.bias", "b.weight", "b.bias"]
    with pytest.raises(TypeError, match="ModuleDict is not callable"):
        heads(T([1.0]))
    m = nn.Module()
    m.register_buffer("mask", td.ones(3))        # a Tensor: its array is kept
    assert isinstance(m.mask, np.ndarray) and list(m.state_dict()) == ["mask"]
    wrapped = nn.DataParallel(nn.Linear(2, 2))
    assert list(wrapped.state_dict()) == ["module.weight", "module.bias"]
    assert wrapped(td.ones(1, 2)).shape == (1, 2)


def test_nn_functional_is_the_same_functions_under_pytorchs_name():
    import tinydense.functional as tf
    assert F.relu is tf.relu and F.softmax is tf.softmax and F.cross_entropy is tf.cross_entropy
    assert F.relu(T([-1.0, 2.0]), inplace=True).tolist() == [0.0, 2.0]
    assert F.log_softmax(T(Z), dim=1).shape == (4, 3)
    with pytest.raises(TypeError, match="axis=0 and dim=1"):
        F.log_softmax(T(Z), dim=1, axis=0)
