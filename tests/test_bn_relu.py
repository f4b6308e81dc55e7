"""The fused BN-ReLU-Conv1x1 op (a transition's first half) against the plain ops it replaces
(float64, to 1e-10), its folded BN-ReLU, and batch norm's float32 accuracy far from zero
(statistics summed in float64) in the plain and the fused ops."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinydense as td
import tinydense.functional as F
from tinydense import models
from tinydense.ops import bn_relu_fold
from tinydense.ops import channel_major as layout
from tinydense.ops.bn_relu import batch_norm_relu_conv1x1
from tinydense.ops.bn_relu_fold import ReluAffine

TOL = dict(rtol=1e-10, atol=1e-10)


def _inputs(shape, seed=0, channel_major=False, signs=None):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 2 + 0.5
    if channel_major:          # the same values, memory laid out (C, N, H, W) as a dense block's output
        x = np.ascontiguousarray(x.swapaxes(0, 1)).swapaxes(0, 1)
    C = shape[1]
    w = 0.5 + rng.random(C)
    if signs is not None:      # a scale <= 0 flips or closes the ReLU: the op's unfolded path
        w *= signs
    return x, w, rng.standard_normal(C) * 0.5


def _run(op, x, w, b, cw, training, grad_seed=1):
    """y = op(...), y.backward(random g); returns y, the gradients and the running stats."""
    xt, wt, bt, cwt = (td.tensor(a, requires_grad=True) for a in (x, w, b, cw))
    C = x.shape[1]
    rm, rv = np.linspace(-0.5, 0.5, C), np.linspace(0.5, 2.0, C)
    y = op(xt, rm, rv, wt, bt, cwt, training)
    after_forward = rm.copy(), rv.copy()
    y.backward(np.random.default_rng(grad_seed).standard_normal(y.shape))
    assert np.array_equal(rm, after_forward[0]) and np.array_equal(rv, after_forward[1]), \
        "backward must not touch the running statistics"
    return y.numpy(), [t.grad for t in (xt, wt, bt, cwt)], (rm, rv)


def plain(pool):
    def op(x, rm, rv, w, b, cw, training):
        y = F.conv2d(F.relu(F.batch_norm(x, rm, rv, w, b, training=training)), cw)
        return F.avg_pool2d(y, 2) if pool else y
    return op


def fused(pool):
    return lambda x, rm, rv, w, b, cw, training: batch_norm_relu_conv1x1(x, rm, rv, w, b, cw, training=training,
                                                                         pool=pool)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 4), c=st.integers(1, 5), h=st.integers(1, 4), w=st.integers(1, 5), o=st.integers(1, 4),
       training=st.booleans(), channel_major=st.booleans(), signs=st.sampled_from([None, -1, 0]),
       seed=st.integers(0, 2 ** 16), chunk=st.sampled_from([4, 16, layout.CHUNK]), pool=st.booleans())
def test_batch_norm_relu_conv1x1_equals_the_three_ops(n, c, h, w, o, training, channel_major, signs, seed, chunk,
                                                      pool):
    """... and with pool=True, the three ops and avg_pool2d(2) (which the op computes before the
    matrix product); the columns in one pass or in several."""
    if pool:
        h, w = 2 * ((h + 1) // 2), 2 * ((w + 1) // 2)
    if training and n * h * w < 2:
        n = 2                                  # batch statistics need two values per channel
    shape = (n, c, h, w)
    sign = None if signs is None else np.where(np.arange(c) == 0, signs, 1.0)
    x, bw, bb = _inputs(shape, seed, channel_major, sign)
    cw = np.random.default_rng(seed + 1).standard_normal((o, c, 1, 1))
    y0, g0, s0 = _run(plain(pool), x, bw, bb, cw, training)
    default_chunk, layout.CHUNK = layout.CHUNK, chunk      # the columns in one pass, or in several
    try:
        y1, g1, s1 = _run(fused(pool), x, bw, bb, cw, training)
    finally:
        layout.CHUNK = default_chunk
    np.testing.assert_allclose(y1, y0, **TOL)
    for a, r in zip(g1 + list(s1), g0 + list(s0)):
        np.testing.assert_allclose(a, r, **TOL)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 16), kind=st.sampled_from(["positive", "mixed", "zero"]))
def test_relu_affine_folds_the_scale_exactly_where_it_may(seed, kind):
    """relu(s*v + t) = s * (max(v, c) - c), c = -t/s, needs s > 0 in every row; else the plain form."""
    rng = np.random.default_rng(seed)
    s = 0.1 + rng.random(4)
    if kind == "mixed":
        s[1] = -s[1]
    elif kind == "zero":
        s[2] = 0.0
    t, v = rng.standard_normal(4), rng.standard_normal((4, 7))
    a = ReluAffine(s, t)
    assert a.folded == (kind == "positive")
    z = np.maximum(s[:, None] * v + t[:, None], 0)
    E = a.shifted_inputs(v, out=np.empty_like(v))
    np.testing.assert_allclose(E * (s[:, None] if a.folded else 1), z, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(a.open(v, out=np.empty_like(v)), (s[:, None] * v + t[:, None] > 0))
    w = rng.standard_normal((3, 4, 1, 1))
    Z = a.inputs(v, out=np.empty_like(v))
    A = a.conv_weight(w)[:, :, 0, 0]
    np.testing.assert_allclose(A @ Z - (A @ a.c)[:, None], w[:, :, 0, 0] @ z, rtol=1e-12, atol=1e-12)


def test_batch_norm_relu_conv1x1_stores_nothing_of_the_input_size():
    x, w, b = _inputs((4, 6, 8, 8))
    cw = np.ones((3, 6, 1, 1))
    y = batch_norm_relu_conv1x1(td.tensor(x, requires_grad=True), None, None, td.tensor(w), td.tensor(b),
                                td.tensor(cw), training=True)
    fn = y._creator
    saved = [a for a in vars(fn).values() if isinstance(a, np.ndarray)] + [a for a in vars(fn.affine).values()]
    arrays = [a for a in saved if isinstance(a, np.ndarray) and a is not fn.x]
    assert fn.x is not None and arrays and all(a.size <= 18 for a in arrays)   # vectors, the conv weight


def test_float32_stays_float32():
    x, w, b = (a.astype(np.float32) for a in _inputs((2, 3, 4, 4)))
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    y = batch_norm_relu_conv1x1(td.tensor(x), rm, rv, td.tensor(w), td.tensor(b),
                                td.tensor(np.ones((4, 3, 1, 1), np.float32)), training=True)
    assert y.dtype == np.float32 and rm.dtype == rv.dtype == np.float32


def test_bad_input_names_the_shapes():
    x, w, b = _inputs((2, 3, 4, 4))
    cw = td.tensor(np.ones((5, 3, 1, 1)))
    with pytest.raises(ValueError, match=r"3 channels .*weight has shape \(4,\)"):
        batch_norm_relu_conv1x1(td.tensor(x), None, None, td.tensor(np.ones(4)), td.tensor(b), cw, training=True)
    with pytest.raises(ValueError, match="eval mode needs running_mean"):
        batch_norm_relu_conv1x1(td.tensor(x), None, None, td.tensor(w), td.tensor(b), cw, training=False)
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 4\) does not fit 1x1 conv weight of shape \(5, 2, 1, 1\)"):
        batch_norm_relu_conv1x1(td.tensor(x), None, None, td.tensor(w), td.tensor(b),
                                td.tensor(np.ones((5, 2, 1, 1))), training=True)
    with pytest.raises(ValueError, match=r"pool=True needs an even height and width, got input of shape \(2, 3, 3, 4\)"):
        batch_norm_relu_conv1x1(td.tensor(x[:, :, :3]), None, None, td.tensor(w), td.tensor(b), cw, training=True,
                                pool=True)


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


def _fused_and_plain_errors(model_fn, x, seed):
    """Relative errors (2-norm) of the output, the input gradient and every parameter gradient,
    float32 against the textbook modules in float64, for the textbook (plain) and the
    memory-efficient modules: an array (2, quantities)."""
    g = np.random.default_rng(seed).standard_normal(model_fn(False, np.float64)(td.tensor(x)).shape)

    def results(efficient, dtype):
        module = model_fn(efficient, dtype)
        xt = td.tensor(x.astype(dtype), requires_grad=True)
        y = module(xt)
        y.backward(g.astype(dtype))
        return [y.numpy(), xt.grad] + [p.grad for p in module.parameters()]

    ref = results(False, np.float64)
    return np.array([_relative_errors(results(efficient, np.float32), ref, norm=2) for efficient in (False, True)])


def _tiny_block(efficient, dtype):
    td.manual_seed(0)
    cls = models.EfficientDenseBlock if efficient else models.DenseBlock
    return cls(2, 3, 4, bn_size=2).to(dtype=dtype)


def _tiny_transition(efficient, dtype):
    td.manual_seed(0)
    cls = models.EfficientTransition if efficient else models.Transition
    return cls(3, 2).to(dtype=dtype)


@pytest.mark.parametrize("model_fn", [_tiny_block, _tiny_transition])
def test_fused_ops_far_from_zero_are_as_accurate_as_the_textbook_ops(model_fn):
    """The memory-efficient block and transition normalise with float64-summed statistics too.
    (Gradients: where one rounding flips a ReLU mask an element's gradient changes by O(1), in
    both paths alike; so the fused path is judged against the plain one, seed by seed.)"""
    for seed in range(4):
        plain_error, fused_error = _fused_and_plain_errors(model_fn, far_from_zero(1e4, seed, (16, 3, 8, 8))[0], seed)
        assert plain_error[0] < 1e-3, plain_error                   # the output: no mask to flip
        assert np.all(fused_error <= 2 * plain_error + 1e-6), (plain_error, fused_error)


def test_on_a_gpu_the_affine_map_and_its_mask_go_to_one_kernel_each(monkeypatch):
    """The GPU branch's wiring, with each kernel replaced by what its C body computes:
    arguments (v, s, t, out) in that order, s and t cast to v's dtype, the result in out."""
    seen = []

    def fake(body):
        def kernel(v, s, t, out):
            seen.append((v.dtype, s.dtype, t.dtype, s.shape, out is not None))
            out[...] = body(v, s, t)
            return out
        return kernel
    monkeypatch.setattr(bn_relu_fold.backend, "device_of", lambda array: "cuda")
    monkeypatch.setattr(bn_relu_fold, "_RELU_AFFINE", fake(lambda v, s, t: np.maximum(v * s + t, 0)))
    monkeypatch.setattr(bn_relu_fold, "_RELU_OPEN", fake(lambda v, s, t: (v * s + t > 0).astype(v.dtype)))
    rng = np.random.default_rng(5)
    s, t = 0.5 + rng.random(3), rng.standard_normal(3)          # float64, as batch norm's may be
    v = rng.standard_normal((3, 8)).astype(np.float32)
    a = bn_relu_fold.ReluAffine(s, t)
    assert not a.folded                                       # positive scales, yet unfolded on a GPU
    z = a.inputs(v, out=np.empty_like(v))
    m = a.open(v, out=np.empty_like(v))
    want = s[:, None] * v + t[:, None]
    np.testing.assert_allclose(z, np.maximum(want, 0), rtol=1e-6)
    np.testing.assert_array_equal(m, want > 0)
    assert seen == [(np.float32, np.float32, np.float32, (3, 1), True)] * 2
