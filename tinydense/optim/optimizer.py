"""What every optimizer shares, PyTorch's way: parameter groups and per-parameter state.

    optimizer.param_groups   a list of dicts, one per group: {"params": [...], "lr": 0.1, ...};
                             ``step`` reads each group's options there, so a scheduler (or you)
                             changes the learning rate by writing ``group["lr"]``
    optimizer.state          parameter (the Tensor itself) -> dict of what the rule keeps (momentum buffer, Adam's moments)

Build one from ``model.parameters()`` (one group with the default options) or from a list of
dicts, each with its own options (``[{"params": body}, {"params": head, "lr": 0.01}]``).
A parameter whose ``requires_grad`` is False (frozen, as when fine-tuning) or that got no
gradient is skipped by ``step``.

``state_dict()`` numbers the parameters in group order, as PyTorch does, and uses string keys
("0", "1", ...) so that ``tinydense.save`` can store it; ``load_state_dict`` takes either.
"""
from __future__ import annotations

import numbers

from .. import backend
from ..autograd import Tensor


class Optimizer:
    """Base class: subclasses give ``defaults`` (option -> default value) and write ``step``."""

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self.param_groups = []
        self.state = {}
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        for group in (params if isinstance(params[0], dict) else [{"params": params}]):
            self.add_param_group(group)

    def check_options(self, group: dict) -> None:
        """Raise ValueError for a bad option value (subclasses add their own rules)."""
        for name, value in group.items():
            if name == "params" or isinstance(value, (bool, tuple, str)) or value is None:
                continue
            if not isinstance(value, numbers.Real) or value != value or value < 0:
                raise ValueError(f"{type(self).__name__}: {name} must be a non-negative number, got {value!r}")

    def add_param_group(self, group: dict) -> None:
        """Add a group ``{"params": [...], option: value, ...}``; missing options take the defaults."""
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"a parameter group is a dict with a 'params' entry, got {group!r:.80}")
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"{type(self).__name__} optimizes Tensors, got {type(p).__name__}")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params) or len({id(p) for p in params}) != len(params):
            raise ValueError(f"{type(self).__name__}: a parameter appears in more than one group (or twice)")
        unknown = sorted(set(group) - set(self.defaults) - {"params", "initial_lr"})
        if unknown:
            raise ValueError(f"{type(self).__name__}: unknown options {unknown}; it takes {sorted(self.defaults)}")
        full = {**self.defaults, **group, "params": params}
        if full.get("lr") is None:
            raise ValueError(f"{type(self).__name__}: no learning rate: give lr=")
        self.check_options(full)
        self.param_groups.append(full)

    @property
    def params(self) -> list:
        """Every parameter, in group order."""
        return [p for group in self.param_groups for p in group["params"]]

    @property
    def lr(self) -> float:
        """tinydense's shorthand: the first group's learning rate (setting it sets every group's)."""
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value) -> None:
        for group in self.param_groups:
            group["lr"] = float(value)

    def trainable(self, group):
        """The group's parameters that ``step`` updates: requiring a gradient and having one."""
        return [p for p in group["params"] if p.requires_grad and p.grad is not None]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients (backward accumulates into ``.grad``): set them to None,
        or with ``set_to_none=False`` fill them with zeros."""
        for p in self.params:
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad = p.grad * 0

    # --- saving and restoring --------------------------------------------------------
    def state_dict(self) -> dict:
        """``{"state": {"0": {name: array or number}}, "param_groups": [{options, "params": [0, 1]}]}``."""
        index = {id(p): i for i, p in enumerate(self.params)}
        groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [index[id(p)] for p in g["params"]]}
                  for g in self.param_groups]
        state = {str(index[id(p)]): dict(s) for p, s in self._state_items()}
        return {"state": state, "param_groups": groups}

    def _state_items(self):
        return [(p, self.state[p]) for p in self.params if p in self.state]

    def load_state_dict(self, state_dict) -> None:
        """Restore :meth:`state_dict`'s output. Everything is checked (group sizes, array shapes)
        before anything changes; arrays are copied to each parameter's device and dtype."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(
                len(g["params"]) != len(mine["params"]) for g, mine in zip(groups, self.param_groups)):
            raise ValueError(f"{type(self).__name__}.load_state_dict: the saved groups have sizes "
                             f"{[len(g['params']) for g in groups]}, this optimizer's "
                             f"{[len(g['params']) for g in self.param_groups]}")
        params = self.params
        new_state = {}
        for key, entries in state_dict["state"].items():
            i = int(key)
            if not 0 <= i < len(params):
                raise ValueError(f"{type(self).__name__}.load_state_dict: state for parameter {key}, "
                                 f"but there are {len(params)} parameters")
            p, restored = params[i], {}
            for name, value in entries.items():
                value = value.data if isinstance(value, Tensor) else value
                if hasattr(value, "shape") and value.ndim:
                    if tuple(value.shape) != p.shape:
                        raise ValueError(f"{type(self).__name__} state: {key}.{name} has shape "
                                         f"{tuple(value.shape)} but the parameter has shape {p.shape}")
                    value = backend.to_device(value, p.device).astype(p.dtype, copy=True)
                restored[name] = value
            new_state[p] = restored
        for mine, saved in zip(self.param_groups, groups):
            mine.update({k: v for k, v in saved.items() if k != "params"})
        self.state = new_state

    def __repr__(self):
        lines = [f"Parameter Group {i}\n" + "\n".join(f"    {k}: {v}" for k, v in g.items() if k != "params")
                 for i, g in enumerate(self.param_groups)]
        return f"{type(self).__name__} (\n" + "\n".join(lines) + "\n)"
