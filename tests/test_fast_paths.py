"""The plain networks' fast path (models/fused_layers.py, ops/norm_relu.py) against the
textbook modules: ResNet, ResNeXt, the pre-activation ResNet and VGG-BN give the same loss,
parameter gradients, input gradient, running statistics and num_batches_tracked to 1e-10
in float64 (train and eval mode); the ops alone on random shapes (hypothesis), split among
1 to 3 threads; float32 within the textbook path's own error; hooks, ``override`` and
student-replaced modules fall back to the textbook path; state-dict names unchanged."""
import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

import tinydense as td
import tinydense.functional as F
from tinydense import models, nn
from tinydense.models import fused_layers
from tinydense.ops import activation, norm as norm_ops, norm_relu
from tinydense.ops.norm_relu import AddReLU, BatchNormReLU

TOL = dict(rtol=1e-10, atol=1e-10)

BUILDERS = {   # small versions of every architecture that uses the seam, 8x8 images
    "ResNet basic": lambda: models.cifar_resnet18(widths=(4, 8, 8, 16)),
    "ResNeXt bottleneck": lambda: models.ResNet("bottleneck", (1, 2, 1, 1), num_classes=10, groups=2,
                                                width_per_group=64, widths=(4, 8, 8, 16), stem="cifar"),
    "ResNet ImageNet stem": lambda: models.ResNet("basic", (1, 1, 1, 1), num_classes=10, widths=(4, 4, 8, 8)),
    "pre-activation bottleneck": lambda: models.preact_resnet(11),
    "pre-activation basic": lambda: models.preact_resnet(8),
    "VGG-BN": lambda: models.VGG((4, "M", 8, 8, "M"), True, 10, classifier="cifar"),
}


def build(kind, dtype=np.float64):
    td.manual_seed(3)
    return BUILDERS[kind]().to(dtype=dtype)


def train_steps(model, training, fuse, monkeypatch, batch=3, size=8, dtype=np.float64, seed=0, steps=2):
    """``steps`` forward/backward passes with the seam on or off; returns the last loss, the
    parameter gradients, the state dict and x.grad."""
    monkeypatch.setattr(fused_layers, "FUSE", fuse)
    model.train(training)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        x = td.tensor(rng.standard_normal((batch, 3, size, size)).astype(dtype), requires_grad=True)
        model.zero_grad()
        loss = F.cross_entropy(model(x), rng.integers(0, 10, batch))
        loss.backward()
    return loss.item(), {n: p.grad for n, p in model.named_parameters()}, model.state_dict(), x.grad


def assert_same(a, b):
    assert b[0] == pytest.approx(a[0], rel=1e-12)
    assert a[1].keys() == b[1].keys() and all(g is not None for g in b[1].values())
    for name in a[1]:
        np.testing.assert_allclose(b[1][name], a[1][name], **TOL, err_msg=name)
    assert list(a[2]) == list(b[2])
    for name in a[2]:
        np.testing.assert_allclose(b[2][name], a[2][name], **TOL, err_msg=name)
    np.testing.assert_allclose(b[3], a[3], **TOL)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("kind", list(BUILDERS))
