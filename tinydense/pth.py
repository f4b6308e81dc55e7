"""Reading PyTorch weight files (``.pth``) without PyTorch.

``torch.save(model.state_dict(), "w.pth")`` writes a zip archive:

    archive/data.pkl      a pickle of the dict name -> tensor
    archive/data/0, 1 ..  the raw bytes of each storage (the flat buffer behind tensors)
    archive/byteorder     "little" (newer versions)

(files from PyTorch before 1.6, like torchvision's DenseNet weights, use the
older "legacy" layout: several pickles in a row, then every storage as an
8-byte element count followed by its bytes). In the pickle each tensor is a
call

    torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)

where ``storage`` is a "persistent id" ('storage', torch.FloatStorage, key,
location, numel) that the loader resolves to the bytes in data/<key>.

A pickle may call any function it names, so ``pickle.load`` on a file from
the internet can run anything (e.g. ``os.system``). We unpickle with a
``RestrictedUnpickler`` that knows only the names above: it never imports
torch, and any other name stops the load before anything is called. Our
stand-ins for the rebuild functions only record their arguments; the
arrays are cut out of the storages afterwards, once every tensor's shape,
strides and offset have been checked against its storage's real size (so a
few crafted bytes can never ask for terabytes). In a zip archive every member is
bounded before it is inflated: the pickle by ``PICKLE_LIMIT``, a storage by the
bytes its tensors read (a 2 MB archive cannot inflate to gigabytes that no tensor
needs).
"""
from __future__ import annotations

import io
import math
import os
import pickle
import re
import tarfile
import zipfile
from collections import OrderedDict

import numpy as np

from .safe_pickle import RestrictedUnpickler

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C        # the first pickle of a pre-1.6 .pth file
LEGACY_PROTOCOL = 1001
PICKLE_LIMIT = 64 * 2 ** 20                  # a state_dict's pickle takes ~200 bytes a tensor: 64 MiB is plenty
BYTEORDER_LIMIT = 16

# torch storage class -> NumPy dtype ("bfloat16" has none: it is widened to float32)
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class UnsafePickleError(pickle.UnpicklingError):
    """The file asked to load something a weights file never needs; nothing was run."""


class _StorageType:
    """Stands in for ``torch.FloatStorage`` and friends: just a dtype."""

    def __init__(self, name, dtype):
        self.name, self.dtype = name, dtype

    def itemsize(self):
        return 2 if self.dtype == "bfloat16" else np.dtype(self.dtype).itemsize


class _Storage:
    """One flat buffer; ``values`` (a 1-D array) is filled once its bytes are read."""

    def __init__(self, key, storage_type, numel):
        self.key, self.type, self.numel = key, storage_type, numel
        self.values = None

    def check_size(self, nbytes):
        """Refuse ``nbytes`` that cannot be this storage (called before they are read, too)."""
        if nbytes != self.numel * self.type.itemsize():
            raise ValueError(f"storage {self.key} has {nbytes} bytes, expected {self.numel} "
                             f"{self.type.name} elements")

    def fill(self, raw: bytes, byteorder: str, numel=None):
        """Decode ``raw``: the whole storage, or its first ``numel`` elements (all its tensors read)."""
        if numel is None:
            self.check_size(len(raw))
        elif len(raw) != numel * self.type.itemsize():
            raise ValueError(f"storage {self.key} ends after {len(raw)} bytes, its tensors read "
                             f"{numel} {self.type.name} elements")
        order = "<" if byteorder == "little" else ">"
        if self.type.dtype == "bfloat16":     # the top half of a float32: shift it back into place
            bits = np.frombuffer(raw, dtype=order + "u2").astype(np.uint32) << 16
            self.values = bits.view(np.float32)
        else:
            self.values = np.frombuffer(raw, dtype=np.dtype(self.type.dtype).newbyteorder(order))


