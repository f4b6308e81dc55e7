"""Bad input: a ValueError or TypeError whose message names the shapes or
values involved, raised before any state has changed."""
import re

import numpy as np
import pytest

import tinydense as td
import tinydense.functional as F
from tinydense import Function, backend


def T(shape, grad=True, seed=0):
    return td.tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=grad)


def raises_naming(exc, *fragments):
    """pytest.raises whose message must contain every fragment, verbatim."""
    return pytest.raises(exc, match="(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments))


# --- conv2d ----------------------------------------------------------------------------

def test_conv_channel_mismatch():
    x, w = T((2, 3, 5, 5)), T((4, 2, 3, 3))
    with raises_naming(ValueError, "(2, 3, 5, 5)", "(4, 2, 3, 3)", "3 channels", "expects 2"):
        F.conv2d(x, w)
    assert x.grad is None and w.grad is None


@pytest.mark.parametrize("x_shape,w_shape,shown", [
    ((3, 5, 5), (4, 3, 3, 3), "(3, 5, 5)"),
    ((1, 3, 5, 5), (4, 3, 3), "(4, 3, 3)"),
])
def test_conv_wrong_ndim(x_shape, w_shape, shown):
    with raises_naming(ValueError, shown):
        F.conv2d(T(x_shape), T(w_shape))


def test_conv_kernel_larger_than_the_padded_input():
    with raises_naming(ValueError, "kernel 5x5", "padded input 4x4", "2x2"):
        F.conv2d(T((1, 1, 2, 2)), T((1, 1, 5, 5)), padding=1)


def test_conv_bias_dtype_stride():
    with raises_naming(ValueError, "bias", "(4,)", "(3,)"):
        F.conv2d(T((1, 3, 5, 5)), T((4, 3, 3, 3)), T((3,)))
    with raises_naming(TypeError, "float32", "float64"):
        F.conv2d(T((1, 3, 5, 5)).float(), T((4, 3, 3, 3)))
    with raises_naming(ValueError, "stride=0"):
        F.conv2d(T((1, 3, 5, 5)), T((4, 3, 3, 3)), stride=0)
    with raises_naming(TypeError, "padding", "1.5"):
        F.conv2d(T((1, 3, 5, 5)), T((4, 3, 3, 3)), padding=1.5)


# --- cat, linear, matmul, reshape ---------------------------------------------------------

def test_cat_with_mismatched_other_dimensions():
    with raises_naming(ValueError, "(2, 3, 4, 4)", "(2, 5, 4, 3)"):
        F.cat([T((2, 3, 4, 4)), T((2, 5, 4, 3))], axis=1)
    with raises_naming(ValueError, "axis 4", "4-D"):
        F.cat([T((2, 3, 4, 4))], axis=4)
    with raises_naming(ValueError, "(2, 3)", "(2, 3, 1)"):
        F.cat([T((2, 3)), T((2, 3, 1))])


def test_linear_matmul_reshape_shapes():
    with raises_naming(ValueError, "(4, 3)", "(5, 2)"):
        F.linear(T((4, 3)), T((5, 2)))
    with raises_naming(ValueError, "(2, 3)", "(4, 5)"):
        T((2, 3)) @ T((4, 5))
    with raises_naming(ValueError, "(2, 3)", "(7,)"):
        T((2, 3)).reshape(7)


# --- cross_entropy -----------------------------------------------------------------------

def test_cross_entropy_labels_out_of_range():
    with raises_naming(ValueError, "[0, 3)", "from 0 to 5"):
        F.cross_entropy(T((2, 3)), np.array([0, 5]))
    with raises_naming(ValueError, "[0, 3)", "-1"):
        F.cross_entropy(T((2, 3)), np.array([-1, 2]))


def test_cross_entropy_non_integer_labels():
    with raises_naming(TypeError, "integer", "float64"):
        F.cross_entropy(T((2, 3)), np.array([0.0, 1.0]))


def test_cross_entropy_wrong_number_of_labels():
    with raises_naming(ValueError, "(3,)", "(2, 3)", "(2,)"):
        F.cross_entropy(T((2, 3)), np.array([0, 1, 2]))
    with raises_naming(ValueError, "(2, 3, 1)"):
        F.cross_entropy(T((2, 3, 1)), np.array([0, 1]))


# --- backward -------------------------------------------------------------------------

def test_backward_on_a_non_scalar_without_a_gradient():
    x = T((2, 3))
    y = x * 2
    with raises_naming(ValueError, "scalar", "(2, 3)"):
        y.backward()
    assert x.grad is None
    y.backward(np.ones((2, 3)))            # the graph is still intact
    np.testing.assert_array_equal(x.grad, np.full((2, 3), 2.0))


# --- devices ---------------------------------------------------------------------------

class Recorder(Function):
    """An op that remembers whether its forward ran."""
    ran = False

    def forward(self, a, b):
        Recorder.ran = True
        return a + b

    def backward(self, g):
        return g, g


@pytest.fixture
def on_fake_gpu(monkeypatch):
    """Returns ``mark(array)``: afterwards tinydense's backend reports that NumPy
    array as living on "cuda" (no GPU needed), so ops must refuse to mix it
    with CPU arrays. Only the arrays marked are affected."""
    marked = []
    real = backend.device_of
    monkeypatch.setattr(backend, "device_of",
                        lambda a: "cuda" if any(a is m for m in marked) else real(a))

    def mark(array):
        marked.append(array)
        return array
    return mark


def test_mixing_cpu_and_gpu_tensors_is_refused_before_forward(on_fake_gpu):
    gpu, cpu = td.Tensor(on_fake_gpu(np.ones((2, 3))), requires_grad=True), T((2, 3))
    assert gpu.device == "cuda" and cpu.device == "cpu"
    Recorder.ran = False
    with raises_naming(ValueError, "different devices", "(2, 3) on cuda", "(2, 3) on cpu"):
        Recorder.apply(gpu, cpu)
    assert not Recorder.ran
    with raises_naming(ValueError, "different devices"):
        cpu + gpu


def test_batch_norm_running_stats_on_another_device_are_left_alone(on_fake_gpu):
    x = T((4, 3))
    running_mean, running_var = on_fake_gpu(np.zeros(3)), np.ones(3)
    with raises_naming(ValueError, "different devices", "(3,) on cuda", "(4, 3) on cpu"):
        F.batch_norm(x, running_mean, running_var, training=True)
    np.testing.assert_array_equal(running_mean, np.zeros(3))
    np.testing.assert_array_equal(running_var, np.ones(3))


def test_cross_entropy_labels_on_another_device(on_fake_gpu):
    with raises_naming(ValueError, "logits are on cpu", "labels on cuda"):
        F.cross_entropy(T((2, 3)), on_fake_gpu(np.array([0, 1])))


# --- batch norm: nothing changes when it refuses -------------------------------------------

@pytest.mark.parametrize("bad,fragments", [
    (dict(weight=T((4,)), bias=T((3,))), ["weight", "(4,)", "3 channels"]),
    (dict(weight=T((3,))), ["both weight and bias"]),
    (dict(running_var=None), ["both running_mean and running_var"]),
    (dict(running_var=np.ones(3, dtype=np.int64)), ["running_var", "int64"]),
    (dict(running_mean=np.zeros(2)), ["running_mean", "(2,)", "(4, 3, 2, 2)"]),
    (dict(momentum=1.5), ["momentum", "1.5"]),
    (dict(x=T((1, 3, 1, 1))), ["more than one value", "(1, 3, 1, 1)"]),
    (dict(x=T((4, 3, 2))), ["(N, C)", "(4, 3, 2)"]),
])
def test_batch_norm_refuses_without_touching_running_stats(bad, fragments):
    args = dict(x=T((4, 3, 2, 2)), running_mean=np.zeros(3), running_var=np.ones(3),
                weight=None, bias=None, training=True)
    args.update(bad)
    kept = {k: args[k].copy() for k in ("running_mean", "running_var") if args[k] is not None}
    with raises_naming((ValueError, TypeError), *fragments):
        F.batch_norm(**args)
    for k, before in kept.items():
        np.testing.assert_array_equal(args[k], before)


def test_batch_norm_eval_needs_running_stats():
    with raises_naming(ValueError, "eval mode needs running_mean and running_var"):
        F.batch_norm(T((4, 3)), None, None, training=False)


# --- pooling, dropout, tensors, gradcheck ---------------------------------------------------

def test_pooling_bad_input():
    with raises_naming(ValueError, "max_pool2d", "(3, 4, 4)"):
        F.max_pool2d(T((3, 4, 4)), 2)
    with raises_naming(ValueError, "avg_pool2d", "padding 2", "kernel size 2"):
        F.avg_pool2d(T((1, 1, 4, 4)), 2, padding=2)
    with raises_naming(ValueError, "kernel 5x5", "(1, 1, 3, 3)"):
        F.max_pool2d(T((1, 1, 3, 3)), 5)
    with raises_naming(ValueError, "output size 0x1", "(1, 1, 4, 4)"):    # larger than the input is fine
        F.adaptive_avg_pool2d(T((1, 1, 4, 4)), (0, 1))


def test_dropout_probability():
    with raises_naming(ValueError, "[0, 1)", "1.0"):
        F.dropout(T((2, 2)), p=1.0)


def test_tensor_bad_input():
    with raises_naming(TypeError, "floating-point", "int64"):
        td.tensor(np.array([1, 2]), requires_grad=True)
    with raises_naming(TypeError, "exponent", "Tensor"):
        T((2,)) ** T((2,))
    with raises_naming(ValueError, "unknown device", "'tpu'"):
        T((2,)).to("tpu")
    with raises_naming(TypeError, "str"):
        T((2,)) + "a"


def test_gradcheck_restores_inputs_when_fn_raises():
    x = T((3,))
    before = x.data.copy()
    calls = []

    def flaky(x):
        calls.append(1)
        if len(calls) > 2:           # the analytic pass and one perturbed evaluation succeed
            raise FloatingPointError("boom")
        return x * 2

    with pytest.raises(FloatingPointError):
        td.gradcheck(flaky, [x])
    np.testing.assert_array_equal(x.data, before)
