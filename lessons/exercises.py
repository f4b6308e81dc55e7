"""Checks for the course's exercises (the lessons' and the workspace's).

Each ``check_*`` function takes what the student wrote (a ``Function``
subclass, a function or a module class), runs it on small inputs and prints
one verdict:

    PASS sigmoid: ...
    FAIL sigmoid: ...   (what is wrong, where, and a hint in words)

and never raises, so a notebook with an unfinished exercise still runs to the
end. ``passed(name)`` says whether the last check of ``name`` (the class or
function name) passed; the lessons use it to run their later cells on the
student's code only when it works.

A backward pass must agree with tinydense's own op to 1e-9 relative (so a
gradient off by a factor 1.00005 fails) and with central differences
(``tinydense.gradcheck``), on float64 inputs with a random upstream gradient,
odd shapes, strides, padding, and batch norm in training and eval mode.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

import tinydense as td
import tinydense.functional as F

RESULTS: dict = {}       # name -> True (passed) / False, from the last check of that name
GRAD_RTOL = 1e-9         # how close a gradient must be to tinydense's, relative to its largest value


def passed(name: str) -> bool:
    """Whether the last check of the exercise ``name`` passed."""
    return RESULTS.get(name, False)


class _Failure(Exception):
    """One failed step of a check; its message is the verdict."""


def _rng(seed):
    return np.random.default_rng(seed)


def _tensors(arrays):
    return [td.Tensor(np.array(a, dtype=np.float64), requires_grad=True) for a in arrays]


def _describe(arrays, names):
    return ", ".join(f"{n} {tuple(np.shape(a))}" for n, a in zip(names, arrays))


def _verdict(title, name, run):
    """Run ``run()`` (raises _Failure); print PASS or FAIL, record the result. Never raises."""
    try:
        detail = run()
    except NotImplementedError:
        RESULTS[name] = False
        print(f"FAIL {title}: {name} is not implemented yet (it raised NotImplementedError). Write it "
              f"in the cell above (or in your my_ops.py), run that cell, then run this check again.")
        return
    except _Failure as failure:
        RESULTS[name] = False
        print(f"FAIL {title}: {failure}")
        return
    except Exception as e:   # a bug we did not foresee: still a verdict, not a traceback
        RESULTS[name] = False
        print(f"FAIL {title}: the check could not run your code: {type(e).__name__}: {e}")
        return
    RESULTS[name] = True
    print(f"PASS {title}: {detail}")


# --- backward passes of Function subclasses --------------------------------------------

@dataclass
class Case:
    """One input for a Function check.

    call(cls, *tensors) -> Tensor runs the student's op; reference(*tensors) -> Tensor the
    same with tinydense's own op; arrays are the differentiable inputs, names theirs.
    slots names every positional input of the op in order (default: names); inputs that
    are not in names (running statistics, labels) get no gradient. extra(), if given,
    runs after forward and returns a complaint or None."""
    label: str
    call: object
    reference: object
    arrays: list
    names: list
    slots: list = None
    extra: object = None
    options: dict = field(default_factory=dict)


def _where(case):
    return f"[{case.label}: {_describe(case.arrays, case.names)}]"


def _hint(name, mine, right, others, from_other_g):
    """A guess, in words, at the mistake that turns ``right`` into ``mine``.
    others: {input name: its right gradient}; from_other_g: the student's gradient for
    another upstream gradient, and the right one for it, or None."""
    if not np.any(mine):
        return f"your gradient of {name} is all zeros"
    for other, theirs in others.items():
        if other != name and theirs.shape == mine.shape and np.allclose(mine, theirs, rtol=1e-6, atol=1e-9):
            return (f"your gradient of {name} is the right gradient of {other}: return the gradients in "
                    f"the order of forward's inputs")
    if from_other_g is not None:
        mine_2, right_2 = from_other_g
        if np.allclose(mine, mine_2, rtol=1e-9, atol=1e-12) and not np.allclose(right, right_2, rtol=1e-6):
            return (f"your gradient of {name} does not change when the upstream gradient g changes: "
                    f"multiply by g (the chain rule)")
    if np.allclose(mine, -right, rtol=1e-6, atol=1e-9):
        return f"your gradient of {name} has the wrong sign"
    scale = float(np.vdot(mine, right) / max(np.vdot(right, right), 1e-300))
    if np.allclose(mine, scale * right, rtol=1e-7, atol=1e-12):
        return (f"your gradient of {name} is {scale:.6g} times the right one everywhere "
                f"(a missing or extra factor?)")
    wrong = ~np.isclose(mine, right, rtol=1e-6, atol=1e-9)
    return (f"your gradient of {name} is wrong at {int(wrong.sum())} of {wrong.size} elements; "
            f"the largest difference is {float(np.abs(mine - right).max()):.3g}")


def _shape_complaint(name, got, want, shapes):
    got, want = tuple(got), tuple(want)
    text = f"the gradient of {name} has shape {got} but {name} has shape {want}"
    if got == want[::-1] and got != want:
        return text + ": is it transposed? A gradient always has its input's shape."
    same = [n for n, s in shapes.items() if n != name and s == got]
    if same:
        return text + f", which is {same[0]}'s shape: are the gradients returned in the wrong order?"
    return text + ": a gradient always has its input's shape."


def _raw_backward(cls, case, g):
    """Run forward and then backward by hand (no autograd) to see what backward returns."""
    out = case.call(cls, *_tensors(case.arrays))
    fn = out._creator
    if fn is None:
        raise _Failure(f"forward recorded no graph {_where(case)}: call the op as Cls.apply(...)")
    try:
        return fn.backward(g), len(fn.inputs)
    except (NotImplementedError, _Failure):
        raise
    except Exception as e:
        raise _Failure(f"backward raised {type(e).__name__}: {e} {_where(case)}") from None


def _check_structure(raw, n_inputs, case):
    slots = case.slots or case.names
    missing = [s for s in slots if s not in case.names]
    none_hint = f" (None for {', '.join(missing)})" if missing else ""
    if isinstance(raw, list):
        raise _Failure(f"backward returned a list {_where(case)}; return a tuple, one gradient per input "
                       f"of forward ({', '.join(slots)}){none_hint}: autograd reads a list as ONE gradient.")
    if n_inputs > 1 and not isinstance(raw, tuple):
        raise _Failure(f"backward returned one array but forward has {n_inputs} inputs ({', '.join(slots)}) "
                       f"{_where(case)}: return a tuple with one gradient per input{none_hint}.")
    grads = raw if isinstance(raw, tuple) else (raw,)
    if len(grads) < n_inputs:
        raise _Failure(f"backward returned {len(grads)} values but forward has {n_inputs} inputs "
                       f"({', '.join(slots)}) {_where(case)}: no gradient for {', '.join(slots[len(grads):])}; "
                       f"return one per input, in order{none_hint}.")
    by_name = dict(zip(slots, grads))
    shapes = {n: np.shape(a) for n, a in zip(case.names, case.arrays)}
    for name, x in zip(case.names, case.arrays):
        gx = by_name.get(name)
        if gx is None:
            raise _Failure(f"backward returned no gradient for {name} {_where(case)}: return one gradient "
                           f"per input of forward, in the same order ({', '.join(slots)}).")
        if tuple(np.shape(gx)) != np.shape(x):
            raise _Failure(_shape_complaint(name, np.shape(gx), np.shape(x), shapes) + f" {_where(case)}")
    return by_name


def _check_case(cls, case, seed, advice=""):
    where = _where(case)
    mine_in, ref_in = _tensors(case.arrays), _tensors(case.arrays)
    try:
        out = case.call(cls, *mine_in)
    except NotImplementedError:
        raise
    except Exception as e:
        raise _Failure(f"forward raised {type(e).__name__}: {e} {where}. The forward pass is given: "
                       f"run its cell again unchanged.") from None
    expected = case.reference(*ref_in)
    if out.shape != expected.shape or not np.allclose(out.numpy(), expected.numpy(), rtol=1e-10, atol=1e-12):
        raise _Failure(f"forward gives a different result from tinydense's own op {where}; the forward "
                       f"pass is given, so restore it and change only backward.")
    if case.extra is not None:
        complaint = case.extra()
        if complaint:
            raise _Failure(f"{complaint} {where}")

    r = _rng(seed)
    g, g2 = r.standard_normal(out.shape), r.standard_normal(out.shape)
    raw, n_inputs = _raw_backward(cls, case, g2)
    raw_by_name = _check_structure(raw, n_inputs, case)
    try:
        out.backward(g)
    except Exception as e:
        raise _Failure(f"backward raised {type(e).__name__}: {e} {where}") from None
    expected.backward(g)
    other_in = _tensors(case.arrays)
    case.reference(*other_in).backward(g2)

    rights = {n: np.asarray(t.grad) for n, t in zip(case.names, ref_in)}
    for name, x, ref, other in zip(case.names, mine_in, ref_in, other_in):
        mine, right = np.asarray(x.grad), np.asarray(ref.grad)
        err = np.abs(mine - right)
        scale = float(np.abs(right).max()) if right.size else 0.0
        if err.size and err.max() > GRAD_RTOL * scale + 1e-12:
            idx = np.unravel_index(int(np.argmax(err)), err.shape)
            rel = float(err[idx] / max(abs(mine[idx]), abs(right[idx]), 1e-300))
            hint = _hint(name, mine, right, rights,
                         (np.asarray(raw_by_name[name]), np.asarray(other.grad)))
            raise _Failure(f"the gradient of {name} is wrong {where}: at index {tuple(int(i) for i in idx)} "
                           f"yours is {mine[idx]:.10g}, the right value is {right[idx]:.10g} (relative error "
                           f"{rel:.2e}; it must be below {GRAD_RTOL:g}).\n  hint: {hint}"
                           + (f"\n  what to check: {advice}" if advice else ""))
    try:
        td.gradcheck(lambda *ts: case.call(cls, *ts), _tensors(case.arrays))
    except td.GradcheckError as e:
        detail = re.sub(r"input (\d+) \(shape", lambda m: f"gradient of {case.names[int(m.group(1))]} (shape",
                        str(e))
        raise _Failure(f"backward agrees with tinydense but not with central differences {where}:\n  "
                       f"{detail}") from None


def _check_function(title, cls, cases, advice=""):
    def run():
        for i, case in enumerate(cases):
            _check_case(cls, case, seed=100 + i, advice=advice)
        return (f"forward and backward agree with tinydense's (to {GRAD_RTOL:g}) and with central "
                f"differences in all {len(cases)} cases.")
    _verdict(title, getattr(cls, "__name__", str(cls)), run)


def _away_from_zero(r, *shape):
    x = r.standard_normal(shape)
    return np.sign(x) * (0.1 + np.abs(x))      # no ReLU kink within gradcheck's step


# the op checks (lessons 1, 2, 4, 5, 8 and the workspace)

def check_mul(cls):
    """Mul.forward(a, b) -> a * b (same shapes); backward returns (da, db)."""
    r = _rng(10)
    cases = [Case(f"shapes {s}", lambda c, a, b: c.apply(a, b), lambda a, b: a * b,
                  [r.standard_normal(s), r.standard_normal(s)], ["a", "b"]) for s in [(3, 4), (2, 3, 5)]]
    _check_function("multiplication", cls, cases,
                    advice='da = g * b and db = g * a.')


def check_linear(cls):
    """Linear.forward(x, weight, bias=None) -> x @ weight.T + bias; backward (dx, dweight, dbias)."""
    r = _rng(11)
    cases = [
        Case("with bias", lambda c, x, w, b: c.apply(x, w, b), lambda x, w, b: F.linear(x, w, b),
             [r.standard_normal((4, 3)), r.standard_normal((5, 3)), r.standard_normal(5)], ["x", "weight", "bias"]),
        Case("without bias, batch 1", lambda c, x, w: c.apply(x, w), lambda x, w: F.linear(x, w),
             [r.standard_normal((1, 2)), r.standard_normal((3, 2))], ["x", "weight"]),
    ]
    _check_function("linear layer", cls, cases,
                    advice='dx = g @ weight, dweight = g.T @ x, dbias = g summed over the batch.')


def check_conv2d(cls):
    """Conv2d.forward(x, weight, bias=None, stride=1, padding=0); backward (dx, dweight[, dbias])."""
    r = _rng(12)
    settings = [((2, 3, 5, 5), (4, 3, 3, 3), True, 1, 1, "3x3, stride 1, padding 1, bias"),
                ((1, 2, 7, 6), (3, 2, 3, 2), False, 2, 0, "3x2 kernel, stride 2, no padding"),
                ((2, 3, 4, 5), (2, 3, 1, 1), False, 1, 0, "1x1"),
                ((1, 1, 6, 6), (2, 1, 3, 3), True, (2, 1), (1, 0), "stride (2, 1), padding (1, 0)")]
    cases = []
    for xs, ws, bias, s, p, label in settings:
        arrays = [r.standard_normal(xs), r.standard_normal(ws)] + ([r.standard_normal(ws[0])] if bias else [])
        names = ["x", "weight"] + (["bias"] if bias else [])
        cases.append(Case(label, lambda c, *t, s=s, p=p: c.apply(*t, stride=s, padding=p),
                          lambda *t, s=s, p=p: F.conv2d(*t, stride=s, padding=p), arrays, names))
    _check_function("convolution", cls, cases,
                    advice='dweight = sum over images of g[n] @ cols[n].T; dx: every tap (a, b) ADDS (+=) its part of weight.T @ g back into the slice of the padded input it was copied from, then the padding is cut off; dbias = g summed over images and pixels.')


def check_relu(cls):
    """ReLU.forward(x) -> max(x, 0); backward returns dx."""
    r = _rng(13)
    cases = [Case(f"shape {s}", lambda c, x: c.apply(x), lambda x: F.relu(x), [_away_from_zero(r, *s)], ["x"])
             for s in [(3, 4), (2, 3, 3, 5)]]
    _check_function("ReLU", cls, cases,
                    advice='dx = g where the input was positive, 0 elsewhere.')


def _pool_cases(r, pool):
    settings = [((2, 3, 4, 4), 2, 2, 0, "non-overlapping 2x2 windows"),
                ((1, 2, 5, 5), 3, 1, 0, "overlapping 3x3 windows, stride 1"),
                ((2, 1, 7, 6), 3, 2, 1, "3x3 windows, stride 2, padding 1"),
                ((1, 2, 5, 7), (3, 2), (1, 2), 0, "3x2 windows, stride (1, 2)")]
    return [Case(label, lambda c, x, k=k, s=s, p=p: c.apply(x, kernel_size=k, stride=s, padding=p),
                 lambda x, k=k, s=s, p=p: pool(x, k, s, p), [r.permutation(np.prod(shape)).reshape(shape)
                                                             / np.prod(shape) + r.standard_normal(shape)],
                 ["x"]) for shape, k, s, p, label in settings]


def check_max_pool(cls):
    """MaxPool2d.forward(x, kernel_size, stride=None, padding=0); backward returns dx."""
    _check_function("max pooling", cls, _pool_cases(_rng(14), F.max_pool2d),
                    advice="only the tap recorded in self.argmax gets the window's gradient; overlapping windows ADD (+=) into the padded input; cut the padding off at the end.")


def check_avg_pool(cls):
    """AvgPool2d.forward(x, kernel_size, stride=None, padding=0); backward returns dx."""
    _check_function("average pooling", cls, _pool_cases(_rng(15), F.avg_pool2d),
                    advice='every tap of a window gets g / (kh * kw), ADDED (+=) where windows overlap; cut the padding off at the end.')


def check_cat(cls):
    """Cat.forward(*xs, axis=1) joins tensors along axis; backward returns one dx per input."""
    r = _rng(16)
    groups = [([(2, 3, 2, 2), (2, 1, 2, 2)], 1), ([(1, 2, 3, 3), (1, 4, 3, 3), (1, 1, 3, 3)], 1),
              ([(2, 3), (2, 5)], 1), ([(2, 3, 2), (1, 3, 2)], 0)]
    cases = []
    for shapes, axis in groups:
        names = [f"x{i}" for i in range(len(shapes))]
        cases.append(Case(f"{len(shapes)} inputs along axis {axis}", lambda c, *xs, a=axis: c.apply(*xs, axis=a),
                          lambda *xs, a=axis: F.cat(list(xs), axis=a), [r.standard_normal(s) for s in shapes],
                          names))
    _check_function("concatenation", cls, cases,
                    advice="each input's gradient is its own slice of g along the axis.")


def check_sigmoid(cls):
    """Sigmoid.forward(x) -> 1 / (1 + exp(-x)); backward returns dx."""
    r = _rng(0)
    cases = [Case(f"case {i + 1}", lambda c, x: c.apply(x), lambda x: x.sigmoid(), [x], ["x"])
             for i, x in enumerate([r.standard_normal((3, 4)), 4 * r.standard_normal((2, 3, 5))])]
    _check_function("sigmoid", cls, cases,
                    advice='dx = g * y * (1 - y) with y the saved output.')


def check_batch_norm(cls):
    """BatchNorm.forward(x, running_mean, running_var, weight=None, bias=None, training=False,
    momentum=0.1, eps=1e-5); backward returns (dx, None, None, dweight, dbias), or (dx, None, None)."""
    r = _rng(17)

    def case(label, shape, training, affine):
        C = shape[1]
        x = r.standard_normal(shape) * 2 + 1
        stats0 = (r.standard_normal(C) * 0.5, 0.5 + r.random(C))
        mine, theirs = [s.copy() for s in stats0], [s.copy() for s in stats0]
        arrays = [x] + ([1 + 0.5 * r.standard_normal(C), r.standard_normal(C)] if affine else [])
        names = ["x"] + (["weight", "bias"] if affine else [])

        def call(c, x, *wb):
            mine[0][...], mine[1][...] = stats0
            return c.apply(x, mine[0], mine[1], *wb, training=training, momentum=0.1, eps=1e-5)

        def reference(x, *wb):
            theirs[0][...], theirs[1][...] = stats0
            return F.batch_norm(x, theirs[0], theirs[1], *wb, training=training, momentum=0.1, eps=1e-5)

        def extra():
            if not (np.allclose(mine[0], theirs[0], rtol=1e-12) and np.allclose(mine[1], theirs[1], rtol=1e-12)):
                return "forward updated the running statistics differently from tinydense (the forward is given)"
        return Case(label, call, reference, arrays, names,
                    slots=["x", "running_mean", "running_var"] + names[1:], extra=extra)

    cases = [case("training mode", (4, 3, 2, 2), True, True),
             case("training mode, odd shape", (2, 2, 3, 5), True, True),
             case("training mode, no weight and bias", (3, 2, 2, 3), True, False),
             case("eval mode (running statistics)", (2, 3, 3, 3), False, True),
             case("training mode, (N, C) input", (5, 4), True, True)]
    _check_function("batch norm", cls, cases,
                    advice='training: dx = weight * invstd / M * (M g - sum g - xhat * sum(g xhat)), sums per channel; eval: dx = weight * invstd * g; dweight = sum(g xhat), dbias = sum g.')


def check_log_softmax(cls):
    """LogSoftmax.forward(z, axis=-1); backward returns dz."""
    r = _rng(18)
    cases = [Case(f"shape {s}, axis {a}", lambda c, z, a=a: c.apply(z, axis=a), lambda z, a=a: F.log_softmax(z, a),
                  [3 * r.standard_normal(s)], ["z"]) for s, a in [((3, 5), -1), ((4, 3), 0), ((2, 3, 4), 1)]]
    _check_function("log-softmax", cls, cases,
                    advice='dz = g - softmax(z) * sum(g) along the axis (keepdims), softmax(z) = exp(y).')


def check_cross_entropy(cls):
    """CrossEntropy.forward(logits, labels) -> mean loss; backward returns (dlogits, None)."""
    r = _rng(19)
    cases = []
    for n, k in [(4, 5), (1, 3), (6, 10)]:
        labels = r.integers(0, k, n)
        cases.append(Case(f"{n} images, {k} classes", lambda c, z, y=labels: c.apply(z, y),
                          lambda z, y=labels: F.cross_entropy(z, y), [3 * r.standard_normal((n, k))], ["logits"],
                          slots=["logits", "labels"]))
    _check_function("cross-entropy", cls, cases,
                    advice='dlogits = (softmax - onehot(labels)) / N, times the scalar g.')


# the workspace: every op of lessons/student/my_ops.py and its checker
WORKSPACE_CHECKS = {"Conv2d": check_conv2d, "BatchNorm": check_batch_norm, "ReLU": check_relu,
                    "MaxPool2d": check_max_pool, "AvgPool2d": check_avg_pool, "Cat": check_cat,
                    "Linear": check_linear, "LogSoftmax": check_log_softmax, "CrossEntropy": check_cross_entropy}


def load_workspace(path=None):
    """Your workspace as a freshly imported module: ``path``, else $TINYDENSE_WORKSPACE, else
    student/my_ops.py. A missing file is first created from the template (never overwritten)."""
    import importlib.util
    import os
    from pathlib import Path
    path = Path(path or os.environ.get("TINYDENSE_WORKSPACE") or Path("student") / "my_ops.py")
    if not path.exists():
        here = Path(__file__).resolve().parent
        template = here / "my_ops_template.py"
        if template.exists():                   # the student release ships the template
            text = template.read_text()
        else:                                   # a checkout of the repository: generate it
            spec = importlib.util.spec_from_file_location("build_notebooks", here / "build_notebooks.py")
            build = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(build)
            text = build.render_template()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"created your workspace {path} from the template")
    spec = importlib.util.spec_from_file_location("my_ops", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    print(f"your workspace: {path.resolve()}")
    return module


def check_workspace(module):
    """Run the checker of every op in the workspace module; returns {name: passed}."""
    for name, check in WORKSPACE_CHECKS.items():
        cls = getattr(module, name, None)
        if cls is None:
            RESULTS[name] = False
            print(f"FAIL {name}: your workspace has no class {name} (get a fresh copy of the template "
                  f"with `python lessons/build_notebooks.py --workspace`).")
            continue
        check(cls)
    return {name: passed(name) for name in WORKSPACE_CHECKS}


# --- convolution: convolution forward ---------------------------------------------------

def _conv_settings(r):
    return [((2, 3, 5, 5), (4, 3, 3, 3), 1, 1), ((1, 2, 7, 6), (3, 2, 3, 3), 2, 0),
            ((2, 1, 4, 4), (2, 1, 1, 1), 1, 0), ((1, 2, 6, 5), (1, 2, 3, 3), 2, 2)]


def check_conv2d_loops(fn):
    """conv2d_loops(x, w, b, stride, padding) -> y (N, O, OH, OW), NumPy arrays."""
    def run():
        r = _rng(20)
        for xs, ws, s, p in _conv_settings(r):
            x, w, b = r.standard_normal(xs), r.standard_normal(ws), r.standard_normal(ws[0])
            where = f"[x {xs}, w {ws}, stride {s}, padding {p}]"
            y = np.asarray(fn(x, w, b, s, p))
            want = F.conv2d(td.tensor(x), td.tensor(w), td.tensor(b), stride=s, padding=p).numpy()
            if y.shape != want.shape:
                raise _Failure(f"the output has shape {y.shape} but should have {want.shape} {where}: output "
                               f"size (H - K + 2P) // S + 1 per axis.")
            if np.allclose(y, want - b.reshape(1, -1, 1, 1), rtol=1e-10, atol=1e-10):
                raise _Failure(f"the output misses the bias {where}: add b[o] to every output of filter o.")
            if not np.allclose(y, want, rtol=1e-10, atol=1e-10):
                raise _Failure(f"the output values are wrong {where} (largest difference "
                               f"{np.abs(y - want).max():.3g}): window (i, j) starts at input pixel "
                               f"(i*S, j*S) of the zero-padded input, and sums over all input channels.")
        return "your loops compute the same convolution as F.conv2d in all 4 cases."
    _verdict("convolution by loops", getattr(fn, "__name__", "conv2d_loops"), run)


def _im2col_reference(x, K, stride, padding):
    N, C, H, W = x.shape
    OH, OW = (H - K + 2 * padding) // stride + 1, (W - K + 2 * padding) // stride + 1
    xpad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    cols = np.empty((N, C * K * K, OH * OW))
    for i in range(OH):            # per output pixel: the definition, slow and clear
        for j in range(OW):
            cols[:, :, i * OW + j] = xpad[:, :, i * stride:i * stride + K, j * stride:j * stride + K].reshape(N, -1)
    return cols


def check_im2col(fn):
    """im2col(x, K, stride, padding) -> (N, C*K*K, OH*OW): column p of image n is output pixel p's patch."""
    def run():
        r = _rng(21)
        for xs, K, s, p in [((2, 3, 5, 5), 3, 1, 1), ((1, 2, 7, 6), 3, 2, 0), ((1, 1, 6, 6), 2, 2, 1)]:
            x = r.standard_normal(xs)
            where = f"[x {xs}, K {K}, stride {s}, padding {p}]"
            cols, want = np.asarray(fn(x, K, s, p)), _im2col_reference(x, K, s, p)
            if cols.shape != want.shape:
                hint = (" (rows and columns swapped?)" if cols.shape[1:] == want.shape[:0:-1] else "")
                raise _Failure(f"the result has shape {cols.shape} but should have {want.shape} {where}"
                               f"{hint}: one row per (channel, tap), one column per output pixel.")
            if not np.array_equal(cols, want):
                same_set = np.allclose(np.sort(cols, axis=1), np.sort(want, axis=1))
                raise _Failure(f"the column matrix has the right shape but wrong entries {where}"
                               + (": the rows are in the wrong order; row (c, a, b) is c*K*K + a*K + b."
                                  if same_set else ": check the stride and the padding of the slices."))
        return "your column matrices equal the per-pixel definition in all 3 cases."
    _verdict("im2col", getattr(fn, "__name__", "im2col"), run)


