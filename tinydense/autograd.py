"""The autograd core: ``Tensor``, ``Function`` and reverse-mode ``backward``.

A ``Tensor`` holds an array (``.data``) and, after a backward pass, the
gradient of the loss with respect to it (``.grad``). Every op is a
``Function`` subclass with a ``forward`` (arrays in, array out) and a
hand-written ``backward`` (gradient of the output in, gradients of the
inputs out) side by side. Calling ``SomeFunction.apply(*tensors)`` runs
forward and, when a gradient is needed, records the function as the
output's creator, so the tensors form a graph that ``backward`` walks in
reverse topological order, applying the chain rule node by node.
"""
from __future__ import annotations

import contextlib

import numpy as np

from . import backend

_grad_enabled = True


@contextlib.contextmanager
def no_grad():
    """Within this block no graph is recorded (use it for evaluation:
    nothing is kept alive for a backward pass that will never come)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled() -> bool:
    return _grad_enabled


class Function:
    """One node of the graph: an op with its forward and backward together.

    Subclasses implement ``forward(self, *arrays, **options) -> array`` and
    ``backward(self, grad_out) -> grad or tuple of grads`` (one per input,
    ``None`` where no gradient is needed). Forward may keep on ``self``
    whatever backward needs; it is freed after backward has used it.
    ``self.needs_grad[i]`` says whether input ``i`` wants a gradient, so
    backward can skip work nobody asked for.
    """

    released = False   # set on the instance once backward has freed what forward saved

    def forward(self, *arrays, **options):
        raise NotImplementedError

    def backward(self, grad_out):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **options):
        tensors = [x if isinstance(x, Tensor) else None for x in inputs]
        arrays = [x.data if isinstance(x, Tensor) else x for x in inputs]
        # every array input (Tensors and raw arrays such as running stats or labels)
        # must live on one device: NumPy and CuPy arrays cannot be mixed in one op
        placed = [(tuple(a.shape), backend.device_of(a)) for a in arrays if hasattr(a, "shape")]
        if len({device for _, device in placed}) > 1:
            where = ", ".join(f"{shape} on {device}" for shape, device in placed)
            raise ValueError(f"{cls.__name__}: inputs live on different devices ({where}); "
                             f"move them with .to('cpu') or .to('cuda') first")
        fn = cls()
        fn.needs_grad = tuple(x is not None and x.requires_grad for x in tensors)
        out = fn.forward(*arrays, **options)
        record = _grad_enabled and any(fn.needs_grad)
        result = Tensor(out, requires_grad=record)
        if record:
            fn.inputs = tensors
            result._creator = fn
        return result


class Tensor:
    """An n-dimensional array that remembers how it was computed.

    This class is the graph's core: data, gradient, creator and ``backward``.
    Its arithmetic and the methods that run an op (``+ - * / ** @``, indexing,
    ``sum``, ``reshape``, ``relu``, ``to`` ...) are defined on top of it, in
    tinydense/ops/tensor_methods.py, whose table ``TENSOR_METHODS`` attaches
    them here when ``tinydense.ops`` is imported (autograd knows no op).
    """

    __array_priority__ = 1000  # make ``ndarray * Tensor`` call Tensor.__rmul__

    def __init__(self, data, requires_grad: bool = False):
        if isinstance(data, Tensor):
            data = data.data
        xp = backend.get_array_module(data)
        if not isinstance(data, xp.ndarray):   # lists, Python and NumPy scalars -> arrays
            data = xp.asarray(data)
        if requires_grad and data.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients, got dtype {data.dtype}")
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._creator = None      # the Function that produced this tensor
        self._retain_grad = False

    # --- basic properties -------------------------------------------------
    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return int(self.data.size)

    @property
    def device(self) -> str:
        return backend.device_of(self.data)

    @property
    def is_leaf(self) -> bool:
        return self._creator is None

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        dev = ", device='cuda'" if self.device == "cuda" else ""
        body = np.array2string(self.numpy(), precision=4, separator=", ", prefix="tensor(")
        return f"tensor({body}, dtype={self.dtype}{dev}{grad})"

    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (copied from the GPU if needed)."""
        return backend.to_numpy(self.data)

    def item(self):
        if self.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def detach(self) -> "Tensor":
        """The same data, cut from the graph."""
        return Tensor(self.data)

    def requires_grad_(self, flag: bool = True) -> "Tensor":
        if flag and self.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients, got dtype {self.dtype}")
        self.requires_grad = bool(flag)
        return self

    def retain_grad(self) -> "Tensor":
        """Keep ``.grad`` on this non-leaf tensor after backward (leaves always keep it)."""
        self._retain_grad = True
        return self

    def zero_grad(self) -> None:
        self.grad = None

    # --- reverse mode -----------------------------------------------------
    def backward(self, grad=None) -> None:
        """Compute the gradient of this tensor with respect to every leaf
        tensor that requires one, accumulating into their ``.grad``.

        ``grad`` is the upstream gradient; it may be omitted only for a
        tensor with one element (a loss), where it is 1.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad: "
                               "no input of the computation had requires_grad=True")
        xp = backend.get_array_module(self.data)
        if grad is None:
            if self.size != 1:
                raise ValueError(f"backward() without a gradient needs a scalar tensor, "
                                 f"got shape {self.shape}; pass grad= of that shape")
            grad = xp.ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else xp.asarray(grad, dtype=self.dtype)
            if tuple(grad.shape) != self.shape:
                raise ValueError(f"backward(grad): grad has shape {tuple(grad.shape)} "
                                 f"but the tensor has shape {self.shape}")

        order = self._topological_order()       # raises before any .grad changes
        grads = {id(self): grad}
        for tensor in order:                      # outputs before inputs
            g = grads.pop(id(tensor), None)
            if g is None:
                continue
            fn = tensor._creator
            if fn is None or tensor._retain_grad:
                tensor.grad = g if tensor.grad is None else tensor.grad + g
            if fn is None:
                continue
            in_grads = fn.backward(g)
            if not isinstance(in_grads, tuple):
                in_grads = (in_grads,)
            for x, gx in zip(fn.inputs, in_grads):
                if x is None or gx is None or not x.requires_grad:
                    continue
                key = id(x)
                # a tensor that feeds several ops receives the sum of their gradients
                grads[key] = gx if key not in grads else grads[key] + gx
            fn.__dict__.clear()                   # free what forward saved
            fn.released = True

    def _topological_order(self):
        """Tensors reachable from self, each after every tensor it feeds.
        Iterative depth-first search: a DenseNet-BC-250 graph has thousands
        of nodes, beyond Python's recursion limit. Raises RuntimeError if the
        graph was already backpropagated through (its saved arrays are gone),
        before any gradient has been touched."""
        order, visited = [], set()
        stack = [(self, False)]
        while stack:
            tensor, children_done = stack.pop()
            if children_done:
                order.append(tensor)
                continue
            if id(tensor) in visited:
                continue
            visited.add(id(tensor))
            stack.append((tensor, True))
            fn = tensor._creator
            if fn is not None and fn.released:
                raise RuntimeError(f"backward through a graph that was already used: the saved arrays "
                                   f"of {type(fn).__name__} (output shape {tensor.shape}) were freed "
                                   f"after the first backward. Recompute the forward pass to "
                                   f"backpropagate again.")
            if fn is not None:
                for x in fn.inputs:
                    if x is not None and x.requires_grad and id(x) not in visited:
                        stack.append((x, False))
        order.reverse()
        return order

    # comparisons give plain boolean tensors (no gradient, no op: so they live here)
    def __lt__(self, other):
        return Tensor(self.data < _raw(other))

    def __le__(self, other):
        return Tensor(self.data <= _raw(other))

    def __gt__(self, other):
        return Tensor(self.data > _raw(other))

    def __ge__(self, other):
        return Tensor(self.data >= _raw(other))

    def __eq__(self, other):
        return Tensor(self.data == _raw(other))

    def __ne__(self, other):
        return Tensor(self.data != _raw(other))

    __hash__ = object.__hash__


def _raw(x):
    return x.data if isinstance(x, Tensor) else x


def tensor(data, requires_grad: bool = False, dtype=None, device=None) -> Tensor:
    """Make a Tensor from a list, scalar, NumPy or CuPy array.

    Python floats become float32 (as in PyTorch); arrays keep their dtype
    unless ``dtype`` is given. ``device`` is ``"cpu"`` (default for
    non-CuPy data) or ``"cuda"``.
    """
    if isinstance(data, Tensor):
        data = data.data
    if device is not None:
        data = backend.to_device(data, device)
    xp = backend.get_array_module(data)
    if dtype is not None:
        array = xp.asarray(data, dtype=np.dtype(dtype))
    elif hasattr(data, "dtype"):
        array = xp.asarray(data)
    else:
        array = np.asarray(data)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        array = xp.asarray(array)
    if array is data:
        array = array.copy()
    return Tensor(array, requires_grad=requires_grad)
