"""Checks of lesson 8, training: log-softmax, cross-entropy, one SGD step, the paper's schedule."""
from __future__ import annotations

import numpy as np

import tinydense as td
import tinydense.functional as F

from .common import Case, Failure, check_function, rng, verdict


def check_log_softmax(cls):
    """LogSoftmax.forward(z, axis=-1); backward returns dz."""
    r = rng(18)
    cases = [Case(f"shape {s}, axis {a}", lambda c, z, a=a: c.apply(z, axis=a), lambda z, a=a: F.log_softmax(z, a),
                  [3 * r.standard_normal(s)], ["z"]) for s, a in [((3, 5), -1), ((4, 3), 0), ((2, 3, 4), 1)]]
    return check_function("log-softmax", cls, cases,
                          advice='lesson 8, section 3 ("Model, loss and optimiser"): every output depends on every input of its row through the normaliser.')


def check_cross_entropy(cls, sizes=((4, 5), (1, 3), (6, 10)), seed=19):
    """CrossEntropy.forward(logits, labels) -> mean loss; backward returns (dlogits, None).
    sizes: [(images, classes)]."""
    r = rng(seed)
    cases = []
    for n, k in sizes:
        labels = r.integers(0, k, n)
        cases.append(Case(f"{n} images, {k} classes", lambda c, z, y=labels: c.apply(z, y),
                          lambda z, y=labels: F.cross_entropy(z, y), [3 * r.standard_normal((n, k))], ["logits"],
                          slots=["logits", "labels"]))
    return check_function("cross-entropy", cls, cases,
                          advice='lesson 8, section 3 ("Model, loss and optimiser"): the loss is a mean over the batch, and g is a scalar.')


def check_sgd_step(fn, settings=((0.1, 0.9, 1e-4), (0.05, 0.5, 0.1)), shape=(3, 2), steps=3, seed=26):
    """sgd_step(p, g, buffer, lr, momentum, weight_decay) -> (new p, new buffer): one step of
    SGD with Nesterov momentum and L2 weight decay; buffer is None before the first step.
    settings: [(lr, momentum, weight decay)], each for ``steps`` steps on a parameter of ``shape``."""
    from tinydense.optim import SGD

    def run():
        r = rng(seed)
        for lr, momentum, wd in settings:
            p0 = r.standard_normal(shape)
            grads = [r.standard_normal(shape) for _ in range(steps)]
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
                    raise Failure(f"after the first step p is p - lr * (g + wd * p) {where}: that is SGD "
                                  f"without the Nesterov look-ahead; the step is d = g + momentum * buffer.")
                raise Failure(f"p differs from tinydense's SGD after step {step} {where} (largest difference "
                              f"{np.abs(p - ref.data).max():.3g}). Check the order of the four updates (weight "
                              f"decay into g, the momentum buffer, the Nesterov look-ahead, the step) against "
                              f"lesson 8, section 3 (\"Model, loss and optimiser\") and tinydense/optim/sgd.py.")
        return (f"the same parameters as tinydense's SGD (Nesterov, weight decay) over {steps} steps, "
                f"{len(settings)} times.")
    return verdict("SGD step", getattr(fn, "__name__", "sgd_step"), run)


def check_paper_schedule(fn, runs=(300, 40, 7, 3)):
    """paper_schedule(epochs, base_lr=0.1) -> the learning rate of every epoch: base_lr,
    divided by 10 at 50% and at 75% of the epochs (the paper's recipe); runs: the epochs checked."""
    from tinydense.optim import SGD, MultiStepLR

    def run():
        for epochs in runs:
            opt = SGD([td.nn.Parameter(np.zeros(1))], lr=0.1)
            milestones = sorted({max(1, epochs // 2), max(1, 3 * epochs // 4)})
            sched = MultiStepLR(opt, milestones, gamma=0.1)
            want = [sched.lr_at(e) for e in range(epochs)]
            got = [float(v) for v in fn(epochs)]
            if len(got) != epochs:
                raise Failure(f"{epochs} epochs: return one learning rate per epoch, got {len(got)}.")
            if np.allclose(got, want, rtol=1e-12):
                continue
            first = next(e for e in range(epochs) if not np.isclose(got[e], want[e], rtol=1e-12))
            raise Failure(f"{epochs} epochs: epoch {first} (counting from 0) should train at {want[first]:g}, "
                          f"yours says {got[first]:g}: the rate is divided by 10 at 50% and at 75% of the "
                          f"epochs, each rounded down (never before epoch 1); here at epochs {milestones}.")
        return f"the paper's schedule for {', '.join(map(str, runs[:-1]))} and {runs[-1]} epochs."
    return verdict("learning-rate schedule", getattr(fn, "__name__", "paper_schedule"), run)


# the lesson's exercises: the name its stub cell defines -> its check (the grader reads this)
EXERCISES = {"LogSoftmax": check_log_softmax, "CrossEntropy": check_cross_entropy, "sgd_step": check_sgd_step, "paper_schedule": check_paper_schedule}