# --- gradient checking: numeric gradients ----------------------------------------------------

def check_numeric_gradient(fn):
    """numeric_gradient(f, x, g, eps=1e-6) -> d/dx of sum(f(x) * g) by central differences."""
    def run():
        r = _rng(22)
        tests = [("sin", np.sin, np.cos), ("x^3", lambda x: x ** 3, lambda x: 3 * x ** 2),
                 ("exp", np.exp, np.exp)]
        for label, f, df in tests:
            x = r.standard_normal((3, 4))
            g = r.standard_normal((3, 4))
            before = x.copy()
            got = np.asarray(fn(f, x, g))
            if not np.array_equal(x, before):
                raise _Failure(f"x was changed by your function [{label}]: put every element back "
                               f"after perturbing it.")
            want = g * df(x)
            if got.shape != x.shape:
                raise _Failure(f"the result has shape {got.shape}, x has shape {x.shape} [{label}].")
            if np.allclose(got, df(x), rtol=1e-6, atol=1e-8):
                raise _Failure(f"your result ignores g [{label}]: differentiate sum(f(x) * g), not sum(f(x)).")
            err = np.abs(got - want).max() / np.abs(want).max()
            if err > 1e-7:
                kind = (" That is the size of a forward difference's error: use (f(x+eps) - f(x-eps)) / (2 eps)."
                        if err < 1e-4 else "")
                raise _Failure(f"your gradient is off by {err:.1e} relative [{label}], more than 1e-7.{kind}")
        return "central differences, with the upstream gradient, to 1e-7 in all 3 cases."
    _verdict("numeric gradient", getattr(fn, "__name__", "numeric_gradient"), run)


