"""tinydense: a from-scratch deep-learning framework (NumPy, optional CuPy)
built to teach and train DenseNet."""
from . import backend, cuda, functional
from . import data
from . import optim
from . import models, nn
from .autograd import Function, Tensor, is_grad_enabled, no_grad, tensor
from .backend import manual_seed
from .checkpoint import load, save
from .pth import load_pth
from .tools.gradcheck import GradcheckError, gradcheck
from .tools.summary import summary

__version__ = "0.1.0"
__all__ = ["Function", "GradcheckError", "Tensor", "backend", "data", "functional", "gradcheck",
           "is_grad_enabled", "load", "load_pth", "manual_seed", "models", "nn", "no_grad", "optim", "save", "summary", "tensor"]
