"""The geometry of a sliding window, shared by convolution (ops/conv.py), pooling
(ops/pool.py), the layers that hold their settings (nn/layers.py) and the models'
input check (models/_checks.py).

Along one axis, a window of ``kernel`` taps ``dilation`` apart moves ``stride``
steps over an input of ``size`` values with ``padding`` added on both sides:

    out = (size + 2*padding - dilation*(kernel - 1) - 1) // stride + 1

(the lecture's (W - K + 2P) / S + 1 when dilation = 1). Pooling's ceil mode
rounds up instead, keeping a last, partial window only if it starts inside the
input or the left padding.
"""
from __future__ import annotations

import numbers


def pair(value, name):
    """An int or a pair of ints as an (h, w) pair of ints; TypeError naming ``name`` otherwise."""
    if isinstance(value, numbers.Integral):
        value = (int(value), int(value))
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, numbers.Integral) for v in value)):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    return int(value[0]), int(value[1])


def output_size(size, kernel, stride, padding, dilation=1, ceil_mode=False):
    """Output length along one axis (the module docstring's rule, PyTorch's for convolution
    and pooling), rounded up with ``ceil_mode`` except that the last window must start
    inside the input or the left padding. Below 1 where no window fits."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and out > 0 and (out - 1) * stride >= size + padding:
        out -= 1                      # that window would start in the right padding: drop it
    return out


def window_settings(op, kernel_size, stride, padding, dilation):
    """kernel_size, stride, padding and dilation (ints or pairs) as four (h, w) pairs,
    checked: ValueError naming ``op`` and the values unless kernel_size, stride and
    dilation are >= 1 and padding >= 0."""
    (kh, kw), (sh, sw) = pair(kernel_size, "kernel_size"), pair(stride, "stride")
    (ph, pw), (dh, dw) = pair(padding, "padding"), pair(dilation, "dilation")
    if min(kh, kw, sh, sw, dh, dw) < 1 or min(ph, pw) < 0:
        raise ValueError(f"{op} needs kernel_size, stride, dilation >= 1 and padding >= 0, got "
                         f"kernel_size={kernel_size}, stride={stride}, padding={padding}, dilation={dilation}")
    return (kh, kw), (sh, sw), (ph, pw), (dh, dw)


def window_geometry(op, shape, kernel_size, stride, padding, dilation=1, ceil_mode=False):
    """The settings of a window sliding over an input of ``shape`` (N, C, H, W), checked
    (``window_settings``, and a window must fit the padded input): returns
    ((kh, kw), (sh, sw), (ph, pw), (dh, dw), (OH, OW)), each an (h, w) pair of ints."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = window_settings(op, kernel_size, stride, padding, dilation)
    H, W = shape[2:]
    OH = output_size(H, kh, sh, ph, dh, ceil_mode)
    OW = output_size(W, kw, sw, pw, dw, ceil_mode)
    if OH < 1 or OW < 1:
        spread = (f" (dilation {dh},{dw} spreads it to {dh * (kh - 1) + 1}x{dw * (kw - 1) + 1})"
                  if (dh, dw) != (1, 1) else "")
        raise ValueError(f"{op}: kernel {kh}x{kw}{spread} is larger than the padded input "
                         f"{H + 2 * ph}x{W + 2 * pw} (input {H}x{W} of shape {tuple(shape)}, padding {ph},{pw})")
    return (kh, kw), (sh, sw), (ph, pw), (dh, dw), (OH, OW)
