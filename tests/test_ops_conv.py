"""conv2d: forward against a naive loop, backward against finite differences,
over every internal path (1x1 matmul, the stride-1 row layout with
O <= C and O > C, and im2col for stride > 1)."""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from conftest import DEVICES

import tinydense as td
import tinydense.functional as F


def naive_conv2d(x, w, b=None, stride=(1, 1), padding=(0, 0)):
    """The definition, one output pixel at a time (float64)."""
    (sh, sw), (ph, pw) = stride, padding
    N, C, H, W = x.shape
    O, _, kh, kw = w.shape
    xpad = np.zeros((N, C, H + 2 * ph, W + 2 * pw))
    xpad[:, :, ph:ph + H, pw:pw + W] = x
    OH, OW = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    y = np.zeros((N, O, OH, OW))
    for n in range(N):
        for o in range(O):
            for i in range(OH):
                for j in range(OW):
                    patch = xpad[n, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
                    y[n, o, i, j] = np.sum(patch * w[o]) + (0.0 if b is None else b[o])
    return y


def T(a, device, grad=True):
    return td.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad, device=device)


# (N, C, O, H, W, kernel, stride, padding, bias, the internal path conv2d takes)
CASES = [
    (1, 3, 4, 5, 5, 1, 1, 0, True, "1x1"),
    (2, 4, 3, 5, 7, 1, 1, 0, False, "1x1"),
    (2, 4, 3, 5, 6, 3, 1, 1, True, "rows O<=C"),
    (2, 2, 5, 6, 5, 3, 1, 1, True, "rows O>C"),
    (1, 3, 2, 7, 9, 7, 1, 3, False, "rows O<=C"),
    (1, 2, 3, 4, 5, 3, 1, 0, False, "rows O>C"),
    (2, 3, 3, 5, 5, 1, 1, 1, False, "rows O<=C"),
    (1, 2, 2, 3, 4, 3, 1, 3, True, "rows O<=C"),
    (2, 3, 4, 9, 7, 3, 2, 1, True, "im2col"),
    (1, 2, 3, 8, 11, 7, 2, 3, True, "im2col"),
    (2, 3, 2, 6, 5, 1, 2, 0, False, "im2col"),
]
IDS = [f"N{c[0]}-{c[1]}to{c[2]}-{c[3]}x{c[4]}-k{c[5]}s{c[6]}p{c[7]}-{c[9].replace(' ', '')}" for c in CASES]


def path_of(y):
    fn = y._creator
    if fn.path == "rows":
        return "rows O<=C" if hasattr(fn, "xrows") else "rows O>C"
    return fn.path


def make_case(case, device, rng):
    N, C, O, H, W, k, s, p, bias, _ = case
    x = T(rng.standard_normal((N, C, H, W)), device)
    w = T(rng.standard_normal((O, C, k, k)), device)
    b = T(rng.standard_normal(O), device) if bias else None
    return x, w, b, s, p


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_conv_forward_matches_naive_loop(case, device, rng):
    x, w, b, s, p = make_case(case, device, rng)
    y = F.conv2d(x, w, b, stride=s, padding=p)
    assert path_of(y) == case[-1]
    expected = naive_conv2d(x.numpy(), w.numpy(), None if b is None else b.numpy(), (s, s), (p, p))
    assert y.shape == expected.shape
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_conv_gradcheck(case, device, rng):
    x, w, b, s, p = make_case(case, device, rng)
    inputs = [x, w] + ([b] if b is not None else [])
    assert td.gradcheck(lambda *a: F.conv2d(*a, stride=s, padding=p), inputs, mode="full")


def test_conv_float32_close_to_float64_reference(device, rng):
    x = rng.standard_normal((2, 8, 6, 7)).astype(np.float32)
    w = rng.standard_normal((4, 8, 3, 3)).astype(np.float32)
    y = F.conv2d(td.tensor(x, device=device), td.tensor(w, device=device), padding=1)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.numpy(), naive_conv2d(x.astype(np.float64), w.astype(np.float64),
                                                       padding=(1, 1)), rtol=1e-4, atol=1e-4)


def test_conv_non_square_kernel_stride_padding(device, rng):
    x, w, b = (T(rng.standard_normal(s), device) for s in [(2, 2, 7, 6), (3, 2, 3, 2), (3,)])
    y = F.conv2d(x, w, b, stride=(2, 1), padding=(1, 0))
    np.testing.assert_allclose(y.numpy(), naive_conv2d(x.numpy(), w.numpy(), b.numpy(), (2, 1), (1, 0)), atol=1e-10)
    assert td.gradcheck(lambda *a: F.conv2d(*a, stride=(2, 1), padding=(1, 0)), [x, w, b])


@pytest.mark.parametrize("which", ["x", "w"])
def test_conv_gradient_for_one_input_only(which, device, rng):
    x = T(rng.standard_normal((2, 3, 5, 5)), device, grad=which == "x")
    w = T(rng.standard_normal((2, 3, 3, 3)), device, grad=which == "w")
    F.conv2d(x, w, padding=1).sum().backward()
    assert (x.grad is None) == (which == "w") and (w.grad is None) == (which == "x")
    assert td.gradcheck(lambda x, w: F.conv2d(x, w, padding=1), [x, w])


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=25, deadline=None)
@given(N=st.integers(1, 2), C=st.integers(1, 4), O=st.integers(1, 4),
       H=st.integers(1, 8), W=st.integers(1, 8), kh=st.integers(1, 4), kw=st.integers(1, 4),
       s=st.integers(1, 3), p=st.integers(0, 2), bias=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_conv_forward_random_shapes(N, C, O, H, W, kh, kw, s, p, bias, seed, device):
    assume(kh <= H + 2 * p and kw <= W + 2 * p)
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((N, C, H, W)), rng.standard_normal((O, C, kh, kw))
    b = rng.standard_normal(O) if bias else None
    x_, w_, b_ = (None if a is None else td.tensor(a, device=device) for a in (x, w, b))
    y = F.conv2d(x_, w_, b_, stride=s, padding=p)
    np.testing.assert_allclose(y.numpy(), naive_conv2d(x, w, b, (s, s), (p, p)), atol=1e-10)
