"""``summary(model, input_shape)``: a table of what every layer produces and costs.

For one image (batch 1) it runs the model on zeros, watching each layer,
and reports per layer:

    output shape   C x H' x W'
    params         learnable numbers in the layer (conv: C_out*C_in*kH*kW + C_out with bias)
    FLOPs          multiply-adds, counted as in the CNN-architecture lecture:
                     conv     C_out*H'*W' * C_in*kH*kW   (output elements x work per element)
                     linear   in * out
                     pooling  C*H'*W' * kH*kW            (global pooling: every input once)
                     BN, ReLU, dropout, flatten, concatenation: 0
    memory         bytes of the layer's output (4 per float32 number)

DenseNet's concatenations happen inside DenseLayer/DenseBlock (they cost no
multiply-adds) and are folded into those rows: a dense layer's norm1 row
shows the concatenated input it normalises. The model runs in eval mode
under ``no_grad``, so nothing about it changes. (A memory-efficient DenseNet
calls every layer too: its fused blocks run the textbook forward while a layer
inside has a hook, models/efficient_densenet.py.)
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..autograd import Tensor, no_grad
from ..nn import AdaptiveAvgPool2d, AvgPool2d, Conv2d, Linear, MaxPool2d


def _layer_flops(module, input_shape, output_shape):
    """Multiply-adds of one call of a leaf layer, for shapes without the batch axis."""
    if isinstance(module, Conv2d):
        kh, kw = module.kernel_size
        return int(np.prod(output_shape)) * module.in_channels * kh * kw
    if isinstance(module, Linear):
        return int(np.prod(output_shape[:-1], dtype=np.int64)) * module.in_features * module.out_features
    if isinstance(module, (MaxPool2d, AvgPool2d)):      # AvgPool2d is a MaxPool2d subclass too
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


class Summary:
    """The result of :func:`summary`. ``str(s)`` is the table; ``s.rows`` a list of
    dicts (name, type, output_shape, params, flops, memory_bytes); ``s.total_params``,
    ``s.total_flops`` (multiply-adds) and ``s.total_memory_bytes`` (every layer's output)
    are for the whole model and one image."""

    def __init__(self, model_name, input_shape, rows, total_params, total_flops, total_memory_bytes):
        self.model_name, self.input_shape = model_name, tuple(input_shape)
        self.rows = rows
        self.total_params, self.total_flops = total_params, total_flops
        self.total_memory_bytes = total_memory_bytes

    def __str__(self):
        shape = lambda s: "x".join(str(d) for d in s)          # noqa: E731
        header = ("Layer", "Type", "Output shape", "Params", "MACs", "Memory (KB)")
        cells = [(r["name"], r["type"], shape(r["output_shape"]), f"{r['params']:,}", f"{r['flops']:,}",
                  f"{r['memory_bytes'] / 1024:,.2f}") for r in self.rows]
        widths = [max(len(row[i]) for row in [header] + cells) for i in range(6)]
        fmt = lambda row: "  ".join(c.ljust(w) if i < 3 else c.rjust(w)     # noqa: E731
                                    for i, (c, w) in enumerate(zip(row, widths))).rstrip()
        rule = "-" * len(fmt(header))
        lines = [f"{self.model_name}, input {shape(self.input_shape)} (batch 1)", rule, fmt(header), rule]
        lines += [fmt(c) for c in cells]
        lines += [rule,
                  f"Total parameters:   {self.total_params:,}",
                  f"Total multiply-adds: {self.total_flops:,} ({self.total_flops / 1e9:.2f} G)",
                  f"Activation memory:  {self.total_memory_bytes / 2 ** 20:,.2f} MB "
                  f"(every layer's output, one image)"]
        return "\n".join(lines)

    __repr__ = __str__


def summary(model, input_shape, depth=None) -> Summary:
    """Run ``model`` on one all-zero image of ``input_shape`` (C, H, W) and tabulate each
    layer's output shape, parameters, multiply-adds and output memory.

    ``depth=None`` lists every leaf layer in the order they run; ``depth=d`` lists the
    modules d levels down (e.g. ``depth=2`` for DenseNet: the stem layers, each dense
    block and transition, norm5, the classifier), each with the total of what it contains.
    """
    input_shape = tuple(int(s) for s in input_shape)
    if depth is not None and (not isinstance(depth, int) or depth < 1):
        raise ValueError(f"summary: depth must be a positive integer or None, got {depth!r}")
    params = list(model.parameters())
    dtype = params[0].dtype if params else np.float32
    device = params[0].device if params else "cpu"
    x = Tensor(backend.module_for(device).zeros((1,) + input_shape, dtype=dtype))

    names = {id(m): name for name, m in model.named_modules()}
    events = []                          # (module, input shape, output) in the order calls finish
    hooks = [m.register_forward_hook(lambda m, inputs, out: events.append((m, _tensors(inputs), out)))
             for m in model.modules()]
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

    rows, pending, total_flops, total_memory = [], {}, 0, 0
    for module, inputs, out in events:
        leaf = not module._modules
        name = names.get(id(module)) or type(module).__name__      # a root that is one layer: its type
        level = 0 if module is model else name.count(".") + 1
        outs = _tensors(out)
        out_shape = outs[0].shape[1:] if len(outs) == 1 else tuple(t.shape[1:] for t in outs)
        memory = sum(t.size * t.data.itemsize for t in outs)
        flops = _layer_flops(module, inputs[0].shape[1:] if inputs else (), out_shape) if leaf else 0
        if leaf:
            total_flops += flops
            total_memory += memory
        if depth is not None and level > depth:            # fold into its ancestor at `depth`
            ancestor = ".".join(name.split(".")[:depth])
            pending[ancestor] = pending.get(ancestor, 0) + flops
            continue
        if leaf or (depth is not None and level == depth):
            rows.append({"name": name, "type": type(module).__name__, "output_shape": tuple(out_shape),
                         "params": sum(p.size for p in module.parameters()),
                         "flops": flops + pending.pop(name, 0), "memory_bytes": int(memory)})
    return Summary(type(model).__name__, input_shape, rows, sum(p.size for p in params), total_flops,
                   total_memory)