# --- dense connectivity: counting -------------------------------------------------------------

_PARAM_CONFIGS = [(40, 12, False, 1.0), (100, 12, True, 0.5), (100, 24, False, 1.0), (52, 12, True, 1.0),
                  (40, 12, False, 0.5), (250, 24, True, 0.5)]


def _config_name(depth, k, bottleneck, compression):
    kind = "DenseNet" + ("-B" if bottleneck else "") + ("C" if compression < 1 and bottleneck else
                                                       ("-C" if compression < 1 else ""))
    return f"{kind} L={depth} k={k}"


def check_densenet_parameters(fn):
    """densenet_parameters(depth, growth_rate, bottleneck, compression) -> int, counted by hand."""
    from tinydense.models import densenet

    def run():
        for depth, k, bottleneck, compression in _PARAM_CONFIGS:
            name = _config_name(depth, k, bottleneck, compression)
            got = fn(depth, k, bottleneck, compression)
            if isinstance(got, bool) or not isinstance(got, (int, np.integer)):
                raise _Failure(f"{name}: return an integer, got {got!r}: channel counts are whole numbers "
                               f"(floor(theta * m) in the transitions).")
            model = densenet(depth, k, bottleneck=bottleneck, compression=compression)
            want = sum(p.size for p in model.parameters())
            if got == want:
                continue
            bn = sum(p.size for n, p in model.named_parameters() if "norm" in n)
            cls_bias = model.classifier.bias.size
            if got == want - bn:
                raise _Failure(f"{name}: you get {got:,}, which is the right count without the batch-norm "
                               f"parameters: every BN has a weight and a bias per channel.")
            if got == want - cls_bias:
                raise _Failure(f"{name}: you get {got:,}: the classifier's bias (10 numbers) is missing.")
            raise _Failure(f"{name}: you get {got:,} but the network has {want:,} parameters "
                           f"({'more' if got > want else 'fewer'} by {abs(got - want):,}). Count the stem "
                           f"(16 channels, or 2k for DenseNet-BC), every layer, the transitions, norm5 and "
                           f"the classifier.")
        return f"the right count for all {len(_PARAM_CONFIGS)} configurations (DenseNet-40: 1,019,722)."
    _verdict("parameter count", getattr(fn, "__name__", "densenet_parameters"), run)


