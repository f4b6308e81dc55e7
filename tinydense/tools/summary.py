"""``summary(model, input_shape)``: a table of what every layer produces and costs.

It runs the model once on one all-zero image, watching each layer, and
reports per layer:

    output shape   C x H' x W' (one image)
    params         learnable numbers in the layer (conv: C_out*(C_in/groups)*kH*kW + C_out with bias)
    MACs           multiply-adds (MACs), tinydense's one measure of arithmetic: a
                   multiplication and the addition after it count as one (what papers and
                   torchvision often quote as "FLOPs"; the floating-point operations are twice
                   as many). Counted as in the CNN-architecture lecture:
                     conv     C_out*H'*W' * (C_in/groups)*kH*kW   (output elements x work per element)
                     linear   in * out
                     pooling  C*H'*W' * kH*kW            (global pooling: every input once)
                     BN, ReLU, Sigmoid, dropout, flatten, concatenation: 0
    memory         bytes of the layer's output (4 per float32 number)

``input_shape`` is (C, H, W) for one image or (N, C, H, W) for a batch of N,
as torchinfo takes it; for a batch the MACs and memory are N times those of
one image (every layer works image by image in eval mode), and the model
still runs on one image. Before a large input is run, the memory the layer
outputs would take is estimated from a 32x32 image and the input is refused
if that is more than half the memory available.

DenseNet's concatenations happen inside DenseLayer/DenseBlock (they cost no
multiply-adds) and are folded into those rows: a dense layer's norm1 row
shows the concatenated input it normalises. The model runs in eval mode
under ``no_grad``, so nothing about it changes. (A memory-efficient DenseNet
calls every layer too: its fused blocks run the textbook forward while a layer
inside has a hook, models/efficient_densenet.py.)
"""
from __future__ import annotations

import numpy as np

from .. import backend, memory
from ..autograd import Tensor, no_grad
from ..nn import AdaptiveAvgPool2d, AvgPool2d, Conv2d, Linear, MaxPool2d

PROBE_SIZE = 32                   # the image size the memory estimate of a large input is scaled from
LARGE_INPUT = 3 * 256 * 256       # numbers per image above which the estimate is made first


def _layer_macs(module, input_shape, output_shape):
    """Multiply-adds of one call of a leaf layer, for shapes without the batch axis."""
    if isinstance(module, Conv2d):
        kh, kw = module.kernel_size
        return int(np.prod(output_shape)) * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, Linear):
        return int(np.prod(output_shape[:-1], dtype=np.int64)) * module.in_features * module.out_features
    if isinstance(module, (MaxPool2d, AvgPool2d)):
        kh, kw = module.kernel_size
        return int(np.prod(output_shape)) * kh * kw
    if isinstance(module, AdaptiveAvgPool2d):
        return int(np.prod(input_shape))
    return 0


def _tensors(value):
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


class _Row(dict):
    """A row of the table. ``row["flops"]`` is the old name of ``row["macs"]``, kept
    until the lessons use the new one."""

    def __missing__(self, key):
        if key == "flops":
            return self["macs"]
        raise KeyError(key)


class Summary:
    """The result of :func:`summary`. ``str(s)`` is the table; ``s.rows`` a list of
    dicts (name, type, output_shape, params, macs, memory_bytes); ``s.total_params``,
    ``s.total_macs`` (multiply-adds) and ``s.total_memory_bytes`` (every layer's output)
    are for the whole model and the batch (``s.batch_size`` images)."""

    def __init__(self, model_name, input_shape, rows, total_params, total_macs, total_memory_bytes, batch_size=1,
                 level=None):
        self.model_name, self.input_shape = model_name, tuple(input_shape)
        self.rows, self.batch_size, self.level = rows, batch_size, level
        self.total_params, self.total_macs = total_params, total_macs
        self.total_memory_bytes = total_memory_bytes

    @property
    def total_flops(self):
        """The old name of ``total_macs`` (multiply-adds), kept until the lessons use the new one."""
        return self.total_macs

    def __str__(self):
        shape = lambda s: "x".join(str(d) for d in s)          # noqa: E731
        header = ("Layer", "Type", "Output shape", "Params", "MACs", "Memory (KB)")
        cells = [(r["name"], r["type"], shape(r["output_shape"]), f"{r['params']:,}", f"{r['macs']:,}",
                  f"{r['memory_bytes'] / 1024:,.2f}") for r in self.rows]
        widths = [max(len(row[i]) for row in [header] + cells) for i in range(6)]
        fmt = lambda row: "  ".join(c.ljust(w) if i < 3 else c.rjust(w)     # noqa: E731
                                    for i, (c, w) in enumerate(zip(row, widths))).rstrip()
        rule = "-" * len(fmt(header))
        n = self.batch_size
        images = "one image" if n == 1 else f"{n} images"
        lines = [f"{self.model_name}, input {shape(self.input_shape)} (batch {n}"
                 + (": output shapes per image, MACs and memory for the batch)" if n > 1 else ")"),
                 rule, fmt(header), rule]
        lines += [fmt(c) for c in cells]
        lines += [rule,
                  f"Total parameters:   {self.total_params:,}",
                  f"Total multiply-adds (MACs): {self.total_macs:,} ({self.total_macs / 1e9:.2f} G)",
                  f"Activation memory:  {self.total_memory_bytes / 2 ** 20:,.2f} MB "
                  f"(every layer's output, {images})"]
        if self.level is not None:
            lines.append(f"(the modules {self.level} level{'s' if self.level > 1 else ''} down: Params and MACs of "
                         f"a row are the totals of everything inside it, Memory is only its own output's)")
        return "\n".join(lines)

    __repr__ = __str__


