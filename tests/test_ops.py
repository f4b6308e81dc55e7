"""Every op besides conv2d: forward against references written here (naive
loops, hand-computed statistics), backward against finite differences
(float64, mode="full", small shapes)."""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from conftest import DEVICES

import tinydense as td
import tinydense.functional as F
from tinydense import backend


def T(a, device, grad=True):
    return td.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad, device=device)


def on(device, a):
    """A raw array on ``device`` (running statistics are raw arrays)."""
    return backend.to_device(np.array(a, dtype=np.float64), device)   # a copy


def check(fn, *inputs):
    assert td.gradcheck(fn, inputs, mode="full")


def distinct(rng, shape):
    """Values in [-1, 1), no two closer than 1/size: max pooling has no ties
    (finite differences with eps=1e-6 never swap the winner)."""
    n = int(np.prod(shape))
    return (rng.permutation(n) / n * 2 - 1).reshape(shape)


def away_from_zero(rng, shape):
    """Values with |v| in [0.1, 1]: ReLU's kink at 0 stays out of reach of eps."""
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.1, 1.0, size=shape)


# --- batch norm ------------------------------------------------------------------------

def bn_reference(x, weight, bias, eps=1e-5):
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    xhat = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    return xhat * weight.reshape(shape) + bias.reshape(shape)


@pytest.mark.parametrize("shape", [(4, 3, 2, 5), (6, 3)])
def test_batch_norm_training_forward_and_running_stats(shape, device, rng):
    x_np = rng.standard_normal(shape) * 3 + 1
    w_np, b_np = rng.uniform(0.5, 2, 3), rng.standard_normal(3)
    rm0, rv0 = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    rm, rv = on(device, rm0), on(device, rv0)
    y = F.batch_norm(T(x_np, device), rm, rv, T(w_np, device), T(b_np, device), training=True)
    np.testing.assert_allclose(y.numpy(), bn_reference(x_np, w_np, b_np), atol=1e-10)
    axes = (0,) if len(shape) == 2 else (0, 2, 3)
    # PyTorch's rule: momentum 0.1, the running variance is the unbiased (M - 1) estimate
    np.testing.assert_allclose(backend.to_numpy(rm), 0.9 * rm0 + 0.1 * x_np.mean(axis=axes))
    np.testing.assert_allclose(backend.to_numpy(rv), 0.9 * rv0 + 0.1 * x_np.var(axis=axes, ddof=1))


def test_batch_norm_hand_computed_statistics(device):
    # channel 0 holds 1, 2, 3, 6 (mean 3, biased var 3.5, unbiased var 14/3)
    x = T([[1.0], [2.0], [3.0], [6.0]], device)
    rm, rv = on(device, [0.0]), on(device, [1.0])
    y = F.batch_norm(x, rm, rv, training=True, eps=0.0)
    np.testing.assert_allclose(y.numpy().ravel(), (np.array([1, 2, 3, 6]) - 3) / np.sqrt(3.5))
    np.testing.assert_allclose(backend.to_numpy(rm), [0.3])
    np.testing.assert_allclose(backend.to_numpy(rv), [0.9 + 0.1 * 14 / 3])


