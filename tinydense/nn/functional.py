"""``torch.nn.functional`` under PyTorch's module name: the same functions as
``tinydense.functional`` (one definition each, in tinydense/ops/)."""
from ..functional import *  # noqa: F401,F403
from ..functional import __all__  # noqa: F401