def check_channel_widths(fn):
    """channel_widths(depth, growth_rate, bottleneck, compression) -> [stem, after block 1, after
    transition 1, after block 2, after transition 2, after block 3]."""
    from tinydense.models import densenet

    def run():
        for depth, k, bottleneck, compression in _PARAM_CONFIGS:
            name = _config_name(depth, k, bottleneck, compression)
            model = densenet(depth, k, bottleneck=bottleneck, compression=compression)
            f = dict(model.features.named_children())
            want = [f["conv0"].out_channels, f["denseblock1"].out_channels, f["transition1"].conv.out_channels,
                    f["denseblock2"].out_channels, f["transition2"].conv.out_channels,
                    f["denseblock3"].out_channels]
            got = list(fn(depth, k, bottleneck, compression))
            if any(not isinstance(v, (int, np.integer)) for v in got):
                raise _Failure(f"{name}: got {got}: channel counts are integers; a transition keeps "
                               f"floor(theta * m) channels.")
            if got == want:
                continue
            if len(got) != 6:
                raise _Failure(f"{name}: return 6 numbers (stem, block 1, transition 1, block 2, transition 2, "
                               f"block 3), got {len(got)}.")
            first = next(i for i in range(6) if got[i] != want[i])
            what = ["the stem (16, or 2k for DenseNet-BC)", "block 1 (input + n*k)", "transition 1 (floor(theta*m))",
                    "block 2", "transition 2", "block 3"][first]
            raise _Failure(f"{name}: got {got}, the first wrong number is {what}: {got[first]} "
                           f"instead of {want[first]}.")
        return f"the right widths for all {len(_PARAM_CONFIGS)} configurations."
    _verdict("channel widths", getattr(fn, "__name__", "channel_widths"), run)


