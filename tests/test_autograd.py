"""The autograd core: Tensor, Function, backward, no_grad and tensor().

Expected gradients are derived by hand (in the comments) or written out
with plain NumPy, never computed by tinydense itself; the tensor ops are
also gradchecked in float64 against finite differences.
"""
import gc
import weakref

import numpy as np
import pytest

import tinydense as td
from tinydense import Function, Tensor, backend


def T(values, device="cpu", grad=True):
    """A float64 tensor on ``device`` (the tests' inputs)."""
    return td.tensor(np.asarray(values, dtype=np.float64), requires_grad=grad, device=device)


def G(x):
    """x's gradient as a NumPy array (it lives on x's device)."""
    return backend.to_numpy(x.grad)


def check(fn, *inputs):
    assert td.gradcheck(fn, inputs, mode="full")


# --- gradient accumulation -----------------------------------------------------------

def test_tensor_used_by_several_ops_gets_the_sum_of_their_gradients(device):
    x = T([1.0, 2.0, 3.0], device)
    # f = sum(x*x) + sum(3x) + x[0]  ->  df/dx = 2x + 3 + [1, 0, 0] = [6, 7, 9]
    f = (x * x).sum() + (3 * x).sum() + x[0]
    f.backward()
    np.testing.assert_allclose(G(x), [6.0, 7.0, 9.0])


def test_same_tensor_on_both_sides_of_an_op(device):
    x = T([2.0, -3.0], device)
    (x * x * x).sum().backward()          # d(x^3)/dx = 3x^2
    np.testing.assert_allclose(G(x), [12.0, 27.0])


def test_diamond_graph_hand_derived(device):
    a, b = T(2.0, device), T(5.0, device)
    h = a * b               # 10
    f = h * h + h / a       # h^2 + b   ->  df/da = 2h*b + 0 = 100,  df/db = 2h*a + 1 = 41
    f.backward()
    assert a.grad == pytest.approx(100.0)
    assert b.grad == pytest.approx(41.0)


def test_leaf_gradients_accumulate_across_backward_calls(device):
    x = T([1.0, -2.0], device)
    (x * 3).sum().backward()
    (x * x).sum().backward()              # adds 2x
    np.testing.assert_allclose(G(x), [3 + 2.0, 3 - 4.0])
    x.zero_grad()
    assert x.grad is None


def test_retain_grad_keeps_an_intermediate_gradient(device):
    x = T([1.0, 2.0], device)
    h = (x * 2).retain_grad()
    (h * h).sum().backward()              # d/dh = 2h = 4x
    np.testing.assert_allclose(G(h), [4.0, 8.0])
    np.testing.assert_allclose(G(x), [8.0, 16.0])


def test_only_requested_inputs_get_gradients(device):
    x, c = T([1.0, 2.0], device), T([3.0, 4.0], device, grad=False)
    (x * c).sum().backward()
    np.testing.assert_allclose(G(x), [3.0, 4.0])
    assert c.grad is None


# --- broadcasting -------------------------------------------------------------------