def test_models_give_the_textbook_numbers(kind, training, monkeypatch):
    size = 16 if kind == "ResNet ImageNet stem" else 8
    textbook = train_steps(build(kind), training, False, monkeypatch, size=size)
    calls = []
    original = BatchNormReLU.forward
    monkeypatch.setattr(BatchNormReLU, "forward", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    fused = train_steps(build(kind), training, True, monkeypatch, size=size)
    assert calls, "the fused op did not run"
    assert_same(textbook, fused)
    bn = next(m for m in build(kind).modules() if isinstance(m, nn.BatchNorm2d))
    assert bn.num_batches_tracked == 0
    tracked = [v for k, v in fused[2].items() if k.endswith("num_batches_tracked")]
    assert all(int(v) == (2 if training else 0) for v in tracked)


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_evaluation_without_a_graph_gives_the_textbook_numbers(kind, monkeypatch):
    """Under no_grad in eval mode BatchNormReLU folds the running statistics into one
    multiply-add (no x - mean kept): the same outputs as the textbook modules, with
    running statistics far from 0 and 1."""
    rng = np.random.default_rng(7)
    size = 16 if kind == "ResNet ImageNet stem" else 8
    x = td.tensor(rng.standard_normal((3, 3, size, size)))
    outputs, calls = [], []
    original = BatchNormReLU.forward
    monkeypatch.setattr(BatchNormReLU, "forward", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    for fuse in (False, True):
        monkeypatch.setattr(fused_layers, "FUSE", fuse)
        model = build(kind).eval()
        stats = np.random.default_rng(8)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean[...] = stats.normal(2.0, 1.0, m.running_mean.shape)
                m.running_var[...] = stats.uniform(0.2, 3.0, m.running_var.shape)
        with td.no_grad():
            outputs.append(model(x).numpy())
    assert calls, "the fused op did not run"
    np.testing.assert_allclose(outputs[1], outputs[0], **TOL)


# --- the ops alone, random shapes ------------------------------------------------------------

@contextlib.contextmanager
def threaded():
    """norm_relu's ops with their passes split among the threads, whatever the size."""
    before = norm_relu.THREADED, norm_relu.THREADED_MIN_SIZE
    norm_relu.THREADED, norm_relu.THREADED_MIN_SIZE = True, 0
    try:
        yield
    finally:
        norm_relu.THREADED, norm_relu.THREADED_MIN_SIZE = before


def textbook_bn_relu(x, w, b, rm, rv, training, momentum, eps, residual=None):
    y = F.batch_norm(x, rm, rv, w, b, training=training, momentum=momentum, eps=eps)
    return F.relu(y if residual is None else y + residual)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 4), c=st.integers(1, 7), h=st.integers(1, 5), w=st.integers(1, 5),
       training=st.booleans(), threads=st.integers(1, 3), negative=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_batch_norm_relu_op_is_the_textbook_pair(n, c, h, w, training, threads, negative, seed):
    if training and n * h * w < 2:
        n = 2
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((n, c, h, w)) * 3 + 1
    wv = rng.standard_normal(c) if negative else rng.uniform(0.5, 2, c)
    bv = rng.standard_normal(c)
    g = rng.standard_normal((n, c, h, w))
    results = []
    for fused in (False, True):
        x, weight, bias = (td.tensor(v.copy(), requires_grad=True) for v in (xs, wv, bv))
        rm, rv = rng.standard_normal(c) * 0 + 0.5, np.full(c, 2.0)
        with threadpool_limits(threads), threaded():
            if fused:
                out = BatchNormReLU.apply(x, weight, bias, running_mean=rm, running_var=rv, training=training,
                                          momentum=0.3, eps=1e-3)
            else:
                out = textbook_bn_relu(x, weight, bias, rm, rv, training, 0.3, 1e-3)
            out.backward(g)
        results.append([out.numpy(), x.grad, weight.grad, bias.grad, rm, rv])
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, **TOL)


@settings(max_examples=15, deadline=None)
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 4), st.integers(1, 4)),
       threads=st.integers(1, 3), seed=st.integers(0, 2 ** 16))
def test_add_relu_op_is_the_textbook_pair(shape, threads, seed):
    rng = np.random.default_rng(seed)
    av, bv, g = (rng.standard_normal(shape) for _ in range(3))
    results = []
    for fused in (False, True):
        a, b = td.tensor(av.copy(), requires_grad=True), td.tensor(bv.copy(), requires_grad=True)
        with threadpool_limits(threads), threaded():
            out = AddReLU.apply(a, b) if fused else F.relu(a + b)
            out.backward(g)
        results.append([out.numpy(), a.grad, b.grad])
    for x, y in zip(*results):
        np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(results[0][0], np.maximum(av + bv, 0))     # and the formula itself


def test_add_relu_with_one_input_twice():
    """relu(a + a): autograd sums the op's one gradient for both inputs into 2 * mask * g."""
    a = td.tensor(np.array([[[[-1.0, 2.0]]]]), requires_grad=True)
    AddReLU.apply(a, a).backward(np.ones((1, 1, 1, 2)))
    np.testing.assert_array_equal(a.grad, [[[[0.0, 2.0]]]])


