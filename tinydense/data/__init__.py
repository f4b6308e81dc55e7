"""Data: CIFAR-10/100 files, their download, preprocessing and batching."""
from .cifar import CIFAR10, CIFAR100, DataNotFoundError, ImageDataset, default_data_dir, load_cifar, read_batch
from .download import DownloadError, download_cifar, safe_extract
from .loader import DataLoader
from .specs import SPECS
from .transforms import crop_flip, draw_crop_flip, normalize, random_crop_flip

__all__ = ["CIFAR10", "CIFAR100", "SPECS", "DataLoader", "DataNotFoundError", "DownloadError",
           "ImageDataset", "crop_flip", "default_data_dir", "download_cifar", "draw_crop_flip",
           "load_cifar", "normalize", "random_crop_flip", "read_batch", "safe_extract"]