@pytest.mark.parametrize("op", ["+", "-", "*", "/"])
def test_broadcast_backward_sums_over_stretched_axes(op, rng, device):
    a_np = rng.uniform(1, 2, size=(3, 1))
    b_np = rng.uniform(1, 2, size=(4,))
    g = rng.standard_normal((3, 4))
    a, b = T(a_np, device), T(b_np, device)
    out = {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[op]
    assert out.shape == (3, 4)
    out.backward(g)
    # hand-derived d(out)/da and d(out)/db elementwise, then summed over the stretched axes
    da, db = {"+": (1, 1), "-": (1, -1), "*": (b_np, a_np), "/": (1 / b_np, -a_np / b_np ** 2)}[op]
    np.testing.assert_allclose(G(a), (g * da).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(G(b), (g * db).sum(axis=0))


@pytest.mark.parametrize("shapes", [((2, 1, 3), (4, 1)), ((1,), (2, 3)), ((2, 3), ()), ((5, 1, 1), (1, 2, 1))])
def test_broadcast_gradcheck(shapes, device, rng):
    a = T(rng.uniform(1, 2, size=shapes[0]), device)
    b = T(rng.uniform(1, 2, size=shapes[1]), device)
    check(lambda a, b: a * b + a / b - b, a, b)


def test_python_scalars_keep_the_tensor_dtype(device):
    x = td.tensor(np.ones(3, dtype=np.float32), requires_grad=True, device=device)
    y = 2 * x + 1.5 - x / 3
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(G(x), np.full(3, 2 - 1 / 3), rtol=1e-6)


# --- the other tensor ops -------------------------------------------------------------

def test_pow_scalar_hand_derived(device):
    x = T([1.0, 4.0, 9.0], device)
    (x ** 1.5).sum().backward()           # 1.5 x^0.5
    np.testing.assert_allclose(G(x), [1.5, 3.0, 4.5])
    x.grad = None
    (x ** -1).sum().backward()            # -x^-2
    np.testing.assert_allclose(G(x), [-1.0, -1 / 16, -1 / 81])


def test_pow_and_neg_and_sqrt_gradcheck(device, rng):
    x = T(rng.uniform(0.5, 2, size=(2, 3)), device)
    check(lambda x: -(x ** 3) + x.sqrt() + x ** 2.5, x)


def test_matmul_2d_hand_derived(rng, device):
    A_np, B_np, up = rng.standard_normal((2, 3)), rng.standard_normal((3, 4)), rng.standard_normal((2, 4))
    A, B = T(A_np, device), T(B_np, device)
    (A @ B).backward(up)
    np.testing.assert_allclose(G(A), up @ B_np.T)      # dA = G B^T
    np.testing.assert_allclose(G(B), A_np.T @ up)      # dB = A^T G


@pytest.mark.parametrize("sa,sb", [
    ((3,), (3, 4)),          # vector on the left
    ((2, 3), (3,)),          # vector on the right
    ((3,), (3,)),            # dot product
    ((2, 3, 4), (2, 4, 5)),  # batched
    ((2, 1, 3, 4), (5, 4, 2)),  # batched with broadcasting
    ((2, 3, 4), (4, 2)),     # a matrix applied to a batch
])
def test_matmul_shapes_gradcheck(sa, sb, device, rng):
    a, b = T(rng.standard_normal(sa), device), T(rng.standard_normal(sb), device)
    check(lambda a, b: a @ b, a, b)


def test_matmul_vector_hand_derived(device):
    v, M = T([1.0, 2.0], device), T([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], device)
    (v @ M).sum().backward()             # d/dv = M @ 1 = row sums, d/dM = v 1^T
    np.testing.assert_allclose(G(v), [6.0, 15.0])
    np.testing.assert_allclose(G(M), [[1.0] * 3, [2.0] * 3])


@pytest.mark.parametrize("axis,keepdims", [(None, False), (0, False), (1, True), ((0, 2), False), (-1, True)])
def test_sum_and_mean_gradcheck(axis, keepdims, device, rng):
    x = T(rng.standard_normal((2, 3, 4)), device)
    check(lambda x: x.sum(axis=axis, keepdims=keepdims) * 2 + x.mean(axis=axis, keepdims=keepdims), x)


def test_mean_hand_derived(device):
    x = T(np.arange(6.0).reshape(2, 3), device)
    x.mean(axis=1).backward(np.array([3.0, 6.0]))     # each row's g / 3 copied along the row
    np.testing.assert_allclose(G(x), [[1.0] * 3, [2.0] * 3])


def test_max_sends_the_gradient_to_the_maximum(device):
    x = T([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]], device)
    x.max(axis=1).backward(np.array([10.0, 20.0]))
    np.testing.assert_allclose(G(x), [[0, 10, 0], [20, 0, 0]])


def test_reshape_transpose_gradcheck(device, rng):
    x = T(rng.standard_normal((2, 3, 4)), device)
    check(lambda x: x.reshape(4, 6).T.reshape(3, 2, 4).transpose(2, 0, 1) * T(np.arange(24.0).reshape(4, 3, 2), device, grad=False), x)


def test_transpose_backward_is_the_inverse_permutation(rng, device):
    x = T(rng.standard_normal((2, 3, 4)), device)
    g = rng.standard_normal((4, 2, 3))
    x.transpose(2, 0, 1).backward(g)
    np.testing.assert_allclose(G(x), g.transpose(1, 2, 0))


@pytest.mark.parametrize("index", [
    1, (slice(None), 2), (slice(None, None, -2),), (Ellipsis, slice(1, 3)), (0, slice(None), None),
])
def test_basic_indexing_gradcheck(index, device, rng):
    x = T(rng.standard_normal((3, 4)), device)
    check(lambda x: x[index] * 3, x)


def test_repeated_fancy_indices_add_up(device):
    x = T([10.0, 20.0, 30.0], device)
    x[backend.to_device(np.array([0, 0, 2, 0]), device)].backward(np.array([1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_allclose(G(x), [1 + 2 + 4, 0.0, 3.0])


def test_fancy_and_boolean_indexing_gradcheck(device, rng):
    x = T(rng.standard_normal((4, 3)), device)
    rows = np.array([3, 0, 3, 1])
    mask = np.array([True, False, True])
    if device == "cuda":
        import cupy
        rows, mask = cupy.asarray(rows), cupy.asarray(mask)
    check(lambda x: x[rows].sum() * x[:, mask], x)


def test_exp_log_hand_derived(device):
    x = T([0.5, 1.0, 2.0], device)
    (x.exp() + x.log()).sum().backward()   # e^x + 1/x
    np.testing.assert_allclose(G(x), np.exp([0.5, 1.0, 2.0]) + [2.0, 1.0, 0.5])


def test_elementwise_functions_gradcheck(device, rng):
    x = T(rng.uniform(0.2, 2, size=(2, 3)), device)
    check(lambda x: x.exp() * x.log() + x.sigmoid() - x.tanh(), x)


def test_cast_and_to_keep_gradients_flowing(device):
    x = td.tensor(np.array([1.0, 2.0]), requires_grad=True, device=device)   # float64
    y = x.float() * 3
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float64
    np.testing.assert_allclose(G(x), [3.0, 3.0])
    assert x.to(device) is x and x.double() is x


# --- backward's contract --------------------------------------------------------------

def test_backward_on_a_non_scalar_without_grad_raises():
    x = T([1.0, 2.0])
    with pytest.raises(ValueError, match=r"scalar.*\(2,\)"):
        (x * 2).backward()


def test_backward_grad_of_the_wrong_shape_raises():
    x = T([1.0, 2.0])
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        (x * 2).backward(np.ones(3))


def test_backward_on_a_constant_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        T([1.0], grad=False).sum().backward()


def test_a_deep_chain_backprops_without_recursion_error():
    x = T([1.0, 2.0])
    y = x
    for _ in range(20000):
        y = y * 1.0 + 0.0
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0, 1.0])
    z = x
    for _ in range(20000):        # a deep graph that is simply dropped
        z = z + 1.0
    del z
    gc.collect()


def test_saved_arrays_are_released_after_backward():
    x = T([1.0, 2.0, 3.0])
    h = x * 2                       # h.data is saved by Log for its backward
    y = h.log()
    fn = y._creator
    saved = weakref.ref(fn.a)
    del h
    gc.collect()
    assert saved() is not None      # alive: backward will need it
    y.sum().backward()
    gc.collect()
    assert saved() is None          # freed once backward has used it
    assert set(vars(fn)) == {"released"}


def test_conv_buffers_are_released_after_backward(rng):
    x = T(rng.standard_normal((1, 3, 5, 5)))
    w = T(rng.standard_normal((2, 3, 3, 3)))
    y = td.functional.conv2d(x, w, padding=1)
    fn = y._creator
    # what the conv keeps for backward: its input (outside the fused ops, ops/conv.py) or its own
    # padded copy; the padded copies come from tinydense's pool, which keeps them for the next step
    assert fn.x is x.data or fn.xrows is not None
    y.sum().backward()
    assert fn.released and not {"x", "xrows", "xcols"} & set(vars(fn))


def test_second_backward_through_the_same_graph_raises_before_touching_grads():
    x, w = T([1.0, 2.0]), T([3.0, 4.0])
    h = x.exp()
    h.sum().backward()
    first = x.grad.copy()
    with pytest.raises(RuntimeError, match="already used.*Recompute the forward pass"):
        (h * w).sum().backward()
    np.testing.assert_array_equal(x.grad, first)   # nothing half-accumulated
    assert w.grad is None


# --- no_grad --------------------------------------------------------------------------

def test_no_grad_records_no_graph():
    x = T([1.0, 2.0])
    with td.no_grad():
        assert not td.is_grad_enabled()
        y = (x * 2).exp().sum()
    assert td.is_grad_enabled()
    assert not y.requires_grad and y._creator is None
    with pytest.raises(RuntimeError):
        y.backward()


def test_no_grad_restores_the_mode_after_an_exception():
    with pytest.raises(ZeroDivisionError):
        with td.no_grad():
            1 / 0
    assert td.is_grad_enabled()


def test_no_grad_nests():
    with td.no_grad():
        with td.no_grad():
            pass
        assert not td.is_grad_enabled()
    assert td.is_grad_enabled()


# --- tensor() and Tensor basics -------------------------------------------------------

def test_tensor_dtype_rules():
    assert td.tensor(1.5).dtype == np.float32                    # Python float -> float32
    assert td.tensor([1.0, 2.0]).dtype == np.float32
    assert td.tensor([1, 2]).dtype.kind == "i"                   # Python ints stay integers
    assert td.tensor(np.zeros(2)).dtype == np.float64           # arrays keep their dtype
    assert td.tensor(np.zeros(2, dtype=np.float16)).dtype == np.float16
    assert td.tensor(np.zeros(2, dtype=np.int32)).dtype == np.int32
    assert td.tensor([1, 2], dtype=np.float64).dtype == np.float64


def test_tensor_copies_its_input():
    a = np.array([1.0, 2.0])
    t = td.tensor(a)
    a[0] = 99
    assert t.numpy()[0] == 1.0


def test_item_numpy_detach_requires_grad():
    x = td.tensor([[2.5]], requires_grad=True)
    assert x.item() == 2.5 and isinstance(x.item(), float)
    with pytest.raises(ValueError, match=r"one element.*\(2,\)"):
        td.tensor([1.0, 2.0]).item()
    assert isinstance(x.numpy(), np.ndarray)
    y = x * 2
    d = y.detach()
    assert d.data is y.data and not d.requires_grad and d._creator is None
    z = td.tensor([1.0]).requires_grad_()
    assert z.requires_grad and z.requires_grad_(False) is z and not z.requires_grad
    with pytest.raises(TypeError, match="int64"):
        td.tensor(np.array([1, 2], dtype=np.int64)).requires_grad_()
    with pytest.raises(TypeError, match="floating-point"):
        td.tensor([1, 2], requires_grad=True)


def test_reductions_give_arrays_not_numpy_scalars():
    s = T([1.0, 2.0]).sum()
    assert isinstance(s.data, np.ndarray) and s.shape == ()


def test_comparisons_give_boolean_tensors():
    x = td.tensor([1.0, 3.0])
    assert (x > 2).numpy().tolist() == [False, True]
    assert (x == 1.0).numpy().tolist() == [True, False]


def test_a_custom_function_hand_written_backward():
    class Square(Function):
        def forward(self, a):
            self.a = a
            return a * a

        def backward(self, g):
            return 2 * self.a * g

    x = T([3.0, -1.0])
    y = Square.apply(x)
    assert isinstance(y, Tensor) and y._creator is not None
    y.backward(np.array([1.0, 10.0]))
    np.testing.assert_allclose(x.grad, [6.0, -20.0])
