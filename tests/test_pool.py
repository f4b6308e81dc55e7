"""Pooling's newer arguments: ceil_mode, dilation, count_include_pad, adaptive max
pooling, and adaptive pooling to sizes larger than the input. Forward against
naive loops written from the definitions here, backward against finite
differences (float64, mode="full"), and the errors for windows that cannot exist."""
import re

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from conftest import DEVICES

import tinydense as td
import tinydense.functional as F


def T(a, device, grad=True):
    return td.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad, device=device)


def distinct(rng, shape):
    """Values with no two closer than 2/size: max pooling has no ties."""
    n = int(np.prod(shape))
    return (rng.permutation(n) / n * 2 - 1).reshape(shape)


def window_starts(n, k, s, p, d, ceil_mode):
    """First row (input coordinates, -p = the first padded row) of every window along one
    axis. Floor mode: every window that fits in the padded input. Ceil mode: also the
    partial windows that begin less than a stride after the last fitting start, but only
    those that begin inside the input or the left padding (PyTorch's rule)."""
    span, starts, i = d * (k - 1) + 1, [], 0
    while True:
        start = i * s - p
        fits = start + span <= n + p
        partial = ceil_mode and start + span < n + p + s and start < n
        if not (fits or partial):
            return starts
        starts.append(start)
        i += 1


def naive_pool(x, k, s, p, d, ceil_mode, kind, count_include_pad=True):
    """One output pixel at a time. Max: the largest input value the window's taps hit.
    Average: the sum of the input values hit, divided by the window's positions inside
    the padded input (count_include_pad) or inside the input."""
    N, C, H, W = x.shape
    rows, cols = window_starts(H, k, s, p, d, ceil_mode), window_starts(W, k, s, p, d, ceil_mode)
    y = np.zeros((N, C, len(rows), len(cols)))
    for i, r0 in enumerate(rows):
        for j, c0 in enumerate(cols):
            rr = [r0 + a * d for a in range(k)]
            cc = [c0 + b * d for b in range(k)]
            real_r, real_c = [r for r in rr if 0 <= r < H], [c for c in cc if 0 <= c < W]
            window = x[:, :, real_r][:, :, :, real_c]
            if kind == "max":
                y[:, :, i, j] = window.max(axis=(2, 3))
            else:
                if count_include_pad:
                    count = sum(-p <= r < H + p for r in rr) * sum(-p <= c < W + p for c in cc)
                else:
                    count = len(real_r) * len(real_c)
                y[:, :, i, j] = window.sum(axis=(2, 3)) / count
    return y


def pool(kind, x, k, s, p, d=1, ceil_mode=False, count_include_pad=True):
    if kind == "max":
        return F.max_pool2d(x, k, s, p, dilation=d, ceil_mode=ceil_mode)
    return F.avg_pool2d(x, k, s, p, ceil_mode=ceil_mode, count_include_pad=count_include_pad)


# --- hand-derived sizes and values ----------------------------------------------------------

def test_ceil_mode_adds_the_partial_last_window(device):
    x = T(np.arange(6.0).reshape(1, 1, 1, 6), device)          # one row 0 1 2 3 4 5
    assert F.max_pool2d(x, (1, 3), 2).numpy().ravel().tolist() == [2, 4]          # floor: (6 - 3)//2 + 1
    assert F.max_pool2d(x, (1, 3), 2, ceil_mode=True).numpy().ravel().tolist() == [2, 4, 5]
    # the partial window holds 4 and 5: both divisors count 2 (the overhang is not padding)
    for cip in (True, False):
        y = F.avg_pool2d(x, (1, 3), 2, ceil_mode=True, count_include_pad=cip).numpy().ravel()
        np.testing.assert_allclose(y, [1.0, 3.0, 4.5])


def test_ceil_mode_drops_a_window_that_would_start_in_the_right_padding(device):
    # H=5, k=2, s=2, p=1: rounding up gives 4 windows, starting at -1, 1, 3 and 5; the last
    # starts in the right padding (5 = H), so PyTorch keeps 3 (as floor mode does here)
    x = T(np.arange(5.0).reshape(1, 1, 5, 1), device)
    y = F.max_pool2d(x, (2, 1), (2, 1), (1, 0), ceil_mode=True)
    assert y.shape == (1, 1, 3, 1) and y.numpy().ravel().tolist() == [0, 2, 4]
    assert F.avg_pool2d(x, (2, 1), (2, 1), (1, 0), ceil_mode=True).numpy().ravel().tolist() == [0, 1.5, 3.5]
    # without padding the 4th window starts at 4, inside the input: kept
    assert F.max_pool2d(T(np.arange(7.0).reshape(1, 1, 7, 1), device), (2, 1), (2, 1), ceil_mode=True).shape[2] == 4


