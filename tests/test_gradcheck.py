"""tinydense.gradcheck: it passes correct backward passes and catches wrong
ones, with a message that says where and by how much.

The wrong ones are written here on purpose: a convolution whose dx uses the
kernel unflipped, and batch norms whose backward drops one term.
"""
import re

import numpy as np
import pytest

import tinydense as td
import tinydense.functional as F
from tinydense import Function, GradcheckError, backend


def T(a, device="cpu", grad=True):
    return td.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad, device=device)


class TapConv(Function):
    """Stride-1 convolution written tap by tap (NumPy or CuPy, for these tests).
    ``flip=False`` makes dx the classic mistake: correlating g with the
    kernel as it is instead of the kernel rotated by 180 degrees."""

    def forward(self, x, w, padding=1, flip=True):
        xp = backend.get_array_module(x)
        p, (O, C, kh, kw) = padding, w.shape
        xpad = xp.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        OH, OW = xpad.shape[2] - kh + 1, xpad.shape[3] - kw + 1
        y = xp.zeros((x.shape[0], O, OH, OW))
        for a in range(kh):
            for b in range(kw):
                y += xp.einsum("oc,ncij->noij", w[:, :, a, b], xpad[:, :, a:a + OH, b:b + OW])
        self.xpad, self.w, self.p, self.flip = xpad, w, p, flip
        return y

    def backward(self, g):
        xp = backend.get_array_module(g)
        xpad, w, p = self.xpad, self.w, self.p
        O, C, kh, kw = w.shape
        OH, OW = g.shape[2:]
        dxpad, dw = xp.zeros_like(xpad), xp.zeros_like(w)
        for a in range(kh):
            for b in range(kw):
                dw[:, :, a, b] = xp.einsum("noij,ncij->oc", g, xpad[:, :, a:a + OH, b:b + OW])
                tap = w[:, :, a, b] if self.flip else w[:, :, kh - 1 - a, kw - 1 - b]
                dxpad[:, :, a:a + OH, b:b + OW] += xp.einsum("oc,noij->ncij", tap, g)
        H, W = xpad.shape[2] - 2 * p, xpad.shape[3] - 2 * p
        return dxpad[:, :, p:p + H, p:p + W], dw


class PlainBatchNorm(Function):
    """Training-mode batch norm without affine parameters, (N, C). ``drop``
    removes one term of dx = invstd/M * (M g - sum g - xhat * sum(g xhat))."""

    def forward(self, x, drop=None):
        mean, var = x.mean(axis=0), x.var(axis=0)
        self.invstd = 1 / backend.get_array_module(x).sqrt(var + 1e-5)
        self.xhat, self.drop = (x - mean) * self.invstd, drop
        return self.xhat

    def backward(self, g):
        M, xhat = g.shape[0], self.xhat
        mean_term = 0 if self.drop == "mean" else g.sum(axis=0)
        var_term = 0 if self.drop == "var" else xhat * (g * xhat).sum(axis=0)
        return self.invstd / M * (M * g - mean_term - var_term)


NUM = r"-?\d[\d.]*(?:e[+-]\d+)?"


def test_gradcheck_passes_correct_ops(rng, device):
    x, w = T(rng.standard_normal((2, 3, 5, 4)), device), T(rng.standard_normal((2, 3, 3, 3)), device)
    assert td.gradcheck(lambda x, w: TapConv.apply(x, w), [x, w])
    assert td.gradcheck(lambda x, w: F.conv2d(x, w, padding=1), [x, w])
    assert td.gradcheck(PlainBatchNorm.apply, [T(rng.standard_normal((5, 3)), device)])


def test_the_tap_conv_reference_is_a_convolution(rng, device):
    x, w = rng.standard_normal((2, 3, 5, 4)), rng.standard_normal((2, 3, 3, 3))
    np.testing.assert_allclose(TapConv.apply(T(x, device), T(w, device)).numpy(),
                               F.conv2d(T(x, device), T(w, device), padding=1).numpy(), atol=1e-12)


