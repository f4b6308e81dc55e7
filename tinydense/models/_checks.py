"""Checking a model's input before anything runs.

A wrong channel count or too small an image would otherwise fail deep
inside the network, after the batch-norm layers before that point had
already updated their running statistics in training mode. The models
call ``check_image_batch`` first, so such an input changes nothing.
"""
from __future__ import annotations

from ..ops.geometry import output_size


def _shrink(size, layers):
    """Follow a spatial size (h, w) through ``layers``: (h, w) at the end, or
    (name, layer, (h, w)) of the first layer whose window does not fit."""
    h, w = size
    for name, layer in layers:
        (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
        (dh, dw), ceil_mode = getattr(layer, "dilation", (1, 1)), getattr(layer, "ceil_mode", False)
        oh, ow = output_size(h, kh, sh, ph, dh, ceil_mode), output_size(w, kw, sw, pw, dw, ceil_mode)
        if oh < 1 or ow < 1:
            return name, layer, (h, w)
        h, w = oh, ow
    return h, w


def check_image_batch(model, x, in_channels, layers, last_batch_norm=-1):
    """Raise ValueError, naming the layer and the shapes, unless ``x`` is a batch
    (N, in_channels, H, W) big enough for every layer in ``layers``: the
    (qualified name, Conv2d or pooling module) pairs that change the image size,
    in the order the image passes through them. In training, the last batch norm,
    which sees the image as it leaves ``layers[last_batch_norm]``, needs more than
    one value per channel; ``last_batch_norm=None`` for a model without batch norm."""
    shape = tuple(x.shape)
    model_name = type(model).__name__
    if len(shape) != 4:
        raise ValueError(f"{model_name} expects a batch of images of shape (N, {in_channels}, H, W), "
                         f"got shape {shape}")
    if shape[1] != in_channels:
        name, layer = layers[0]
        raise ValueError(f"{model_name}: {name} ({type(layer).__name__}) expects {in_channels} input "
                         f"channels, got input of shape {shape}")
    end = _shrink(shape[2:], layers)
    if len(end) == 3:
        name, layer, (h, w) = end
        smallest = next(s for s in range(1, 4096) if len(_shrink((s, s), layers)) == 2)
        raise ValueError(f"{model_name}: input of shape {shape} is too small: the image is {h}x{w} when "
                         f"it reaches {name} ({type(layer).__name__}, kernel {layer.kernel_size}, "
                         f"padding {layer.padding}); this model needs images of at least "
                         f"{smallest}x{smallest}")
    if last_batch_norm is None or not model.training:
        return
    last = last_batch_norm % len(layers)
    h, w = _shrink(shape[2:], layers[:last + 1])
    if shape[0] * h * w < 2:
        raise ValueError(f"{model_name}: input of shape {shape} leaves a single value per channel "
                         f"({h}x{w} after {layers[last][0]}, batch of {shape[0]}); batch norm in training "
                         f"needs more: use a bigger batch or image, or model.eval()")
