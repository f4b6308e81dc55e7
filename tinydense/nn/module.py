"""``Module``: the building block every layer and model is made of.

A module owns three kinds of things, registered simply by assigning an
attribute in ``__init__`` (as in PyTorch):

    self.weight = Parameter(...)     a learnable Tensor (the optimizer updates it)
    self.register_buffer("running_mean", array)
                                     state that is saved but not learned
    self.conv1 = Conv2d(...)         a submodule, with its own parameters

From these registrations it can list every parameter (``parameters()``),
save and restore everything (``state_dict()`` / ``load_state_dict()``),
switch between training and evaluation (``train()`` / ``eval()``) and move
to another device or dtype (``to()``, ``double()``). Names are the
attribute paths, e.g. ``features.denseblock1.denselayer1.conv1.weight``.
"""
from __future__ import annotations

from collections import OrderedDict, namedtuple

import numpy as np

from .. import backend
from ..autograd import Tensor


class Parameter(Tensor):
    """A Tensor that is a learnable parameter of a module (requires_grad=True)."""

    def __init__(self, data, requires_grad: bool = True):
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])

# Modules whose forward is running, outermost first (to name the layer an error came from).
_call_stack = []


class _HookHandle:
    """Returned by ``register_forward_hook``; ``remove()`` unregisters the hook."""

    def __init__(self, hooks, key):
        self._hooks, self._key = hooks, key

    def remove(self):
        self._hooks.pop(self._key, None)