# --- building DenseNet: modules ---------------------------------------------------------------

def _compare_modules(mine, reference, inputs, what, advice):
    """Same state_dict names and shapes; with the reference's weights, the same outputs
    in training and eval mode."""
    mine_state, ref_state = mine.state_dict(), reference.state_dict()
    missing = [k for k in ref_state if k not in mine_state]
    extra = [k for k in mine_state if k not in ref_state]
    if missing or extra:
        hint = ""
        if any(k.endswith(".bias") and k.split(".")[-2].startswith("conv") for k in extra):
            hint = " The convolutions have no bias (bias=False): the batch norm after them has one."
        raise _Failure(f"{what}: the parameter names differ from tinydense's: missing {missing[:4]}, "
                       f"unexpected {extra[:4]}. Name the attributes as torchvision does.{hint}")
    for k in ref_state:
        if tuple(np.shape(mine_state[k])) != tuple(np.shape(ref_state[k])):
            raise _Failure(f"{what}: {k} has shape {tuple(np.shape(mine_state[k]))} but should have "
                           f"{tuple(np.shape(ref_state[k]))}.")
    if list(mine_state) != list(ref_state):
        raise _Failure(f"{what}: the names are right but in a different order; create the attributes in the "
                       f"order they are used (norm1, relu1, conv1, ...).")
    mine.load_state_dict(reference.state_dict())
    for mode in ("train", "eval"):
        getattr(mine, mode)()
        getattr(reference, mode)()
        with td.no_grad():
            a, b = mine(*inputs), reference(*inputs)
        if a.shape != b.shape:
            raise _Failure(f"{what} ({mode} mode): the output has shape {a.shape} but should have {b.shape}.")
        if not np.allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5):
            raise _Failure(f"{what} ({mode} mode): same weights, different outputs (largest difference "
                           f"{np.abs(a.numpy() - b.numpy()).max():.3g}): {advice}")