def test_googlenet_and_zfnet_sizes():
    # torchvision's GoogLeNet: 112 -> 56 -> 28 -> 14 -> 7 with 3x3/2 (2x2/2 last) ceil-mode pools
    x = td.tensor(np.zeros((1, 1, 112, 112)))
    for k, size in ((3, 56), (3, 28), (3, 14), (2, 7)):
        x = F.max_pool2d(x, k, 2, ceil_mode=True)
        assert x.shape[2:] == (size, size)
    assert F.max_pool2d(td.tensor(np.zeros((1, 1, 112, 112))), 3, 2).shape[2] == 55   # floor mode
    assert F.max_pool2d(td.tensor(np.zeros((1, 1, 110, 110))), 3, 2, ceil_mode=True).shape[2] == 55  # ZFNet


def test_count_include_pad_false_divides_by_the_real_elements(device):
    y = F.avg_pool2d(T(np.ones((1, 1, 2, 2)), device), 2, stride=1, padding=1, count_include_pad=False)
    np.testing.assert_allclose(y.numpy()[0, 0], np.ones((3, 3)))      # every window: mean of real ones
    y = F.avg_pool2d(T(np.ones((1, 1, 2, 2)), device), 2, stride=1, padding=1)
    np.testing.assert_allclose(y.numpy()[0, 0], [[0.25, 0.5, 0.25], [0.5, 1, 0.5], [0.25, 0.5, 0.25]])


def test_dilated_max_pool_reads_spaced_taps(device):
    x = T(np.array([[[[5.0, 9.0, 1.0, 7.0, 3.0]]]]), device)
    # a 1x2 window dilated by 3 reads columns (0, 3) and (1, 4)
    assert F.max_pool2d(x, (1, 2), 1, dilation=(1, 3)).numpy().ravel().tolist() == [7.0, 9.0]


# --- against the naive loops ------------------------------------------------------------------

CASES = [  # N, C, H, W, kernel, stride, padding, dilation 1, ceil_mode, count_include_pad
    (1, 2, 5, 5, 3, 2, 0, 1, True, True),
    (2, 1, 6, 7, 3, 2, 1, 1, True, False),
    (1, 2, 7, 6, 2, 2, 1, 1, True, True),
    (2, 2, 8, 5, 3, 3, 1, 1, True, False),
    (2, 1, 1, 1, 1, 1, 0, 1, True, True),          # a 1x1 image
    (1, 1, 2, 2, 3, 2, 1, 1, True, False),         # the kernel is larger than the input
    (1, 2, 5, 7, 3, 2, 0, 1, False, False),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_matches_naive_loop_and_gradcheck(case, kind, device, rng):
    N, C, H, W, k, s, p, d, ceil_mode, cip = case
    x = distinct(rng, (N, C, H, W))
    y = pool(kind, T(x, device), k, s, p, d, ceil_mode, cip)
    np.testing.assert_allclose(y.numpy(), naive_pool(x, k, s, p, d, ceil_mode, kind, cip), atol=1e-12)
    assert td.gradcheck(lambda t: pool(kind, t, k, s, p, d, ceil_mode, cip), [T(x, device)], mode="full")


DILATED = [  # max pooling only: avg_pool2d has no dilation (as in PyTorch)
    (1, 1, 9, 8, 3, 1, 1, 2, False, True),
    (1, 2, 9, 9, 2, 2, 1, 3, True, True),
    (2, 1, 7, 10, 3, 2, 0, 2, True, True),
]


@pytest.mark.parametrize("case", DILATED)
def test_dilated_max_pool_matches_naive_loop_and_gradcheck(case, device, rng):
    N, C, H, W, k, s, p, d, ceil_mode, _ = case
    x = distinct(rng, (N, C, H, W))
    y = F.max_pool2d(T(x, device), k, s, p, dilation=d, ceil_mode=ceil_mode)
    np.testing.assert_allclose(y.numpy(), naive_pool(x, k, s, p, d, ceil_mode, "max"), atol=1e-12)
    assert td.gradcheck(lambda t: F.max_pool2d(t, k, s, p, dilation=d, ceil_mode=ceil_mode), [T(x, device)],
                        mode="full")


def reads_input_everywhere(n, k, s, p, d, ceil_mode):
    return all(any(0 <= r + a * d < n for a in range(k)) for r in window_starts(n, k, s, p, d, ceil_mode))


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=60, deadline=None)
@given(N=st.integers(1, 2), C=st.integers(1, 2), H=st.integers(1, 9), W=st.integers(1, 9),
       k=st.integers(1, 4), s=st.integers(1, 3), p=st.integers(0, 2), d=st.integers(1, 3),
       ceil_mode=st.booleans(), cip=st.booleans(), kind=st.sampled_from(["max", "avg"]),
       seed=st.integers(0, 2 ** 16))
