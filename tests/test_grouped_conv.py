"""conv2d with groups and dilation: forward against a naive loop over every
output pixel, backward against finite differences, on every internal path
(1x1 matmul, the stride-1 row layout with O/G <= C/G and O/G > C/G, im2col),
depthwise convolution, and bad arguments."""
import re

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from conftest import DEVICES

import tinydense as td
import tinydense.functional as F


def naive_conv2d(x, w, b=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    """The definition, one output pixel at a time (float64): output channel o of group
    g = o // (O/G) sees input channels g*C/G .. (g+1)*C/G - 1, taps spaced by the dilation."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    N, C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    xpad = np.zeros((N, C, H + 2 * ph, W + 2 * pw))
    xpad[:, :, ph:ph + H, pw:pw + W] = x
    OH = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    OW = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((N, O, OH, OW))
    for n in range(N):
        for o in range(O):
            g = o // (O // groups)
            for i in range(OH):
                for j in range(OW):
                    patch = xpad[n, g * Cg:(g + 1) * Cg, i * sh:i * sh + dh * (kh - 1) + 1:dh,
                                 j * sw:j * sw + dw * (kw - 1) + 1:dw]
                    y[n, o, i, j] = np.sum(patch * w[o]) + (0.0 if b is None else b[o])
    return y


def T(a, device, grad=True):
    return td.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad, device=device)


def path_of(y):
    fn = y._creator
    if fn.path == "rows":
        return "rows O<=C" if hasattr(fn, "xrows") else "rows O>C"
    return fn.path


# (N, C, O, groups, H, W, kernel, stride, padding, dilation, bias, the internal path)
CASES = [
    (2, 6, 4, 2, 3, 4, 1, 1, 0, 1, True, "1x1"),
    (1, 4, 4, 4, 3, 3, 1, 1, 0, 2, False, "1x1"),               # depthwise 1x1: dilation has no effect
    (2, 6, 3, 3, 5, 6, 3, 1, 1, 1, True, "rows O<=C"),
    (2, 4, 8, 2, 5, 5, 3, 1, 1, 1, False, "rows O>C"),
    (2, 5, 5, 5, 6, 7, 3, 1, 1, 1, True, "rows O<=C"),          # depthwise 3x3
    (1, 3, 6, 3, 5, 4, 3, 1, 1, 1, False, "rows O>C"),          # depthwise, channel multiplier 2
    (2, 4, 4, 1, 7, 6, 3, 1, 2, 2, True, "rows O<=C"),          # dilated, ungrouped
    (1, 2, 6, 2, 8, 7, 3, 1, 1, 3, False, "rows O>C"),
    (1, 3, 2, 1, 6, 9, 2, 1, 0, (2, 3), True, "rows O<=C"),
    (2, 8, 4, 4, 9, 7, 3, 2, 1, 1, True, "im2col"),             # ResNeXt-style strided grouped conv
    (1, 4, 4, 4, 8, 8, 3, 2, 2, 2, False, "im2col"),            # depthwise, dilated, strided
    (2, 6, 2, 2, 7, 5, 1, 2, 0, 1, False, "im2col"),
    (1, 2, 3, 1, 9, 8, 3, (2, 1), (1, 2), (3, 1), True, "im2col"),
]
IDS = [f"N{c[0]}-{c[1]}to{c[2]}-g{c[3]}-{c[4]}x{c[5]}-k{c[6]}s{c[7]}p{c[8]}d{c[9]}-{c[11].replace(' ', '')}"
       .replace("(", "").replace(")", "").replace(", ", ",") for c in CASES]


def pair(v):
    return v if isinstance(v, tuple) else (v, v)


def make_case(case, device, rng):
    N, C, O, G, H, W, k, s, p, d, bias, _ = case
    x = T(rng.standard_normal((N, C, H, W)), device)
    w = T(rng.standard_normal((O, C // G, k, k)), device)
    b = T(rng.standard_normal(O), device) if bias else None
    return x, w, b, dict(stride=s, padding=p, dilation=d, groups=G)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_grouped_dilated_forward_matches_naive_loop(case, device, rng):
    x, w, b, options = make_case(case, device, rng)
    y = F.conv2d(x, w, b, **options)
    assert path_of(y) == case[-1]
    expected = naive_conv2d(x.numpy(), w.numpy(), None if b is None else b.numpy(), pair(options["stride"]),
                            pair(options["padding"]), pair(options["dilation"]), options["groups"])
    assert y.shape == expected.shape
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_grouped_dilated_gradcheck(case, device, rng):
    x, w, b, options = make_case(case, device, rng)
    inputs = [x, w] + ([b] if b is not None else [])
    assert td.gradcheck(lambda *a: F.conv2d(*a, **options), inputs, mode="full")


def test_groups_are_independent_convolutions(rng):
    """Grouped conv == the groups' ordinary convolutions side by side (the definition)."""
    x, w = rng.standard_normal((2, 6, 5, 5)), rng.standard_normal((9, 2, 3, 3))
    y = F.conv2d(td.tensor(x), td.tensor(w), padding=1, groups=3).numpy()
    for g in range(3):
        part = F.conv2d(td.tensor(x[:, 2 * g:2 * g + 2]), td.tensor(w[3 * g:3 * g + 3]), padding=1).numpy()
        np.testing.assert_allclose(y[:, 3 * g:3 * g + 3], part, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=40, deadline=None)
@given(N=st.integers(1, 2), Cg=st.integers(1, 3), Og=st.integers(1, 3), G=st.integers(1, 4),
       H=st.integers(1, 8), W=st.integers(1, 8), kh=st.integers(1, 3), kw=st.integers(1, 3),
       s=st.integers(1, 3), p=st.integers(0, 2), d=st.integers(1, 3), bias=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_grouped_dilated_random_shapes(N, Cg, Og, G, H, W, kh, kw, s, p, d, bias, seed, device):
    assume(d * (kh - 1) + 1 <= H + 2 * p and d * (kw - 1) + 1 <= W + 2 * p)
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((N, G * Cg, H, W)), rng.standard_normal((G * Og, Cg, kh, kw))
    b = rng.standard_normal(G * Og) if bias else None
    options = dict(stride=s, padding=p, dilation=d, groups=G)
    x_, w_ = T(x, device), T(w, device)
    b_ = None if b is None else T(b, device)
    y = F.conv2d(x_, w_, b_, **options)
    np.testing.assert_allclose(y.numpy(), naive_conv2d(x, w, b, (s, s), (p, p), (d, d), G), atol=1e-10)
    inputs = [x_, w_] + ([b_] if bias else [])
    assert td.gradcheck(lambda *a: F.conv2d(*a, **options), inputs, mode="direction", n_directions=2)


def test_float32_grouped_conv_close_to_float64(rng):
    x = rng.standard_normal((2, 8, 9, 9)).astype(np.float32)
    w = rng.standard_normal((8, 2, 3, 3)).astype(np.float32)
    y = F.conv2d(td.tensor(x), td.tensor(w), stride=2, padding=2, dilation=2, groups=4)
    assert y.dtype == np.float32
    expected = naive_conv2d(x.astype(np.float64), w.astype(np.float64), None, (2, 2), (2, 2), (2, 2), 4)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-4, atol=1e-4)


def named(exc, *fragments):
    return pytest.raises(exc, match="(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments))


def test_bad_groups_and_dilation_name_the_values():
    x = td.tensor(np.zeros((1, 6, 5, 5)), requires_grad=True)
    with named(ValueError, "groups=4", "input channels (6", "output channels (4"):
        F.conv2d(x, td.tensor(np.zeros((4, 1, 3, 3))), groups=4)
    with named(ValueError, "groups=2", "output channels (3", "(3, 3, 3, 3)"):
        F.conv2d(x, td.tensor(np.zeros((3, 3, 3, 3))), groups=2)
    with named(ValueError, "input has 6 channels", "expects 2 x groups=2 = 4", "(4, 2, 3, 3)",
               "C_in / groups = 3"):
        F.conv2d(x, td.tensor(np.zeros((4, 2, 3, 3))), groups=2)
    with named(ValueError, "groups must be a positive integer", "0"):
        F.conv2d(x, td.tensor(np.zeros((4, 6, 3, 3))), groups=0)
    with named(ValueError, "dilation >= 1", "dilation=0"):
        F.conv2d(x, td.tensor(np.zeros((4, 6, 3, 3))), dilation=0)
    with named(ValueError, "kernel 3x3", "dilation 3,3 spreads it to 7x7", "padded input 5x5"):
        F.conv2d(x, td.tensor(np.zeros((4, 6, 3, 3))), dilation=3)
    assert x.grad is None