class Module:
    """Base class of all layers and models. Subclasses set their parameters,
    buffers and submodules in ``__init__`` (after ``super().__init__()``) and
    define ``forward``; call the module itself, ``module(x)``, to run it."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())
        object.__setattr__(self, "training", True)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    # --- registration by attribute -----------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                                 f"before assigning {name!r}")
        if isinstance(value, (Parameter, Module)):
            target = self._parameters if isinstance(value, Parameter) else self._modules
            self.__dict__.pop(name, None)
            for registry in (self._parameters, self._buffers, self._modules):
                if registry is not target:
                    registry.pop(name, None)
            target[name] = value                # a replacement keeps its place in the order
        elif name in self._buffers:            # a new array for an existing buffer
            self._buffers[name] = value
        elif name in self._parameters and value is not None:
            raise TypeError(f"cannot assign a {type(value).__name__} to parameter {name!r} of "
                            f"{type(self).__name__}: assign a Parameter, or set {name}.data")
        else:                                  # a plain attribute (None removes a parameter/submodule)
            self._parameters.pop(name, None)
            self._modules.pop(name, None)
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # only called when normal lookup fails: look in the registries
        for registry in ("_parameters", "_buffers", "_modules"):
            d = self.__dict__.get(registry)
            if d is not None and name in d:
                return d[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __delattr__(self, name):
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name: str, array) -> None:
        """Register ``array`` (NumPy/CuPy) as state saved in ``state_dict`` but not learned,
        e.g. batch norm's running statistics."""
        if isinstance(array, Tensor):
            raise TypeError(f"buffer {name!r} must be a raw array, not a Tensor")
        self.__dict__.pop(name, None)
        self._buffers[name] = array

    def add_module(self, name: str, module: "Module") -> None:
        """Register a submodule under a name that need not be an identifier ("0", "1" ...)."""
        if not isinstance(module, Module):
            raise TypeError(f"add_module({name!r}): expected a Module, got {type(module).__name__}")
        if not name or "." in name:
            raise ValueError(f"module name must be non-empty and contain no '.', got {name!r}")
        self._modules[name] = module

    # --- walking the tree ---------------------------------------------------
    def named_children(self):
        return iter(self._modules.items())

    def children(self):
        return iter(self._modules.values())

    def named_modules(self, prefix: str = ""):
        """(qualified name, module) for this module ("") and every submodule, depth first."""
        seen = set()
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            children = [(f"{name}.{n}" if name else n, m) for n, m in module._modules.items()]
            stack.extend(reversed(children))

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_parameters(self):
        """(qualified name, Parameter) pairs, each parameter once."""
        seen = set()
        for prefix, module in self.named_modules():
            for name, p in module._parameters.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{prefix}.{name}" if prefix else name), p

    def parameters(self):
        return (p for _, p in self.named_parameters())

    def named_buffers(self):
        for prefix, module in self.named_modules():
            for name, b in module._buffers.items():
                yield (f"{prefix}.{name}" if prefix else name), b

    def buffers(self):
        return (b for _, b in self.named_buffers())

    # --- saving and restoring -------------------------------------------------
    def _state_entries(self):
        """(qualified name, owning module, attribute name, is_parameter) for every saved entry,
        in PyTorch's order: a module's parameters, then its buffers, then its children."""
        for prefix, module in self.named_modules():
            for name in module._parameters:
                yield (f"{prefix}.{name}" if prefix else name), module, name, True
            for name in module._buffers:
                yield (f"{prefix}.{name}" if prefix else name), module, name, False

    def state_dict(self):
        """An ordered dict name -> array of every parameter and buffer.

        Unlike PyTorch, the arrays are copies: a state_dict is a snapshot that
        later training does not change (keep one as "the best model so far")."""
        out = OrderedDict()
        for key, module, name, is_param in self._state_entries():
            value = module._parameters[name].data if is_param else module._buffers[name]
            out[key] = value.copy()
        return out

    def load_state_dict(self, state_dict, strict: bool = True):
        """Copy arrays (NumPy, CuPy or Tensors) from ``state_dict`` into this module's
        parameters and buffers, converting to each one's dtype and device.

        Every key is checked first. With ``strict=True`` any missing or unexpected key
        is an error; a shape mismatch is always an error. On error a ValueError lists
        all the problems and nothing has been changed. Returns
        ``IncompatibleKeys(missing_keys, unexpected_keys)``.
        """
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"load_state_dict expects a dict name -> array, got {type(state_dict).__name__}")
        entries = {key: (module, name, is_param) for key, module, name, is_param in self._state_entries()}
        missing = [k for k in entries if k not in state_dict]
        unexpected = [k for k in state_dict if k not in entries]
        problems, updates = [], []
        for key, (module, name, is_param) in entries.items():
            if key not in state_dict:
                continue
            current = module._parameters[name].data if is_param else module._buffers[name]
            value = state_dict[key]
            value = value.data if isinstance(value, Tensor) else value
            if not hasattr(value, "shape"):
                value = np.asarray(value)
            if getattr(value, "dtype", np.dtype(object)).kind not in "biuf":
                problems.append(f"  {key}: expected a numeric array, got {type(value).__name__} "
                                f"of dtype {getattr(value, 'dtype', None)}")
            elif tuple(value.shape) != tuple(current.shape):
                problems.append(f"  {key}: shape {tuple(value.shape)} in the state_dict, "
                                f"{tuple(current.shape)} in the model")
            else:
                updates.append((module, name, is_param, current, value))
        if strict and missing:
            problems.insert(0, f"  missing keys ({len(missing)}): {', '.join(missing)}")
        if strict and unexpected:
            problems.insert(0, f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
        if problems:
            raise ValueError(f"load_state_dict into {type(self).__name__} failed, nothing was loaded:\n"
                             + "\n".join(problems))
        for module, name, is_param, current, value in updates:
            new = backend.to_device(value, backend.device_of(current)).astype(current.dtype, copy=True)
            if is_param:
                module._parameters[name].data = new
            else:
                module._buffers[name] = new
        return IncompatibleKeys(missing, unexpected)

    # --- modes, gradients, devices ------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        """Training mode (batch statistics in batch norm, dropout active), recursively."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        """Evaluation mode (running statistics, no dropout), recursively."""
        return self.train(False)

    def zero_grad(self) -> None:
        """Forget the gradients of every parameter (set ``.grad`` to None)."""
        for p in self.parameters():
            p.grad = None

    def _convert(self, fn) -> "Module":
        """Apply ``fn`` to every parameter's array (in place: the Parameter objects stay
        the same, so an optimizer holding them keeps working) and every buffer."""
        for p in self.parameters():
            p.data = fn(p.data)
            if p.grad is not None:
                p.grad = fn(p.grad)
        for module in self.modules():
            for name, b in module._buffers.items():
                module._buffers[name] = fn(b)
        return self

    def to(self, *args, device=None, dtype=None) -> "Module":
        """Move parameters and buffers to a device ("cpu"/"cuda") and/or cast the
        floating-point ones to a dtype, given as PyTorch takes them:
        ``to("cuda")``, ``to(np.float64)``, ``to("cuda", np.float32)``,
        ``to(device=..., dtype=...)`` (a string is a device, anything else a dtype).
        Both are checked before anything changes. Returns self."""
        for arg in args:
            if isinstance(arg, str) and device is None:
                device = arg
            elif not isinstance(arg, str) and dtype is None:
                dtype = arg
            else:
                raise TypeError(f"Module.to: got {arg!r} besides device={device!r}, dtype={dtype!r}; "
                                f"expected at most one device name and one dtype")
        if device is not None:
            device = backend.check_device(device)
        if dtype is not None:
            try:
                dtype = np.dtype(dtype)
            except TypeError:
                raise TypeError(f"Module.to: {dtype!r} is neither a device name nor a dtype") from None
            if dtype.kind != "f":
                raise TypeError(f"Module.to needs a floating-point dtype, got {dtype}")
        if device is not None:
            self._convert(lambda a: backend.to_device(a, device))
        if dtype is not None:
            self._convert(lambda a: a.astype(dtype) if a.dtype.kind == "f" else a)
        return self

    def double(self) -> "Module":
        """float64 parameters and buffers (for gradient checks)."""
        return self.to(dtype=np.float64)

    def float(self) -> "Module":
        """float32 parameters and buffers (for training)."""
        return self.to(dtype=np.float32)

    # --- calling ----------------------------------------------------------------
    def register_forward_hook(self, hook) -> _HookHandle:
        """Call ``hook(module, inputs, output)`` after every forward of this module."""
        key = object()
        self._forward_hooks[key] = hook
        return _HookHandle(self._forward_hooks, key)

    def has_forward_hooks(self) -> bool:
        """Whether a forward hook is registered on this module (not its children)."""
        return bool(self._forward_hooks)

    def __call__(self, *args, **kwargs):
        _call_stack.append(self)
        try:
            output = self.forward(*args, **kwargs)
        except (ValueError, TypeError) as error:
            if not hasattr(error, "_tinydense_module"):
                error._tinydense_module = self        # the innermost module sees it first
            if len(_call_stack) == 1:                 # the outermost call: say where it happened
                located = _locate(self, error)
                if located is not None:
                    raise located from error
            raise
        finally:
            _call_stack.pop()
        for hook in list(self._forward_hooks.values()):
            hook(self, args, output)
        return output

    # --- printing ---------------------------------------------------------------
    def extra_repr(self) -> str:
        """The arguments shown between the parentheses in ``repr``."""
        return ""

    def __repr__(self):
        lines = [f"({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()]
        if not lines:
            return f"{type(self).__name__}({self.extra_repr()})"
        extra = self.extra_repr()
        body = "\n  ".join(([extra] if extra else []) + lines)
        return f"{type(self).__name__}(\n  {body}\n)"


def _locate(root, error):
    """A copy of a ValueError/TypeError raised inside ``root`` whose message starts
    with the qualified name and type of the layer it came from, or None."""
    where = error._tinydense_module
    if type(error) not in (ValueError, TypeError) or where is root:
        return None
    name = next((n for n, m in root.named_modules() if m is where), None)
    label = f"{name} ({type(where).__name__})" if name else type(where).__name__
    return type(error)(f"in {label}: {error}")