def test_float32_errors_are_those_of_the_textbook_path(monkeypatch):
    """float32 gradients against the float64 textbook model, over seeds: the fused path's
    relative errors (2-norm) stay within 3x the textbook path's own (medians)."""
    kind = "ResNet basic"
    errors = {False: [], True: []}
    for seed in range(3):
        ref = train_steps(build(kind), True, False, monkeypatch, batch=4, seed=seed, steps=1)[1]
        for fuse in (False, True):
            grads = train_steps(build(kind, np.float32), True, fuse, monkeypatch, batch=4, dtype=np.float32,
                                seed=seed, steps=1)[1]
            errors[fuse].append(max(np.linalg.norm(grads[n] - ref[n]) / np.linalg.norm(ref[n]) for n in ref))
    plain, fused = np.median(errors[False]), np.median(errors[True])
    assert plain < 1e-3 and fused <= 3 * plain, errors


# --- the seam: hooks, override, replaced modules, names ---------------------------------------

def test_hooks_fire_and_the_numbers_stay(monkeypatch):
    model = build("ResNet basic")
    x = td.tensor(np.random.default_rng(0).standard_normal((2, 3, 8, 8)))
    expected = model.eval()(x).numpy()
    seen = []
    for name in ("bn1", "layer1.0.bn1", "layer1.0.relu", "features"):
        module = dict(model.named_modules()).get(name)
        if module is not None:
            module.register_forward_hook(lambda m, i, o, name=name: seen.append(name))
    np.testing.assert_allclose(model(x).numpy(), expected, **TOL)
    assert {"bn1", "layer1.0.bn1", "layer1.0.relu"} <= set(seen)
    vgg = build("VGG-BN").eval()
    expected = vgg(x).numpy()
    vgg.features[1].register_forward_hook(lambda m, i, o: seen.append("vgg bn"))
    vgg.features.register_forward_hook(lambda m, i, o: seen.append("vgg features"))
    np.testing.assert_allclose(vgg(x).numpy(), expected, **TOL)
    assert "vgg bn" in seen and "vgg features" in seen


def test_summary_sees_every_module():
    rows = td.summary(build("pre-activation basic"), (3, 8, 8)).rows
    assert any("relu1" in str(r) for r in rows) and any("bn2" in str(r) for r in rows)


def test_override_runs_the_students_ops(monkeypatch):
    """With BatchNorm or ReLU swapped (ops/override.py's mechanism), the fused op must not run."""
    calls = []

    class CountingReLU(activation.ReLU):
        def forward(self, x):
            calls.append(1)
            return super().forward(x)

    monkeypatch.setattr(activation, "ReLU", CountingReLU)
    fused = []
    original = BatchNormReLU.forward
    monkeypatch.setattr(BatchNormReLU, "forward", lambda self, *a, **k: fused.append(1) or original(self, *a, **k))
    for kind in BUILDERS:
        build(kind)(td.tensor(np.ones((2, 3, 16, 16))))
    assert calls and not fused
    monkeypatch.setattr(activation, "ReLU", CountingReLU.__bases__[0])
    monkeypatch.setattr(norm_ops, "BatchNorm", type("StudentBN", (norm_ops.BatchNorm,), {}))
    build("VGG-BN")(td.tensor(np.ones((2, 3, 8, 8))))
    assert not fused


def test_a_replaced_module_runs_as_written():
    """A student who puts another activation in place of a ReLU gets that activation."""
    class LeakyReLU(nn.Module):
        def forward(self, x):
            return F.relu(x) - F.relu(-x) * 0.1

    model = build("pre-activation basic").eval()
    x = td.tensor(np.random.default_rng(0).standard_normal((2, 3, 8, 8)))
    before = model(x).numpy()
    model.layer1[0].relu1 = LeakyReLU()
    assert not np.allclose(model(x).numpy(), before)


def test_state_dict_names_are_torchvisions():
    names = list(build("ResNet basic").state_dict())
    assert names[:6] == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
                         "bn1.num_batches_tracked"]
    assert "layer2.0.downsample.1.running_var" in names and "fc.bias" in names
    assert "features.1.running_mean" in build("VGG-BN").state_dict()
    assert "layer1.0.bn2.weight" in build("pre-activation bottleneck").state_dict()


