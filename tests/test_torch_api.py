"""`import tinydense as torch`: the top-level functions and the Tensor methods PyTorch code
calls, against PyTorch's documented semantics (values derived by hand or with NumPy)."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinydense as torch
from tinydense import Tensor
from tinydense.tools.gradcheck import gradcheck


def T(a, grad=False):
    return Tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


# --- creation ----------------------------------------------------------------------------------
def test_creation_functions_give_pytorchs_values_and_dtypes():
    assert torch.zeros(2, 3).shape == (2, 3) and torch.zeros((2, 3)).dtype == np.float32
    assert torch.ones(2, dtype=torch.int64).tolist() == [1, 1]
    assert torch.full((2,), 7).dtype == np.int64 and torch.full((2,), 0.5).dtype == np.float32
    assert torch.full((1,), True).dtype == np.bool_
    assert torch.empty(3).tolist() == [0.0, 0.0, 0.0]
    assert torch.eye(2, 3).tolist() == [[1, 0, 0], [0, 1, 0]]
    assert torch.arange(5).tolist() == [0, 1, 2, 3, 4] and torch.arange(5).dtype == np.int64
    assert torch.arange(1, 2, 0.25).tolist() == [1.0, 1.25, 1.5, 1.75] and torch.arange(1.0, 2).dtype == np.float32
    assert torch.linspace(0, 1, 5).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    x = torch.tensor([[1.0, 2.0]])
    assert torch.zeros_like(x).tolist() == [[0, 0]] and torch.ones_like(x).dtype == np.float32
    assert torch.full_like(x, 3).tolist() == [[3, 3]] and torch.empty_like(x).shape == (1, 2)
    a = np.arange(3.0)
    assert torch.from_numpy(a).data is a and torch.as_tensor(x) is x
    assert torch.as_tensor([1.5]).dtype == np.float32 and torch.tensor([1, 2]).dtype == np.int64
    assert torch.float is np.float32 and torch.long is np.int64 and torch.int is np.int32 and torch.double is np.float64
    assert torch.is_tensor(x) and not torch.is_tensor(a) and torch.numel(torch.zeros(2, 5)) == 10
    assert torch.device("cpu") == "cpu" and torch.device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="non-negative integers"):
        torch.zeros(2, -1)
    with pytest.raises(ValueError, match="step must be non-zero"):
        torch.arange(0, 3, 0)


def test_random_functions_repeat_after_manual_seed():
    torch.manual_seed(3)
    a = (torch.rand(4), torch.randn(2, 2), torch.randint(0, 10, (5,)), torch.randperm(6))
    torch.manual_seed(3)
    b = (torch.rand(4), torch.randn(2, 2), torch.randint(10, (5,)), torch.randperm(6))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.numpy(), y.numpy())
    assert a[0].dtype == np.float32 and 0 <= a[0].numpy().min() and a[0].numpy().max() < 1
    assert a[2].dtype == np.int64 and sorted(a[3].tolist()) == list(range(6))
    assert torch.randn(2, requires_grad=True).requires_grad and torch.randn_like(a[1]).shape == (2, 2)
    with pytest.raises(ValueError, match="low < high"):
        torch.randint(5, 5, (2,))


# --- math: dim / keepdim against NumPy (hypothesis) ---------------------------------------------
@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), data=st.data(), seed=st.integers(0, 2 ** 16))
def test_dim_and_keepdim_agree_with_numpy(shape, data, seed):
    x_np = np.random.default_rng(seed).standard_normal(shape)
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    keepdim = data.draw(st.booleans())
    x = T(x_np)
    for name in ("sum", "mean"):
        expected = getattr(np, name)(x_np, axis=dim, keepdims=keepdim)
        np.testing.assert_allclose(getattr(x, name)(dim=dim, keepdim=keepdim).numpy(), expected, rtol=1e-12)
        np.testing.assert_allclose(getattr(torch, name)(x, dim, keepdim).numpy(), expected, rtol=1e-12)
        np.testing.assert_allclose(getattr(x, name)(axis=dim, keepdims=keepdim).numpy(), expected, rtol=1e-12)
    for name, arg in (("max", np.argmax), ("min", np.argmin)):
        values, indices = getattr(x, name)(dim, keepdim=keepdim)
        np.testing.assert_array_equal(values.numpy(), getattr(np, name)(x_np, axis=dim, keepdims=keepdim))
        np.testing.assert_array_equal(indices.numpy(), arg(x_np, axis=dim, keepdims=keepdim))
        assert indices.dtype == np.int64
        np.testing.assert_array_equal(getattr(torch, "arg" + name)(x, dim, keepdim).numpy(),
                                      arg(x_np, axis=dim, keepdims=keepdim))
    assert x.size(dim) == shape[dim] and x.size() == tuple(shape) and x.dim() == len(shape)


def test_max_with_dim_sends_the_gradient_to_the_first_maximum_only():
    x = T([[1.0, 3.0, 3.0], [2.0, 0.0, -1.0]], grad=True)
    values, indices = x.max(1)                  # PyTorch: (values, indices); ties: one index
    assert values.tolist() == [3.0, 2.0] and indices.tolist() == [1, 0]
    values.sum().backward()
    assert x.grad.tolist() == [[0, 1, 0], [1, 0, 0]]
    y = T([[1.0, 3.0, 3.0]], grad=True)
    y.max(axis=1).sum().backward()             # NumPy's axis=: the values only, ties share
    assert y.grad.tolist() == [[0, 0.5, 0.5]]
    assert float(torch.max(T([1.0, 5.0]))) == 5.0 and float(torch.min(T([1.0, 5.0]))) == 1.0
    assert torch.max(T([1.0, 5.0]), T([3.0, 2.0])).tolist() == [3.0, 5.0]
    assert torch.argmax(T([[1.0, 7.0], [9.0, 0.0]])).item() == 2           # of the flattened tensor


def test_cat_stack_flatten_follow_pytorchs_defaults():
    a, b = T(np.ones((2, 3))), T(np.zeros((2, 3)))
    assert torch.cat([a, b]).shape == (4, 3) and torch.cat((a, b), dim=1).shape == (2, 6)
    assert torch.cat([a, b], 1).shape == (2, 6)
    s = torch.stack([a, b], dim=1)
    np.testing.assert_array_equal(s.numpy(), np.stack([np.ones((2, 3)), np.zeros((2, 3))], axis=1))
    assert torch.flatten(T(np.ones((2, 3, 4)))).shape == (24,) and torch.flatten(T(np.ones((2, 3, 4))), 1).shape == (2, 12)
    with pytest.raises(ValueError, match="same shape"):
        torch.stack([a, T(np.ones(3))])
    x, y = T(np.arange(6.0).reshape(2, 3), grad=True), T(np.ones((2, 3)), grad=True)
    torch.stack([x, y], dim=0)[0].sum().backward()
    assert x.grad.tolist() == [[1, 1, 1], [1, 1, 1]] and y.grad.tolist() == [[0, 0, 0], [0, 0, 0]]


def test_softmax_topk_where_clamp_values():
    z = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    expected = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(torch.softmax(T(z), dim=1).numpy(), expected, rtol=1e-14)
    np.testing.assert_allclose(T(z).softmax(1).numpy(), expected, rtol=1e-14)
    np.testing.assert_allclose(torch.log_softmax(T(z), dim=1).numpy(), np.log(expected), rtol=1e-14)
    with pytest.raises(TypeError, match="needs dim"):
        torch.softmax(T(z))
    values, indices = torch.topk(T([3.0, 1.0, 4.0, 1.5, 9.0]), 3)
    assert values.tolist() == [9.0, 4.0, 3.0] and indices.tolist() == [4, 2, 0]
    assert T([3.0, 1.0, 4.0]).topk(2, largest=False).indices.tolist() == [1, 0]
    assert torch.where(T([1.0, -1.0]) > 0, T([5.0, 5.0]), 0.0).tolist() == [5.0, 0.0]
    assert torch.clamp(T([-2.0, 0.5, 3.0]), min=0, max=1).tolist() == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="k must be an integer in"):
        torch.topk(T([1.0, 2.0]), 3)
    # gradients: clamp passes g where lo <= x <= hi (PyTorch's rule), where routes it
    x = T([-2.0, 0.5, 3.0], grad=True)
    (torch.clamp(x, -1, 1) * T([1.0, 2.0, 3.0])).sum().backward()
    assert x.grad.tolist() == [0.0, 2.0, 0.0]
    a, b = T([1.0, 2.0], grad=True), T([3.0], grad=True)
    torch.where(T([1.0, -1.0]) > 0, a, b).sum().backward()
    assert a.grad.tolist() == [1.0, 0.0] and b.grad.tolist() == [1.0]


def test_matmul_exp_log_sqrt_abs():
    a = T([[1.0, 2.0], [3.0, 4.0]])
    x = T([-2.0, 3.0], grad=True)
    (abs(x) * T([1.0, 10.0])).sum().backward()          # d|x|/dx = sign(x)
    assert torch.abs(x).tolist() == [2.0, 3.0] and x.grad.tolist() == [-1.0, 10.0]
    np.testing.assert_allclose(torch.matmul(a, a).numpy(), a.numpy() @ a.numpy())
    np.testing.assert_allclose(torch.exp(torch.log(a)).numpy(), a.numpy(), rtol=1e-14)
    np.testing.assert_allclose(torch.sqrt(a).numpy(), np.sqrt(a.numpy()), rtol=1e-14)


# --- Tensor methods ------------------------------------------------------------------------------
def test_views_and_their_gradients():
    x = T(np.arange(6.0).reshape(2, 3), grad=True)
    assert x.view(-1).shape == (6,) and x.view(3, 2).shape == (3, 2) and x.numel() == 6 and x.size == 6
    assert x.permute(1, 0).shape == (3, 2) and x.unsqueeze(0).shape == (1, 2, 3) and x.unsqueeze(-1).shape == (2, 3, 1)
    assert x.unsqueeze(1).squeeze().shape == (2, 3) and x.unsqueeze(1).squeeze(1).shape == (2, 3)
    assert x.squeeze(0).shape == (2, 3)                    # a dimension of length 2 stays (PyTorch)
    assert x.contiguous() is x
    y = T(np.ones((4, 2, 3))).transpose(1, 2)              # PyTorch's two-dim swap
    assert y.shape == (4, 3, 2) and x.t().shape == (3, 2)
    col = T([[1.0], [2.0]], grad=True)
    col.expand(2, 3).sum().backward()                       # broadcast: the gradient sums back
    assert col.grad.tolist() == [[3.0], [3.0]]
    assert col.expand(-1, 4).shape == (2, 4)
    c = x.clone()
    assert c.data is not x.data
    (c * 2).sum().backward()
    assert x.grad.tolist() == [[2.0] * 3] * 2
    with pytest.raises(ValueError, match="cannot be expanded"):
        col.expand(3, 3)


def test_dtype_methods_comparisons_and_one_element_conversions():
    x = T([1.7, -2.2])
    assert x.float().dtype == np.float32 and x.double().dtype == np.float64 and x.half().dtype == np.float16
    assert x.long().tolist() == [1, -2] and x.int().dtype == np.int32 and x.bool().tolist() == [True, True]
    assert not x.long().requires_grad
    y = T([1.7, 0.0])
    assert x.eq(y).tolist() == [True, False] and x.ne(y).tolist() == [False, True]
    assert x.lt(y).tolist() == [False, True] and x.ge(y).tolist() == [True, False]
    assert x.gt(0).tolist() == [True, False] and x.le(1.7).tolist() == [True, True]
    assert x.eq(y).sum().item() == 1                    # predicted.eq(targets).sum().item()
    one = T([[2.5]])
    assert float(one) == 2.5 and int(one) == 2 and bool(T([0.0])) is False
    assert "%.2f" % T([3.25]).sum() == "3.25"             # '%.3f' % (loss_sum / n) in training loops
    with pytest.raises(ValueError, match="needs exactly one element, got shape \\(2,\\)"):
        float(x)
    with pytest.raises(ValueError, match="one element"):
        bool(x)
    assert x.to(torch.float32).dtype == np.float32 and x.to(T([1], grad=False).float()).dtype == np.float32


def test_in_place_ops_where_allowed_and_refused():
    w = T(np.ones(3), grad=True)
    with torch.no_grad():                                 # an initialiser or an optimizer
        w.mul_(2).add_(1, alpha=0.5).sub_(T([0.5, 0.5, 0.5]))
    assert w.tolist() == [2.0, 2.0, 2.0] and w.requires_grad
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        w.zero_()
    plain = T(np.arange(3.0))                            # needs no gradient: always allowed
    data = plain.data
    plain.fill_(7).div_(7)
    assert plain.tolist() == [1.0, 1.0, 1.0] and plain.data is data
    plain.copy_(np.array([1.0, 2.0, 3.0]))
    assert plain.tolist() == [1.0, 2.0, 3.0] and plain.clamp_(max=2).tolist() == [1.0, 2.0, 2.0]
    y = w * 3                                            # part of a graph not yet backpropagated
    with pytest.raises(RuntimeError, match="computed by Mul.*corrupt"):
        with torch.no_grad():
            y.zero_()
    torch.manual_seed(1)
    a = T(np.zeros(4)).normal_(1.0, 2.0).numpy()
    torch.manual_seed(1)
    b = T(np.zeros(4)).normal_(1.0, 2.0).numpy()
    np.testing.assert_array_equal(a, b)
    u = T(np.zeros(1000)).uniform_(-1, 3).numpy()
    assert u.min() >= -1 and u.max() < 3 and abs(u.mean() - 1) < 0.15
    assert T(np.ones(2)).zero_().tolist() == [0.0, 0.0]


def test_grad_modes_nest():
    x = T([1.0], grad=True)
    with torch.no_grad():
        assert not (x * 2).requires_grad
        with torch.enable_grad():
            assert (x * 2).requires_grad and torch.is_grad_enabled()
        assert not torch.is_grad_enabled()
    assert torch.is_grad_enabled()


# --- torch.autograd.Function written PyTorch's way ----------------------------------------------
class Cube(torch.autograd.Function):
    """y = x^3 * s, s a constant; written as in PyTorch's tutorial."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.save_for_backward(x)
        ctx.scale = scale
        return x * x * x * scale

    @staticmethod
    def backward(ctx, grad_output):
        x, = ctx.saved_tensors
        return grad_output * 3 * x * x * ctx.scale, None


