"""The run configuration: the paper's recipe, the checks of every option, the model it describes.

``make_config(**options)`` is the recipe with ``options`` on top, checked (a
ValueError naming the option and its value, before anything is built or read)
and completed (default depth per model, compression, milestones).
``build_model(config)`` builds what it describes.
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend, models
from ..models.densenet import cifar_layout
from ..models.densenet import transition_widths as densenet_transition_widths

MODELS = ("densenet-bc", "densenet", "resnet")
DATASETS = {"cifar10": 10, "cifar100": 100}
DEFAULT_DEPTH = {"densenet-bc": 100, "densenet": 40, "resnet": 110}

# The paper's recipe (Huang et al. 2017, Section 4.2), the defaults of every run.
PAPER_RECIPE = dict(model="densenet-bc", depth=100, growth_rate=12, compression=None, drop_rate=0.0,
                    dataset="cifar10", epochs=300, batch_size=64, eval_batch_size=None, lr=0.1, momentum=0.9, nesterov=True,
                    weight_decay=1e-4, milestones=None, gamma=0.1, augment=True,
                    limit_train=None, limit_test=None, val_split=None, seed=0, device="cpu")
DENSENET_ONLY = ("growth_rate", "compression", "drop_rate")
RESUMABLE = ("epochs", "device", "milestones", "lr", "eval_batch_size")     # options a resumed run may give


def paper_milestones(epochs: int) -> list:
    """The epochs at which the learning rate drops: 50% and 75% of the run
    (150 and 225 of 300; 15 and 22 of 30)."""
    return sorted({m for m in (epochs // 2, epochs * 3 // 4) if m > 0})


def is_int(v) -> bool:
    """An integer, not a bool."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def is_number(v) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def make_config(**options) -> dict:
    """The full run configuration: the paper's recipe with ``options`` on top,
    checked (ValueError naming the option and value) and completed
    (default depth per model, compression, milestones).

    Besides the recipe's keys it holds ``lr_changes``, the learning rates set
    by resumed runs (see :class:`Trainer`), normally empty."""
    unknown = set(options) - set(PAPER_RECIPE) - {"lr_changes"}
    if unknown:
        raise ValueError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    c = dict(PAPER_RECIPE, lr_changes=[])
    c.update({k: v for k, v in options.items() if v is not None})
    if options.get("depth") is None and c["model"] in DEFAULT_DEPTH:
        c["depth"] = DEFAULT_DEPTH[c["model"]]
    _check_choices(c, options)
    _check_counts(c)
    _check_rates(c, options)
    if c["milestones"] is None:
        c["milestones"] = paper_milestones(c["epochs"])
    c["milestones"] = list(c["milestones"])
    if any(not is_int(m) or m <= 0 for m in c["milestones"]) or c["milestones"] != sorted(set(c["milestones"])):
        raise ValueError(f"milestones must be increasing positive epochs, got {c['milestones']}")
    c["lr_changes"] = [dict(change) for change in c["lr_changes"]]
    for change in c["lr_changes"]:
        if sorted(change) != ["batch", "epoch", "lr"] or not is_int(change["epoch"]) or change["epoch"] < 1 \
                or not is_int(change["batch"]) or change["batch"] < 0 or not is_number(change["lr"]) \
                or change["lr"] <= 0:
            raise ValueError(f"lr_changes must list {{epoch, batch, lr}} entries, got {change!r}")
    c["device"] = backend.check_device(c["device"])
    if c["model"] == "resnet":            # options that do not apply to a ResNet
        c["growth_rate"], c["compression"], c["drop_rate"] = None, None, None
    else:
        for i, (width, incoming) in enumerate(transition_widths(c), 1):
            if width < 1:
                raise ValueError(f"compression {c['compression']} leaves {width} channels in transition {i} "
                                 f"({incoming} channels come out of dense block {i}): use a larger --compression "
                                 f"(at least {1 / incoming:.3g} here)")
    return c


def _check_choices(c, options) -> None:
    """The model, the data set, and options that only some models take."""
    if c["model"] not in MODELS:
        raise ValueError(f"unknown model {c['model']!r}: expected one of {', '.join(MODELS)}")
    if c["dataset"] not in DATASETS:
        raise ValueError(f"unknown dataset {c['dataset']!r}: expected one of {', '.join(DATASETS)}")
    given = [f"--{k.replace('_', '-')}" for k in DENSENET_ONLY if options.get(k) is not None]
    if c["model"] == "resnet" and given:
        raise ValueError(f"{', '.join(given)} apply to DenseNets only, not to --model resnet")


