"""A run's checkpoints: what ``last.npz`` and ``best.npz`` hold, written and read back side by side.

:func:`run_state` is what a :class:`~tinydense.training.Trainer` saves, a nest of
plain values and arrays for :func:`tinydense.save`; :func:`restore` puts it back
into a trainer. Reading a checkpoint (:func:`read_checkpoint`) checks its format
and configuration, and :func:`load_model` that the model's arrays fit the model
the configuration describes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import backend
from ..autograd import Tensor
from ..checkpoint import load as load_checkpoint_file
from . import runfiles
from ..text import listing
from .config import base_lr, build_model, is_int, make_config
from .size import check_fits

CHECKPOINT_FORMAT = "tinydense-run-1"


def run_state(trainer, loader_state) -> dict:
    """Everything ``trainer``'s run needs to continue, for :func:`tinydense.save`:

        format, config, epoch (completed), batch (done in the next epoch),
        best_acc and best_epoch (of the selected model, see ``select``),
        history (one dict per completed epoch: the rows of metrics.csv),
        data {mean, std}, partial (the running sums of a half-done epoch),
        model, optimizer, scheduler,
        rng {cpu: tinydense's generator, loader: the loader's at the epoch's start}
    """
    return {"format": CHECKPOINT_FORMAT, "config": dict(trainer.config),
            "epoch": trainer.epoch, "batch": trainer.batch, "best_acc": trainer.best_acc,
            "best_epoch": trainer.best_epoch, "history": [dict(row) for row in trainer.history],
            "data": {"mean": trainer.mean, "std": trainer.std},
            "partial": dict(trainer.partial),
            "model": trainer.model.state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.scheduler.state_dict(),
            "rng": {"cpu": backend.get_rng_state(), "loader": loader_state["generator"]}}


def restore(trainer, ck) -> None:
    """Let ``trainer`` continue from checkpoint ``ck`` (read by :func:`read_checkpoint`):
    the reverse of :func:`run_state`, every value checked against the run set up."""
    try:
        trainer.model.load_state_dict(ck["model"])
        trainer.optimizer.load_state_dict(ck["optimizer"])
        trainer.scheduler.load_state_dict(ck["scheduler"])
        trainer.epoch, trainer.batch = int(ck["epoch"]), int(ck["batch"])
        trainer.best_acc = float(ck["best_acc"])
        trainer.partial = {k: ck["partial"][k] for k in ("loss_sum", "correct", "seen", "seconds")}
        trainer.train_loader.load_state_dict({"generator": ck["rng"]["loader"]})
        rng_state = ck["rng"]["cpu"]
        mean, std = ck["data"]["mean"], ck["data"]["std"]
        history = ck.get("history")
        if history is None:                    # written before last.npz held the history
            history = [r for r in runfiles.read_metrics(trainer.metrics_path) if r["epoch"] <= trainer.epoch]
        trainer.history = [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in history]
    except KeyError as e:
        raise ValueError(f"{trainer.last_path} is incomplete: it has no entry {e.args[0]!r}") from e
    except (ValueError, TypeError) as e:
        raise ValueError(f"{trainer.last_path} is incomplete or does not match its configuration: {e}") from e
    if not (np.allclose(mean, trainer.mean) and np.allclose(std, trainer.std)):
        raise ValueError(f"the training data in {trainer.data_dir} differ from those the run in {trainer.out} "
                         f"started with (other per-channel mean/std): resume with the same data")
    done, epochs = trainer.epoch, trainer.config["epochs"]
    if done >= epochs:
        raise ValueError(f"the run in {trainer.out} has already completed {done} of {epochs} epochs: pass "
                         f"--epochs N with N > {done} to train further")
    scores = [row[trainer.select] for row in trainer.history]
    best = trainer.history[scores.index(max(scores))]["epoch"] if scores else 0
    trainer.best_epoch = int(ck.get("best_epoch", best))
    trainer.scheduler.base_lr = base_lr(trainer.config)          # a resume may have set a new one
    trainer.optimizer.lr = trainer.scheduler.lr_at(trainer.scheduler.last_epoch)
    trainer.saved_at = (trainer.epoch, trainer.batch)
    backend.set_rng_state(rng_state)


def read_checkpoint(path) -> dict:
    """A run checkpoint (``last.npz`` or ``best.npz``) as a nested dict (see
    :meth:`Trainer.state`), its configuration checked. ValueError if the file
    is missing, corrupt, or not a checkpoint of a training run."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no checkpoint at {path}")
    try:
        state = load_checkpoint_file(path)
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"format {found!r}, expected {CHECKPOINT_FORMAT!r}")
        saved = dict(state["config"])
        device = saved.pop("device", "cpu")         # checked where it is used: a GPU run can be read anywhere
        state["config"] = make_config(**saved) | {"device": device}
    except Exception as e:   # a damaged zip, a truncated array, a foreign file, a bad configuration ...
        raise ValueError(f"{path} is not a readable tinydense training checkpoint ({type(e).__name__}: {e})") from e
    check_values(state, path)
    return state


