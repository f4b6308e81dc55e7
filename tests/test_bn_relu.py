"""The fused BN-ReLU ops against the plain ops they replace (float64, to 1e-10),
and against finite differences."""
import numpy as np
import pytest

import tinydense as td
import tinydense.functional as F
from tinydense.ops.bn_relu import batch_norm_relu, batch_norm_relu_conv

TOL = dict(rtol=1e-10, atol=1e-10)


def _inputs(shape, seed=0, channel_major=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 2 + 0.5
    if channel_major:          # the same values, memory laid out (C, N, H, W) as in a dense block
        x = np.ascontiguousarray(x.swapaxes(0, 1)).swapaxes(0, 1)
    C = shape[1]
    w = rng.standard_normal(C)
    w[0] = -abs(w[0])          # a negative scale flips which side of zero the ReLU keeps
    b = rng.standard_normal(C) * 0.5
    return x, w, b


def _run(op, x, w, b, extra=(), training=True, grad_seed=1):
    """y = op(...), y.backward(random g); returns y, the gradients and the running stats."""
    xt = td.tensor(x, requires_grad=True)
    wt, bt = td.tensor(w, requires_grad=True), td.tensor(b, requires_grad=True)
    et = [td.tensor(e, requires_grad=True) for e in extra]
    C = x.shape[1]
    rm, rv = np.linspace(-0.5, 0.5, C), np.linspace(0.5, 2.0, C)
    y = op(xt, rm, rv, wt, bt, *et, training)
    stats_after_forward = rm.copy(), rv.copy()
    g = np.random.default_rng(grad_seed).standard_normal(y.shape)
    y.backward(g)
    assert np.array_equal(rm, stats_after_forward[0]) and np.array_equal(rv, stats_after_forward[1]), \
        "backward must not touch the running statistics"
    return y.numpy(), [t.grad for t in [xt, wt, bt] + et], (rm, rv)


def plain_bn_relu(x, rm, rv, w, b, training):
    return F.relu(F.batch_norm(x, rm, rv, w, b, training=training, momentum=0.1, eps=1e-5))


def fused_bn_relu(x, rm, rv, w, b, training):
    return batch_norm_relu(x, rm, rv, w, b, training=training, momentum=0.1, eps=1e-5)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape,channel_major", [((4, 3, 5, 6), False), ((4, 3, 5, 6), True), ((7, 5), False)])
def test_batch_norm_relu_equals_batch_norm_then_relu(training, shape, channel_major):
    x, w, b = _inputs(shape, channel_major=channel_major)
    y0, g0, s0 = _run(plain_bn_relu, x, w, b, training=training)
    y1, g1, s1 = _run(fused_bn_relu, x, w, b, training=training)
    np.testing.assert_allclose(y1, y0, **TOL)
    assert (y1 == 0).mean() > 0.2                    # the ReLU really cuts something
    for a, c in zip(g1 + list(s1), g0 + list(s0)):
        np.testing.assert_allclose(a, c, **TOL)


def test_batch_norm_relu_gradcheck():
    x, w, b = _inputs((3, 2, 4, 4), seed=3)
    rm, rv = np.zeros(2), np.ones(2)
    inputs = [td.tensor(v, requires_grad=True) for v in (x, w, b)]
    assert td.gradcheck(lambda x, w, b: batch_norm_relu(x, rm, rv, w, b, training=True), inputs)


def plain_bn_relu_conv(kernel, stride, padding):
    def op(x, rm, rv, w, b, cw, training):
        return F.conv2d(plain_bn_relu(x, rm, rv, w, b, training), cw, stride=stride, padding=padding)
    return op


def fused_bn_relu_conv(kernel, stride, padding, recompute_conv=False):
    def op(x, rm, rv, w, b, cw, training):
        return batch_norm_relu_conv(x, rm, rv, w, b, cw, training=training, stride=stride, padding=padding,
                                    recompute_conv=recompute_conv)
    return op


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("kernel,stride,padding,recompute", [(1, 1, 0, False), (3, 1, 1, False),
                                                             (3, 1, 1, True), (3, 2, 1, True)])
@pytest.mark.parametrize("channel_major", [False, True])
def test_batch_norm_relu_conv_equals_the_three_ops(training, kernel, stride, padding, recompute, channel_major):
    x, w, b = _inputs((3, 4, 6, 5), seed=5, channel_major=channel_major)
    cw = np.random.default_rng(6).standard_normal((7, 4, kernel, kernel))
    y0, g0, s0 = _run(plain_bn_relu_conv(kernel, stride, padding), x, w, b, extra=[cw], training=training)
    y1, g1, s1 = _run(fused_bn_relu_conv(kernel, stride, padding, recompute), x, w, b, extra=[cw],
                      training=training)
    np.testing.assert_allclose(y1, y0, **TOL)
    for a, c in zip(g1 + list(s1), g0 + list(s0)):
        np.testing.assert_allclose(a, c, **TOL)


def test_batch_norm_relu_conv_writes_into_out():
    x, w, b = _inputs((2, 3, 4, 4), seed=7)
    cw = np.random.default_rng(8).standard_normal((5, 3, 1, 1))
    target = np.full((2, 9, 4, 4), 7.0)
    slot = target[:, 2:7]
    y = batch_norm_relu_conv(td.tensor(x), None, None, td.tensor(w), td.tensor(b), td.tensor(cw),
                             training=True, out=slot)
    expected = F.conv2d(plain_bn_relu(td.tensor(x), None, None, td.tensor(w), td.tensor(b), True), td.tensor(cw))
    np.testing.assert_allclose(target[:, 2:7], expected.numpy(), **TOL)
    assert np.all(target[:, :2] == 7) and np.all(target[:, 7:] == 7)
    assert np.shares_memory(y.data, target)


def test_float32_stays_float32():
    x, w, b = (a.astype(np.float32) for a in _inputs((2, 3, 4, 4)))
    cw = np.ones((4, 3, 1, 1), np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    for y in (batch_norm_relu(td.tensor(x), rm, rv, td.tensor(w), td.tensor(b), training=True),
              batch_norm_relu_conv(td.tensor(x), rm, rv, td.tensor(w), td.tensor(b), td.tensor(cw), training=True)):
        assert y.dtype == np.float32
    assert rm.dtype == rv.dtype == np.float32


def test_bad_input_names_the_shapes():
    x, w, b = _inputs((2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"3 channels .*weight has shape \(4,\)"):
        batch_norm_relu(td.tensor(x), None, None, td.tensor(np.ones(4)), td.tensor(b), training=True)
    with pytest.raises(ValueError, match="eval mode needs running_mean"):
        batch_norm_relu(td.tensor(x), None, None, td.tensor(w), td.tensor(b), training=False)
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 4\) does not fit conv weight of shape \(5, 2, 1, 1\)"):
        batch_norm_relu_conv(td.tensor(x), None, None, td.tensor(w), td.tensor(b), td.tensor(np.ones((5, 2, 1, 1))),
                             training=True)


# --- float32 far from zero: statistics summed in float64 ---------------------------------------

# PyTorch 2.13's own float32 error on these inputs (tests/fixtures/bn_float32_errors.py):
# max |float32 - float64| / max |float64| over seeds 0..4, for y, dx, dweight, dbias, running_mean, running_var.
TORCH_FLOAT32_ERROR = {1e3: (1.2e-05, 4.4e-07, 2.3e-05, 3.1e-07, 7.3e-08, 4.7e-08),
                       1e4: (1.4e-04, 3.3e-06, 1.6e-04, 3.1e-07, 4.9e-08, 7.2e-08)}


def far_from_zero(offset, seed, shape=(32, 3, 16, 16)):
    """x = offset + N(0, 1), weight, bias, upstream gradient: float32 values (held as float64)."""
    rng = np.random.default_rng(seed)
    f32 = lambda a: a.astype(np.float32).astype(np.float64)          # noqa: E731
    x = f32(offset + rng.standard_normal(shape))
    w, b = (f32(rng.standard_normal(shape[1])) for _ in range(2))
    return x, w, b, f32(rng.standard_normal(shape))


def _bn_results(x, w, b, g, dtype):
    xt, wt, bt = (td.tensor(a.astype(dtype), requires_grad=True) for a in (x, w, b))
    rm, rv = np.zeros(x.shape[1], dtype), np.ones(x.shape[1], dtype)
    y = F.batch_norm(xt, rm, rv, wt, bt, training=True)
    y.backward(g.astype(dtype))
    return [y.numpy(), xt.grad, wt.grad, bt.grad, rm, rv]


def _relative_errors(got, ref, norm=np.inf):
    """max |a - r| / max |r| (or, with norm=2, ||a - r|| / ||r||) of each pair."""
    return np.array([np.linalg.norm((a.astype(np.float64) - r).ravel(), norm) / np.linalg.norm(r.ravel(), norm)
                     for a, r in zip(got, ref)])


@pytest.mark.parametrize("offset", [1e3, 1e4])
def test_float32_batch_norm_far_from_zero_is_as_accurate_as_pytorch(offset):
    """|mean| / std = 1e3 or 1e4: summed in float32, the mean was off by enough to make dx and
    dweight about 10 times less accurate than PyTorch's (dx 3.4e-5, dweight 1.8e-3 at 1e4)."""
    worst = np.zeros(6)
    for seed in range(5):
        x, w, b, g = far_from_zero(offset, seed)
        worst = np.maximum(worst, _relative_errors(_bn_results(x, w, b, g, np.float32),
                                                   _bn_results(x, w, b, g, np.float64)))
    assert np.all(worst <= 2 * np.array(TORCH_FLOAT32_ERROR[offset])), worst