def _check_counts(c) -> None:
    """Epochs, sizes and numbers of images: positive integers."""
    for name in ("epochs", "batch_size", "depth", "growth_rate"):
        if not is_int(c[name]) or c[name] <= 0:
            raise ValueError(f"{name.replace('_', '-')} must be a positive integer, got {c[name]!r}")
    for name in ("limit_train", "limit_test", "val_split", "eval_batch_size"):
        if c[name] is not None and (not is_int(c[name]) or c[name] <= 0):
            raise ValueError(f"{name.replace('_', '-')} must be a positive number of images, got {c[name]!r}")
    if c["val_split"] is not None and c["limit_train"] is not None and c["val_split"] >= c["limit_train"]:
        raise ValueError(f"val-split {c['val_split']} leaves no training images of the {c['limit_train']} "
                         f"of --limit-train (the validation images are the last of them)")
    if not is_int(c["seed"]) or c["seed"] < 0:
        raise ValueError(f"seed must be a non-negative integer, got {c['seed']!r}")


def _check_rates(c, options) -> None:
    """Learning rate, momentum, weight decay, the schedule's factor, dropout, compression."""
    for name in ("lr", "momentum", "weight_decay", "gamma", "drop_rate"):
        if not is_number(c[name]) or c[name] < 0:
            raise ValueError(f"{name.replace('_', '-')} must be a non-negative number, got {c[name]!r}")
    if c["lr"] == 0:
        raise ValueError("lr must be positive, got 0")
    if not c["momentum"] < 1:
        raise ValueError(f"momentum must be in [0, 1), got {c['momentum']}")
    if c["momentum"] == 0 and options.get("nesterov") is None:
        c["nesterov"] = False                   # Nesterov momentum without momentum is plain SGD
    if c["nesterov"] and c["momentum"] == 0:
        raise ValueError("nesterov needs a momentum in (0, 1), got momentum 0")
    if not c["drop_rate"] < 1:
        raise ValueError(f"drop-rate must be in [0, 1), got {c['drop_rate']}")
    if c["compression"] is None:
        c["compression"] = 0.5 if c["model"] == "densenet-bc" else 1.0
    if not 0 < c["compression"] <= 1:
        raise ValueError(f"compression must be in (0, 1], got {c['compression']}")


def transition_widths(config) -> list:
    """(channels kept, channels coming in) of each transition of the CIFAR DenseNet
    ``config`` describes, as :mod:`tinydense.models.densenet` computes them. Empty
    when the depth does not fit (the model says why)."""
    bottleneck, k, theta = config["model"] == "densenet-bc", config["growth_rate"], config["compression"]
    try:
        blocks, stem = cifar_layout(config["depth"], k, bottleneck, theta)
    except ValueError:
        return []
    return densenet_transition_widths(stem, blocks, k, theta)


def resumed_config(checkpoint, given) -> dict:
    """The configuration of a resumed run: the one saved in ``checkpoint``, with the few
    options a resumed run may change (``given``: options, None for those not given).
    A new ``lr`` is recorded in ``lr_changes`` (see :class:`Trainer`)."""
    saved = checkpoint["config"]
    given = {k: v for k, v in (given or {}).items() if v is not None}
    for key, value in given.items():
        if key not in RESUMABLE and (key not in saved or saved[key] != value):
            raise ValueError(f"--{key.replace('_', '-')} {value} differs from the run being resumed "
                             f"({saved.get(key)}); a resumed run keeps its configuration "
                             f"(only --epochs, --device and --lr may change, and --eval-batch-size)")
    if "milestones" in given and list(given["milestones"]) != saved["milestones"]:
        raise ValueError(f"--milestones {given['milestones']} differs from the run being resumed "
                         f"({saved['milestones']}); a resumed run keeps its schedule")
    config = dict(saved)
    config.update({k: given[k] for k in ("epochs", "device", "eval_batch_size") if k in given})
    if "lr" in given and given["lr"] != base_lr(saved):
        change = {"epoch": int(checkpoint["epoch"]) + 1, "batch": int(checkpoint["batch"]), "lr": given["lr"]}
        config["lr_changes"] = saved["lr_changes"] + [change]
    return make_config(**config)


def base_lr(config) -> float:
    """The learning rate before the schedule's drops: ``lr``, or the last of ``lr_changes``."""
    return config["lr_changes"][-1]["lr"] if config["lr_changes"] else config["lr"]


def run_name(config) -> str:
    """A short name for a run, e.g. ``densenet-bc-L100-k12-cifar10`` (the default output directory)."""
    if config["model"] == "resnet":
        return f"resnet-{config['depth']}-{config['dataset']}"
    return f"{config['model']}-L{config['depth']}-k{config['growth_rate']}-{config['dataset']}"


def build_model(config):
    """The model a configuration describes, float32 on the configured device.
    Raises ValueError for impossible architectures (e.g. a depth that does not fit)."""
    num_classes = DATASETS[config["dataset"]]
    if config["model"] == "resnet":
        model = models.resnet(config["depth"], num_classes=num_classes)
    else:
        model = models.densenet(config["depth"], config["growth_rate"],
                                bottleneck=config["model"] == "densenet-bc",
                                compression=config["compression"], num_classes=num_classes,
                                drop_rate=config["drop_rate"])
    return model.to(config["device"])
