"""The Winograd seam (ops/winograd.py) against independent references: a naive convolution
(a sum over the nine taps of shifted views, float64) for the output and, through its
transposes, dx and dW; the textbook path (the seam off) to 1e-10 on random shapes and
thread counts (hypothesis); float32 within the textbook path's own error; which
convolutions take it; a CIFAR ResNet-18 gives the same loss, gradients and state dict
with the seam on and off."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

import tinydense as td
import tinydense.functional as F
from tinydense import models
from tinydense.ops import conv, winograd


def naive_conv3x3(x, w):
    """y[n, o, i, j] = sum_{c, a, b} w[o, c, a, b] xpad[n, c, i + a, j + b], padding 1."""
    N, C, H, W = x.shape
    xpad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    y = np.zeros((N, w.shape[0], H, W))
    for a in range(3):
        for b in range(3):
            y += np.einsum("oc,nchw->nohw", w[:, :, a, b], xpad[:, :, a:a + H, b:b + W])
    return y


def naive_grads(x, w, g):
    """dx and dW of sum(g * naive_conv3x3(x, w)), by the same taps."""
    N, C, H, W = x.shape
    xpad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    dxpad = np.zeros_like(xpad)
    dw = np.zeros_like(w)
    for a in range(3):
        for b in range(3):
            dw[:, :, a, b] = np.einsum("nohw,nchw->oc", g, xpad[:, :, a:a + H, b:b + W])
            dxpad[:, :, a:a + H, b:b + W] += np.einsum("oc,nohw->nchw", w[:, :, a, b], g)
    return dxpad[:, :, 1:H + 1, 1:W + 1], dw


def run_conv(x, w, g, seam, monkeypatch):
    monkeypatch.setattr(winograd, "ENABLED", seam)
    xt, wt = td.tensor(x, requires_grad=True), td.tensor(w, requires_grad=True)
    y = F.conv2d(xt, wt, padding=1)
    path = y._creator.path
    y.backward(td.tensor(g))
    return y.numpy(), np.asarray(xt.grad), np.asarray(wt.grad), path


def random_case(rng, N, C, O, H, W, dtype=np.float64):
    return (rng.standard_normal((N, C, H, W)).astype(dtype), (0.1 * rng.standard_normal((O, C, 3, 3))).astype(dtype),
            rng.standard_normal((N, O, H, W)).astype(dtype))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(N=st.integers(1, 3), C=st.integers(1, 9), O=st.integers(1, 9), H=st.integers(1, 9), W=st.integers(1, 9),
       threads=st.integers(1, 3), seed=st.integers(0, 2**31))
def test_winograd_equals_naive_convolution_and_textbook_path(N, C, O, H, W, threads, seed, monkeypatch):
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)       # small channel counts take the seam too
    x, w, g = random_case(np.random.default_rng(seed), N, C, O, H, W)
    with threadpool_limits(threads):
        y, dx, dw, path = run_conv(x, w, g, True, monkeypatch)
    assert path == "winograd"
    ref_dx, ref_dw = naive_grads(x, w, g)
    np.testing.assert_allclose(y, naive_conv3x3(x, w), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dw, ref_dw, rtol=1e-10, atol=1e-10)
    y0, dx0, dw0, path0 = run_conv(x, w, g, False, monkeypatch)
    assert path0 == "rows"
    for a, b in ((y, y0), (dx, dx0), (dw, dw0)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def test_float32_within_the_textbook_paths_error(monkeypatch):
    x, w, g = random_case(np.random.default_rng(1), 4, 128, 128, 6, 6)
    exact = [a for a in run_conv(x, w, g, True, monkeypatch)[:3]]
    x32, w32, g32 = (a.astype(np.float32) for a in (x, w, g))
    for seam_out, text_out, ref in zip(run_conv(x32, w32, g32, True, monkeypatch)[:3],
                                       run_conv(x32, w32, g32, False, monkeypatch)[:3], exact):
        assert seam_out.dtype == np.float32
        scale = np.abs(ref).max()
        seam_err, text_err = np.abs(seam_out - ref).max() / scale, np.abs(text_out - ref).max() / scale
        assert seam_err < max(4 * text_err, 1e-6), (seam_err, text_err)


@pytest.mark.parametrize("kwargs, channels, takes", [
    ({"padding": 1}, 128, True),
    ({"padding": 1}, 64, False),                      # below MIN_CHANNELS: the row layout
    ({"padding": 1, "stride": 2}, 128, False),        # strided: im2col
    ({"padding": 2, "dilation": 2}, 128, False),
    ({"padding": 0}, 128, False),
    ({"padding": 1, "groups": 2}, 256, False),
])
def test_which_convolutions_take_the_seam(kwargs, channels, takes):
    x = td.tensor(np.zeros((1, channels, 4, 4), np.float32))
    w = td.tensor(np.zeros((128, channels // kwargs.get("groups", 1), 3, 3), np.float32), requires_grad=True)
    assert (F.conv2d(x, w, **kwargs)._creator.path == "winograd") is takes


def test_resnet18_same_loss_gradients_and_state_with_the_seam_on_and_off(monkeypatch):
    """A CIFAR ResNet-18 whose stages 2-4 have 128+ channels: float64, 2 steps, train mode."""
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 16)
    results = []
    for seam in (True, False):
        monkeypatch.setattr(winograd, "ENABLED", seam)
        taken = []
        monkeypatch.setattr(conv.Conv2d, "backward", _recording(conv.Conv2d.backward, taken))
        td.manual_seed(5)
        model = models.cifar_resnet18(widths=(8, 16, 16, 32)).to(dtype=np.float64)
        rng = np.random.default_rng(0)
        for _ in range(2):
            x = td.tensor(rng.standard_normal((2, 3, 8, 8)), requires_grad=True)
            model.zero_grad()
            loss = F.cross_entropy(model(x), rng.integers(0, 10, 2))
            loss.backward()
        assert ("winograd" in taken) is seam
        results.append((loss.item(), {n: np.asarray(p.grad) for n, p in model.named_parameters()},
                        model.state_dict(), np.asarray(x.grad)))
    (l1, g1, s1, x1), (l0, g0, s0, x0) = results
    assert l1 == pytest.approx(l0, rel=1e-12)
    assert list(s1) == list(s0)
    for name in g0:
        np.testing.assert_allclose(g1[name], g0[name], rtol=1e-10, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(x1, x0, rtol=1e-10, atol=1e-12)


def _recording(backward, taken):
    def wrapped(self, g):
        taken.append(self.path)
        return backward(self, g)
    return wrapped
