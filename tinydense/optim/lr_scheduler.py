"""Learning-rate schedules, stepped once per epoch (after the epoch)."""
from __future__ import annotations


class MultiStepLR:
    """Multiply the learning rate by ``gamma`` at each milestone epoch:

        lr(epoch) = base_lr * gamma ** (number of milestones <= epoch)

    with epochs counted from 0, so milestones [150, 225] train epochs 0-149
    at base_lr, 150-224 at base_lr/10 and the rest at base_lr/100 (DenseNet's
    schedule: 50% and 75% of 300 epochs)."""

    def __init__(self, optimizer, milestones, gamma=0.1):
        milestones = list(milestones)
        if any(not isinstance(m, int) or isinstance(m, bool) or m <= 0 for m in milestones) \
                or milestones != sorted(milestones):
            raise ValueError(f"milestones must be increasing positive integers, got {milestones}")
        if not gamma > 0:
            raise ValueError(f"gamma must be positive, got {gamma}")
        self.optimizer, self.milestones, self.gamma = optimizer, milestones, float(gamma)
        self.base_lr = optimizer.lr
        self.last_epoch = 0            # epochs completed so far

    def lr_at(self, epoch) -> float:
        """The learning rate for (0-based) ``epoch``."""
        return self.base_lr * self.gamma ** sum(m <= epoch for m in self.milestones)

    def step(self) -> None:
        """Call after each epoch: sets the optimizer's rate for the next one."""
        self.last_epoch += 1
        self.optimizer.lr = self.lr_at(self.last_epoch)

    def state_dict(self) -> dict:
        return {"milestones": list(self.milestones), "gamma": self.gamma,
                "base_lr": self.base_lr, "last_epoch": self.last_epoch}

    def load_state_dict(self, state) -> None:
        self.milestones = [int(m) for m in state["milestones"]]
        self.gamma, self.base_lr = float(state["gamma"]), float(state["base_lr"])
        self.last_epoch = int(state["last_epoch"])
        self.optimizer.lr = self.lr_at(self.last_epoch)