def _images(r, *shape):
    return td.tensor(r.standard_normal(shape).astype(np.float32))


def _check_module(title, cls, library, cases, seed, advice):
    """cases: [(constructor arguments, input shapes or a list of them, library keyword arguments)]."""
    def run():
        r = _rng(seed)
        for args, shapes, options in cases:
            td.manual_seed(0)
            inputs = [[_images(r, *s) for s in shapes]] if isinstance(shapes, list) else [_images(r, *shapes)]
            where = f" on {len(shapes)} feature map{'s' if len(shapes) > 1 else ''}" if isinstance(shapes, list) else ""
            _compare_modules(cls(*args), library(*args, **options), inputs, f"{library.__name__}{args}{where}", advice)
        return f"same parameter names, shapes and outputs as tinydense's {library.__name__}."
    _verdict(title, getattr(cls, "__name__", library.__name__), run)


def check_dense_layer(cls):
    """DenseLayer(in_channels, growth_rate): BN-ReLU-Conv1x1(4k)-BN-ReLU-Conv3x3(k) on a list of features."""
    from tinydense.models import DenseLayer
    _check_module("dense layer", cls, DenseLayer, [((8, 4), [(2, 8, 5, 5)], {"bottleneck": True}),
                                                   ((10, 3), [(2, 4, 5, 5), (2, 3, 5, 5), (2, 3, 5, 5)],
                                                    {"bottleneck": True})], seed=23,
                  advice="check the order cat - BN - ReLU - Conv1x1 - BN - ReLU - Conv3x3 and the 3x3's padding 1.")


