"""Containers: modules that hold other modules."""
from __future__ import annotations

from collections import OrderedDict

from .module import Module


class _ModuleSequence(Module):
    """What Sequential and ModuleList share: length, iteration and indexing in order."""

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        return list(self._modules.values())[index]


class Sequential(_ModuleSequence):
    """Runs its modules one after the other: ``Sequential(a, b, c)(x) == c(b(a(x)))``.

    Give the modules positionally (named "0", "1", ...) or as one ordered dict
    name -> module, as torchvision's DenseNet does for ``features``.
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], (dict, OrderedDict)):
            for name, module in modules[0].items():
                self.add_module(name, module)
        else:
            for i, module in enumerate(modules):
                self.add_module(str(i), module)

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x


class ModuleList(_ModuleSequence):
    """A list of modules whose parameters are registered (named "0", "1", ...);
    the owner decides how to call them."""

    def __init__(self, modules=()):
        super().__init__()
        self.extend(modules)

    def append(self, module: Module) -> "ModuleList":
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules) -> "ModuleList":
        for module in modules:
            self.append(module)
        return self

    def forward(self, *args):
        raise TypeError("ModuleList is not callable: iterate over it and call its modules")


class ModuleDict(Module):
    """A dict name -> module whose modules are registered (in insertion order); the owner
    decides how to call them: ``self.heads = ModuleDict({"cls": Linear(8, 10)})``."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, name):
        return self._modules[name]

    def __setitem__(self, name, module):
        self.add_module(name, module)

    def __delitem__(self, name):
        del self._modules[name]

    def __contains__(self, name):
        return name in self._modules

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()

    def update(self, modules) -> None:
        for name, module in (modules.items() if hasattr(modules, "items") else modules):
            self.add_module(name, module)

    def forward(self, *args):
        raise TypeError("ModuleDict is not callable: call the modules it holds")


class DataParallel(Module):
    """PyTorch's multi-GPU wrapper, here on one device: it runs ``module`` unchanged.
    Kept so that scripts which wrap their model on CUDA run; like PyTorch's, its
    ``state_dict`` keys start with ``module.``."""

    def __init__(self, module, device_ids=None, output_device=None):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)