REQUIRED = ("epoch", "batch", "best_acc", "data", "model")   # besides format and config, in last.npz and best.npz


def check_values(state, path) -> None:
    """ValueError naming ``path`` and the entry, unless the values of a run checkpoint are
    what a run saves: every entry there, epoch and batch counts, finite normalisation
    statistics with std > 0, finite weights, variances >= 0. (A run never saves a model
    that holds NaN: such a file was damaged or edited.)"""
    missing = [key for key in REQUIRED if key not in state]
    if missing:
        raise ValueError(f"{path} is not a complete tinydense training checkpoint: it has no "
                         f"{', '.join(map(repr, missing))} entry")
    for key in ("epoch", "batch"):
        if not is_int(state[key]) or state[key] < 0:
            raise ValueError(f"{path} is damaged: its entry {key!r} is {state[key]!r}, not a count (0, 1, 2 ...)")
    data, model = state["data"], state["model"]
    for key in ("mean", "std"):
        value = data.get(key) if isinstance(data, dict) else None
        if value is None or np.shape(value) != (3,) or not np.isfinite(value).all():
            raise ValueError(f"{path} is damaged: its entry 'data/{key}' is {value!r}, not 3 finite numbers "
                             f"(one per colour channel)")
    if not (np.asarray(data["std"]) > 0).all():
        raise ValueError(f"{path} is damaged: its entry 'data/std' is {data['std']!r}; a standard deviation of 0 "
                         f"would divide every image by 0")
    if not isinstance(model, dict) or not all(hasattr(v, "dtype") for v in model.values()):
        raise ValueError(f"{path} is damaged: its entry 'model' is not a dict of arrays")
    bad = nonfinite_entries(model)
    if bad:
        raise ValueError(f"{path} holds NaN or infinite weights (in {len(bad)} of {len(model)} arrays: "
                         f"{listing(bad, 3)}): the run diverged before it was saved, or the file was damaged; its "
                         f"accuracy would mean nothing. Evaluate an earlier checkpoint")
    negative = [name for name, v in model.items() if name.endswith("running_var") and (np.asarray(v) < 0).any()]
    if negative:
        raise ValueError(f"{path} is damaged: its entry 'model/{negative[0]}' holds negative variances "
                         f"(a batch norm's running variance is never below 0)")


def load_model(path, device=None):
    """The model saved in a run checkpoint, ready for evaluation; returns
    ``(model, state)`` where ``state`` holds the configuration, the epoch and
    the normalisation statistics. ``device``: default the run's own, or the
    CPU when that was a GPU and none is available here."""
    state = read_checkpoint(path)
    if device is None:
        saved = state["config"]["device"]
        device = saved if saved == "cpu" or backend.cuda_available() else "cpu"
    config = make_config(**dict(state["config"], device=device))
    try:
        check_fits(dict(config, batch_size=1))         # a file can name any size: count before building
    except ValueError as e:
        raise ValueError(f"{path} describes a model too large to build here: {e}") from None
    model = build_model(config)
    try:
        model.load_state_dict(state["model"])
    except ValueError as e:
        raise ValueError(f"{path} does not match the model it describes: {e}") from e
    state["config"] = config
    return model, state


def nonfinite_entries(state_dict) -> list:
    """The names of the floating-point arrays in ``state_dict`` that hold a NaN or an infinity."""
    bad = []
    for name, array in state_dict.items():
        array = array.data if isinstance(array, Tensor) else array
        if array.dtype.kind == "f" and not bool(backend.get_array_module(array).isfinite(array).all()):
            bad.append(name)
    return bad