@pytest.mark.parametrize("shape", [(2, 3, 3, 2), (5, 3)])
def test_batch_norm_eval_uses_running_stats(shape, device, rng):
    x_np = rng.standard_normal(shape)
    rm0, rv0 = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    rm, rv = on(device, rm0), on(device, rv0)
    w_np, b_np = rng.uniform(0.5, 2, 3), rng.standard_normal(3)
    y = F.batch_norm(T(x_np, device), rm, rv, T(w_np, device), T(b_np, device), training=False)
    s = (1, -1) + (1,) * (len(shape) - 2)
    expected = (x_np - rm0.reshape(s)) / np.sqrt(rv0.reshape(s) + 1e-5) * w_np.reshape(s) + b_np.reshape(s)
    np.testing.assert_allclose(y.numpy(), expected, atol=1e-12)
    np.testing.assert_array_equal(backend.to_numpy(rm), rm0)       # eval leaves them alone
    np.testing.assert_array_equal(backend.to_numpy(rv), rv0)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(3, 2, 3, 2), (1, 2, 3, 3), (5, 3)], ids=["4d", "4d-batch1", "2d"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
def test_batch_norm_gradcheck(training, shape, affine, device, rng):
    C = shape[1]
    x = T(rng.standard_normal(shape), device)
    rm, rv = on(device, rng.standard_normal(C)), on(device, rng.uniform(0.5, 2, C))
    params = [T(rng.uniform(0.5, 2, C), device), T(rng.standard_normal(C), device)] if affine else []
    check(lambda x, *p: F.batch_norm(x, rm, rv, *p, training=training), x, *params)


# --- relu ------------------------------------------------------------------------------

def test_relu(device, rng):
    x_np = away_from_zero(rng, (2, 3, 4))
    y = F.relu(T(x_np, device))
    np.testing.assert_array_equal(y.numpy(), np.maximum(x_np, 0))
    check(F.relu, T(x_np, device))
    check(lambda x: x.relu() * 2, T(x_np, device))


# --- pooling ---------------------------------------------------------------------------

def naive_pool(x, k, s, p, kind):
    """Max pooling pads with -inf; average pooling pads with zeros and divides
    by k*k, the padded zeros included (PyTorch's count_include_pad=True)."""
    N, C, H, W = x.shape
    fill = -np.inf if kind == "max" else 0.0
    xpad = np.full((N, C, H + 2 * p, W + 2 * p), fill)
    xpad[:, :, p:p + H, p:p + W] = x
    OH, OW = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    y = np.zeros((N, C, OH, OW))
    for i in range(OH):
        for j in range(OW):
            window = xpad[:, :, i * s:i * s + k, j * s:j * s + k]
            y[:, :, i, j] = window.max(axis=(2, 3)) if kind == "max" else window.sum(axis=(2, 3)) / (k * k)
    return y


POOL_CASES = [  # N, C, H, W, kernel, stride, padding
    (1, 2, 4, 4, 2, 2, 0),
    (2, 3, 5, 7, 3, 2, 1),
    (2, 1, 6, 5, 3, 1, 1),
    (1, 2, 7, 7, 3, 3, 0),
    (2, 2, 8, 6, 2, 2, 0),
]


@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_forward_matches_naive_loop(case, kind, device, rng):
    N, C, H, W, k, s, p = case
    x_np = distinct(rng, (N, C, H, W))
    pool = F.max_pool2d if kind == "max" else F.avg_pool2d
    y = pool(T(x_np, device), k, stride=s, padding=p)
    np.testing.assert_allclose(y.numpy(), naive_pool(x_np, k, s, p, kind), atol=1e-12)


@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_gradcheck(case, kind, device, rng):
    N, C, H, W, k, s, p = case
    pool = F.max_pool2d if kind == "max" else F.avg_pool2d
    check(lambda x: pool(x, k, stride=s, padding=p), T(distinct(rng, (N, C, H, W)), device))


def test_avg_pool_counts_padding_in_the_divisor(device):
    y = F.avg_pool2d(T(np.ones((1, 1, 2, 2)), device), 2, stride=1, padding=1).numpy()[0, 0]
    # the corner window holds one real 1 and three padded zeros
    np.testing.assert_allclose(y, [[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]])


def test_max_pool_gradient_goes_to_the_winner(device):
    x = T([[[[1.0, 4.0], [3.0, 2.0]]]], device)
    F.max_pool2d(x, 2).backward(np.array([[[[5.0]]]]))
    np.testing.assert_array_equal(backend.to_numpy(x.grad), [[[[0.0, 5.0], [0.0, 0.0]]]])


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=25, deadline=None)
@given(N=st.integers(1, 2), C=st.integers(1, 3), H=st.integers(1, 9), W=st.integers(1, 9),
       k=st.integers(1, 4), s=st.integers(1, 3), p=st.integers(0, 2),
       kind=st.sampled_from(["max", "avg"]), seed=st.integers(0, 2 ** 16))
