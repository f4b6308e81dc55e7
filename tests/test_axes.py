"""Every op that takes axes, with negative axes: values against NumPy (which
counts -1 as the last axis by itself), gradients against finite differences
(float64, mode="full") and hand-derived results. Axes out of range or named
twice are a ValueError naming the axis and the number of dimensions."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import DEVICES
from test_autograd import G, T, check

import tinydense as td
import tinydense.functional as F
from tinydense import backend


@st.composite
def shapes(draw, min_ndim=1, max_ndim=3):
    ndim = draw(st.integers(min_ndim, max_ndim))
    return tuple(draw(st.lists(st.integers(1, 3), min_size=ndim, max_size=ndim)))


def signed(draw, ax, ndim):
    """``ax`` or the same axis counted from the end (ax - ndim)."""
    return ax - ndim if draw(st.booleans()) else ax


@st.composite
def shape_and_axis(draw):
    """A shape and an ``axis`` argument for a reduction: None, an int, or a tuple
    of distinct axes in any order, each possibly negative."""
    shape = draw(shapes(min_ndim=0))
    ndim = len(shape)
    if ndim == 0:
        return shape, draw(st.sampled_from([None, ()]))
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        return shape, None
    if kind == "int":
        return shape, signed(draw, draw(st.integers(0, ndim - 1)), ndim)
    chosen = draw(st.permutations(range(ndim)))[:draw(st.integers(0, ndim))]
    return shape, tuple(signed(draw, ax, ndim) for ax in chosen)


def positive(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    return tuple(a % ndim for a in ((axis,) if isinstance(axis, int) else axis))


def distinct(rng, shape):
    """Values with no ties (max has one winner; eps never swaps it)."""
    n = int(np.prod(shape))
    return (rng.permutation(n) / max(n, 1) * 2 - 1).reshape(shape)


# --- the regression cases of issue 14 ------------------------------------------------------

def test_transpose_with_a_negative_axis_gives_the_transposed_gradient(device):
    x = T(np.zeros((3, 3)), device)
    g = np.arange(9.0).reshape(3, 3)
    x.transpose(-1, 0).backward(backend.to_device(g, device))
    np.testing.assert_array_equal(G(x), g.T)           # was g: argsort((-1, 0)) is the identity


def test_transpose_of_three_axes_with_a_negative_one_keeps_the_input_shape(device):
    x = T(np.zeros((2, 4, 1)), device)
    y = x.transpose(0, -1, 1)
    assert y.shape == (2, 1, 4)
    g = np.arange(8.0).reshape(2, 1, 4)
    y.backward(backend.to_device(g, device))
    assert x.grad.shape == (2, 4, 1)                    # was (1, 2, 4)
    np.testing.assert_array_equal(G(x), g.transpose(0, 2, 1))


# --- randomized: every op, negative axes ----------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=40, deadline=None)
@given(case=shape_and_axis(), keepdims=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_sum_mean_max_with_any_axes(case, keepdims, seed, device):
    shape, axis = case
    rng = np.random.default_rng(seed)
    x_np = distinct(rng, shape)
    axes = positive(axis, len(shape))
    np_axis = axis                      # NumPy counts negative axes from the end itself
    count = int(np.prod([shape[a] for a in axes]))
    for name in ("sum", "mean", "max"):
        if name == "max" and count == 0:
            continue
        x = T(x_np, device)
        y = getattr(x, name)(axis=axis, keepdims=keepdims)
        expected = getattr(np, name)(x_np, axis=np_axis, keepdims=keepdims)
        assert y.shape == np.shape(expected)
        np.testing.assert_allclose(y.numpy(), expected, rtol=1e-13, atol=1e-15)
        g = rng.standard_normal(y.shape)
        y.backward(backend.to_device(g, device))
        g_kept = g.reshape(np.sum(x_np, axis=np_axis, keepdims=True).shape)     # g with the axes put back
        if name == "sum":      # dz/dx = 1: g copied along the reduced axes
            hand = np.broadcast_to(g_kept, shape)
        elif name == "mean":   # 1 / count
            hand = np.broadcast_to(g_kept / count, shape)
        else:                  # all of g to the one maximal entry
            hand = np.where(x_np == x_np.max(axis=np_axis, keepdims=True), g_kept, 0.0)
        np.testing.assert_allclose(G(x), hand, rtol=1e-13, atol=1e-15)
        check(lambda x: getattr(x, name)(axis=axis, keepdims=keepdims), T(x_np, device))


@pytest.mark.parametrize("device", DEVICES)
def test_transpose_of_two_axes_swaps_them_as_pytorch_does(device):
    w = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(T(w, device).transpose(0, 1).numpy(), w.T)       # not NumPy's identity
    np.testing.assert_array_equal(T(w, device).transpose((0, 1)).numpy(), w)       # the permutation
    x = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_array_equal(T(x, device).transpose(-1, 0).numpy(), np.swapaxes(x, -1, 0))


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=40, deadline=None)
@given(shape=shapes(max_ndim=4), data=st.data(), seed=st.integers(0, 2 ** 16))
def test_transpose_with_any_signed_permutation(shape, data, seed, device):
    ndim = len(shape)
    perm = data.draw(st.permutations(range(ndim)))
    axes = tuple(signed(data.draw, a, ndim) for a in perm)
    rng = np.random.default_rng(seed)
    x_np = rng.standard_normal(shape)
    x = T(x_np, device)
    y = x.transpose(axes)            # a tuple is NumPy's permutation (two axes apart swap, as in PyTorch)
    np.testing.assert_array_equal(y.numpy(), np.transpose(x_np, axes))
    g = rng.standard_normal(y.shape)
    y.backward(backend.to_device(g, device))
    # naive loop: y[j] = x[i] with i[perm[k]] = j[k], so dL/dx[i] = g[j]
    hand = np.empty(shape)
    for i in itertools.product(*map(range, shape)):
        hand[i] = g[tuple(i[p] for p in perm)]
    np.testing.assert_array_equal(G(x), hand)
    check(lambda x: x.transpose(axes), T(x_np, device))


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=30, deadline=None)
@given(base=shapes(max_ndim=3), sizes=st.lists(st.integers(1, 3), min_size=1, max_size=3),
       data=st.data(), seed=st.integers(0, 2 ** 16))
def test_cat_along_a_negative_axis(base, sizes, data, seed, device):
    ndim = len(base)
    axis = signed(data.draw, data.draw(st.integers(0, ndim - 1)), ndim)
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(base[:axis % ndim] + (n,) + base[axis % ndim + 1:]) for n in sizes]
    xs = [T(a, device) for a in arrays]
    y = F.cat(xs, axis=axis)
    np.testing.assert_array_equal(y.numpy(), np.concatenate(arrays, axis=axis))
    g = rng.standard_normal(y.shape)
    y.backward(backend.to_device(g, device))
    for x, piece in zip(xs, np.split(g, np.cumsum(sizes)[:-1], axis=axis)):
        np.testing.assert_array_equal(G(x), piece)
    check(lambda *a: F.cat(a, axis=axis), *[T(a, device) for a in arrays])


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=30, deadline=None)
@given(shape=shapes(max_ndim=3), data=st.data(), seed=st.integers(0, 2 ** 16))
def test_log_softmax_along_a_negative_axis(shape, data, seed, device):
    ndim = len(shape)
    axis = signed(data.draw, data.draw(st.integers(0, ndim - 1)), ndim)
    rng = np.random.default_rng(seed)
    z_np = rng.standard_normal(shape) * 3
    y = F.log_softmax(T(z_np, device), axis=axis)
    m = z_np.max(axis=axis, keepdims=True)
    reference = z_np - m - np.log(np.exp(z_np - m).sum(axis=axis, keepdims=True))
    np.testing.assert_allclose(y.numpy(), reference, rtol=1e-13, atol=1e-14)
    z = T(z_np, device)
    g = rng.standard_normal(shape)
    F.log_softmax(z, axis=axis).backward(backend.to_device(g, device))
    softmax = np.exp(reference)
    np.testing.assert_allclose(G(z), g - softmax * g.sum(axis=axis, keepdims=True), rtol=1e-12, atol=1e-14)
    check(lambda z: F.log_softmax(z, axis=axis), T(z_np, device))


def torch_flatten_shape(shape, start, end):
    """torch.flatten's rule, written out: a 0-d tensor acts as 1-d, then dims start..end merge."""
    shape = shape or (1,)
    start, end = start % len(shape), end % len(shape)
    merged = 1
    for n in shape[start:end + 1]:
        merged *= n
    return shape[:start] + (merged,) + shape[end + 1:]


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=40, deadline=None)
@given(shape=shapes(min_ndim=0, max_ndim=4), data=st.data(), seed=st.integers(0, 2 ** 16))
def test_flatten_with_negative_start_and_end(shape, data, seed, device):
    ndim = max(len(shape), 1)
    start = data.draw(st.integers(0, ndim - 1))
    end = data.draw(st.integers(start, ndim - 1))
    start, end = signed(data.draw, start, ndim), signed(data.draw, end, ndim)
    rng = np.random.default_rng(seed)
    x_np = rng.standard_normal(shape)
    expected = torch_flatten_shape(shape, start, end)
    for flat in (lambda x: x.flatten(start, end), lambda x: F.flatten(x, start, end)):
        x = T(x_np, device)
        y = flat(x)
        assert y.shape == expected
        np.testing.assert_array_equal(y.numpy(), x_np.reshape(expected))
        g = rng.standard_normal(expected)
        y.backward(backend.to_device(g, device))
        np.testing.assert_array_equal(G(x), g.reshape(shape))


