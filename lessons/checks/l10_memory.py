"""Checks of lesson 10, memory: recomputation."""
from __future__ import annotations

import numpy as np


from .common import Failure, guess_mistake, rng, tensors, verdict


def check_recompute(cls, shape=(3, 4), seed=28):
    """Recompute.forward(*arrays, fn) runs fn without a graph; backward must rebuild the graph
    with fn(..., recompute=True) and return one gradient per input (inputs of ``shape``)."""
    def run():
        r = rng(seed)
        a0, b0 = r.standard_normal(shape), r.standard_normal(shape)
        calls = []

        def fn(a, b, recompute):
            calls.append(recompute)
            return (a * b).tanh() + a

        g, g2 = r.standard_normal(shape), r.standard_normal(shape)
        a, b = tensors([a0, b0])
        out = cls.apply(a, b, fn=fn)
        if out._creator is None or not isinstance(out._creator, cls):
            raise Failure("forward recorded no Recompute node: call it as Recompute.apply(...).")
        raw = cls.apply(*tensors([a0, b0]), fn=fn)._creator.backward(g2)    # by hand: what comes back?
        if not isinstance(raw, tuple):
            raise Failure(f"backward returned a {type(raw).__name__}; return a tuple, one gradient per "
                          f"input (autograd reads a list as ONE gradient).")
        del calls[:]
        out.backward(g)
        if calls != [True]:
            raise Failure(f"in backward call fn once with recompute=True (calls seen: {calls}); with "
                          f"recompute=False batch norm would update its running statistics twice.")
        rights = []
        for upstream in (g, g2):
            ra, rb = tensors([a0, b0])
            fn(ra, rb, True).backward(upstream)
            rights.append((ra.grad, rb.grad))
        for i, (name, mine) in enumerate((("a", a.grad), ("b", b.grad))):
            if mine is None:
                raise Failure(f"no gradient for {name}: return x.grad of every input of the inner pass.")
            if not np.allclose(mine, rights[0][i], rtol=1e-12):
                raise Failure(f"the gradient of {name} is wrong.\n  hint: "
                              + guess_mistake(name, np.asarray(mine), np.asarray(rights[0][i]), {},
                                       (np.asarray(raw[i]), np.asarray(rights[1][i])))
                               + " (backpropagate g through the rebuilt graph: out.backward(g))")
        return "backward rebuilds the graph once and returns the right gradients."
    return verdict("recompute", getattr(cls, "__name__", "Recompute"), run)


# the lesson's exercises: the name its stub cell defines -> its check (the grader reads this)
EXERCISES = {"Recompute": check_recompute}
