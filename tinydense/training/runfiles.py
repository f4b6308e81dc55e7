"""The files of a run besides its lock: config.json, metrics.csv and the checkpoints, written.

Every write is atomic (:func:`tinydense.files.write_atomic`). A write that fails
(a full disk, a folder made read-only, a quota) raises :class:`RunWriteError`
naming the file, what is intact and how to go on, instead of a bare
``[Errno 28] No space left on device``.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from ..checkpoint import save as save_checkpoint_file
from ..files import write_atomic

METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds", "images_per_s")
VAL_COLUMNS = ("val_loss", "val_acc")            # after METRIC_COLUMNS in a run with a validation split


class RunWriteError(OSError):
    """A file of the run could not be written; the message says what is intact."""


def _written(path, write, intact) -> None:
    """``write()``, its OSError turned into a RunWriteError naming ``path``."""
    try:
        write()
    except OSError as e:
        reason = e.strerror or str(e)
        raise RunWriteError(f"could not write {path}: {reason} (the previous {Path(path).name}, if any, is "
                            f"intact); {intact}") from e


def save(state, path, intact="") -> None:
    """A checkpoint of the run (:func:`tinydense.save`)."""
    _written(path, lambda: save_checkpoint_file(state, path), intact)


def write_config(path, config, data_dir, intact="", **extra) -> None:
    """config.json: the configuration, the data folder it read (resolved: a resume from
    another working directory finds it) and ``extra`` facts (e.g. the BLAS threads)."""
    record = dict(config, data_dir=str(Path(data_dir).resolve()), **extra)
    _written(path, lambda: write_atomic(path, json.dumps(record, indent=2) + "\n"), intact)


def read_record(run_dir) -> dict:
    """The config.json of the run in ``run_dir`` as written (with the data folder and the BLAS
    threads it used); {} if there is none or it cannot be read."""
    try:
        record = json.loads((Path(run_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def read_metrics(path) -> list:
    """The rows of metrics.csv (epoch an int, the rest floats); [] if there is none."""
    if not Path(path).is_file():
        return []
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]


def write_metrics(path, history, validation=False, intact="") -> None:
    """metrics.csv from ``history`` (one dict per epoch, the one in last.npz)."""
    columns = METRIC_COLUMNS + (VAL_COLUMNS if validation else ())
    lines = [",".join(columns)] + [",".join(str(row[c]) for c in columns) for row in history]
    _written(path, lambda: write_atomic(path, "\n".join(lines) + "\n"), intact)