@settings(max_examples=30, deadline=None)
@given(shape=shapes(max_ndim=3), data=st.data(), seed=st.integers(0, 2 ** 16))
def test_argmax_along_a_negative_axis(shape, data, seed):
    ndim = len(shape)
    axis = signed(data.draw, data.draw(st.integers(0, ndim - 1)), ndim)
    x_np = distinct(np.random.default_rng(seed), shape)
    np.testing.assert_array_equal(T(x_np).argmax(axis=axis).numpy(), np.argmax(x_np, axis=axis))


def test_the_default_flatten_start_dims_and_a_0d_tensor():
    x = T(np.arange(24.0).reshape(2, 3, 4))
    assert x.flatten().shape == (24,)                  # Tensor.flatten: from dim 0, like torch
    assert F.flatten(x).shape == (2, 12)               # F.flatten: from dim 1 (keeps the batch)
    assert x.flatten(-1).shape == (2, 3, 4)            # flattening the last dim alone changes nothing
    assert T(5.0).flatten().shape == (1,)


def test_keepdims_with_tuple_and_negative_axes_hand_derived():
    x = T(np.arange(24.0).reshape(2, 3, 4))
    y = x.sum(axis=(-1, 0), keepdims=True)             # (1, 3, 1)
    assert y.shape == (1, 3, 1)
    y.backward(np.array([1.0, 2.0, 3.0]).reshape(1, 3, 1))
    np.testing.assert_array_equal(G(x), np.broadcast_to(np.array([1.0, 2.0, 3.0])[None, :, None], (2, 3, 4)))
    x = T([[1.0, 9.0, 2.0], [8.0, 0.0, 3.0]])
    x.max(axis=-2, keepdims=True).backward(np.array([[10.0, 20.0, 30.0]]))
    np.testing.assert_array_equal(G(x), [[0, 20, 0], [10, 0, 30]])