def test_pytorch_style_function_runs_and_passes_gradcheck():
    x = T([1.0, -2.0], grad=True)
    y = Cube.apply(x, 2.0)
    assert y.tolist() == [2.0, -16.0] and y.requires_grad and not y.is_leaf
    y.sum().backward()
    assert x.grad.tolist() == [6.0, 24.0]              # 3 x^2 * 2
    assert gradcheck(lambda a: Cube.apply(a, 0.5), [np.random.default_rng(0).standard_normal((3, 2))])
    with torch.no_grad():
        assert not Cube.apply(x, 1.0).requires_grad

    class TwoGrads(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g, g

    with pytest.raises(TypeError, match="returned 2 gradients for 1 inputs"):
        TwoGrads.apply(T([1.0], grad=True)).sum().backward()
    assert torch.autograd.Variable(x) is x              # old scripts' wrapper


# --- save / load ---------------------------------------------------------------------------------
def test_save_and_load_the_checkpoint_dict_scripts_write(tmp_path):
    net = torch.nn.Linear(3, 2)
    state = {"net": net.state_dict(), "acc": 51.25, "epoch": 3, "history": [1, 2.5], "best": None}
    torch.save(state, tmp_path / "ckpt.pth")            # a .pth name, tinydense's pickle-free format
    back = torch.load(tmp_path / "ckpt.pth", map_location="cpu")
    assert back["acc"] == 51.25 and back["epoch"] == 3 and back["history"] == [1, 2.5] and back["best"] is None
    np.testing.assert_array_equal(back["net"]["weight"], net.weight.data)
    other = torch.nn.Linear(3, 2)
    other.load_state_dict(back["net"])
    np.testing.assert_array_equal(other.weight.data, net.weight.data)
    with pytest.raises(TypeError, match="cannot store"):
        torch.save({"net": net}, tmp_path / "bad.pth")


def test_load_reads_a_pytorch_pth_through_the_restricted_reader():
    from pathlib import Path
    from tinydense.pth import load_pth
    path = Path(__file__).resolve().parent / "fixtures" / "tiny_densenet.pth"
    a, b = torch.load(path), load_pth(path)
    assert list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)
    legacy = path.with_name("tiny_densenet_legacy.pth")
    assert list(torch.load(legacy)) == list(load_pth(legacy))


def test_names_that_shadow_builtins_stay_out_of_star_import():
    assert "max" not in torch.__all__ and "float" not in torch.__all__ and "zeros" in torch.__all__
    assert math.isclose(float("1.5"), 1.5)
