"""The course kit without a kernel: every checker against realistic wrong answers (each
message must name the mistake), the workspace template, the student release, and the
instructors' answers to every end-of-lesson question."""
from __future__ import annotations

import re

import nbformat
import numpy as np
import pytest

from test_lessons import LESSONS, NOTEBOOKS, SOURCES, build_notebooks, exercises, solutions

S, E = solutions, exercises


def _fail(check, answer, capsys):
    check(answer)
    out = capsys.readouterr().out
    assert out.startswith("FAIL "), out
    return out


def _sub(base, **methods):
    """A subclass of ``base`` with the given methods (keeps the class name, as a student's would)."""
    return type(base.__name__, (base,), methods)


def _scaled_backward(base, factor):
    def backward(self, g):
        out = base.backward(self, g)
        if isinstance(out, tuple):
            return tuple(None if v is None else v * factor for v in out)
        return out * factor
    return _sub(base, backward=backward)


# --- wrong answers, per checker: (the answer, words the verdict must contain) -------------

def _conv_no_overlap_add(self, g):           # '=' instead of '+=' in col2im
    dx, dw, db = S.Conv2d.backward(self, g)
    N, C, H, W = self.x_shape
    O, _, kh, kw = self.weight.shape
    (sh, sw), (ph, pw) = self.stride, self.padding
    OH, OW = g.shape[2:]
    dcols = (self.weight.reshape(O, -1).T @ g.reshape(N, O, -1)).reshape(N, C, kh, kw, OH, OW)
    dxpad = np.zeros((N, C, H + 2 * ph, W + 2 * pw))
    for a in range(kh):
        for b in range(kw):
            dxpad[:, :, a:a + sh * OH:sh, b:b + sw * OW:sw] = dcols[:, :, a, b]
    return dxpad[:, :, ph:ph + H, pw:pw + W], dw, db


def _bn_forgetful(self, g):                  # drops the xhat * sum(g xhat) term
    dx, *rest = S.BatchNorm.backward(self, g)
    if not self.training:
        return (dx, *rest)
    scale = self.invstd if self.weight is None else self.weight * self.invstd
    dx = (scale / self.M).reshape(self.shape) * (self.M * g - g.sum(axis=self.axes).reshape(self.shape))
    return (dx, *rest)


def _bn_train_formula_in_eval(self, g):
    training, self.training = self.training, True
    try:
        return S.BatchNorm.backward(self, g)
    finally:
        self.training = training


def _maxpool_spread(self, g):                # every tap of the window gets the gradient
    return S.AvgPool2d.backward(self, g) * np.prod(self.geometry[0])


def _maxpool_no_crop(self, g):               # forgets to cut the padding off
    (kh, kw), (sh, sw), (ph, pw), (OH, OW) = self.geometry
    N, C, H, W = self.x_shape
    dxpad = np.zeros((N, C, H + 2 * ph, W + 2 * pw))
    for a in range(kh):
        for b in range(kw):
            dxpad[:, :, a:a + sh * OH:sh, b:b + sw * OW:sw] += g * (self.argmax == a * kw + b)
    return dxpad


def _avgpool_repeat(self, g):                # right only when the windows tile the input
    (kh, kw) = self.geometry[0]
    up = np.repeat(np.repeat(g, kh, axis=2), kw, axis=3) / (kh * kw)
    dx = np.zeros(self.x_shape)
    h, w = min(up.shape[2], dx.shape[2]), min(up.shape[3], dx.shape[3])
    dx[:, :, :h, :w] = up[:, :, :h, :w]
    return dx


def _conv_loops_no_bias(x, w, b, stride=1, padding=0):
    return S.conv2d_loops(x, w, np.zeros_like(b), stride, padding)


def _conv_loops_no_padding(x, w, b, stride=1, padding=0):
    return S.conv2d_loops(x, w, b, stride, 0)


def _conv_loops_stride_ignored(x, w, b, stride=1, padding=0):   # windows start at i + a, not i*S + a
    want = S.conv2d_loops(x, w, b, stride, padding)
    return S.conv2d_loops(x, w, b, 1, padding)[:, :, :want.shape[2], :want.shape[3]]


def _im2col_transposed(x, K, stride=1, padding=0):
    return S.im2col(x, K, stride, padding).transpose(0, 2, 1)


def _im2col_tap_order(x, K, stride=1, padding=0):     # rows (c, b, a) instead of (c, a, b)
    N, C = x.shape[:2]
    cols = S.im2col(x, K, stride, padding)
    return cols.reshape(N, C, K, K, -1).transpose(0, 1, 3, 2, 4).reshape(cols.shape)


def _im2col_no_stride(x, K, stride=1, padding=0):
    return S.im2col(x, K, 1, padding)


def _winograd_direct(d, g):                # right values, 3 multiplications per output
    return [d[i] * g[0] + d[i + 1] * g[1] + d[i + 2] * g[2] for i in range(len(d) - 2)]


