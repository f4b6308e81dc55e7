"""Learning-rate schedules, PyTorch's ``torch.optim.lr_scheduler``.

A scheduler writes each parameter group's ``lr`` (``optimizer.param_groups[i]["lr"]``);
call ``scheduler.step()`` once per epoch, after the epoch (OneCycleLR: once per batch).
Each schedule is a closed formula of the epoch count ``t`` (``last_epoch``) and the
group's starting rate ``base_lr`` (the lr the group had when the scheduler was made):

    StepLR              base_lr * gamma ** (t // step_size)
    MultiStepLR         base_lr * gamma ** (number of milestones <= t)
    ExponentialLR       base_lr * gamma ** t
    CosineAnnealingLR   eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2
    LambdaLR            base_lr * lr_lambda(t)
    OneCycleLR          up from max_lr/div_factor to max_lr, then down to a tiny rate

Making a scheduler sets the rate for t = 0; ``get_last_lr()`` is the list of rates it set last.
"""
from __future__ import annotations

import math
import numbers


class LRScheduler:
    """Base class: subclasses define ``group_lr(i, t)``, group i's rate at epoch t."""

    def __init__(self, optimizer, last_epoch=-1):
        if not hasattr(optimizer, "param_groups"):
            raise TypeError(f"{type(self).__name__} needs an optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def group_lr(self, i, t) -> float:
        raise NotImplementedError

    def lr_at(self, epoch) -> float:
        """tinydense's shorthand: the first group's rate at (0-based) ``epoch``."""
        return self.group_lr(0, epoch)

    @property
    def base_lr(self) -> float:
        """The first group's starting rate (setting it sets every group's)."""
        return self.base_lrs[0]

    @base_lr.setter
    def base_lr(self, value) -> None:
        self.base_lrs = [float(value)] * len(self.base_lrs)

    def step(self) -> None:
        """Count one more epoch and set every group's rate for it."""
        self.last_epoch += 1
        self._apply()

    def _apply(self) -> None:
        self._last_lr = [self.group_lr(i, self.last_epoch) for i in range(len(self.optimizer.param_groups))]
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr

    def get_last_lr(self) -> list:
        return list(self._last_lr)

    def state_dict(self) -> dict:
        """Every attribute but the optimizer and functions (as PyTorch; LambdaLR's lambdas are not saved)."""
        return {k: v for k, v in vars(self).items()
                if k != "optimizer" and not callable(v) and not (isinstance(v, list) and v and callable(v[0]))}

    def load_state_dict(self, state) -> None:
        """Restore :meth:`state_dict`'s output and set the optimizer's rates from it."""
        state = dict(state)
        if "base_lr" in state:                 # tinydense's earlier MultiStepLR checkpoints
            state["base_lrs"] = [float(state.pop("base_lr"))] * len(self.base_lrs)
        unknown = sorted(set(state) - set(self.state_dict()))
        if unknown:
            raise ValueError(f"{type(self).__name__}.load_state_dict: unknown entries {unknown}")
        self.__dict__.update(state)
        self._apply()


def _check_positive_int(value, what, name):
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name}: {what} must be a positive integer, got {value!r}")


def _check_gamma(gamma, name):
    if not isinstance(gamma, numbers.Real) or not gamma > 0:
        raise ValueError(f"{name}: gamma must be positive, got {gamma!r}")
    return float(gamma)


class StepLR(LRScheduler):
    """Multiply the rate by ``gamma`` every ``step_size`` epochs."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        _check_positive_int(step_size, "step_size", "StepLR")
        self.step_size, self.gamma = step_size, _check_gamma(gamma, "StepLR")
        super().__init__(optimizer, last_epoch)

    def group_lr(self, i, t):
        return self.base_lrs[i] * self.gamma ** (t // self.step_size)


class MultiStepLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` at each milestone epoch, counting epochs
    from 0: milestones [150, 225] train epochs 0-149 at base_lr, 150-224 at base_lr/10
    and the rest at base_lr/100 (DenseNet's schedule: 50% and 75% of 300 epochs)."""

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        milestones = list(milestones)
        if any(not isinstance(m, int) or isinstance(m, bool) or m <= 0 for m in milestones) \
                or milestones != sorted(milestones):
            raise ValueError(f"milestones must be increasing positive integers, got {milestones}")
        self.milestones, self.gamma = milestones, _check_gamma(gamma, "MultiStepLR")
        super().__init__(optimizer, last_epoch)

    def group_lr(self, i, t):
        return self.base_lrs[i] * self.gamma ** sum(m <= t for m in self.milestones)


class ExponentialLR(LRScheduler):
    """Multiply the rate by ``gamma`` every epoch."""

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = _check_gamma(gamma, "ExponentialLR")
        super().__init__(optimizer, last_epoch)

    def group_lr(self, i, t):
        return self.base_lrs[i] * self.gamma ** t