def test_bad_input_raises_before_any_state_changes():
    model = build("pre-activation basic").train()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError):
        fused_layers.norm_relu(model.layer1[0].bn1, model.layer1[0].relu1, td.tensor(np.ones((1, 16, 1, 1))))
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


# --- ops/conv.py's layouts: the row layout's dx in one product or per image, im2col's dW in one product ---

def naive_conv_grads(x, w, g, stride, padding, dilation, groups):
    """y, dL/dx, dL/dW of a grouped convolution by sliding windows (NumPy only), for dL/dy = g."""
    N, C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    OH, OW = g.shape[2:]
    y, gxpad, gw = np.zeros(g.shape), np.zeros(xpad.shape), np.zeros(w.shape)
    Og = O // groups
    for a in range(kh):
        for b in range(kw):
            patch = xpad[:, :, a * dh:a * dh + sh * OH:sh, b * dw:b * dw + sw * OW:sw][:, :, :OH, :OW]
            for gi in range(groups):
                xs, ws = patch[:, gi * Cg:(gi + 1) * Cg], w[gi * Og:(gi + 1) * Og, :, a, b]
                gs = g[:, gi * Og:(gi + 1) * Og]
                y[:, gi * Og:(gi + 1) * Og] += np.einsum("oc,nchw->nohw", ws, xs)
                gw[gi * Og:(gi + 1) * Og, :, a, b] += np.einsum("nohw,nchw->oc", gs, xs)
                gxpad[:, gi * Cg:(gi + 1) * Cg, a * dh:a * dh + sh * OH:sh, b * dw:b * dw + sw * OW:sw] += \
                    np.einsum("oc,nohw->nchw", ws, gs)
    return y, gxpad[:, :, ph:ph + H, pw:pw + W], gw


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 3), groups=st.integers(1, 3), cg=st.integers(1, 3), og=st.integers(1, 3),
       size=st.integers(3, 9), k=st.integers(1, 3), stride=st.integers(1, 2), padding=st.integers(0, 2),
       dilation=st.integers(1, 2), per_image=st.sampled_from([1, 10 ** 9]), chunk=st.sampled_from([5, 1024]),
       threads=st.integers(1, 3), seed=st.integers(0, 2 ** 16))
def test_conv_layouts_against_sliding_windows(n, groups, cg, og, size, k, stride, padding, dilation, per_image,
                                              chunk, threads, seed):
    """Every layout of ops/conv.py (1x1, rows with dx per image or in one product, the taps'
    product in one chunk or several among 1 to 3 threads, im2col)."""
    from tinydense.ops import conv
    defaults = conv.PER_IMAGE_COLUMNS, conv.ROWS_CHUNK, conv.THREADED_TAPS
    conv.PER_IMAGE_COLUMNS, conv.ROWS_CHUNK, conv.THREADED_TAPS = per_image, chunk, 0 if chunk == 5 else defaults[2]
    try:
        with threadpool_limits(threads):
            _check_conv(n, groups, cg, og, size, k, stride, padding, dilation, seed)
    finally:
        conv.PER_IMAGE_COLUMNS, conv.ROWS_CHUNK, conv.THREADED_TAPS = defaults


def _check_conv(n, groups, cg, og, size, k, stride, padding, dilation, seed):
    rng = np.random.default_rng(seed)
    if size + 2 * padding < dilation * (k - 1) + 1:
        padding = 2
    x_np = rng.standard_normal((n, groups * cg, size, size))
    w_np = rng.standard_normal((groups * og, cg, k, k))
    x, w = td.tensor(x_np, requires_grad=True), td.tensor(w_np, requires_grad=True)
    y = F.conv2d(x, w, stride=stride, padding=padding, dilation=dilation, groups=groups)
    g = rng.standard_normal(y.shape)
    y.backward(g)
    ref = naive_conv_grads(x_np, w_np, g, (stride,) * 2, (padding,) * 2, (dilation,) * 2, groups)
    for got, want in zip((y.numpy(), x.grad, w.grad), ref):
        np.testing.assert_allclose(got, want, **TOL)
