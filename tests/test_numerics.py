"""sigmoid, tanh, log_softmax and cross_entropy at extreme inputs: relative
accuracy against references computed with Python's ``decimal`` module at 80
digits (independent of NumPy and of the formulas the ops use), no overflow
warnings, and no NaN where PyTorch gives finite numbers."""
import math
import warnings
from decimal import Decimal, localcontext

import numpy as np
import pytest

import tinydense as td
import tinydense.functional as F
from tinydense import backend

INF = math.inf


def D(v):
    return Decimal(float(v))


def exact(fn, *values):
    """fn on Decimals at 80 significant digits, rounded once to the nearest double."""
    with localcontext() as ctx:
        ctx.prec = 80
        out = fn(*map(D, values))
        return [float(v) for v in out] if isinstance(out, list) else float(out)


def sigmoid_ref(x):
    return 1 / (1 + (-x).exp())


def sigmoid_grad_ref(x):
    s = sigmoid_ref(x)
    return s * (1 - s)


def tanh_grad_ref(x):             # 1 - tanh^2 = 4 / (e^x + e^-x)^2
    return 4 / (x.exp() + (-x).exp()) ** 2


def log_softmax_ref(*z):
    m = max(v for v in z)
    total = sum((v - m).exp() for v in z)
    return [v - m - total.ln() for v in z]


def assert_relative(actual, expected, rtol):
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    same_inf = np.isinf(expected) & (actual == expected)
    with np.errstate(invalid="ignore"):         # inf - inf where both are -inf: covered by same_inf
        err = np.abs(actual - expected) / np.where(expected == 0, 1.0, np.abs(expected))
    bad = ~same_inf & ~(err <= rtol)
    assert not bad.any(), f"at {np.flatnonzero(bad)}: got {actual[bad]}, expected {expected[bad]}"


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # an overflow or invalid-value warning fails the test
        yield


def T(a, device="cpu", dtype=np.float64):
    return td.tensor(np.asarray(a, dtype=dtype), requires_grad=True, device=device)


X64 = np.concatenate([-np.logspace(-3, np.log10(740), 60), [0.0], np.logspace(-3, np.log10(740), 60)])


# --- sigmoid -----------------------------------------------------------------------------------

def test_sigmoid_keeps_every_digit_on_both_sides(device, no_warnings):
    x = T(X64, device)
    y = x.sigmoid()
    # sigmoid(-40) = 4.25e-18: 0.5 * (tanh(-20) + 1) cancels to 0 below about -37
    assert_relative(y.numpy(), [exact(sigmoid_ref, v) for v in X64], rtol=4e-16)
    y.backward(backend.to_device(np.ones_like(X64), device))
    # dz/dx at +-40 is 4.25e-18: z (1 - z) gives 0 for x > 37, where z rounds to 1
    assert_relative(backend.to_numpy(x.grad), [exact(sigmoid_grad_ref, v) for v in X64], rtol=1e-15)


def test_sigmoid_at_the_limits_and_in_float32(device, no_warnings):
    x = T([-INF, -1e308, -800.0, 800.0, 1e308, INF], device)
    y = x.sigmoid()
    np.testing.assert_array_equal(y.numpy(), [0, 0, 0, 1, 1, 1])
    y.backward(backend.to_device(np.ones(6), device))
    np.testing.assert_array_equal(backend.to_numpy(x.grad), np.zeros(6))      # finite: e^-|x| -> 0
    x32 = np.array([-87, -50, -20, -1, 0, 1, 20, 50, 100], np.float32)     # e^-87: the smallest normal float32
    y32 = T(x32, device, np.float32).sigmoid()
    assert y32.dtype == np.float32
    assert_relative(y32.numpy(), [exact(sigmoid_ref, v) for v in x32], rtol=3e-7)
    tiny = T(np.array([-100], np.float32), device, np.float32).sigmoid().item()   # a subnormal: steps of 1.4e-45
    assert abs(tiny - exact(sigmoid_ref, -100)) <= 1.5e-45


def test_sigmoid_gradcheck(device, rng):
    assert td.gradcheck(lambda x: x.sigmoid(), [T(rng.uniform(-6, 6, (3, 4)), device)])


# --- tanh --------------------------------------------------------------------------------------

def test_tanh_and_its_gradient_keep_every_digit(device, no_warnings):
    x = T(X64, device)
    y = x.tanh()
    assert_relative(y.numpy(), [exact(lambda v: (v.exp() - (-v).exp()) / (v.exp() + (-v).exp()), v)
                                for v in X64], rtol=4e-16)
    y.backward(backend.to_device(np.ones_like(X64), device))
    # 1 - tanh(20)^2 = 1.7e-17 rounds to 0 in the textbook form
    assert_relative(backend.to_numpy(x.grad), [exact(tanh_grad_ref, v) for v in X64], rtol=2e-15)
    inf = T([-INF, INF], device)
    inf.tanh().backward(backend.to_device(np.ones(2), device))
    np.testing.assert_array_equal(backend.to_numpy(inf.grad), [0.0, 0.0])


