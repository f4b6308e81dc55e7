"""Checkpoints: ``save(state, path)`` and ``load(path)``.

A checkpoint is a plain ``.npz`` file (a zip of ``.npy`` arrays) that
``numpy.load(path, allow_pickle=False)`` can open: no pickle, so loading
one can never run code. ``state`` is a nest of dicts (string keys), lists
and tuples whose leaves are arrays (NumPy, CuPy or Tensors) or plain
values (None, bool, int, float, str), e.g.

    tinydense.save({"model": model.state_dict(), "epoch": 12, "lr": 0.01}, "ckpt.npz")

Each array is one entry named by its path ("model/features.conv0.weight");
one more entry, ``__tinydense__``, holds the nesting and the plain values
as JSON. The file is written atomically (:func:`tinydense.files.write_atomic`):
a crash or a full disk never leaves a truncated checkpoint under the real name
(and never destroys the previous one).
"""
from __future__ import annotations

import json
import numbers
import os
import zipfile

import numpy as np

from . import backend
from .autograd import Tensor
from .files import write_atomic

FORMAT = "tinydense-checkpoint"
VERSION = 1
MANIFEST = "__tinydense__"


def _encode(value, path, arrays):
    """A JSON description of ``value``; arrays are put in ``arrays`` under their path."""
    where = path or "the top level"
    if isinstance(value, Tensor):
        value = value.data
    if isinstance(value, np.generic):
        value = value.item()
    if hasattr(value, "shape") and hasattr(value, "dtype"):          # NumPy or CuPy array
        array = backend.to_numpy(value)
        if array.dtype.hasobject:
            raise TypeError(f"save: {where} is an array of Python objects (dtype object); "
                            f"a checkpoint holds numeric arrays only")
        name = path or "array"
        while name in arrays or name == MANIFEST:
            name += "_"
        arrays[name] = array
        return {"array": name}
    if value is None or isinstance(value, (bool, str)):
        return {"value": value}
    if isinstance(value, numbers.Integral):
        return {"value": int(value)}
    if isinstance(value, numbers.Real):
        return {"value": float(value)}
    if isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise TypeError(f"save: keys of {where} must be strings, got {bad[0]!r} "
                            f"({type(bad[0]).__name__})")
        return {"dict": {k: _encode(v, f"{path}/{k}" if path else k, arrays) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        kind = "list" if isinstance(value, list) else "tuple"
        return {kind: [_encode(v, f"{path}/{i}" if path else str(i), arrays) for i, v in enumerate(value)]}
    hint = "; save model.state_dict() instead" if hasattr(value, "state_dict") else ""
    raise TypeError(f"save: cannot store {where} of type {type(value).__name__} in a checkpoint "
                    f"(arrays, dicts, lists, tuples, numbers, strings and None only){hint}")


def _decode(node, arrays, path=""):
    if not isinstance(node, dict) or len(node) != 1:
        raise ValueError(f"malformed checkpoint description at {path or 'the top level'}: {node!r}")
    (kind, body), = node.items()
    if kind == "array":
        if body not in arrays:
            raise ValueError(f"the checkpoint names an array {body!r} that it does not contain")
        return arrays[body]
    if kind == "value":
        return body
    if kind == "dict":
        return {k: _decode(v, arrays, f"{path}/{k}") for k, v in body.items()}
    if kind in ("list", "tuple"):
        items = [_decode(v, arrays, f"{path}/{i}") for i, v in enumerate(body)]
        return items if kind == "list" else tuple(items)
    raise ValueError(f"malformed checkpoint description at {path or 'the top level'}: unknown kind {kind!r}")


def save(state, path) -> None:
    """Write ``state`` (dicts, lists, tuples of arrays and plain values) to the .npz
    file ``path``, atomically: the file appears complete under its name or not at all."""
    path = os.fspath(path)
    arrays = {}
    tree = _encode(state, "", arrays)          # every TypeError is raised before a file is touched
    manifest = json.dumps({"format": FORMAT, "version": VERSION, "tree": tree})

    def write(f):
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            entries = [(MANIFEST, np.frombuffer(manifest.encode("utf-8"), dtype=np.uint8))]
            for name, array in entries + list(arrays.items()):
                with zf.open(name + ".npy", "w", force_zip64=True) as entry:
                    np.lib.format.write_array(entry, array, allow_pickle=False)
    write_atomic(path, write)


WHAT_A_CHECKPOINT_IS = (f"a tinydense checkpoint is an .npz archive (a zip of numeric .npy arrays with a "
                        f"{MANIFEST} entry) written by tinydense.save or `tinydense train`")


def load(path):
    """Read a checkpoint written by :func:`save`: the same nesting, with NumPy arrays.
    Everything is read and checked before anything is returned. A file that is not a
    checkpoint gets our own ValueError: NumPy's messages for such files advise loading
    them with pickle, which a checkpoint never needs and tinydense never does."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint file at {path!r}")
    with open(path, "rb") as f:
        head = f.read(6)
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):      # the zip headers np.load looks for
        found = ("it holds a single array (an .npy file), not an .npz archive" if head == b"\x93NUMPY"
                 else "it is not a zip archive")
        raise ValueError(f"{path} is not a tinydense checkpoint: {found}; {WHAT_A_CHECKPOINT_IS}")
    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path} is not a readable tinydense checkpoint (corrupt or truncated file: "
                         f"{error})") from error
    with npz:
        if MANIFEST not in npz.files:
            raise ValueError(f"{path} is an .npz file but not a tinydense checkpoint (no {MANIFEST} entry; "
                             f"its entries: {', '.join(npz.files[:5])}{' ...' if len(npz.files) > 5 else ''})")
        arrays = {}
        for name in npz.files:
            try:
                arrays[name] = npz[name]
            except ValueError:                   # NumPy's text here would advise allow_pickle=True
                raise ValueError(f"{path} is not a valid tinydense checkpoint: its entry {name!r} is not a "
                                 f"readable numeric array (damaged, or Python objects, which tinydense never "
                                 f"unpickles); {WHAT_A_CHECKPOINT_IS}") from None
            except (OSError, EOFError, zipfile.BadZipFile, KeyError) as error:
                raise ValueError(f"{path} is a damaged tinydense checkpoint (corrupt or truncated: "
                                 f"{error})") from error
        try:
            manifest = json.loads(arrays.pop(MANIFEST).tobytes().decode("utf-8"))
        except ValueError as error:          # not JSON, not UTF-8
            raise ValueError(f"{path} is a damaged tinydense checkpoint (its {MANIFEST} entry: {error})") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not a tinydense checkpoint (its {MANIFEST} entry is not one)")
    if manifest.get("version") != VERSION:
        raise ValueError(f"{path} is a tinydense checkpoint of version {manifest.get('version')!r}; "
                         f"this tinydense reads version {VERSION}")
    return _decode(manifest.get("tree"), arrays)