def check_dense_block(cls):
    """DenseBlock(num_layers, in_channels, growth_rate): output = [x, x_1, ..., x_L] along channels."""
    from tinydense.models import DenseBlock
    options = {"bottleneck": True}
    _check_module("dense block", cls, DenseBlock, [((1, 4, 3), (2, 4, 4, 4), options),
                                                   ((3, 6, 4), (2, 6, 4, 4), options)], seed=24,
                  advice="each layer gets the list of ALL feature maps so far; the output is their "
                         "concatenation in order, [x, x_1, ..., x_L].")


def check_transition(cls):
    """Transition(in_channels, out_channels): BN-ReLU-Conv1x1-AvgPool 2x2/2."""
    from tinydense.models.densenet import Transition
    _check_module("transition", cls, Transition, [((8, 4), (2, 8, 6, 6), {}), ((5, 2), (2, 5, 4, 4), {})], seed=25,
                  advice="check the order BN - ReLU - Conv1x1 - pooling, and that the pooling AVERAGES "
                         "2x2 windows with stride 2 (not max pooling).")


# --- training: the optimiser ----------------------------------------------------------

def check_sgd_step(fn):
    """sgd_step(p, g, buffer, lr, momentum, weight_decay) -> (new p, new buffer): one step of
    SGD with Nesterov momentum and L2 weight decay; buffer is None before the first step."""
    from tinydense.optim import SGD

    def run():
        r = _rng(26)
        for lr, momentum, wd in [(0.1, 0.9, 1e-4), (0.05, 0.5, 0.1)]:
            p0 = r.standard_normal((3, 2))
            grads = [r.standard_normal((3, 2)) for _ in range(3)]
            ref = td.nn.Parameter(p0.copy())
            opt = SGD([ref], lr=lr, momentum=momentum, nesterov=True, weight_decay=wd)
            p, buf = p0.copy(), None
            for step, g in enumerate(grads, start=1):
                ref.grad = g.copy()
                opt.step()
                p, buf = fn(p, g.copy(), buf, lr, momentum, wd)
                where = f"[lr {lr}, momentum {momentum}, weight decay {wd}, step {step}]"
                if np.allclose(p, ref.data, rtol=1e-12, atol=1e-14):
                    continue
                if step == 1 and np.allclose(p, p0 - lr * (grads[0] + wd * p0), rtol=1e-12):
                    raise _Failure(f"after the first step p is p - lr * (g + wd * p) {where}: that is SGD "
                                   f"without the Nesterov look-ahead; the step is d = g + momentum * buffer.")
                raise _Failure(f"p differs from tinydense's SGD after step {step} {where} (largest difference "
                               f"{np.abs(p - ref.data).max():.3g}). Order: g += wd * p; buffer = g on the "
                               f"first step, else momentum * buffer + g; d = g + momentum * buffer; p -= lr * d.")
        return "the same parameters as tinydense's SGD (Nesterov, weight decay) over 3 steps, twice."
    _verdict("SGD step", getattr(fn, "__name__", "sgd_step"), run)