class CosineAnnealingLR(LRScheduler):
    """Half a cosine from base_lr (t = 0) down to ``eta_min`` (t = T_max), without restarts."""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        _check_positive_int(T_max, "T_max", "CosineAnnealingLR")
        self.T_max, self.eta_min = T_max, float(eta_min)
        super().__init__(optimizer, last_epoch)

    def group_lr(self, i, t):
        return self.eta_min + (self.base_lrs[i] - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2


class LambdaLR(LRScheduler):
    """base_lr times ``lr_lambda(t)`` (one function, or one per group)."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        n = len(optimizer.param_groups)
        lambdas = list(lr_lambda) if isinstance(lr_lambda, (list, tuple)) else [lr_lambda] * n
        if len(lambdas) != n or not all(callable(f) for f in lambdas):
            raise ValueError(f"LambdaLR: expected one function or {n} (one per group), got {lr_lambda!r}")
        self.lr_lambdas = lambdas
        super().__init__(optimizer, last_epoch)

    def group_lr(self, i, t):
        return self.base_lrs[i] * self.lr_lambdas[i](t)


class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith & Topin, 2018), stepped once per batch for ``total_steps``
    (or ``epochs * steps_per_epoch``) steps. For the first ``pct_start`` of them the rate
    rises from max_lr/div_factor to max_lr, then it falls to max_lr/(div_factor*final_div_factor),
    along a half cosine (``anneal_strategy="cos"``) or a line (``"linear"``). With
    ``cycle_momentum`` the momentum (SGD) or beta1 (Adam) moves the other way, between
    max_momentum and base_momentum."""

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None, pct_start=0.3,
                 anneal_strategy="cos", cycle_momentum=True, base_momentum=0.85, max_momentum=0.95,
                 div_factor=25.0, final_div_factor=1e4, three_phase=False, last_epoch=-1):
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError("OneCycleLR: give total_steps, or epochs and steps_per_epoch")
            _check_positive_int(epochs, "epochs", "OneCycleLR")
            _check_positive_int(steps_per_epoch, "steps_per_epoch", "OneCycleLR")
            total_steps = epochs * steps_per_epoch
        _check_positive_int(total_steps, "total_steps", "OneCycleLR")
        if not 0 <= pct_start <= 1:
            raise ValueError(f"OneCycleLR: pct_start must be in [0, 1], got {pct_start!r}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"OneCycleLR: anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        groups = optimizer.param_groups
        max_lrs = list(max_lr) if isinstance(max_lr, (list, tuple)) else [max_lr] * len(groups)
        if len(max_lrs) != len(groups):
            raise ValueError(f"OneCycleLR: {len(max_lrs)} values of max_lr for {len(groups)} parameter groups")
        self.total_steps, self.anneal_strategy, self.cycle_momentum = total_steps, anneal_strategy, cycle_momentum
        # each phase: (its last step, the level the rate starts at, ends at, the momentum's start, end)
        up = float(pct_start * total_steps) - 1
        if three_phase:
            self.phases = [(up, "initial", "max", "max_m", "base_m"),
                           (2 * up, "max", "initial", "base_m", "max_m"),
                           (total_steps - 1, "initial", "min", "max_m", "max_m")]
        else:
            self.phases = [(up, "initial", "max", "max_m", "base_m"),
                           (total_steps - 1, "max", "min", "base_m", "max_m")]
        self.levels = [{"max": m, "initial": m / div_factor, "min": m / div_factor / final_div_factor,
                        "max_m": max_momentum, "base_m": base_momentum} for m in max_lrs]
        if cycle_momentum and not all("momentum" in g or "betas" in g for g in groups):
            raise ValueError("OneCycleLR: cycle_momentum needs an optimizer with momentum or betas; "
                             "pass cycle_momentum=False")
        for group, level in zip(groups, self.levels):
            group["initial_lr"] = level["initial"]
        super().__init__(optimizer, last_epoch)

    def _anneal(self, start, end, pct):
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)
        return start + (end - start) * pct

    def _where(self, t):
        if t >= self.total_steps:
            raise ValueError(f"OneCycleLR: tried to step {t + 1} times; the schedule has {self.total_steps} steps")
        start = 0
        for k, phase in enumerate(self.phases):
            if t <= phase[0] or k == len(self.phases) - 1:
                return phase, (t - start) / (phase[0] - start) if phase[0] > start else 1.0
            start = phase[0]

    def group_lr(self, i, t):
        (_, lo, hi, _, _), pct = self._where(t)
        return self._anneal(self.levels[i][lo], self.levels[i][hi], pct)

    def _apply(self):
        super()._apply()
        if self.cycle_momentum:
            (_, _, _, m0, m1), pct = self._where(self.last_epoch)
            for group, level in zip(self.optimizer.param_groups, self.levels):
                m = self._anneal(level[m0], level[m1], pct)
                if "betas" in group:
                    group["betas"] = (m, group["betas"][1])
                else:
                    group["momentum"] = m
