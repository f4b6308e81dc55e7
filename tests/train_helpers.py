"""Helpers for the data, training and CLI tests: small data sets in the official
CIFAR "python version" layout, and a byte-for-byte comparison of checkpoints."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np

from tinydense.data import SPECS


REAL_DATA_REASON = ("needs the real CIFAR-10 images: set TINYDENSE_DATA to the directory that holds "
                    "cifar-10-batches-py/ (the course's subset or the full data set)")


def real_cifar_dir():
    """``$TINYDENSE_DATA`` if set (the real images), else None."""
    return os.environ.get("TINYDENSE_DATA") or None


def write_cifar(root, name="cifar10", per_file=1017, test_size=None, seed=0, learnable=False):
    """Create ``root/<folder>/`` with every batch file of ``name`` holding
    ``per_file`` random images (``test_size`` in the test file, default the
    same) and a meta file. Returns the (images, labels) written, train then
    test, as the loader should read them.

    learnable: the class is written into the image (a bright square whose
    position depends on the label), so a small model can learn it quickly."""
    spec = SPECS[name]
    folder = Path(root) / spec.folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    num_classes = spec.num_classes
    written = {}
    for split, files in (("train", spec.train_files), ("test", spec.test_files)):
        n = per_file if split == "train" or test_size is None else test_size
        parts = []
        for f in files:
            images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
            labels = rng.integers(0, num_classes, size=n)
            if learnable:
                images //= 4
                for k in range(num_classes):   # test data, not the training path: a loop is fine
                    r, c = divmod(k % 16, 4)
                    images[labels == k, k % 3, 8 * r:8 * r + 8, 8 * c:8 * c + 8] = 255
            batch = {b"batch_label": f"{f} (test file)".encode(), b"data": images.reshape(n, -1)}
            if name == "cifar10":
                batch[b"labels"] = [int(v) for v in labels]
            else:
                batch[b"fine_labels"] = [int(v) for v in labels]
                batch[b"coarse_labels"] = [int(v) // 5 for v in labels]
            with open(folder / f, "wb") as fh:
                pickle.dump(batch, fh)
            parts.append((images, labels))
        written[split] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    meta = ({b"label_names": [f"class{i}".encode() for i in range(10)], b"num_vis": 3072}
            if name == "cifar10" else
            {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
             b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]})
    with open(folder / spec.meta_file, "wb") as fh:
        pickle.dump(meta, fh)
    return written


def _plain_values(npz):
    """The JSON entry __tinydense__ (the plain values) without the timings of the
    history's rows, which differ from run to run."""
    manifest = json.loads(npz["__tinydense__"].tobytes().decode())
    for row in manifest["tree"]["dict"].get("history", {"list": []})["list"]:
        for timing in ("seconds", "images_per_s"):
            row["dict"].pop(timing)
    return manifest


def same_files(a, b):
    """Two checkpoints hold the same entries, each with the same dtype, shape and bytes,
    and the same plain values (all but the timings of the history)."""
    with np.load(a, allow_pickle=False) as fa, np.load(b, allow_pickle=False) as fb:
        assert sorted(fa.files) == sorted(fb.files)
        different = [k for k in fa.files if k != "__tinydense__" and (
            fa[k].dtype != fb[k].dtype or fa[k].shape != fb[k].shape or fa[k].tobytes() != fb[k].tobytes())]
        assert _plain_values(fa) == _plain_values(fb), "the plain values differ"
    assert not different, f"arrays differ: {different}"
    return len(fa.files)