def check_paper_schedule(fn):
    """paper_schedule(epochs, base_lr=0.1) -> the learning rate of every epoch: base_lr,
    divided by 10 at 50% and at 75% of the epochs (the paper's recipe)."""
    from tinydense.optim import SGD, MultiStepLR

    def run():
        for epochs in (300, 40, 7, 3):
            opt = SGD([td.nn.Parameter(np.zeros(1))], lr=0.1)
            milestones = sorted({max(1, epochs // 2), max(1, 3 * epochs // 4)})
            sched = MultiStepLR(opt, milestones, gamma=0.1)
            want = [sched.lr_at(e) for e in range(epochs)]
            got = [float(v) for v in fn(epochs)]
            if len(got) != epochs:
                raise _Failure(f"{epochs} epochs: return one learning rate per epoch, got {len(got)}.")
            if np.allclose(got, want, rtol=1e-12):
                continue
            first = next(e for e in range(epochs) if not np.isclose(got[e], want[e], rtol=1e-12))
            raise _Failure(f"{epochs} epochs: epoch {first} (counting from 0) should train at {want[first]:g}, "
                           f"yours says {got[first]:g}. The divisions happen at epochs {milestones} "
                           f"(epochs // 2 and 3 * epochs // 4, at least 1).")
        return "the paper's schedule for 300, 40, 7 and 3 epochs."
    _verdict("learning-rate schedule", getattr(fn, "__name__", "paper_schedule"), run)


# --- feature reuse: reading the reuse matrix -----------------------------------------------

def _long_range_share(usage):
    L = usage.shape[0] - 1
    shares = [usage[:l - 2, l - 1].sum() / usage[:l, l - 1].sum() for l in range(4, L + 1)]
    return float(np.mean(shares))


def check_long_range_share(fn):
    """long_range_share(usage) -> the mean, over layers l >= 4, of the share of layer l's weight
    that reads sources more than two layers back (usage: the (L+1, L+1) reuse matrix)."""
    def run():
        r = _rng(27)
        for L in (4, 6, 9):
            usage = np.full((L + 1, L + 1), np.nan)
            for col in range(L + 1):
                usage[:col + 1, col] = r.random(col + 1) + 0.1
            got, want = fn(usage.copy()), _long_range_share(usage)
            if np.isclose(got, want, rtol=1e-10):
                continue
            if not np.isfinite(got):
                raise _Failure(f"L={L}: got {got}: the matrix holds NaN where a layer cannot see a source; "
                               f"sum only the sources layer l reads (rows 0 .. l-1 of column l-1).")
            raise _Failure(f"L={L}: got {got:.6f}, expected {want:.6f}. Column l-1 is layer l; its sources "
                           f"are rows 0 .. l-1; 'more than two layers back' are rows 0 .. l-3; leave out "
                           f"the last column (the reader) and average over layers 4 .. L.")
        return "the right share for blocks of 4, 6 and 9 layers."
    _verdict("long-range share", getattr(fn, "__name__", "long_range_share"), run)


# --- memory: recomputation -----------------------------------------------------------

def check_recompute(cls):
    """Recompute.forward(*arrays, fn) runs fn without a graph; backward must rebuild the graph
    with fn(..., recompute=True) and return one gradient per input."""
    def run():
        r = _rng(28)
        a0, b0 = r.standard_normal((3, 4)), r.standard_normal((3, 4))
        calls = []

        def fn(a, b, recompute):
            calls.append(recompute)
            return (a * b).tanh() + a

        g, g2 = r.standard_normal((3, 4)), r.standard_normal((3, 4))
        a, b = _tensors([a0, b0])
        out = cls.apply(a, b, fn=fn)
        if out._creator is None or not isinstance(out._creator, cls):
            raise _Failure("forward recorded no Recompute node: call it as Recompute.apply(...).")
        raw = cls.apply(*_tensors([a0, b0]), fn=fn)._creator.backward(g2)    # by hand: what comes back?
        if not isinstance(raw, tuple):
            raise _Failure(f"backward returned a {type(raw).__name__}; return a tuple, one gradient per "
                           f"input (autograd reads a list as ONE gradient).")
        del calls[:]
        out.backward(g)
        if calls != [True]:
            raise _Failure(f"in backward call fn once with recompute=True (calls seen: {calls}); with "
                           f"recompute=False batch norm would update its running statistics twice.")
        rights = []
        for upstream in (g, g2):
            ra, rb = _tensors([a0, b0])
            fn(ra, rb, True).backward(upstream)
            rights.append((ra.grad, rb.grad))
        for i, (name, mine) in enumerate((("a", a.grad), ("b", b.grad))):
            if mine is None:
                raise _Failure(f"no gradient for {name}: return x.grad of every input of the inner pass.")
            if not np.allclose(mine, rights[0][i], rtol=1e-12):
                raise _Failure(f"the gradient of {name} is wrong.\n  hint: "
                               + _hint(name, np.asarray(mine), np.asarray(rights[0][i]), {},
                                       (np.asarray(raw[i]), np.asarray(rights[1][i])))
                               + " (backpropagate g through the rebuilt graph: out.backward(g))")
        return "backward rebuilds the graph once and returns the right gradients."
    _verdict("recompute", getattr(cls, "__name__", "Recompute"), run)


# --- the capstone: a DenseNet on your ops ---------------------------------------------

def compare_training(module, batches, depth=10, growth_rate=4, rtol=1e-8):
    """Train DenseNet-BC (memory_efficient=False, float64) on ``batches`` ([(images, labels)],
    NumPy arrays) twice from the same start, with the library's ops and with ``module``'s
    (through ``td.ops.override``); compare the loss and every parameter gradient step by step.
    Prints MATCH or DIVERGED (the first step and parameter that differ); returns True on MATCH."""
    import contextlib

    from tinydense.models import densenet_bc
    from tinydense.optim import SGD

    def run(ops):
        td.manual_seed(0)
        model = densenet_bc(depth, growth_rate, memory_efficient=False).double()
        opt = SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
        steps = []
        with (td.ops.override(ops) if ops is not None else contextlib.nullcontext({})) as report:
            for images, labels in batches:
                loss = F.cross_entropy(model(td.tensor(np.asarray(images, dtype=np.float64))), labels)
                opt.zero_grad()
                loss.backward()
                steps.append((loss.item(), [(n, np.array(p.grad)) for n, p in model.named_parameters()]))
                opt.step()
        return steps, report

    library, _ = run(None)
    yours, report = run(module)
    mine = [name for name, who in report.items() if who == "yours"]
    who = (f"your {', '.join(mine)}" if mine else
           "none of your ops (all are still stubs, so everything ran on the library's: a MATCH says nothing yet)")
    worst = 0.0
    for step, ((loss_lib, grads_lib), (loss_mine, grads_mine)) in enumerate(zip(library, yours), start=1):
        if not np.isclose(loss_mine, loss_lib, rtol=rtol, atol=0):
            print(f"DIVERGED at step {step}: your loss {loss_mine:.12g}, the library's {loss_lib:.12g} "
                  f"(relative difference {abs(loss_mine - loss_lib) / abs(loss_lib):.1e}); the forward pass "
                  f"differs. Ops in use: {who}.")
            return False
        for (name, a), (_, b) in zip(grads_mine, grads_lib):
            diff = float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))
            worst = max(worst, diff)
            if diff > rtol:
                print(f"DIVERGED at step {step}: the losses agree ({loss_mine:.12g}) but the gradient of "
                      f"{name} differs by {diff:.1e} relative (the first parameter, in the network's order, "
                      f"whose gradient differs: look at the backward pass of the op that produced it). "
                      f"Ops in use: {who}.")
                return False
        worst = max(worst, abs(loss_mine - loss_lib) / abs(loss_lib))
    print(f"MATCH: with {who}, the loss and every parameter gradient equal the library's for all "
          f"{len(library)} steps (largest relative difference {worst:.1e}).")
    return True
