"""The ops as functions, PyTorch style: ``import tinydense.functional as F``
(also importable as ``tinydense.nn.functional``, PyTorch's name).

Each is defined, with its backward pass, in ``tinydense/ops/``.
"""
from .ops.activation import relu
from .ops.conv import conv2d
from .ops.dropout import dropout
from .ops.linear import linear
from .ops.loss import log_softmax
from .ops.losses import cross_entropy, mse_loss, nll_loss
from .ops.norm import batch_norm
from .ops.pad import pad
from .ops.pool import adaptive_avg_pool2d, adaptive_max_pool2d, avg_pool2d, max_pool2d
from .ops.shape import cat, flatten
from .ops.softmax import softmax

__all__ = ["adaptive_avg_pool2d", "adaptive_max_pool2d", "avg_pool2d", "batch_norm", "cat", "conv2d", "cross_entropy",
           "dropout", "flatten", "linear", "log_softmax", "max_pool2d", "mse_loss", "nll_loss", "pad", "relu",
           "softmax"]