def test_pool_forward_random_shapes(N, C, H, W, k, s, p, kind, seed, device):
    assume(p <= k // 2 and k <= H + 2 * p and k <= W + 2 * p)
    x = distinct(np.random.default_rng(seed), (N, C, H, W))
    pool = F.max_pool2d if kind == "max" else F.avg_pool2d
    np.testing.assert_allclose(pool(td.tensor(x, device=device), k, stride=s, padding=p).numpy(),
                               naive_pool(x, k, s, p, kind), atol=1e-12)


# adaptive pooling: tests/test_pool.py


# --- cat, flatten, linear ---------------------------------------------------------------

@pytest.mark.parametrize("axis", [1, 0, -1])
def test_cat(axis, device, rng):
    shapes = {1: [(2, 1, 3), (2, 4, 3), (2, 2, 3)], 0: [(1, 3), (2, 3)], -1: [(2, 2), (2, 1), (2, 3)]}[axis]
    arrays = [rng.standard_normal(s) for s in shapes]
    xs = [T(a, device) for a in arrays]
    y = F.cat(xs, axis=axis)
    np.testing.assert_array_equal(y.numpy(), np.concatenate(arrays, axis=axis))
    g = rng.standard_normal(y.shape)
    y.backward(g)
    pieces = np.split(g, np.cumsum([s[axis] for s in shapes])[:-1], axis=axis)
    for x, piece in zip(xs, pieces):
        np.testing.assert_array_equal(backend.to_numpy(x.grad), piece)
    check(lambda *a: F.cat(a, axis=axis), *[T(a, device) for a in arrays])


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 4), min_size=1, max_size=4), N=st.integers(1, 3),
       HW=st.integers(1, 3), seed=st.integers(0, 2 ** 16))
def test_cat_random_shapes_forward_and_backward(sizes, N, HW, seed, device):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal((N, c, HW, HW)) for c in sizes]
    xs = [td.tensor(a, requires_grad=True, device=device) for a in arrays]
    y = F.cat(xs)
    np.testing.assert_array_equal(y.numpy(), np.concatenate(arrays, axis=1))
    g = rng.standard_normal(y.shape)
    y.backward(g)
    start = 0
    for x, c in zip(xs, sizes):
        np.testing.assert_array_equal(backend.to_numpy(x.grad), g[:, start:start + c])   # its own slice
        start += c


def test_cat_only_inputs_that_need_gradients_get_them(rng, device):
    a, b = T(rng.standard_normal((1, 2)), device), T(rng.standard_normal((1, 3)), device, grad=False)
    F.cat([a, b]).sum().backward()
    assert a.grad is not None and b.grad is None


def test_flatten(device, rng):
    x_np = rng.standard_normal((2, 3, 2, 2))
    y = F.flatten(T(x_np, device))
    np.testing.assert_array_equal(y.numpy(), x_np.reshape(2, 12))
    check(F.flatten, T(x_np, device))
    assert F.flatten(T(x_np, device), start_dim=2).shape == (2, 3, 4)