def test_gradcheck_catches_a_conv_backward_with_the_unflipped_kernel(rng, device):
    x_np, w_np = rng.standard_normal((2, 2, 5, 5)), rng.standard_normal((3, 2, 3, 3))
    x, w = T(x_np, device), T(w_np, device)
    with pytest.raises(GradcheckError) as info:
        td.gradcheck(lambda x, w: TapConv.apply(x, w, flip=False), [x, w])
    message = str(info.value)
    line = re.search(rf"input 0 \(shape \(2, 2, 5, 5\)\): index \((\d+), (\d+), (\d+), (\d+)\): "
                     rf"numeric ({NUM}), analytic ({NUM}), relative error ({NUM})", message)
    assert line, message
    assert "input 1" not in message                  # dW is right and is not blamed
    assert re.search(r"\d+ of 100 elements out of tolerance", message)

    # the reported element is the worst one, with the right values: recompute both
    # gradients of <f(x), g> with gradcheck's upstream g (seed 0)
    g = np.random.default_rng(0).standard_normal((2, 3, 5, 5))
    xs = [T(x_np, device), T(x_np, device)]
    TapConv.apply(xs[0], T(w_np, device, grad=False), flip=True).backward(g)     # correct
    TapConv.apply(xs[1], T(w_np, device, grad=False), flip=False).backward(g)    # broken
    right, wrong = backend.to_numpy(xs[0].grad), backend.to_numpy(xs[1].grad)
    index = tuple(int(v) for v in line.groups()[:4])
    numeric, analytic, rel = (float(v) for v in line.groups()[4:])
    assert index == np.unravel_index(np.argmax(np.abs(wrong - right)), right.shape)
    assert analytic == pytest.approx(wrong[index], rel=1e-8)
    assert numeric == pytest.approx(right[index], rel=1e-6)
    assert rel == pytest.approx(abs(analytic - numeric) / max(abs(analytic), abs(numeric)), rel=1e-3)


def test_gradcheck_catches_a_batch_norm_backward_missing_the_mean_term(rng, device):
    with pytest.raises(GradcheckError, match=rf"input 0 \(shape \(6, 3\)\): index \(\d, \d\): "
                                             rf"numeric {NUM}, analytic {NUM}, relative error {NUM}"):
        td.gradcheck(lambda x: PlainBatchNorm.apply(x, drop="mean"), [T(rng.standard_normal((6, 3)), device)])


def test_the_sum_of_batch_norm_trap_is_avoided_by_a_random_upstream_gradient(rng, device):
    x = T(rng.standard_normal((6, 3)), device)
    broken = lambda x: PlainBatchNorm.apply(x, drop="var")   # noqa: E731
    # sum(BN(x)) is constant in x: its gradient is 0, and the broken backward also
    # gives 0 there (the dropped term multiplies sum(g * xhat) = sum(xhat) = 0)
    assert td.gradcheck(lambda x: broken(x).sum(), [x])
    # checked as it is, with a random g of BN's output shape, the bug shows
    with pytest.raises(GradcheckError, match="input 0"):
        td.gradcheck(broken, [x])


def test_direction_mode_on_a_bigger_input(rng, device):
    x, w = T(rng.standard_normal((4, 8, 16, 16)), device), T(rng.standard_normal((6, 8, 3, 3)) * 0.1, device)
    assert td.gradcheck(lambda x, w: F.conv2d(x, w, padding=1), [x, w], mode="direction", n_directions=3)
    with pytest.raises(GradcheckError, match=rf"input 0 \(shape \(4, 8, 16, 16\)\): direction \d: "
                                             rf"numeric {NUM}, analytic {NUM}"):
        td.gradcheck(lambda x, w: TapConv.apply(x, w, flip=False), [x, w], mode="direction")