def _trace(model, image_shape):
    """Run ``model`` on one zero image of ``image_shape`` (C, H, W); returns, in the
    order the calls finish, (module, input shape, output shapes, output bytes) of every
    module call. Only shapes are kept, so the outputs are freed as the model runs."""
    params = list(model.parameters())
    dtype = params[0].dtype if params else np.float32
    device = params[0].device if params else "cpu"
    x = Tensor(backend.module_for(device).zeros((1,) + tuple(image_shape), dtype=dtype))

    def record(module, inputs, out):
        inputs, outs = _tensors(inputs), _tensors(out)
        events.append((module, inputs[0].shape[1:] if inputs else (),
                       [t.shape[1:] for t in outs], sum(t.size * t.data.itemsize for t in outs)))
    events = []
    hooks = [m.register_forward_hook(record) for m in model.modules()]
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
        for m, mode in modes:
            m.training = mode
    return events


def _check_memory(model, image_shape, batch):
    """Refuse (ValueError, with the estimate) an input whose layer outputs would not fit
    in half the available memory, estimated from a PROBE_SIZE x PROBE_SIZE image."""
    c, h, w = image_shape
    available = memory.available_memory()
    if c * h * w <= LARGE_INPUT or available is None:
        return
    try:
        events = _trace(model, (c, PROBE_SIZE, PROBE_SIZE))
    except ValueError:                   # the model needs larger images: no estimate
        return
    probe = sum(nbytes for module, _, _, nbytes in events if not module._modules)
    needed = probe * (h * w) / PROBE_SIZE ** 2 * batch
    if needed > available / 2:
        raise ValueError(f"summary: an input of {batch}x{c}x{h}x{w} would need about {needed / 2 ** 30:,.1f} GB for "
                         f"the layer outputs (estimated from a {PROBE_SIZE}x{PROBE_SIZE} image), more than half "
                         f"of the {available / 2 ** 30:,.1f} GB available: use a smaller image")


def summary(model, input_shape, depth=None) -> Summary:
    """Tabulate each layer's output shape, parameters, multiply-adds (MACs) and output
    memory for an input of ``input_shape``: (C, H, W) for one image, (N, C, H, W) for a
    batch of N (MACs and memory N times those of one image; the model runs on one).

    ``depth=None`` lists every leaf layer in the order they run; ``depth=d`` lists the
    modules d levels down (e.g. ``depth=2`` for DenseNet: the stem layers, each dense
    block and transition, norm5, the classifier), each with the total of what it contains.
    """
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) not in (3, 4) or min(input_shape) < 1:
        raise ValueError(f"summary: input_shape must be (C, H, W) or (N, C, H, W) of positive sizes, "
                         f"got {input_shape}")
    if depth is not None and (not isinstance(depth, int) or depth < 1):
        raise ValueError(f"summary: depth must be a positive integer or None, got {depth!r}")
    batch, image_shape = (input_shape[0], input_shape[1:]) if len(input_shape) == 4 else (1, input_shape)
    _check_memory(model, image_shape, batch)
    try:
        events = _trace(model, image_shape)
    except MemoryError as e:
        raise ValueError(f"summary: not enough memory to run the model on one image of {image_shape} ({e})") from None

    names = {id(m): name for name, m in model.named_modules()}
    rows, pending, total_macs, total_memory = [], {}, 0, 0
    for module, in_shape, out_shapes, nbytes in events:
        leaf = not module._modules
        name = names.get(id(module)) or type(module).__name__      # a root that is one layer: its type
        level = 0 if module is model else name.count(".") + 1
        out_shape = out_shapes[0] if len(out_shapes) == 1 else tuple(out_shapes)
        memory = nbytes * batch
        macs = _layer_macs(module, in_shape, out_shape) * batch if leaf else 0
        if leaf:
            total_macs += macs
            total_memory += memory
        if depth is not None and level > depth:            # fold into its ancestor at `depth`
            ancestor = ".".join(name.split(".")[:depth])
            pending[ancestor] = pending.get(ancestor, 0) + macs
            continue
        if leaf or (depth is not None and level == depth):
            rows.append(_Row(name=name, type=type(module).__name__, output_shape=tuple(out_shape),
                             params=sum(p.size for p in module.parameters()),
                             macs=macs + pending.pop(name, 0), memory_bytes=int(memory)))
    return Summary(type(model).__name__, input_shape, rows, sum(p.size for p in model.parameters()), total_macs,
                   total_memory, batch, level=depth)
