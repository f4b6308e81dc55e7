"""tinydense.nn: Module bookkeeping, state_dict round trips, strict loading,
modes, devices, and each layer against an independent NumPy reference."""
import math

import numpy as np
import pytest

import tinydense as td
from tinydense import backend, nn


def rand(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


class Tiny(nn.Module):
    """conv -> BN -> ReLU -> global pool -> linear, plus one extra buffer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        self.register_buffer("steps", np.zeros(3, dtype=np.float32))

    def forward(self, x):
        return self.head(self.bn(self.conv(x)))


# --- registration and traversal ------------------------------------------------------

def test_attributes_register_parameters_buffers_and_submodules():
    m = Tiny()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["conv.weight", "bn.weight", "bn.bias", "head.3.weight", "head.3.bias"]
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in m.parameters())
    assert [n for n, _ in m.named_buffers()] == [
        "steps", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"]
    assert [type(x).__name__ for x in m.modules()] == [
        "Tiny", "Conv2d", "BatchNorm2d", "Sequential", "ReLU", "AdaptiveAvgPool2d", "Flatten", "Linear"]
    assert m.conv.bias is None and "bias" not in m.conv._parameters
    # replacing a submodule re-registers it; a plain value is a plain attribute
    m.conv = nn.Conv2d(3, 4, 1)
    assert [n for n, _ in m.named_parameters()][:2] == ["conv.weight", "conv.bias"]
    m.note = "hello"
    assert m.note == "hello" and "note" not in m._modules
    with pytest.raises(TypeError, match="parameter 'weight'"):
        m.conv.weight = np.zeros((4, 3, 1, 1))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        m.nope
    m.conv.bias = None                                # None removes a parameter
    assert m.conv.bias is None and [n for n, _ in m.conv.named_parameters()] == ["weight"]


def test_shared_parameter_listed_once():
    lin = nn.Linear(3, 3)
    seq = nn.Sequential(lin, nn.ReLU(), lin)
    assert len(list(seq.parameters())) == 2


def test_subclass_must_call_super_init():
    class Broken(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.zeros(2))

    with pytest.raises(AttributeError, match="super\\(\\).__init__"):
        Broken()


def test_sequential_and_modulelist():
    seq = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    assert len(seq) == 3 and isinstance(seq[1], nn.ReLU) and isinstance(seq[-1], nn.Linear)
    x = rand(5, 4)
    w0, b0 = seq[0].weight.data, seq[0].bias.data
    w2, b2 = seq[2].weight.data, seq[2].bias.data
    expected = np.maximum(x @ w0.T + b0, 0) @ w2.T + b2
    np.testing.assert_allclose(seq(td.tensor(x)).data, expected, rtol=1e-5, atol=1e-6)
    named = nn.Sequential({"a": nn.ReLU(), "b": nn.Flatten()})
    assert [n for n, _ in named.named_children()] == ["a", "b"]
    ml = nn.ModuleList([nn.Linear(2, 2)]).append(nn.Linear(2, 1))
    assert len(ml) == 2 and [n for n, _ in ml.named_parameters()] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    with pytest.raises(TypeError, match="not callable"):
        ml(td.tensor(rand(1, 2)))


def test_repr_is_a_readable_tree():
    text = repr(Tiny())
    assert text.splitlines()[0] == "Tiny("
    assert "  (conv): Conv2d(3, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)" in text
    assert "  (head): Sequential(\n    (0): ReLU()" in text
    assert "(3): Linear(in_features=4, out_features=2)" in text


# --- state_dict ------------------------------------------------------------------------

def test_state_dict_order_and_snapshot():
    m = Tiny()
    sd = m.state_dict()
    assert list(sd) == ["steps", "conv.weight", "bn.weight", "bn.bias", "bn.running_mean",
                        "bn.running_var", "bn.num_batches_tracked", "head.3.weight", "head.3.bias"]
    assert sd["bn.num_batches_tracked"].shape == () and sd["bn.num_batches_tracked"].dtype == np.int64
    before = sd["conv.weight"].copy()
    m.conv.weight.data += 1.0                       # later changes do not reach the snapshot
    np.testing.assert_array_equal(sd["conv.weight"], before)


def test_state_dict_round_trip_reproduces_outputs():
    td.manual_seed(1)
    a = Tiny()
    a(td.tensor(rand(4, 3, 5, 5)))                  # move the running statistics away from 0/1
    td.manual_seed(2)
    b = Tiny()
    x = td.tensor(rand(2, 3, 5, 5, seed=3))
    a.eval(), b.eval()
    assert not np.allclose(a(x).data, b(x).data)
    result = b.load_state_dict(a.state_dict())
    assert result == nn.IncompatibleKeys([], [])
    np.testing.assert_array_equal(a(x).data, b(x).data)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and va.dtype == vb.dtype
        np.testing.assert_array_equal(va, vb)
    assert int(b.bn.num_batches_tracked) == 1


def test_load_state_dict_casts_to_the_model_dtype_and_accepts_tensors():
    m = Tiny()
    sd = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in m.state_dict().items()}
    sd["conv.weight"] = td.tensor(np.ones((4, 3, 3, 3)))
    m.load_state_dict(sd)
    assert m.conv.weight.dtype == np.float32 and m.bn.running_var.dtype == np.float32
    np.testing.assert_array_equal(m.conv.weight.data, 1.0)


def test_strict_load_lists_every_problem_and_changes_nothing():
    m = Tiny()
    before = m.state_dict()
    params_before = [p for p in m.parameters()]
    bad = Tiny().state_dict()
    del bad["bn.running_var"]                          # missing
    bad["classifier.weight"] = np.zeros((2, 4))        # unexpected
    bad["conv.weight"] = np.zeros((5, 3, 3, 3))        # wrong shape
    with pytest.raises(ValueError) as info:
        m.load_state_dict(bad)
    msg = str(info.value)
    assert "nothing was loaded" in msg
    assert "missing keys (1): bn.running_var" in msg
    assert "unexpected keys (1): classifier.weight" in msg
    assert "conv.weight: shape (5, 3, 3, 3) in the state_dict, (4, 3, 3, 3) in the model" in msg
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    assert all(a is b for a, b in zip(m.parameters(), params_before))


def test_non_strict_load_reports_keys_but_still_refuses_shape_mismatch():
    m, other = Tiny(), Tiny()
    sd = other.state_dict()
    del sd["head.3.bias"]
    sd["extra"] = np.zeros(1)
    result = m.load_state_dict(sd, strict=False)
    assert result.missing_keys == ["head.3.bias"] and result.unexpected_keys == ["extra"]
    np.testing.assert_array_equal(m.conv.weight.data, other.conv.weight.data)
    sd["conv.weight"] = np.zeros((1, 1, 1, 1))
    with pytest.raises(ValueError, match="conv.weight: shape"):
        m.load_state_dict(sd, strict=False)


def test_load_state_dict_refuses_non_numeric_values():
    m = Tiny()
    sd = m.state_dict()
    sd["conv.weight"] = np.array(["a"] * 108).reshape(4, 3, 3, 3)
    with pytest.raises(ValueError, match="conv.weight: expected a numeric array"):
        m.load_state_dict(sd)
    with pytest.raises(TypeError, match="dict name -> array"):
        m.load_state_dict([1, 2])


# --- modes, gradients, devices, dtypes ------------------------------------------------------

def test_train_eval_switch_every_module_and_batch_norm_behaviour():
    m = Tiny()
    assert all(x.training for x in m.modules())
    assert m.eval() is m and not any(x.training for x in m.modules())
    x = rand(4, 3, 5, 5)
    m(td.tensor(x))                                   # eval: statistics untouched
    np.testing.assert_array_equal(m.bn.running_mean, 0)
    assert int(m.bn.num_batches_tracked) == 0
    m.train()
    conv_out = m.conv(td.tensor(x)).data
    m(td.tensor(x))
    mu = conv_out.mean(axis=(0, 2, 3))
    var = conv_out.var(axis=(0, 2, 3), ddof=1)        # the running variance is the unbiased one
    np.testing.assert_allclose(m.bn.running_mean, 0.1 * mu, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(m.bn.running_var, 0.9 + 0.1 * var, rtol=1e-5)
    assert int(m.bn.num_batches_tracked) == 1 and m.bn.num_batches_tracked.dtype == np.int64


def test_zero_grad():
    m = Tiny()
    m(td.tensor(rand(2, 3, 4, 4))).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_double_and_float_keep_parameter_identity():
    m = Tiny()
    params = list(m.parameters())
    assert m.double() is m
    assert all(p.dtype == np.float64 for p in m.parameters())
    assert all(a is b for a, b in zip(params, m.parameters()))
    assert m.bn.running_mean.dtype == np.float64 and m.steps.dtype == np.float64
    assert m.bn.num_batches_tracked.dtype == np.int64            # integers stay integers
    assert m(td.tensor(rand(2, 3, 4, 4, dtype=np.float64))).dtype == np.float64
    m.float()
    assert all(p.dtype == np.float32 for p in m.parameters())
    assert m.to("cpu") is m and m.conv.weight.device == "cpu"
    with pytest.raises(TypeError, match="floating-point"):
        m.to(dtype=np.int32)
    with pytest.raises(ValueError, match="unknown device"):
        m.to("tpu")


def test_to_takes_dtypes_and_devices_as_pytorch_does():
    """model.to(np.float64), to("cpu", np.float64), to(dtype=...): regression, a dtype
    given positionally used to be taken for a device name."""
    m = Tiny()
    params = list(m.parameters())
    assert m.to(np.float64) is m and all(p.dtype == np.float64 for p in m.parameters())
    assert m.to("cpu", np.float32) is m and all(p.dtype == np.float32 for p in m.parameters())
    assert m.to(np.dtype("float64"), "cpu").bn.running_var.dtype == np.float64
    assert m.to(dtype="float32").steps.dtype == np.float32 and m.to(device="cpu") is m
    assert all(a is b for a, b in zip(params, m.parameters()))
    assert m.bn.num_batches_tracked.dtype == np.int64
    with pytest.raises(TypeError, match="at most one device name and one dtype"):
        m.to("cpu", "cpu")
    with pytest.raises(TypeError, match="neither a device name nor a dtype"):
        m.to(object())
    with pytest.raises(TypeError, match="floating-point"):       # checked before the device changes anything
        m.to("cpu", np.int64)
    assert all(p.dtype == np.float32 for p in m.parameters())


@pytest.mark.parametrize("name", ["cpu:7", "cpu:0", "gpu", "CUDA", "cuda:1", "cuda:x", "", "cuda:"])
def test_check_device_names_what_it_refuses(name):
    """Only "cpu", "cuda" and "cuda:0" are devices: regression, "cpu:7" used to mean cpu."""
    with pytest.raises(ValueError, match=repr(name)):
        backend.check_device(name)
    assert backend.check_device("cpu") == "cpu"
    if backend.cuda_available():
        assert backend.check_device("cuda") == backend.check_device("cuda:0") == "cuda"
    else:
        for cuda in ("cuda", "cuda:0"):
            with pytest.raises(ValueError, match="CUDA is not available"):
                backend.check_device(cuda)


@pytest.mark.skipif(not backend.cuda_available(), reason="CUDA not available")
def test_to_cuda_moves_parameters_and_buffers():
    m = Tiny()
    x = rand(2, 3, 5, 5)
    m.eval()
    expected = m(td.tensor(x)).data
    params = list(m.parameters())
    m.to("cuda")
    assert all(p.device == "cuda" for p in m.parameters())
    assert all(backend.device_of(b) == "cuda" for b in m.buffers())
    assert all(a is b for a, b in zip(params, m.parameters()))
    out = m(td.tensor(x).to("cuda"))
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-5)
    m.train()
    m(td.tensor(x).to("cuda"))
    assert int(m.bn.num_batches_tracked) == 1
    sd = m.state_dict()
    m.to("cpu").load_state_dict(sd)                  # a CUDA state_dict loads into a CPU model
    assert m.bn.running_mean.__class__ is np.ndarray


# --- calling: hooks and errors that name the layer ------------------------------------------

def test_forward_hook_sees_inputs_and_output_and_can_be_removed():
    m = Tiny()
    seen = []
    handle = m.bn.register_forward_hook(lambda mod, inputs, out: seen.append((mod, inputs[0].shape, out.shape)))
    m(td.tensor(rand(2, 3, 4, 4)))
    assert seen == [(m.bn, (2, 4, 4, 4), (2, 4, 4, 4))]
    handle.remove()
    m(td.tensor(rand(2, 3, 4, 4)))
    assert len(seen) == 1


def test_errors_name_the_layer_and_shapes():
    m = Tiny()
    with pytest.raises(ValueError) as info:
        m(td.tensor(rand(2, 5, 4, 4)))
    msg = str(info.value)
    assert msg.startswith("in conv (Conv2d): conv2d: input has 5 channels")
    assert "(2, 5, 4, 4)" in msg and "(4, 3, 3, 3)" in msg
    seq = nn.Sequential(nn.Linear(4, 3), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"^in 1 \(Linear\): linear: input of shape \(2, 3\)"):
        seq(td.tensor(rand(2, 4)))
    with pytest.raises(ValueError, match=r"^conv2d: input has 5"):   # a layer called alone says no more
        m.conv(td.tensor(rand(2, 5, 4, 4)))


# --- layers against references ----------------------------------------------------------------

def naive_conv(x, w, b, stride, pad):
    N, C, H, W = x.shape
    O, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    OH, OW = (H + 2 * pad - kh) // stride + 1, (W + 2 * pad - kw) // stride + 1
    y = np.zeros((N, O, OH, OW))
    for i in range(OH):
        for j in range(OW):
            patch = xp[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
            y[:, :, i, j] = np.einsum("nckl,ockl->no", patch, w)
    return y + (0 if b is None else b[None, :, None, None])


def test_conv2d_layer_matches_loops_and_has_kaiming_init():
    td.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1)
    conv.bias.data[:] = rand(5, seed=4)
    x = rand(2, 3, 7, 6, seed=5)
    np.testing.assert_allclose(conv(td.tensor(x)).data,
                               naive_conv(x, conv.weight.data, conv.bias.data, 2, 1), rtol=1e-4, atol=1e-5)
    big = nn.Conv2d(64, 128, 3, bias=False)
    std = big.weight.data.std()
    assert abs(std - math.sqrt(2 / (64 * 9))) < 0.02 * math.sqrt(2 / (64 * 9))
    assert abs(big.weight.data.mean()) < 0.002 and big.weight.dtype == np.float32
    td.manual_seed(0)
    np.testing.assert_array_equal(nn.Conv2d(3, 5, 3, stride=2, padding=1).weight.data, conv.weight.data)


def test_linear_init_and_output():
    lin = nn.Linear(400, 300)
    bound = 1 / math.sqrt(400)
    assert lin.weight.data.min() >= -bound and lin.weight.data.max() <= bound
    assert lin.weight.data.max() > 0.95 * bound and lin.weight.data.min() < -0.95 * bound
    np.testing.assert_array_equal(lin.bias.data, 0)
    x = rand(3, 400)
    np.testing.assert_allclose(lin(td.tensor(x)).data, x @ lin.weight.data.T, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="in_features must be a positive integer"):
        nn.Linear(0, 3)


def test_batchnorm_layer_initial_values_and_eval_formula():
    bn = nn.BatchNorm2d(3)
    np.testing.assert_array_equal(bn.weight.data, 1)
    np.testing.assert_array_equal(bn.bias.data, 0)
    bn.running_mean = np.array([0.5, -1, 2], dtype=np.float32)
    bn.running_var = np.array([4, 1, 0.25], dtype=np.float32)
    bn.weight.data[:] = [1, 2, 3]
    bn.bias.data[:] = [0, 1, -1]
    bn.eval()
    x = rand(2, 3, 2, 2)
    expected = ((x - bn.running_mean[:, None, None]) / np.sqrt(bn.running_var[:, None, None] + 1e-5)
                * bn.weight.data[:, None, None] + bn.bias.data[:, None, None])
    np.testing.assert_allclose(bn(td.tensor(x)).data, expected, rtol=1e-5, atol=1e-6)


def test_pooling_dropout_flatten_layers():
    x = rand(2, 3, 6, 6)
    windows = x.reshape(2, 3, 3, 2, 3, 2)
    np.testing.assert_allclose(nn.MaxPool2d(2)(td.tensor(x)).data, windows.max(axis=(3, 5)))
    np.testing.assert_allclose(nn.AvgPool2d(2, 2)(td.tensor(x)).data, windows.mean(axis=(3, 5)), rtol=1e-6)
    np.testing.assert_allclose(nn.AdaptiveAvgPool2d(1)(td.tensor(x)).data,
                               x.mean(axis=(2, 3), keepdims=True), rtol=1e-6)
    mp = nn.MaxPool2d(3, stride=2, padding=1)(td.tensor(x)).data
    assert mp.shape == (2, 3, 3, 3) and mp[0, 0, 0, 0] == x[0, 0, :2, :2].max()
    assert nn.Flatten()(td.tensor(x)).shape == (2, 108)
    drop = nn.Dropout(0.25)
    ones = td.tensor(np.ones((100, 100), np.float32))
    y = drop(ones).data
    assert set(np.unique(y)) == {0.0, np.float32(1 / 0.75)} and abs((y == 0).mean() - 0.25) < 0.02
    drop.eval()
    assert drop(ones) is ones
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\)"):
        nn.Dropout(1.0)