class _TensorRef:
    """What ``_rebuild_tensor_v2`` was called with; turned into an array by ``_materialize``."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _rebuild_tensor(storage, storage_offset, size, stride, *ignored):
    # torch._utils._rebuild_tensor (before PyTorch 0.4) and _rebuild_tensor_v2, whose extra
    # arguments (requires_grad, backward hooks, metadata) mean nothing for stored weights
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *ignored):
    # torch._utils._rebuild_parameter(data, requires_grad, backward_hooks): the tensor itself
    return data


def _allowed_globals():
    allowed = {
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }
    for name, dtype in _STORAGE_DTYPES.items():
        for module in ("torch", "torch.cuda"):            # weights saved from a GPU name torch.cuda.*
            allowed[(module, name)] = _StorageType(name, dtype)
    return allowed


class _PthUnpickler(RestrictedUnpickler):
    """Restricted unpickling of a .pth pickle; storages are collected in ``storages``."""

    def __init__(self, file, storages, legacy):
        super().__init__(file, _allowed_globals())
        self.storages, self.legacy = storages, legacy

    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except pickle.UnpicklingError:
            raise UnsafePickleError(
                f"refused to load {module}.{name}: a PyTorch weights file needs only tensors "
                f"(torch._utils._rebuild_tensor_v2, torch.*Storage, collections.OrderedDict); this "
                f"one asks for more, so it was not loaded and nothing in it was run") from None

    def persistent_load(self, pid):
        fields = 6 if self.legacy else 5        # legacy ids end with view metadata
        if not (isinstance(pid, tuple) and len(pid) == fields and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        storage_type, key, numel = pid[1], pid[2], pid[4]
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str) \
                or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"malformed storage reference {pid!r}")
        if self.legacy and pid[5] is not None:
            raise pickle.UnpicklingError("storage views (PyTorch < 0.4 files with view metadata) "
                                         "are not supported")
        storage = self.storages.setdefault(key, _Storage(key, storage_type, numel))
        if storage.type is not storage_type or storage.numel != numel:
            raise pickle.UnpicklingError(f"storage {key} is referenced with two different types or sizes")
        return storage


def _read_bounded(zf, name, limit):
    """Member ``name`` of the archive, refused before it is inflated if it declares more than ``limit``
    bytes (and never inflated past ``limit``, should its header lie)."""
    declared = zf.getinfo(name).file_size
    if declared > limit:
        raise ValueError(f"{name} declares {declared} bytes uncompressed, more than the {limit} it may "
                         f"have (a zip bomb?)")
    with zf.open(name) as member:
        data = member.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{name} inflates past the {limit} bytes it may have (a zip bomb?)")
    return data


def _elements_read(state):
    """storage key -> how many of its first elements the (checked) tensors of ``state`` read."""
    needed = {}
    for ref in state.values():
        if math.prod(ref.size):
            last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
            needed[ref.storage.key] = max(needed.get(ref.storage.key, 0), last + 1)
    return needed


def _read_zip(path):
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") <= 1]
        if len(pickles) != 1:
            raise ValueError("a zip file without the one data.pkl a PyTorch file has")
        prefix = pickles[0][:-len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = _read_bounded(zf, prefix + "byteorder", BYTEORDER_LIMIT).decode("ascii").strip()
        storages = {}
        raw = _read_bounded(zf, pickles[0], PICKLE_LIMIT)
        state = _state_refs(_PthUnpickler(io.BytesIO(raw), storages, legacy=False).load())
        needed = _elements_read(state)
        for key, storage in storages.items():
            if f"{prefix}data/{key}" not in names:
                raise ValueError(f"storage {key} is missing from the archive")
            storage.check_size(zf.getinfo(f"{prefix}data/{key}").file_size)
            count = needed.get(key, 0)          # inflate only the bytes a tensor reads
            with zf.open(f"{prefix}data/{key}") as member:       # its size was checked: read a prefix
                storage.fill(member.read(count * storage.type.itemsize()), byteorder, numel=count)
    return state


def _read_legacy(path):
    with open(path, "rb") as f:
        magic = _PthUnpickler(f, {}, legacy=True).load()
        if magic != LEGACY_MAGIC:
            raise ValueError("neither a zip archive nor a legacy PyTorch file (no magic number)")
        protocol = _PthUnpickler(f, {}, legacy=True).load()
        sys_info = _PthUnpickler(f, {}, legacy=True).load()
        if protocol != LEGACY_PROTOCOL or not isinstance(sys_info, dict):
            raise ValueError(f"unsupported legacy protocol {protocol!r}")
        byteorder = "little" if sys_info.get("little_endian", True) else "big"
        storages = {}
        obj = _PthUnpickler(f, storages, legacy=True).load()
        keys = _PthUnpickler(f, {}, legacy=True).load()
        if not isinstance(keys, list) or sorted(keys) != sorted(storages):
            raise ValueError("the list of storages does not match the tensors")
        for key in keys:
            storage = storages[key]
            header = f.read(8)
            count = int.from_bytes(header, byteorder) if len(header) == 8 else -1
            if count != storage.numel:
                raise ValueError(f"storage {key}: expected {storage.numel} elements, the file says "
                                 f"{count if count >= 0 else 'nothing (truncated)'}")
            left = os.fstat(f.fileno()).st_size - f.tell()
            if count * storage.type.itemsize() > left:      # refused before a huge read is attempted
                raise ValueError(f"storage {key}: {count} {storage.type.name} elements need "
                                 f"{count * storage.type.itemsize()} bytes, the file has {left} left")
            storage.fill(f.read(count * storage.type.itemsize()), byteorder)
    return _state_refs(obj)


MAX_DIMS = 64                                  # NumPy's limit on the number of dimensions


def _check_tensor(ref, name):
    """Check tensor ``name`` against its storage before anything is allocated: its shape,
    strides and offset must be non-negative integers, every element it reads must lie inside
    the storage, and it may not have more elements than the storage holds (a stride of 0
    repeats elements; a weights file never needs that, and a few bytes could ask for TiB)."""
    storage, offset, size, stride = ref.storage, ref.offset, ref.size, ref.stride
    ints = lambda t: isinstance(t, tuple) and all(type(v) is int and v >= 0 for v in t)  # noqa: E731
    if not (isinstance(storage, _Storage) and type(offset) is int and offset >= 0
            and ints(size) and ints(stride) and len(size) == len(stride)):
        raise ValueError(f"tensor {name!r} has a malformed description (shape {size!r}, strides "
                         f"{stride!r}, offset {offset!r}: non-negative integers expected, one stride per axis)")
    held = storage.numel
    where = f"shape {size}, strides {stride}, offset {offset}; its storage {storage.key} holds {held} elements"
    if len(size) > MAX_DIMS:
        raise ValueError(f"tensor {name!r} has {len(size)} dimensions, more than the {MAX_DIMS} NumPy supports")
    numel = math.prod(size)                      # a Python int: exact, never overflows
    if numel > held:
        raise ValueError(f"tensor {name!r} has {numel} elements, more than its storage holds ({where})")
    if numel == 0 and math.prod(n for n in size if n) * storage.type.itemsize() >= 2 ** 63:
        raise ValueError(f"tensor {name!r} is empty but has a shape too large for any array ({where})")
    if offset > held:
        raise ValueError(f"tensor {name!r} starts past the end of its storage ({where})")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if numel and last >= held:
        raise ValueError(f"tensor {name!r} (shape {size}) reads past the end of its storage (strides {stride}, "
                         f"offset {offset}: its last element is number {last}; its storage {storage.key} "
                         f"holds {held} elements)")


def _state_refs(obj):
    """The dict name -> tensor a file holds (a checkpoint's ``state_dict``), every tensor checked
    against its storage before any bytes are read or arrays built."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"it holds a {type(obj).__name__}, not a state_dict (a dict name -> tensor)")
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, _TensorRef):
            raise ValueError(f"entry {key!r} is a {type(value).__name__}, not a tensor; "
                             f"expected a state_dict (a dict name -> tensor)")
        _check_tensor(value, key)
    return obj


