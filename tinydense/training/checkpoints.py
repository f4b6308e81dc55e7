"""A run's checkpoints read back: ``last.npz`` and ``best.npz`` checked, and the model in them.

What :class:`~tinydense.training.Trainer` saves (see :meth:`Trainer.state`) is a
nest of plain values and arrays written by :func:`tinydense.save`. Reading one
back checks its format and configuration, and (:func:`load_model`) that the
model's arrays fit the model the configuration describes.
"""
from __future__ import annotations

from pathlib import Path

from .. import backend
from ..autograd import Tensor
from ..checkpoint import load as load_checkpoint_file
from .config import build_model, make_config

CHECKPOINT_FORMAT = "tinydense-run-1"


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
    return state


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