# --- bad axes -------------------------------------------------------------------------------

X = np.zeros((2, 3, 4))

BAD_AXES = [
    ("sum", lambda: T(X).sum(axis=3), r"sum: axis 3 is out of range for a 3-D tensor"),
    ("sum", lambda: T(X).sum(axis=(0, -4)), r"sum: axis -4 is out of range for a 3-D tensor"),
    ("sum", lambda: T(X).sum(axis=(0, -3)), r"sum: axes \(0, -3\) name dimension 0 of a 3-D tensor twice"),
    ("mean", lambda: T(X).mean(axis=(1, 1)), r"mean: axes \(1, 1\) name dimension 1 of a 3-D tensor twice"),
    ("mean", lambda: T(X).mean(axis=-4), r"mean: axis -4 is out of range for a 3-D tensor"),
    ("max", lambda: T(X).max(axis=(2, -1)), r"max: axes \(2, -1\) name dimension 2 of a 3-D tensor twice"),
    ("max", lambda: T(X).max(axis=5), r"max: axis 5 is out of range for a 3-D tensor"),
    ("transpose", lambda: T(X).transpose(0, 1, 3), r"transpose: axis 3 is out of range for a 3-D tensor"),
    ("transpose", lambda: T(X).transpose(0, -3, 1), r"transpose: axes \(0, -3, 1\) name dimension 0 of a 3-D tensor twice"),
    ("transpose", lambda: T(X).transpose(0, 1, 2, 0), r"transpose: axes \(0, 1, 2, 0\) name dimension 0"),
    ("transpose", lambda: T(X).transpose(0, 3), r"transpose: axis 3 is out of range for a 3-D tensor"),  # a swap
    ("cat", lambda: F.cat([T(X), T(X)], axis=-4), r"cat: axis -4 is out of range for a 3-D tensor"),
    ("log_softmax", lambda: F.log_softmax(T(X), axis=3), r"log_softmax: axis 3 is out of range for a 3-D tensor"),
    ("flatten", lambda: T(X).flatten(3), r"flatten start_dim: axis 3 is out of range for a 3-D tensor"),
    ("flatten", lambda: F.flatten(T(X), 0, -4), r"flatten end_dim: axis -4 is out of range for a 3-D tensor"),
    ("flatten", lambda: F.flatten(T(X), -1, 0), r"flatten: start_dim -1 comes after end_dim 0"),
    ("argmax", lambda: T(X).argmax(axis=-4), r"argmax: axis -4 is out of range for a 3-D tensor"),
]


@pytest.mark.parametrize("op, call, message", BAD_AXES, ids=[f"{op}-{i}" for i, (op, _, _) in enumerate(BAD_AXES)])
def test_bad_axes_are_a_value_error_naming_the_axis_and_ndim(op, call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("call", [lambda: T(X).sum(axis=1.0), lambda: T(X).sum(axis=(0, True)),
                                  lambda: F.cat([T(X)], axis=(1,)), lambda: T(X).flatten(0.5)])
def test_axes_that_are_not_integers_are_a_type_error(call):
    with pytest.raises(TypeError, match="axis must be .*an integer"):
        call()
