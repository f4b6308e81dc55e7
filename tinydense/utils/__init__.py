"""PyTorch's ``torch.utils``: ``tinydense.utils.data`` (datasets and the per-sample DataLoader)."""
from . import data

__all__ = ["data"]
