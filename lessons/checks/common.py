"""What every lesson's checks share: the verdict, and the comparison of a backward pass.

Each ``check_*`` function (one module per lesson: ``l01_autograd.py``, ...) takes
what the student wrote (a ``Function`` subclass, a function or a module class),
runs it on small inputs and prints one verdict:

    PASS sigmoid: ...
    FAIL sigmoid: ...   (what is wrong, where, and a hint in words)

and never raises, so a notebook with an unfinished exercise still runs to the
end. It also returns the verdict, ``(passed, title, message)``, which is what the
grader reads (never the printed line). ``passed(name)`` says whether the last
check of ``name`` (the class or function name) passed; the lessons use it to run
their later cells on the student's code only when it works.

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

RESULTS: dict = {}       # name -> True (passed) / False, from the last check of that name


class Verdict(tuple):
    """``(passed, title, message)``. The check has already printed it, so a notebook shows it
    once: as the last line of a cell it displays nothing more (IPython asks ``_ipython_display_``)."""

    def _ipython_display_(self):
        pass


GRAD_RTOL = 1e-9         # how close a gradient must be to tinydense's, relative to its largest value


def passed(name: str) -> bool:
    """Whether the last check of the exercise ``name`` passed."""
    return RESULTS.get(name, False)


class Failure(Exception):
    """One failed step of a check; its message is the verdict."""


def rng(seed):
    return np.random.default_rng(seed)


def tensors(arrays, dtype=np.float64):
    return [td.Tensor(np.array(a, dtype=dtype), requires_grad=True) for a in arrays]


def _describe(arrays, names):
    return ", ".join(f"{n} {tuple(np.shape(a))}" for n, a in zip(names, arrays))


def verdict(title, name, run):
    """Run ``run()`` (raises Failure); print PASS or FAIL, record the result and return it as
    (passed, title, message). Never raises."""
    try:
        ok, message = True, run()
    except NotImplementedError:
        ok, message = False, (f"{name} is not implemented yet (it raised NotImplementedError). Write it in "
                              f"the cell above (or in your my_ops.py), run that cell, then run this check again.")
    except Failure as failure:
        ok, message = False, str(failure)
    except Exception as e:   # a bug we did not foresee: still a verdict, not a traceback
        ok, message = False, f"the check could not run your code: {type(e).__name__}: {e}"
    RESULTS[name] = ok
    print(f"{'PASS' if ok else 'FAIL'} {title}: {message}")
    return Verdict((ok, title, message))


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


def guess_mistake(name, mine, right, others, from_other_g):
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
    if mine.dtype != right.dtype:
        return (f"your gradient of {name} is {mine.dtype}, but {name} is {right.dtype}: the values are rounded "
                f"to {mine.dtype}'s precision; keep the input's dtype")
    if np.allclose(mine, scale * right, rtol=1e-7, atol=1e-12):
        factor = {2.0: " (a factor 2 too many)", 0.5: " (a factor 2 missing)"}.get(round(scale, 6), "")
        return (f"your gradient of {name} is {scale:.6g} times the right one everywhere{factor or ''}"
                + ("" if factor else " (a missing or extra factor?)"))
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


def _raw_backward(cls, case, g, dtype=np.float64):
    """Run forward and then backward by hand (no autograd) to see what backward returns; complain
    if either changed an input or backward changed g."""
    inputs = tensors(case.arrays, dtype)
    out = case.call(cls, *inputs)
    fn = out._creator
    if fn is None:
        raise Failure(f"forward recorded no graph {_where(case)}: call the op as Cls.apply(...)")
    g = np.array(g, dtype=dtype)
    given = g.copy()
    try:
        raw = fn.backward(g)
    except (NotImplementedError, Failure):
        raise
    except Exception as e:
        raise Failure(f"backward raised {type(e).__name__}: {e} {_where(case)}") from None
    if not np.array_equal(g, given):
        raise Failure(f"your backward changed g, the upstream gradient, in place {_where(case)}: g belongs to "
                      f"the op after yours, and the same g can reach two ops (relu(x) + x): write your result "
                      f"into a new array.")
    for name, t, a in zip(case.names, inputs, case.arrays):
        if not np.array_equal(np.asarray(t.data), np.asarray(a, dtype=dtype)):
            raise Failure(f"your op changed its input {name} in place {_where(case)}: leave the inputs as "
                          f"they are (other ops read them too).")
    return raw, len(fn.inputs)


def check_dtype(cls, case, seed):
    """float32 in, float32 gradients out: what tinydense's own op gives for the same inputs."""
    arrays = tensors(case.arrays, np.float32)
    expected = case.reference(*arrays)
    g = rng(seed).standard_normal(expected.shape).astype(np.float32)
    expected.backward(g)
    try:
        raw, _ = _raw_backward(cls, case, g, np.float32)
    except Failure as failure:
        raise Failure(f"with float32 inputs: {failure}") from None
    grads = raw if isinstance(raw, tuple) else (raw,)
    slots = case.slots or case.names
    for name, ref in zip(case.names, arrays):
        mine = dict(zip(slots, grads)).get(name)
        if np.asarray(ref.grad).dtype != np.float32:       # mixed with float64 statistics: either is fine
            continue
        if mine is not None and np.asarray(mine).dtype != np.float32:
            raise Failure(f"with float32 inputs your gradient of {name} is {np.asarray(mine).dtype} "
                          f"{_where(case)}: a gradient keeps its input's dtype (a float64 gradient would turn "
                          f"float32 training into float64); create new arrays with the input's dtype "
                          f"(dtype=..., or zeros_like).")