def test_pool_random_arguments(N, C, H, W, k, s, p, d, ceil_mode, cip, kind, seed, device):
    d = d if kind == "max" else 1
    assume(p <= k // 2 and window_starts(H, k, s, p, d, ceil_mode) and window_starts(W, k, s, p, d, ceil_mode))
    assume(reads_input_everywhere(H, k, s, p, d, ceil_mode) and reads_input_everywhere(W, k, s, p, d, ceil_mode))
    x = distinct(np.random.default_rng(seed), (N, C, H, W))
    y = pool(kind, T(x, device), k, s, p, d, ceil_mode, cip)
    np.testing.assert_allclose(y.numpy(), naive_pool(x, k, s, p, d, ceil_mode, kind, cip), atol=1e-12)
    assert td.gradcheck(lambda t: pool(kind, t, k, s, p, d, ceil_mode, cip), [T(x, device)],
                        mode="direction", n_directions=2)


# --- adaptive pooling ------------------------------------------------------------------------

def naive_adaptive(x, oh, ow, kind):
    """PyTorch's bins: cell i covers rows floor(i*H/oh) .. ceil((i+1)*H/oh) - 1."""
    N, C, H, W = x.shape
    y = np.zeros((N, C, oh, ow))
    for i in range(oh):
        for j in range(ow):
            r0, r1 = (i * H) // oh, -(-((i + 1) * H) // oh)
            c0, c1 = (j * W) // ow, -(-((j + 1) * W) // ow)
            window = x[:, :, r0:r1, c0:c1]
            y[:, :, i, j] = window.max(axis=(2, 3)) if kind == "max" else window.mean(axis=(2, 3))
    return y


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("shape, size", [((2, 3, 7, 5), (3, 2)), ((2, 3, 7, 5), (2, 4)), ((1, 2, 13, 13), 6), ((2, 1, 6, 6), 6),
                                         ((1, 2, 3, 2), (7, 5)), ((2, 2, 1, 1), (6, 6)), ((1, 1, 5, 4), 1)])
def test_adaptive_pool_matches_naive_loop_and_gradcheck(kind, shape, size, device, rng):
    fn = F.adaptive_max_pool2d if kind == "max" else F.adaptive_avg_pool2d
    oh, ow = (size, size) if isinstance(size, int) else size
    x = distinct(rng, shape)
    y = fn(T(x, device), size)
    assert y.shape == shape[:2] + (oh, ow)
    np.testing.assert_allclose(y.numpy(), naive_adaptive(x, oh, ow, kind), atol=1e-12)
    assert td.gradcheck(lambda t: fn(t, size), [T(x, device)], mode="full")


def test_adaptive_pool_to_a_larger_size_repeats_pixels(device):
    x = T(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]), device)
    expected = [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    for fn in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
        y = fn(x, 4)
        np.testing.assert_array_equal(y.numpy()[0, 0], expected)
    # 2 -> 3: the middle bin covers both rows (floor(1*2/3)=0 .. ceil(2*2/3)-1=1)
    np.testing.assert_allclose(F.adaptive_avg_pool2d(x, (3, 1)).numpy().ravel(), [1.5, 2.5, 3.5])
    F.adaptive_max_pool2d(x, (3, 3)).backward(np.ones((1, 1, 3, 3)))
    # bins 0..0, 0..1, 1..1 on both axes: 1 wins cell (0, 0), 2 and 3 two cells each, 4 the other four
    np.testing.assert_array_equal(x.grad, [[[[1, 2], [2, 4]]]])


def test_adaptive_max_pool_ties_go_to_the_first_element(device):
    x = T(np.zeros((1, 1, 2, 3)), device)
    F.adaptive_max_pool2d(x, 1).backward(np.ones((1, 1, 1, 1)))
    np.testing.assert_array_equal(x.grad, [[[[1, 0, 0], [0, 0, 0]]]])


# --- errors -------------------------------------------------------------------------------------

def named(exc, *fragments):
    return pytest.raises(exc, match="(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments))


def test_windows_that_cannot_exist_raise_naming_the_values():
    x = td.tensor(np.zeros((1, 1, 3, 3)), requires_grad=True)
    with named(ValueError, "max_pool2d", "kernel 5x5", "padded input 3x3", "(1, 1, 3, 3)"):
        F.max_pool2d(x, 5)
    with named(ValueError, "avg_pool2d", "kernel 5x5", "(1, 1, 3, 3)"):
        F.avg_pool2d(x, 5, stride=1)
    assert F.avg_pool2d(x, 5, ceil_mode=True).shape == (1, 1, 1, 1)   # rounded up, one partial window
    with named(ValueError, "padding 2", "half the kernel size 3"):
        F.max_pool2d(x, 3, padding=2, ceil_mode=True)
    with named(ValueError, "dilation 2", "output column 0", "only padding", "(1, 1, 5, 1)"):
        F.max_pool2d(td.tensor(np.zeros((1, 1, 5, 1))), 2, 1, 1, dilation=2)
    with named(ValueError, "dilation >= 1", "dilation=0"):
        F.max_pool2d(x, 2, dilation=0)
    with named(ValueError, "adaptive_max_pool2d", "output size 0x2"):
        F.adaptive_max_pool2d(x, (0, 2))
    with named(ValueError, "adaptive_max_pool2d", "(3, 3)"):
        F.adaptive_max_pool2d(td.tensor(np.zeros((3, 3))), 1)
    assert x.grad is None