def test_dropout_under_gradcheck_is_deterministic(rng, device):
    x = T(rng.standard_normal((4, 5)), device)
    td.manual_seed(0)
    a, b = F.dropout(x, 0.5).numpy(), F.dropout(x, 0.5).numpy()
    assert not np.array_equal(a, b)        # two calls draw two different masks...
    # ...but every evaluation inside gradcheck starts from the same generator state
    assert td.gradcheck(lambda x: F.dropout(x, 0.5), [x])


def test_gradcheck_restores_the_inputs_exactly(rng, device):
    x_np = rng.standard_normal((2, 3))
    x = T(x_np, device)
    td.gradcheck(lambda x: (x * x).sum(axis=1), [x])
    np.testing.assert_array_equal(x.numpy(), x_np)
    td.gradcheck(lambda x: (x * x).sum(axis=1), [x], mode="direction")
    np.testing.assert_array_equal(x.numpy(), x_np)


def test_gradcheck_converts_float_arrays_and_passes_other_inputs_through(rng):
    labels = np.array([1, 0, 2])
    assert td.gradcheck(F.cross_entropy, [rng.standard_normal((3, 4)).astype(np.float32), labels])


def test_gradcheck_without_raising_and_verbose(rng, capsys):
    x = T(rng.standard_normal((4, 2)))
    assert td.gradcheck(lambda x: PlainBatchNorm.apply(x, drop="mean"), [x], raise_exception=False) is False
    assert td.gradcheck(PlainBatchNorm.apply, [x], verbose=True) is True
    assert "ok   input 0 (shape (4, 2)): max relative error" in capsys.readouterr().out


def test_gradcheck_refuses_what_it_cannot_check(rng):
    with pytest.raises(TypeError, match="float32"):
        td.gradcheck(lambda x: x.float() * 2, [T([1.0, 2.0])])
    with pytest.raises(ValueError, match="no input requires a gradient"):
        td.gradcheck(lambda x: x * 2, [T([1.0], grad=False)])
    with pytest.raises(ValueError, match="mode"):
        td.gradcheck(lambda x: x * 2, [T([1.0])], mode="fast")


def _graph_functions(output):
    """The Function classes in the graph that produced ``output``."""
    seen, stack, kinds = set(), [output], set()
    while stack:
        t = stack.pop()
        fn = t._creator
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        kinds.add(type(fn))
        stack += [x for x in fn.inputs if x is not None]
    return kinds


def _tinydense_functions():
    """Every Function subclass defined in the tinydense package (every module imported)."""
    import importlib
    import pkgutil
    for info in pkgutil.walk_packages(td.__path__, "tinydense."):
        importlib.import_module(info.name)
    found, stack = set(), [Function]
    while stack:
        for sub in stack.pop().__subclasses__():
            stack.append(sub)
            if sub.__module__.startswith("tinydense."):
                found.add(sub)
    return found


def test_the_op_table_covers_every_function_a_model_can_run():
    """`tinydense gradcheck` must not leave an op out (the fused DenseNet ops were, once)."""
    from tinydense.tools.op_checks import NOT_IN_THE_TABLE, op_cases
    covered = set()
    for case in op_cases():
        inputs = [td.tensor(x, requires_grad=True) if x.dtype.kind == "f" else x for x in case.inputs]
        covered |= _graph_functions(case.fn(*inputs))
    names = {cls.__name__ for cls in _tinydense_functions()}
    assert {"FusedDenseBlock", "BatchNormReLUConv1x1", "BatchNorm", "Conv2d"} <= names     # the scan works
    missing = names - {cls.__name__ for cls in covered} - set(NOT_IN_THE_TABLE)
    assert not missing, f"ops without a case in tinydense/tools/op_checks.py: {sorted(missing)}"
    assert set(NOT_IN_THE_TABLE) <= names and not set(NOT_IN_THE_TABLE) & {cls.__name__ for cls in covered}