@pytest.mark.parametrize("x_shape", [(4, 3), (2, 2, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear(x_shape, bias, device, rng):
    x_np, w_np, b_np = rng.standard_normal(x_shape), rng.standard_normal((5, 3)), rng.standard_normal(5)
    args = [T(x_np, device), T(w_np, device)] + ([T(b_np, device)] if bias else [])
    y = F.linear(*args)
    np.testing.assert_allclose(y.numpy(), x_np @ w_np.T + (b_np if bias else 0), atol=1e-12)
    check(F.linear, *args)


# --- dropout ---------------------------------------------------------------------------

def test_dropout_training_zeroes_and_rescales(device):
    td.manual_seed(3)
    x = td.tensor(np.ones((100, 100)), requires_grad=True, device=device)
    y = F.dropout(x, p=0.3, training=True)
    values = np.unique(y.numpy())
    np.testing.assert_allclose(values, [0.0, 1 / 0.7])
    assert abs((y.numpy() == 0).mean() - 0.3) < 0.03          # 10000 draws: 3 sigma ~ 0.014
    g = np.arange(10000.0).reshape(100, 100)
    y.backward(backend.to_device(g, device))
    np.testing.assert_allclose(backend.to_numpy(x.grad), g * y.numpy())   # dx = g * mask / (1 - p)


def test_dropout_is_the_identity_in_eval_or_with_p_zero(device):
    x = T(np.ones(5), device)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0, training=True) is x


def test_dropout_seeded_masks_repeat(device):
    x = T(np.ones(50), device, grad=False)
    td.manual_seed(7)
    a = F.dropout(x, 0.5).numpy()
    td.manual_seed(7)
    b = F.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(a, b)
    assert 0 < (a == 0).sum() < 50


def test_dropout_gradcheck(device, rng):
    # gradcheck restores the generator before every evaluation, so the mask is fixed
    check(lambda x: F.dropout(x, 0.4, training=True) * 2, T(rng.standard_normal((3, 4)), device))


# --- log_softmax, cross_entropy ----------------------------------------------------------

def log_softmax_reference(z, axis):
    m = z.max(axis=axis, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=axis, keepdims=True))


@pytest.mark.parametrize("axis", [-1, 0])
def test_log_softmax(axis, device, rng):
    z_np = rng.standard_normal((3, 4)) * 3
    y = F.log_softmax(T(z_np, device), axis=axis)
    np.testing.assert_allclose(y.numpy(), log_softmax_reference(z_np, axis), atol=1e-12)
    np.testing.assert_allclose(np.exp(y.numpy()).sum(axis=axis), 1.0)
    check(lambda z: F.log_softmax(z, axis=axis), T(z_np, device))


def test_cross_entropy_value_and_gradient(device, rng):
    z_np, labels = rng.standard_normal((5, 4)), np.array([0, 3, 1, 1, 2])
    lab = backend.to_device(labels, device)
    loss = F.cross_entropy(T(z_np, device), lab)
    expected = -log_softmax_reference(z_np, 1)[np.arange(5), labels].mean()
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    z = T(z_np, device)
    F.cross_entropy(z, lab).backward()
    p = np.exp(log_softmax_reference(z_np, 1))
    onehot = np.eye(4)[labels]
    np.testing.assert_allclose(backend.to_numpy(z.grad), (p - onehot) / 5, atol=1e-12)   # (softmax - onehot) / N
    check(lambda z: F.cross_entropy(z, lab), T(z_np, device))


def test_cross_entropy_is_stable_for_huge_logits(device):
    z = T([[1e4, 0.0, -1e4], [-1e4, 1e4, 1e4 - 1]], device)
    loss = F.cross_entropy(z, backend.to_device(np.array([0, 2]), device))
    # row 0: log_softmax at the winner = -log(1 + e^-1e4 + ...) = 0
    # row 1: label 2 trails the maximum by 1: -log_softmax = 1 + log(1 + e^-1)
    assert np.isfinite(loss.item())
    assert loss.item() == pytest.approx((0.0 + 1.0 + np.log1p(np.exp(-1.0))) / 2, rel=1e-12)
    loss.backward()
    assert np.isfinite(backend.to_numpy(z.grad)).all()


def test_cross_entropy_accepts_a_label_tensor(device):
    loss = F.cross_entropy(T(np.zeros((2, 3)), device), td.tensor(np.array([0, 2]), device=device))
    assert loss.item() == pytest.approx(np.log(3))


# --- a tensor shared by several ops ------------------------------------------------------

def test_tensor_feeding_several_ops_gradcheck(device, rng):
    x = T(away_from_zero(rng, (2, 3, 4, 4)), device)
    w = T(rng.standard_normal((2, 3, 3, 3)), device)

    def f(x, w):
        branch = F.conv2d(x, w, padding=1)                 # (2, 2, 4, 4)
        both = F.cat([branch, F.relu(x), x * x], axis=1)   # x used three times
        return F.avg_pool2d(both, 2) + F.max_pool2d(both, 2)

    check(f, x, w)
