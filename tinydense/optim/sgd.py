"""Stochastic gradient descent with momentum, Nesterov momentum and weight decay.

PyTorch's update rule, per parameter p with gradient g (no dampening):

    g <- g + weight_decay * p                     (L2 weight decay, added to the gradient)
    b <- g                       on the first step
    b <- momentum * b + g        afterwards       (the momentum buffer)
    d <- g + momentum * b        with Nesterov
    d <- b                       without
    p <- p - lr * d

DenseNet's recipe: lr 0.1, Nesterov momentum 0.9, weight decay 1e-4.
Each parameter group (optimizer.py) may have its own lr, momentum, weight_decay, nesterov.
"""
from __future__ import annotations

from .optimizer import Optimizer


class SGD(Optimizer):
    """Updates ``params`` (Tensors, e.g. ``model.parameters()``, or a list of group dicts)
    in place from their ``.grad``."""

    def __init__(self, params, lr=None, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay))

    def check_options(self, group):
        super().check_options(group)
        if group["nesterov"] and group["momentum"] <= 0:
            raise ValueError(f"SGD: Nesterov momentum needs momentum > 0, got momentum={group['momentum']}")

    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        for group in self.param_groups:
            lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
            for p in self.trainable(group):
                g = p.grad
                if weight_decay:
                    g = g + weight_decay * p.data
                if momentum:
                    state = self.state.setdefault(p, {})
                    b = state.get("momentum_buffer")
                    if b is None:
                        b = state["momentum_buffer"] = g.copy()
                    else:
                        b *= momentum
                        b += g
                    g = g + momentum * b if group["nesterov"] else b
                p.data -= lr * g

    @property
    def buffers(self) -> list:
        """The momentum buffer of each parameter (None before its first step)."""
        return [self.state.get(p, {}).get("momentum_buffer") for p in self.params]

    @property
    def momentum(self):
        return self.param_groups[0]["momentum"]

    @property
    def nesterov(self):
        return self.param_groups[0]["nesterov"]

    @property
    def weight_decay(self):
        return self.param_groups[0]["weight_decay"]

    def load_state_dict(self, state) -> None:
        """Restore :meth:`state_dict`'s output; also reads the flat format of tinydense's
        earlier checkpoints (``{"lr": ..., "buffer.3": array}``)."""
        if "param_groups" not in state:
            options = {k: state[k] for k in ("lr", "momentum", "nesterov", "weight_decay")}
            groups = [{**g, **options, "params": list(range(sum(len(g["params"]) for g in self.param_groups)))}
                      for g in self.param_groups[:1]]
            if len(self.param_groups) != 1:
                raise ValueError("an old-format SGD state holds one parameter group; this optimizer has "
                                 f"{len(self.param_groups)}")
            buffers = {k.split(".", 1)[1]: {"momentum_buffer": v} for k, v in state.items() if k.startswith("buffer.")}
            state = {"state": buffers, "param_groups": groups}
        super().load_state_dict(state)
