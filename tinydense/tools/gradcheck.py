"""Check a backward pass against finite differences, in float64.

For a function f and a random upstream gradient g (same shape as f's
output) we compare, for every input x,

    analytic:  the gradient backprop computes for  phi(x) = <f(x), g>
    numeric:   (phi(x + eps e) - phi(x - eps e)) / (2 eps)     (central difference)

with e a unit vector: every coordinate in ``mode="full"``, a few random
directions in ``mode="direction"`` (large inputs, whole models).

Why a random g and never sum(f)? The check only sees the gradient of
phi. For batch norm, sum(BN(x)) = sum(bias) * M does not depend on x at
all, so its gradient is zero, and a backward that forgets a whole term
still "passes". A random g makes every part of the Jacobian count.

A pass means |analytic - numeric| <= atol + rtol * |numeric| everywhere.
Keep inputs away from kinks (ReLU at 0, ties in max pooling), where the
two one-sided derivatives differ and no difference quotient is right.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..autograd import Tensor, no_grad


class GradcheckError(AssertionError):
    """Raised when the analytic and numeric gradients disagree."""


def _as_checked_inputs(inputs):
    """float64 Tensors stay as they are (so a model's parameters can be
    checked in place); float arrays and other float Tensors become float64
    copies; anything else (labels, None, ints) is passed through."""
    prepared = []
    for x in inputs:
        if isinstance(x, Tensor) and x.dtype.kind == "f":
            if x.dtype != np.float64:
                x = Tensor(x.data.astype(np.float64), requires_grad=x.requires_grad)
        elif hasattr(x, "dtype") and x.dtype.kind == "f":
            x = Tensor(x.astype(np.float64), requires_grad=True)
        prepared.append(x)
    return prepared


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, mode="full",
              n_directions=4, seed=0, raise_exception=True, verbose=False):
    """Compare backprop gradients of ``fn(*inputs)`` with central differences.

    fn:      takes the inputs, returns a Tensor.
    inputs:  Tensors (those with requires_grad=True are checked, in place
             if float64) and/or float arrays (converted to float64 and checked).
    mode:    "full" checks every element; "direction" checks ``n_directions``
             random unit directions per input (two evaluations each).
    Returns True when every gradient matches. Otherwise raises GradcheckError
    naming the input, the worst index, both values and the relative error
    (or returns False with ``raise_exception=False``). ``verbose`` prints a
    line per input.

    Random ops inside fn (dropout) draw the same numbers in every
    evaluation: the generator is reset to its starting state before each.
    """
    if mode not in ("full", "direction"):
        raise ValueError(f"mode must be 'full' or 'direction', got {mode!r}")
    inputs = _as_checked_inputs(list(inputs))
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires a gradient; pass float arrays or "
                         "Tensors with requires_grad=True")
    rng_state = backend.get_rng_state()

    def evaluate():
        backend.set_rng_state(rng_state)
        return fn(*inputs)

    # analytic gradients of phi = <f(x), g>
    for i in checked:
        inputs[i].grad = None
    out = evaluate()
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    if out.dtype != np.float64:
        raise TypeError(f"gradcheck: fn returned {out.dtype}; everything must run in float64 "
                        f"(convert a model with model.double())")
    xp = backend.get_array_module(out.data)
    g = xp.asarray(np.random.default_rng(seed).standard_normal(out.shape))
    out.backward(g)
    analytic = {i: (inputs[i].grad if inputs[i].grad is not None else xp.zeros_like(inputs[i].data))
                for i in checked}

    def phi():
        with no_grad():
            return float((evaluate().data * g).sum())

    directions = np.random.default_rng(seed + 1)
    failures, lines = [], []
    for i in checked:
        x = inputs[i].data
        a_all = backend.to_numpy(analytic[i])
        if a_all.shape != x.shape:
            raise GradcheckError(f"gradcheck: input {i} has shape {tuple(x.shape)} but its gradient "
                                 f"has shape {a_all.shape}")
        original = x.copy()
        try:
            if mode == "full":
                keys = list(np.ndindex(*x.shape))
                numeric, analytic_vals = np.empty(len(keys)), a_all.reshape(-1)
                for k, idx in enumerate(keys):
                    old = float(x[idx])
                    x[idx] = old + eps
                    plus = phi()
                    x[idx] = old - eps
                    minus = phi()
                    x[idx] = old
                    numeric[k] = (plus - minus) / (2 * eps)
            else:
                keys = [f"direction {d}" for d in range(n_directions)]
                numeric, analytic_vals = np.empty(n_directions), np.empty(n_directions)
                for d in range(n_directions):
                    v = directions.standard_normal(x.shape)
                    v /= np.linalg.norm(v) or 1.0
                    v_dev = xp.asarray(v)
                    x[...] = original + eps * v_dev
                    plus = phi()
                    x[...] = original - eps * v_dev
                    minus = phi()
                    x[...] = original
                    numeric[d] = (plus - minus) / (2 * eps)
                    analytic_vals[d] = float((a_all * v).sum())
        finally:   # the caller's values come back, even if fn raised mid-way
            x[...] = original
        err = np.abs(analytic_vals - numeric)
        rel = err / np.maximum(np.maximum(np.abs(analytic_vals), np.abs(numeric)), 1e-300)
        bad = err > atol + rtol * np.abs(numeric)
        worst = int(np.argmax(np.where(bad, err, rel * (err > 0)))) if len(err) else 0
        where = keys[worst] if mode == "direction" else f"index {keys[worst]}"
        line = (f"input {i} (shape {tuple(x.shape)}): {where}: numeric {numeric[worst]:.10g}, "
                f"analytic {analytic_vals[worst]:.10g}, relative error {rel[worst]:.3e}")
        if bad.any():
            failures.append(f"{line} -- {int(bad.sum())} of {len(err)} "
                            f"{'directions' if mode == 'direction' else 'elements'} out of tolerance")
            lines.append(f"FAIL {line}")
        else:
            lines.append(f"ok   input {i} (shape {tuple(x.shape)}): max relative error {rel.max() if len(rel) else 0:.3e}")
    if verbose:
        print("\n".join(lines))
    if failures:
        message = (f"gradcheck failed (eps={eps}, atol={atol}, rtol={rtol}, mode={mode!r}):\n  "
                   + "\n  ".join(failures))
        if raise_exception:
            raise GradcheckError(message)
        return False
    return True
