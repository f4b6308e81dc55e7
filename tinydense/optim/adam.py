"""Adam and AdamW (Kingma & Ba, 2015; Loshchilov & Hutter, 2019), PyTorch's rules.

Per parameter p with gradient g, at step t = 1, 2, ...:

    g <- g + weight_decay * p                  (Adam only: L2 decay added to the gradient)
    p <- p - lr * weight_decay * p             (AdamW only: decay applied to the weight itself)
    m <- beta1 * m + (1 - beta1) * g           (first moment: a running mean of g)
    v <- beta2 * v + (1 - beta2) * g^2         (second moment: a running mean of g^2)
    m_hat = m / (1 - beta1^t),  v_hat = v / (1 - beta2^t)     (bias correction: m, v start at 0)
    p <- p - lr * m_hat / (sqrt(v_hat) + eps)

Every parameter moves by about ``lr`` at most per step, whatever the scale of its gradient.
"""
from __future__ import annotations


from .. import backend
from .optimizer import Optimizer


class Adam(Optimizer):
    decoupled = False           # AdamW: True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def check_options(self, group):
        super().check_options(group)
        betas = group["betas"]
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"{type(self).__name__}: betas must be two numbers in [0, 1), got {betas!r}")

    def step(self) -> None:
        for group in self.param_groups:
            lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            for p in self.trainable(group):
                xp = backend.get_array_module(p.data)
                g = p.grad
                if weight_decay and self.decoupled:
                    p.data -= lr * weight_decay * p.data
                elif weight_decay:
                    g = g + weight_decay * p.data
                state = self.state.setdefault(p, {})
                if not state:
                    state.update(step=0, exp_avg=xp.zeros_like(p.data), exp_avg_sq=xp.zeros_like(p.data))
                state["step"] += 1
                m, v, t = state["exp_avg"], state["exp_avg_sq"], state["step"]
                m *= beta1
                m += (1 - beta1) * g
                v *= beta2
                v += (1 - beta2) * g * g
                m_hat = m / (1 - beta1 ** t)
                v_hat = v / (1 - beta2 ** t)
                p.data -= (lr * m_hat / (xp.sqrt(v_hat) + eps)).astype(p.dtype)


class AdamW(Adam):
    """Adam with decoupled weight decay (default 0.01): the weights shrink by
    ``lr * weight_decay`` of themselves each step, apart from the gradient's moments."""
    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