def _check_structure(raw, n_inputs, case):
    slots = case.slots or case.names
    missing = [s for s in slots if s not in case.names]
    none_hint = f" (None for {', '.join(missing)})" if missing else ""
    if isinstance(raw, list):
        raise Failure(f"backward returned a list {_where(case)}; return a tuple, one gradient per input "
                      f"of forward ({', '.join(slots)}){none_hint}: autograd reads a list as ONE gradient.")
    if n_inputs > 1 and not isinstance(raw, tuple):
        raise Failure(f"backward returned one array but forward has {n_inputs} inputs ({', '.join(slots)}) "
                      f"{_where(case)}: return a tuple with one gradient per input{none_hint}.")
    grads = raw if isinstance(raw, tuple) else (raw,)
    if len(grads) < n_inputs:
        raise Failure(f"backward returned {len(grads)} values but forward has {n_inputs} inputs "
                      f"({', '.join(slots)}) {_where(case)}: no gradient for {', '.join(slots[len(grads):])}; "
                      f"return one per input, in order{none_hint}.")
    by_name = dict(zip(slots, grads))
    shapes = {n: np.shape(a) for n, a in zip(case.names, case.arrays)}
    for name, x in zip(case.names, case.arrays):
        gx = by_name.get(name)
        if gx is None:
            raise Failure(f"backward returned no gradient for {name} {_where(case)}: return one gradient "
                          f"per input of forward, in the same order ({', '.join(slots)}).")
        if tuple(np.shape(gx)) != np.shape(x):
            raise Failure(_shape_complaint(name, np.shape(gx), np.shape(x), shapes) + f" {_where(case)}")
    return by_name


def check_case(cls, case, seed, advice=""):
    where = _where(case)
    mine_in, ref_in = tensors(case.arrays), tensors(case.arrays)
    try:
        out = case.call(cls, *mine_in)
    except NotImplementedError:
        raise
    except Exception as e:
        raise Failure(f"forward raised {type(e).__name__}: {e} {where}. The forward pass is given: "
                      f"run its cell again unchanged.") from None
    expected = case.reference(*ref_in)
    if out.shape != expected.shape or not np.allclose(out.numpy(), expected.numpy(), rtol=1e-10, atol=1e-12):
        raise Failure(f"forward gives a different result from tinydense's own op {where}; the forward "
                      f"pass is given, so restore it and change only backward.")
    if case.extra is not None:
        complaint = case.extra()
        if complaint:
            raise Failure(f"{complaint} {where}")

    r = rng(seed)
    g, g2 = r.standard_normal(out.shape), r.standard_normal(out.shape)
    raw, n_inputs = _raw_backward(cls, case, g2)
    raw_by_name = _check_structure(raw, n_inputs, case)
    try:
        out.backward(g)
    except Exception as e:
        raise Failure(f"backward raised {type(e).__name__}: {e} {where}") from None
    expected.backward(g)
    other_in = tensors(case.arrays)
    case.reference(*other_in).backward(g2)

    rights = {n: np.asarray(t.grad) for n, t in zip(case.names, ref_in)}
    for name, x, ref, other in zip(case.names, mine_in, ref_in, other_in):
        mine, right = np.asarray(x.grad), np.asarray(ref.grad)
        err = np.abs(mine - right)
        scale = float(np.abs(right).max()) if right.size else 0.0
        if err.size and err.max() > GRAD_RTOL * scale + 1e-12:
            idx = np.unravel_index(int(np.argmax(err)), err.shape)
            rel = float(err[idx] / max(abs(mine[idx]), abs(right[idx]), 1e-300))
            hint = guess_mistake(name, mine, right, rights, (np.asarray(raw_by_name[name]), np.asarray(other.grad)))
            raise Failure(f"the gradient of {name} is wrong {where}: at index {tuple(int(i) for i in idx)} "
                          f"yours is {mine[idx]:.10g}, the right value is {right[idx]:.10g} (relative error "
                          f"{rel:.2e}; it must be below {GRAD_RTOL:g}).\n  hint: {hint}"
                          + (f"\n  where to look: {advice}" if advice else ""))
    if not case.options.get("gradcheck", True):      # e.g. tied maxima: no derivative there
        return
    try:
        td.gradcheck(lambda *ts: case.call(cls, *ts), tensors(case.arrays))
    except td.GradcheckError as e:
        detail = re.sub(r"input (\d+) \(shape", lambda m: f"gradient of {case.names[int(m.group(1))]} (shape",
                        str(e))
        raise Failure(f"backward agrees with tinydense but not with central differences {where}:\n  "
                      f"{detail}") from None


def check_function(title, cls, cases, advice=""):
    def run():
        for i, case in enumerate(cases):
            check_case(cls, case, seed=100 + i, advice=advice)
        for i, case in enumerate(cases):          # once the values are right: float32 stays float32
            check_dtype(cls, case, seed=100 + i)
        return (f"forward and backward agree with tinydense's (to {GRAD_RTOL:g}) and with central "
                f"differences in all {len(cases)} cases.")
    return verdict(title, getattr(cls, "__name__", str(cls)), run)


def away_from_zero(r, *shape):
    x = r.standard_normal(shape)
    return np.sign(x) * (0.1 + np.abs(x))      # no ReLU kink within gradcheck's step