def test_tanh_gradcheck(device, rng):
    assert td.gradcheck(lambda x: x.tanh(), [T(rng.uniform(-3, 3, (3, 4)), device)])


# --- log_softmax ------------------------------------------------------------------------------

ROWS = [
    [0.0, -40.0],                   # a confident prediction: log p(winner) = -4.25e-18, not 0
    [0.0, -40.0, -41.0, -745.0],
    [3.0, 3.0, -1.0],               # a tie at the maximum
    [1e4, 0.0, -1e4],
    [1e300, -1e300, 0.0],           # 2e300 apart: still finite
    [-1e300, 1e300, 1e300 * (1 - 2e-16)],
    [-INF, 0.0, 1.0],               # a masked-out class: log p = -inf, exactly as in PyTorch
]


@pytest.mark.parametrize("row", ROWS, ids=[str(r) for r in ROWS])
def test_log_softmax_at_extreme_logits(row, device, no_warnings):
    z = T([row, row[::-1]], device)
    y = F.log_softmax(z, axis=-1)
    expected = np.array([exact(log_softmax_ref, *row), exact(log_softmax_ref, *row[::-1])])
    assert_relative(y.numpy(), expected, rtol=1e-15)
    g = np.array([[1.0, -2.0, 0.5, 3.0][:len(row)]] * 2)
    y.backward(backend.to_device(g, device))
    # dz = g - softmax(z) sum(g): finite wherever PyTorch's is
    grad = backend.to_numpy(z.grad)
    assert np.isfinite(grad).all()
    np.testing.assert_allclose(grad, g - np.exp(expected) * g.sum(axis=1, keepdims=True), rtol=1e-14, atol=1e-300)


def test_log_softmax_of_logits_beyond_1e308_apart_rounds_to_minus_inf_without_warnings(no_warnings):
    # the true value -2e308 is below the largest double: -inf, as PyTorch gives
    np.testing.assert_array_equal(F.log_softmax(T([[1e308, -1e308]])).numpy(), [[0.0, -INF]])
    big = T(np.array([[3e38, -3e38, 0.0]], np.float32), dtype=np.float32)
    y = F.log_softmax(big)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y.numpy(), np.array([[0.0, -INF, -3e38]], np.float32))
    y.backward(np.ones((1, 3), np.float32))
    np.testing.assert_array_equal(big.grad, [[-2.0, 1.0, 1.0]])


def test_log_softmax_with_inf_or_nan_logits_gives_nan_like_pytorch():
    with np.errstate(invalid="ignore"):
        y = F.log_softmax(T([[INF, 0.0], [np.nan, 0.0]])).numpy()
    assert np.isnan(y).all()


# --- cross_entropy ------------------------------------------------------------------------------

@pytest.mark.parametrize("logits, labels", [
    ([[0.0, -40.0], [-40.0, 0.0]], [0, 1]),               # loss 4.25e-18 (was 0)
    ([[1e300, -1e300], [0.0, 1e300]], [1, 0]),            # loss 1e300: finite, as in PyTorch
    ([[1e4, 0.0, -1e4], [-1e4, 1e4, 1e4 - 1]], [0, 2]),
    ([[0.0, -INF, 2.0], [5.0, -INF, -INF]], [2, 0]),      # masked-out classes
], ids=["confident", "1e300", "1e4", "-inf"])
def test_cross_entropy_at_extreme_logits(logits, labels, device, no_warnings):
    z = T(logits, device)
    y = backend.to_device(np.array(labels), device)
    loss = F.cross_entropy(z, y)
    logp = [exact(log_softmax_ref, *row) for row in logits]
    expected = -sum(lp[k] for lp, k in zip(logp, labels)) / len(labels)
    assert_relative(loss.item(), expected, rtol=1e-15)
    loss.backward()
    onehot = np.eye(len(logits[0]))[labels]
    grad = backend.to_numpy(z.grad)
    assert np.isfinite(grad).all()
    np.testing.assert_allclose(grad, (np.exp(logp) - onehot) / len(labels), rtol=1e-14, atol=1e-300)


def test_cross_entropy_with_minus_inf_at_the_label_is_inf_with_a_finite_gradient(no_warnings):
    # PyTorch: loss inf, gradient (softmax - onehot) / N = [[1, -1]]
    z = T([[0.0, -INF]])
    loss = F.cross_entropy(z, np.array([1]))
    assert loss.item() == INF
    loss.backward()
    np.testing.assert_array_equal(z.grad, [[1.0, -1.0]])


def test_cross_entropy_float32_confident_and_huge(no_warnings):
    z = T(np.array([[0.0, -20.0], [3e38, 0.0]], np.float32), dtype=np.float32)
    loss = F.cross_entropy(z, np.array([0, 1]))
    assert loss.dtype == np.float32
    # (log1p(e^-20) + 3e38) / 2 = 1.5e38: finite in float32
    assert loss.item() == pytest.approx(float(np.float32(3e38)) / 2, rel=1e-6)
    loss.backward()
    assert np.isfinite(z.grad).all()