def _materialize(ref):
    """Cut a tensor (checked by ``_check_tensor``) out of its storage as a new array."""
    data, offset, size, stride = ref.storage.values, ref.offset, ref.size, ref.stride
    if math.prod(size) == 0:
        return np.zeros(size, dtype=data.dtype.newbyteorder("="))
    index = np.asarray(offset)
    for n, s in zip(size, stride):               # index[i, j, ...] = offset + i*s0 + j*s1 + ...
        index = index[..., None] + np.arange(n) * (s if n > 1 else 0)    # (a length-1 axis's stride is unused)
    return np.asarray(data[index], dtype=data.dtype.newbyteorder("="))   # a new array (0-d too)


_OLD_DENSELAYER_KEY = re.compile(
    r"^(?P<layer>.*denselayer\d+\.(?:norm|relu|conv))\.(?P<num>[12])\.(?P<what>weight|bias|running_mean|running_var)$")


def _upgrade_old_keys(state):
    """Two things PyTorch does when it loads old files: torchvision renames the dense layers'
    "norm.1"/"conv.2" keys (dots were once allowed in module names) to "norm1"/"conv2", and
    batch norm adds a num_batches_tracked of 0 where the file (PyTorch < 0.4.1) has none."""
    out = OrderedDict()
    for key, value in state.items():
        m = _OLD_DENSELAYER_KEY.match(key)
        key = f"{m['layer']}{m['num']}.{m['what']}" if m else key
        out[key] = value
        if key.endswith(".running_var"):
            tracked = key[:-len("running_var")] + "num_batches_tracked"
            if tracked not in state:
                out[tracked] = np.array(0, dtype=np.int64)
    return out


def load_pth(path):
    """Read a PyTorch state_dict file into an ordered dict name -> NumPy array, without
    PyTorch and without running anything the file contains.

    Load it into the matching model with ``model.load_state_dict(load_pth(path))``; e.g.
    torchvision's ``densenet121-a639ec97.pth`` into ``tinydense.models.densenet121()``.
    Old torchvision DenseNet key names ("norm.1") are renamed and missing batch-norm
    ``num_batches_tracked`` entries added, as PyTorch does. A file holding
    ``{"state_dict": ...}`` (a training checkpoint) gives that inner dict.

    Raises FileNotFoundError, UnsafePickleError (a pickle that asks for anything but
    tensors: refused before anything runs) or ValueError (not a .pth file, truncated,
    corrupt, or not a dict of tensors).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no .pth file at {path!r}")
    try:
        if zipfile.is_zipfile(path):
            obj = _read_zip(path)
        elif tarfile.is_tarfile(path):
            raise ValueError("a tar archive: the PyTorch < 0.1.10 format is not supported")
        else:
            obj = _read_legacy(path)
        state = OrderedDict((key, _materialize(value)) for key, value in obj.items())
    except UnsafePickleError as error:
        raise UnsafePickleError(f"{path}: {error}") from None
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, TypeError, KeyError,
            IndexError, AttributeError, UnicodeDecodeError, OverflowError) as error:
        raise ValueError(f"{path} is not a readable PyTorch .pth file ({type(error).__name__}: "
                         f"{error})") from error
    return _upgrade_old_keys(state)