def _winograd_flipped(d, g):               # the mathematicians' convolution: the filter reversed
    return S.winograd_1d(d, g[::-1])


def _winograd_tiles_apart(d, g):           # tiles side by side (d[4t:4t+4]) instead of overlapping by 2
    ext = np.concatenate([d, d, d])
    return np.concatenate([S.winograd_1d(ext[4 * t:4 * t + 4], g) for t in range((len(d) - 2) // 2)])


def _winograd_as_floats(d, g):             # right, but the counting numbers turned into floats
    return S.winograd_1d(np.asarray(d, dtype=float), np.asarray(g, dtype=float))


def _numeric_forward(f, x, g, eps=1e-6):
    grad = np.zeros_like(x)
    base = (f(x) * g).sum()
    for idx in np.ndindex(*x.shape):
        old = x[idx]
        x[idx] = old + eps
        grad[idx] = ((f(x) * g).sum() - base) / eps
        x[idx] = old
    return grad


def _numeric_ignores_g(f, x, g, eps=1e-6):
    return S.numeric_gradient(f, x, np.ones_like(g), eps)


def _numeric_not_restored(f, x, g, eps=1e-6):
    out = S.numeric_gradient(f, x, g, eps)
    x += eps
    return out


def _widths(transform):
    return lambda d, k, b, c: transform(S.channel_widths(d, k, b, c), d, k, b, c)


def _params_without_bn(d, k, b, c):
    from tinydense.models import densenet
    model = densenet(d, k, bottleneck=b, compression=c)
    return S.densenet_parameters(d, k, b, c) - sum(p.size for n, p in model.named_parameters() if "norm" in n)


def _float_widths(d, k, b, c):
    n = (d - 4) // (6 if b else 3)
    ch = 2 * k if b and c < 1 else 16
    out = [ch]
    for block in range(3):
        ch += n * k
        out.append(ch)
        if block < 2:
            ch = c * ch
            out.append(ch)
    return out


class _LayerWrongNames(S.DenseLayer):
    def __init__(self, in_channels, growth_rate):
        super().__init__(in_channels, growth_rate)
        self.add_module("conv", self._modules.pop("conv1"))

    def forward(self, features):
        x = self.conv(self.relu1(self.norm1(__import__("tinydense").functional.cat(features, axis=1))))
        return self.conv2(self.relu2(self.norm2(x)))


class _LayerWithBias(S.DenseLayer):
    def __init__(self, in_channels, growth_rate):
        super().__init__(in_channels, growth_rate)
        import tinydense.nn as nn
        self.conv2 = nn.Conv2d(4 * growth_rate, growth_rate, 3, padding=1)


class _LayerNoPadding(S.DenseLayer):
    def __init__(self, in_channels, growth_rate):
        super().__init__(in_channels, growth_rate)
        self.conv2.padding = (0, 0)


class _LayerWithoutRelu(S.DenseLayer):
    def forward(self, features):
        import tinydense.functional as F
        x = self.conv1(self.relu1(self.norm1(F.cat(features, axis=1))))
        return self.conv2(self.norm2(x))


class _BlockLastOnly(S.DenseBlock):
    def forward(self, x):
        features = [x]
        for layer in self.children():
            features.append(layer(features))
        return features[-1]


class _BlockNewFirst(S.DenseBlock):
    def forward(self, x):
        import tinydense.functional as F
        features = [x]
        for layer in self.children():
            features.append(layer(features))
        return F.cat(features[::-1], axis=1)


class _BlockForgetsLayers(S.DenseBlock):
    def __init__(self, num_layers, in_channels, growth_rate):
        super().__init__(1, in_channels, growth_rate)


class _TransitionMaxPool(S.Transition):
    def __init__(self, in_channels, out_channels):
        super().__init__(in_channels, out_channels)
        import tinydense.nn as nn
        self.pool = nn.MaxPool2d(2, 2)


class _TransitionPoolFirst(S.Transition):
    def forward(self, x):
        return self.conv(self.relu(self.norm(self.pool(x))))


class _TransitionNoNorm(S.Transition):
    def __init__(self, in_channels, out_channels):
        super().__init__(in_channels, out_channels)
        del self._modules["norm"]

    def forward(self, x):
        return self.pool(self.conv(self.relu(x)))


def _sgd_no_nesterov(p, g, buffer, lr, momentum, weight_decay):
    g = g + weight_decay * p
    buffer = g.copy() if buffer is None else momentum * buffer + g
    return p - lr * buffer, buffer


def _sgd_decay_after(p, g, buffer, lr, momentum, weight_decay):
    buffer = g.copy() if buffer is None else momentum * buffer + g
    return p - lr * (g + momentum * buffer) - lr * weight_decay * p, buffer


def _sgd_plain(p, g, buffer, lr, momentum, weight_decay):
    return p - lr * (g + weight_decay * p), buffer


def _schedule_late(epochs, base_lr=0.1):                 # divides one epoch late
    return [base_lr] + S.paper_schedule(epochs, base_lr)[:-1]


def _schedule_float(epochs, base_lr=0.1):                # milestones 0.5 * epochs, not integer epochs
    return [base_lr * 0.1 ** ((e >= 0.5 * epochs) + (e >= 0.75 * epochs)) for e in range(epochs)]


def _schedule_short(epochs, base_lr=0.1):
    return S.paper_schedule(epochs, base_lr)[:-1]


def _share_with_reader(usage):
    L = usage.shape[0] - 1
    return float(np.mean([usage[:l - 2, l - 1].sum() / usage[:l, l - 1].sum() for l in range(4, L + 2)]))


def _share_one_back(usage):
    L = usage.shape[0] - 1
    return float(np.mean([usage[:l - 1, l - 1].sum() / usage[:l, l - 1].sum() for l in range(4, L + 1)]))


def _share_nan(usage):
    L = usage.shape[0] - 1
    return float(np.mean([usage[:-2, l - 1].sum() / usage[:, l - 1].sum() for l in range(4, L + 1)]))


def _recompute_false(self, g):
    inputs = [__import__("tinydense").Tensor(a, requires_grad=n) for a, n in zip(self.arrays, self.needs_grad)]
    self.fn(*inputs, recompute=False).backward(g)
    return tuple(x.grad for x in inputs)


def _recompute_ignores_g(self, g):
    inputs = [__import__("tinydense").Tensor(a, requires_grad=n) for a, n in zip(self.arrays, self.needs_grad)]
    self.fn(*inputs, recompute=True).sum().backward()
    return tuple(x.grad for x in inputs)


def _recompute_list(self, g):
    return list(S.Recompute.backward(self, g))


WRONG = {
    "check_mul": [
        (_sub(S.Mul, backward=lambda self, g: (g * self.a, g * self.b)), "is the right gradient of b"),
        (_sub(S.Mul, backward=lambda self, g: [g * self.b, g * self.a]), "returned a list"),
        (_sub(S.Mul, backward=lambda self, g: (self.b, self.a)), "does not change when the upstream gradient"),
        (_sub(S.Mul, backward=lambda self, g: g * self.b), "returned one array but forward has 2 inputs"),
    ],
    "check_linear": [
        (_sub(S.Linear, backward=lambda self, g: (g @ self.weight, self.x.T @ g, g.sum(axis=0))), "transposed"),
        (_sub(S.Linear, backward=lambda self, g: (g @ self.weight, g.T @ self.x, g.sum(axis=1))),
         "the gradient of bias has shape"),
        (_sub(S.Linear, backward=lambda self, g: (g @ self.weight, g.T @ self.x)), "returned 2 values but forward has 3"),
        (_scaled_backward(S.Linear, 2.0), "2 times the right one"),
    ],
    "check_conv2d": [
        (_sub(S.Conv2d, backward=_conv_no_overlap_add), "gradient of x is wrong"),
        (_sub(S.Conv2d, backward=lambda self, g: S.Conv2d.backward(self, g)[:2]), "no gradient for bias"),
        (_sub(S.Conv2d, backward=lambda self, g: S.Conv2d.backward(self, g)[1::-1] + (g.sum(axis=(0, 2, 3)),)),
         "which is weight's shape: are the gradients returned in the wrong order"),
        (_scaled_backward(S.Conv2d, 1.00005), "1.00005 times the right one"),
    ],
    "check_relu": [
        (_sub(S.ReLU, backward=lambda self, g: (self.out > 0).astype(float)), "does not change when the upstream"),
        (_sub(S.ReLU, backward=lambda self, g: g), "is wrong at"),
        (_sub(S.ReLU, backward=lambda self, g: -g * (self.out > 0)), "wrong sign"),
    ],
    "check_max_pool": [
        (_sub(S.MaxPool2d, backward=_maxpool_spread), "gradient of x is wrong"),
        (_sub(S.MaxPool2d, backward=_maxpool_no_crop), "the gradient of x has shape"),
        (_sub(S.MaxPool2d, backward=lambda self, g: [_maxpool_no_crop(self, g)]), "returned a list"),
    ],
    "check_avg_pool": [
        (_sub(S.AvgPool2d, backward=_avgpool_repeat), "overlapping 3x3 windows"),
        (_scaled_backward(S.AvgPool2d, 4.0), "4 times the right one"),
        (_sub(S.AvgPool2d, backward=lambda self, g: np.zeros(self.x_shape)), "all zeros"),
    ],
    "check_batch_norm": [
        (_sub(S.BatchNorm, backward=_bn_forgetful), "gradient of x is wrong"),
        (_sub(S.BatchNorm, backward=lambda self, g: (S.BatchNorm.backward(self, g)[0],)
              + S.BatchNorm.backward(self, g)[3:]), "None for running_mean, running_var"),
        (_sub(S.BatchNorm, backward=lambda self, g: S.BatchNorm.backward(self, g)[:3]
              + S.BatchNorm.backward(self, g)[:2:-1]), "is the right gradient of bias"),
        (_sub(S.BatchNorm, backward=_bn_train_formula_in_eval), "eval mode"),
        (_scaled_backward(S.BatchNorm, 1.00005), "1.00005 times the right one"),
    ],
    "check_sigmoid": [
        (_sub(S.Sigmoid, backward=lambda self, g: g * self.out), "gradient of x is wrong"),
        (_sub(S.Sigmoid, backward=lambda self, g: self.out * (1 - self.out)), "does not change when the upstream"),
        (_scaled_backward(S.Sigmoid, -1.0), "wrong sign"),
    ],
    "check_cat": [
        (_sub(S.Cat, backward=lambda self, g: list(S.Cat.backward(self, g))), "returned a list"),
        (_sub(S.Cat, backward=lambda self, g: tuple(g for _ in self.sizes)), "has shape"),
        (_sub(S.Cat, backward=lambda self, g: tuple(np.split(g, np.cumsum(self.sizes)[:-1], axis=1))),
         "along axis 0"),
    ],
    "check_log_softmax": [
        (_sub(S.LogSoftmax, backward=lambda self, g: g - np.exp(self.out)), "gradient of z is wrong"),
        (_sub(S.LogSoftmax, backward=lambda self, g: g - np.exp(self.out) * g.sum(axis=-1, keepdims=True)), "axis 0"),
        (_sub(S.LogSoftmax, backward=lambda self, g: 1 - np.exp(self.out)), "does not change when the upstream"),
    ],
    "check_cross_entropy": [
        (_sub(S.CrossEntropy, backward=lambda self, g: (S.CrossEntropy.backward(self, g)[0] * len(self.labels), None)),
         "times the right one"),
        (_sub(S.CrossEntropy, backward=lambda self, g: (self.probs * g / len(self.labels), None)), "logits is wrong"),
        (_sub(S.CrossEntropy, backward=lambda self, g: (S.CrossEntropy.backward(self, np.ones_like(g))[0], None)),
         "does not change when the upstream"),
    ],
    "check_conv2d_loops": [(_conv_loops_no_bias, "misses the bias"), (_conv_loops_no_padding, "has shape"),
                           (_conv_loops_stride_ignored, "values are wrong")],
    "check_im2col": [(_im2col_transposed, "rows and columns swapped"), (_im2col_tap_order, "rows are in the wrong order"),
                     (_im2col_no_stride, "should have")],
    "check_winograd_1d": [(_winograd_direct, "(3 per output: the direct sum)"), (_winograd_flipped, "flipped filter"),
                          (_winograd_tiles_apart, "which reads d[2] .. d[5]"), (_winograd_as_floats, "could be counted")],
    "check_numeric_gradient": [(_numeric_forward, "forward difference"), (_numeric_ignores_g, "ignores g"),
                               (_numeric_not_restored, "put every element back")],
    "check_channel_widths": [(_float_widths, "integers"),
                             (_widths(lambda w, d, k, b, c: [16] + w[1:]), "the stem"),
                             (_widths(lambda w, d, k, b, c: w[:5]), "return 6 numbers")],
    "check_densenet_parameters": [(_params_without_bn, "without the batch-norm parameters"),
                                  (lambda d, k, b, c: S.densenet_parameters(d, k, b, c) - 10, "classifier's bias"),
                                  (lambda d, k, b, c: float(S.densenet_parameters(d, k, b, c)), "return an integer"),
                                  (lambda d, k, b, c: S.densenet_parameters(d, k, b, c) - 27 * 16 + 27 * 2 * k,
                                   "the stem")],
    "check_dense_layer": [(_LayerWrongNames, "Name the attributes as torchvision"), (_LayerWithBias, "no bias"),
                          (_LayerNoPadding, "output has shape"), (_LayerWithoutRelu, "same weights, different outputs")],
    "check_dense_block": [(_BlockLastOnly, "output has shape"), (_BlockNewFirst, "different outputs"),
                          (_BlockForgetsLayers, "missing")],
    "check_transition": [(_TransitionMaxPool, "different outputs"), (_TransitionPoolFirst, "different outputs"),
                         (_TransitionNoNorm, "missing ['norm.weight'")],
    "check_sgd_step": [(_sgd_no_nesterov, "without the Nesterov look-ahead"), (_sgd_decay_after, "Check the order of the four updates"),
                       (_sgd_plain, "without the Nesterov look-ahead")],
    "check_paper_schedule": [(_schedule_late, "should train at"), (_schedule_float, "each rounded down"),
                             (_schedule_short, "one learning rate per epoch")],
    "check_long_range_share": [(_share_with_reader, "leave out the last column"), (_share_one_back, "rows 0 .. l-3"),
                               (_share_nan, "NaN")],
    "check_recompute": [(_sub(S.Recompute, backward=_recompute_false), "recompute=True"),
                        (_sub(S.Recompute, backward=_recompute_ignores_g), "does not change when the upstream"),
                        (_sub(S.Recompute, backward=_recompute_list), "returned a list")],
}


def test_every_checker_has_at_least_three_wrong_answers():
    checkers = {name for name in dir(E) if name.startswith("check_") and name != "check_workspace"}
    assert checkers == set(WRONG), checkers ^ set(WRONG)
    assert all(len(v) >= 3 for v in WRONG.values())


@pytest.mark.parametrize("checker, answer, words",
                         [(c, a, w) for c, cases in WRONG.items() for a, w in cases],
                         ids=[f"{c}-{i}" for c, cases in WRONG.items() for i in range(len(cases))])
def test_a_wrong_answer_fails_and_the_message_names_the_mistake(checker, answer, words, capsys):
    out = _fail(getattr(E, checker), answer, capsys)
    assert words in out, out
    assert E.passed(answer.__name__) is False


def test_a_gradient_off_by_a_factor_1_00005_fails_everywhere(capsys):
    for name, check in list(E.WORKSPACE_CHECKS.items()) + [("Sigmoid", E.check_sigmoid), ("Mul", E.check_mul)]:
        out = _fail(check, _scaled_backward(getattr(S, name), 1.00005), capsys)
        assert "1.00005 times the right one" in out and "relative error 5" in out, out


def test_the_message_gives_index_values_and_relative_error(capsys):
    out = _fail(E.check_batch_norm, _sub(S.BatchNorm, backward=_bn_forgetful), capsys)
    match = re.search(r"at index \((\d+), (\d+), (\d+), (\d+)\) yours is (\S+), the right value is (\S+) "
                      r"\(relative error (\S+);", out)
    assert match, out
    mine, right, rel = (float(v) for v in match.groups()[4:])
    assert abs(mine - right) / max(abs(mine), abs(right)) == pytest.approx(rel, rel=1e-2)
    assert "gradient of weight" not in out and "gradient of bias" not in out       # those are right


def test_unforeseen_errors_and_changed_forwards_give_verdicts_not_tracebacks(capsys):
    out = _fail(E.check_sigmoid, _sub(S.Sigmoid, backward=lambda self, g: g @ np.ones((7, 7))), capsys)
    assert "backward raised ValueError" in out
    out = _fail(E.check_sigmoid, _sub(S.Sigmoid, forward=lambda self, x: np.tanh(x)), capsys)
    assert "forward gives a different result" in out
    out = _fail(E.check_batch_norm, _sub(S.BatchNorm, forward=lambda self, x, rm, rv, *wb, **o:
                                         S.BatchNorm.forward(self, x, None, None, *wb, **o)), capsys)
    assert "running statistics" in out


def test_passed_records_the_last_verdict(capsys):
    E.check_relu(S.ReLU)
    assert E.passed("ReLU") and capsys.readouterr().out.startswith("PASS ReLU:")
    E.check_relu(_sub(S.ReLU, backward=lambda self, g: g))
    assert not E.passed("ReLU")


# --- the capstone's comparison --------------------------------------------------------------

@pytest.fixture(scope="module")
def batches():
    r = np.random.default_rng(0)
    return [(r.standard_normal((4, 3, 8, 8)), r.integers(0, 10, 4)) for _ in range(2)]


def test_compare_training_says_match_with_the_solutions(batches, capsys):
    assert E.compare_training(S.my_ops_solved, batches, depth=10, growth_rate=4)
    assert capsys.readouterr().out.startswith("MATCH: with your Conv2d, BatchNorm, ReLU")


@pytest.mark.parametrize("name, wrong, words", [
    ("BatchNorm", _scaled_backward(S.BatchNorm, 1.00005), "gradient of features.conv0.weight"),
    ("BatchNorm", _sub(S.BatchNorm, backward=lambda self, g: tuple(
        v * 1.00005 if i == 3 else v for i, v in enumerate(S.BatchNorm.backward(self, g)))),
     "gradient of features.denseblock1.denselayer1.norm1.weight"),
    ("Conv2d", _sub(S.Conv2d, forward=lambda self, x, weight, bias=None, stride=1, padding=0:
                    S.Conv2d.forward(self, x, weight, bias, stride, padding) ** 3 * 1e-3
                    + S.Conv2d.forward(self, x, weight, bias, stride, padding)), "at step 1: your loss"),
    ("AvgPool2d", _scaled_backward(S.AvgPool2d, 1.001), "gradient of features.conv0.weight"),
])
def test_compare_training_says_where_a_wrong_op_diverged(batches, name, wrong, words, capsys):
    assert not E.compare_training({name: wrong}, batches, depth=10, growth_rate=4)
    out = capsys.readouterr().out
    assert out.startswith("DIVERGED") and words in out and f"your {name}" in out, out


# --- the workspace ---------------------------------------------------------------------

def test_the_workspace_template_has_every_op_override_swaps(tmp_path):
    from tinydense.ops.override import OPS
    assert list(E.WORKSPACE_CHECKS) == list(OPS)
    namespace = {}
    exec(compile(build_notebooks.render_template(), "my_ops_template.py", "exec"), namespace)
    for name in OPS:
        assert "raise NotImplementedError" in build_notebooks.render_template()
        assert isinstance(namespace[name], type), name
    path = tmp_path / "student" / "my_ops.py"
    build_notebooks.make_workspace(path)
    assert path.read_text() == build_notebooks.render_template()
    path.write_text("# my work\n")
    build_notebooks.make_workspace(path)                        # never overwritten
    assert path.read_text() == "# my work\n"
    module = E.load_workspace(path)
    assert module.__file__ == str(path)


# --- the student release and the instructors' answers ---------------------------------------

def _solution_lines():
    """Distinctive lines of the reference solutions (not the forward passes students get)."""
    lines = set()
    for name in ("solutions.py", "my_ops_solved.py"):
        for line in (LESSONS / "instructor" / name).read_text().splitlines():
            line = line.strip()
            if len(line) > 25 and not line.startswith(("#", '"', "from ", "import ", "def ", "class ", "_")):
                lines.add(line)
    template = (build_notebooks.render_template() + "".join(s.read_text() for s in SOURCES)
                + "".join(p.read_text() for p in (LESSONS / "checks").glob("*.py")))   # what students get anyway
    return {line for line in lines if line not in template}


def test_the_student_release_holds_no_solutions(tmp_path):
    out = tmp_path / "release"
    files = build_notebooks.write_student_release(out)
    names = {p.relative_to(out).as_posix() for p in files}
    assert {f"{n.stem}.ipynb" for n in NOTEBOOKS} <= names
    assert {"checks/common.py", "checks/l01_autograd.py", "my_ops_template.py", "README.md",
            "fixtures/tiny_densenet.pth"} <= names
    assert not any("instructor" in n or "solution" in n or n == "build_notebooks.py" for n in names)
    secret = _solution_lines()
    assert len(secret) > 30
    for path in out.rglob("*"):
        if path.suffix in (".py", ".ipynb", ".md"):
            text = path.read_text()
            leaked = [line for line in secret if line in text]
            assert not leaked, f"{path.name} contains solution lines: {leaked[:3]}"
    with pytest.raises(ValueError, match="not empty"):
        build_notebooks.write_student_release(out)


def test_the_release_strips_cells_tagged_solution_or_answer_key(tmp_path):
    source = tmp_path / "99_demo.py"
    source.write_text('# %% [markdown]\n# ## What you will learn\n\n# %%\nx = 1\n\n'
                      '# %% tags=["solution"]\nx = 42\n\n# %% [markdown] tags=["answer-key"]\n# 42\n\n'
                      '# %% [markdown]\n# ## Questions\n')
    nb = build_notebooks.student_notebook(source)
    assert [c.source for c in nb.cells] == ["## What you will learn", "x = 1", "## Questions"]
    assert len(build_notebooks.build(source).cells) == 5


def _questions(source):
    text = source.read_text()
    block = text[text.rindex("## Questions"):]
    return len(re.findall(r"^# (\d+)\. ", block, re.MULTILINE))


def test_every_end_of_lesson_question_has_an_instructors_answer():
    answers = (LESSONS / "instructor" / "answers.md").read_text()
    total = 0
    for source in SOURCES:
        section = re.search(rf"^## {re.escape(source.stem)}\n(.*?)(?=^## |\Z)", answers, re.MULTILINE | re.DOTALL)
        assert section, f"instructor/answers.md has no section '## {source.stem}'"
        numbers = re.findall(r"^(\d+)\. ", section.group(1), re.MULTILINE)
        assert numbers == [str(i) for i in range(1, _questions(source) + 1)], (source.stem, numbers)
        total += len(numbers)
    assert total >= 51


def test_the_lessons_readme_lists_every_lesson():
    readme = (LESSONS / "README.md").read_text()
    for path in NOTEBOOKS:
        assert f"`{path.name}`" in readme, path.name
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    assert nb.cells[0].cell_type == "markdown"


# --- issue 20's blind spots: dtype, an upstream gradient edited in place, ties, a factor 2 ----------

def _cast_backward(base, dtype):
    """The right gradients, returned as ``dtype`` (float64 from float32 inputs leaks into float32 training)."""
    def backward(self, g):
        out = base.backward(self, g)
        if isinstance(out, tuple):
            return tuple(None if v is None else np.asarray(v).astype(dtype) for v in out)
        return np.asarray(out).astype(dtype)
    return _sub(base, backward=backward)


def _edits_g(base):
    """The right gradients, but g zeroed in place afterwards (as `g[x <= 0] = 0; return g` would)."""
    def backward(self, g):
        out = base.backward(self, g)
        out = tuple(None if v is None else np.array(v) for v in out) if isinstance(out, tuple) else np.array(out)
        g[...] = 0
        return out
    return _sub(base, backward=backward)


class _MaxPoolAllTies(S.MaxPool2d):
    """Sends each window's gradient to every tap equal to its maximum, not only the first."""
    __name__ = "MaxPool2d"

    def forward(self, x, kernel_size, stride=None, padding=0):
        self.x, self.y = x, S.MaxPool2d.forward(self, x, kernel_size, stride, padding)
        return self.y

    def backward(self, g):
        (kh, kw), (sh, sw), (ph, pw), (OH, OW) = self.geometry
        xpad = np.pad(self.x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
        dxpad = np.zeros_like(xpad)
        for a in range(kh):
            for b in range(kw):
                dxpad[:, :, a:a + sh * OH:sh, b:b + sw * OW:sw] += g * (xpad[:, :, a:a + sh * OH:sh,
                                                                               b:b + sw * OW:sw] == self.y)
        return dxpad[:, :, ph:ph + self.x.shape[2], pw:pw + self.x.shape[3]]


_MaxPoolAllTies.__name__ = "MaxPool2d"

BACKWARD_CHECKERS = {"check_mul": "Mul", "check_linear": "Linear", "check_conv2d": "Conv2d", "check_relu": "ReLU",
                     "check_max_pool": "MaxPool2d", "check_avg_pool": "AvgPool2d", "check_cat": "Cat",
                     "check_sigmoid": "Sigmoid", "check_batch_norm": "BatchNorm", "check_log_softmax": "LogSoftmax",
                     "check_cross_entropy": "CrossEntropy"}
BLIND_SPOTS = [(checker, kind) for checker in BACKWARD_CHECKERS for kind in ("float64 leak", "float32", "edits g")]


@pytest.mark.parametrize("checker, kind", BLIND_SPOTS, ids=[f"{c}-{k}" for c, k in BLIND_SPOTS])
def test_the_blind_spots_of_issue_20_fail_and_name_the_mistake(checker, kind, capsys):
    base = getattr(S, BACKWARD_CHECKERS[checker])
    answer, words = {
        "float64 leak": (_cast_backward(base, np.float64), "with float32 inputs your gradient of"),
        "float32": (_cast_backward(base, np.float32), "is float32, but"),
        "edits g": (_edits_g(base), "changed g, the upstream gradient, in place"),
    }[kind]
    out = _fail(getattr(E, checker), answer, capsys)
    assert words in out, out


def test_ties_in_max_pooling_and_a_factor_2_are_named(capsys):
    out = _fail(E.check_max_pool, _MaxPoolAllTies, capsys)
    assert "tied maxima (only the first gets the gradient)" in out and "first maximum on ties" in out, out

    def half_step(f, x, g, eps=1e-6):          # divides by eps instead of 2 eps
        return 2 * S.numeric_gradient(f, x, g, eps)

    def edits_g(f, x, g, eps=1e-6):
        out = S.numeric_gradient(f, x, g, eps)
        g *= 2
        return out
    assert "twice the right one" in _fail(E.check_numeric_gradient, half_step, capsys)
    assert "g was changed by your function" in _fail(E.check_numeric_gradient, edits_g, capsys)


def test_the_hints_point_to_the_lesson_instead_of_printing_the_answer(capsys):
    out = _fail(E.check_sigmoid, _sub(S.Sigmoid, backward=lambda self, g: g * self.out), capsys)
    assert "where to look: lesson 5, section 6" in out and "y * (1 - y)" not in out, out
    out = _fail(E.check_mul, _scaled_backward(S.Mul, 2.0), capsys)
    assert "2 times the right one everywhere (a factor 2 too many)" in out and "g * b" not in out, out


# helpers whose answers come from tinydense's own layers (summary, conv2d), as a student's may too:
# a truth the library gives, not a reference implementation of the exercise
LIBRARY_TRUTHS = {"_vgg_truth", "_resnext_truth", "_columns_by_convolution"}


def _same_answer(a, b):
    try:
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    except (TypeError, ValueError):
        return False
    return a.shape == b.shape and a.size > 0 and np.allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True)


def test_the_student_release_holds_no_reference_computation(tmp_path):
    """Issue 20: _long_range_share was lesson 9's solution and _vgg lesson 3's, reformatted, so no line
    matched. Every helper of the released checks is called with each exercise's example inputs; none
    may give the solution's answer."""
    from tinydense.tools.grade import load_checks
    release = tmp_path / "release"
    build_notebooks.write_student_release(release)
    r = np.random.default_rng(0)
    usage = np.triu(r.random((8, 8)) + 0.1)
    usage[usage == 0] = np.nan
    x, w, b = r.standard_normal((1, 2, 5, 5)), r.standard_normal((3, 2, 3, 3)), r.standard_normal(3)
    examples = [(S.vgg_stage_cost, (3, 64, 2, 6)), (S.resnext_block_macs, (64, 4, 24, 14, 14)),
                (S.long_range_share, (usage,)), (S.im2col, (x, 3, 1, 1)), (S.conv2d_loops, (x, w, b, 1, 1)),
                (S.channel_widths, (40, 12, False, 1.0)), (S.densenet_parameters, (40, 12, False, 1.0)),
                (S.paper_schedule, (40,)), (S.numeric_gradient, (np.sin, x[0, 0], x[0, 1])),
                (S.winograd_1d, (x[0, :, :3].ravel(), w[0, 0, 0]))]
    modules = load_checks(release)
    assert "hidden_checks" not in modules                   # the hidden tests stay with the instructors
    helpers = [(f"{m}.{name}", fn) for m, module in modules.items() for name, fn in vars(module).items()
               if name.startswith("_") and callable(fn) and getattr(fn, "__module__", None) == module.__name__
               and name not in LIBRARY_TRUTHS and not name.startswith("__")]
    assert len(helpers) > 10
    leaks = []
    for solution, args in examples:
        right = solution(*[a.copy() if isinstance(a, np.ndarray) else a for a in args])
        for name, helper in helpers:
            for call_args in (args, (args,)):
                try:
                    got = helper(*[a.copy() if isinstance(a, np.ndarray) else a for a in call_args])
                except Exception:
                    continue
                if _same_answer(got, right):
                    leaks.append(f"{name} computes {solution.__name__}")
    assert not leaks, leaks


def test_the_nbgrader_release_marks_solutions_and_autograded_checks(tmp_path):
    out = tmp_path / "release"
    build_notebooks.write_student_release(out, nbgrader=True)
    nb = nbformat.read(out / "05_gradient_checking.ipynb", as_version=4)
    nbformat.validate(nb)
    stubs = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")]
    checks = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert [c.metadata.nbgrader.grade_id for c in stubs] == ["numeric_gradient", "Sigmoid", "Cat"]
    assert [(c.metadata.nbgrader.grade_id, c.metadata.nbgrader.points, c.metadata.nbgrader.locked)
            for c in checks] == [("check_numeric_gradient", 1, True), ("check_Sigmoid", 1, True), ("check_Cat", 1, True)]
    for verdict in (True, False):                 # nbgrader counts a test cell that raises as failed
        namespace = {"check_sigmoid": lambda cls, v=verdict: (v, "sigmoid", "..."), "Sigmoid": object}
        if verdict:
            exec(checks[1].source, namespace)
        else:
            with pytest.raises(AssertionError, match="FAIL"):
                exec(checks[1].source, namespace)
    plain = nbformat.read(build_notebooks.write_student_release(tmp_path / "plain")[4], as_version=4)
    assert not any("nbgrader" in c.metadata for c in plain.cells)


def test_the_nbgrader_release_takes_its_points_from_the_graders_points_file(tmp_path, capsys):
    points = tmp_path / "points.json"
    points.write_text('{"default": 2, "Sigmoid": 3.5}')
    assert build_notebooks.main(["--student", str(tmp_path / "release"), "--nbgrader", "--points", str(points)]) == 0
    nb = nbformat.read(tmp_path / "release" / "05_gradient_checking.ipynb", as_version=4)
    assert [(c.metadata.nbgrader.grade_id, c.metadata.nbgrader.points) for c in nb.cells
            if c.metadata.get("nbgrader", {}).get("grade")] == [("check_numeric_gradient", 2), ("check_Sigmoid", 3.5),
                                                                 ("check_Cat", 2)]
    points.write_text('{"Sigmoid": -1}')                    # the grader's own validation, before anything is written
    assert build_notebooks.main(["--student", str(tmp_path / "bad"), "--nbgrader", "--points", str(points)]) == 1
    assert "points must be a JSON object" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match="nbgrader=True"):
        build_notebooks.write_student_release(tmp_path / "plain", points=points)
    assert build_notebooks.main(["--student", str(tmp_path / "x"), "--points"]) == 2


def test_the_autograder_zip_holds_what_gradescope_runs(tmp_path):
    import stat
    import zipfile
    path = build_notebooks.write_autograder_zip(tmp_path / "autograder.zip")
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        for script in ("setup.sh", "run_autograder"):
            assert stat.S_IMODE(zf.getinfo(script).external_attr >> 16) & 0o111, script    # executable
            assert zf.read(script).startswith(b"#!/usr/bin/env bash\n")
        run = zf.read("run_autograder").decode()
        zf.extractall(tmp_path / "source")
    assert "/autograder/results/results.json" in run and "--course /autograder/source/course" in run
    assert {"package/tinydense/__init__.py", "package/pyproject.toml", "course/checks/common.py",
            "course/instructor/hidden_checks.py", "course/05_gradient_checking.ipynb"} <= names
    assert not any("__pycache__" in n or n.startswith("course/student/") for n in names)
    from tinydense.tools.grade import load_checks
    modules = load_checks(tmp_path / "source" / "course")      # the course inside loads, hidden tests too
    assert "hidden_checks" in modules and "Conv2d" in modules["hidden_checks"].HIDDEN
    with pytest.raises(ValueError, match="exists"):
        build_notebooks.write_autograder_zip(path)
