"""tinydense: a from-scratch deep-learning framework (NumPy, optional CuPy)
built to teach and train DenseNet."""
import builtins

from . import backend, cuda, functional
from . import data
from . import optim
from . import models, nn
from . import autograd, utils, vision
from .autograd import Function, Tensor, enable_grad, is_grad_enabled, no_grad, tensor
from .backend import manual_seed
from .torch_api import *  # noqa: F401,F403  (PyTorch's top-level functions and dtypes; save, load)
from .torch_api import __all__ as _torch_names
from .pth import load_pth
from .tools.gradcheck import GradcheckError, gradcheck
from .tools.summary import summary

float = float32      # noqa: A001  torch.float and torch.int (module attributes; Python's float and
int = int32          # noqa: A001  int are untouched everywhere else)

__version__ = "0.1.0"
# (``from tinydense import *`` leaves out the names that would hide Python's: max, min, sum, float ...)
__all__ = ["Function", "GradcheckError", "Tensor", "autograd", "backend", "data", "enable_grad", "functional",
           "gradcheck", "is_grad_enabled", "load_pth", "manual_seed", "models", "nn", "no_grad", "optim", "summary",
           "tensor", "utils", "vision"] + [name for name in _torch_names if not hasattr(builtins, name)]
