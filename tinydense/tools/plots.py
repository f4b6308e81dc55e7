"""Pictures of a run: training curves and a confusion matrix, as PNG files.

Uses matplotlib's object API with the Agg canvas (no pyplot, no window), so
it works the same on a laptop, a server and in tests.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> Path:
    """Save atomically: render to a temporary file, then rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_metrics(path) -> dict:
    """``metrics.csv`` as a dict column -> float array. ValueError if it is missing or empty."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no metrics file at {path} (a run directory holds metrics.csv after its first epoch)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    needed = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr")
    if not rows or any(c not in rows[0] for c in needed):
        raise ValueError(f"{path} has no epochs to plot (expected the columns {', '.join(needed)})")
    return {c: np.array([float(r[c]) for r in rows]) for c in rows[0]}


def plot_curves(metrics_csv, path, title=None) -> Path:
    """Loss, accuracy and learning rate per epoch (train and test) to ``path``."""
    from matplotlib.ticker import MaxNLocator
    m = read_metrics(metrics_csv)
    epoch = m["epoch"]
    style = {"marker": "o", "markersize": 3} if len(epoch) <= 50 else {}
    best = int(np.argmax(m["test_acc"]))
    fig = _figure(13, 4)
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    ax_loss.plot(epoch, m["train_loss"], label="train", **style)
    ax_loss.plot(epoch, m["test_loss"], label="test", **style)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.plot(epoch, 100 * m["train_acc"], label="train", **style)
    ax_acc.plot(epoch, 100 * m["test_acc"], **style,
                label=f"test (best {100 * m['test_acc'][best]:.2f}% at epoch {int(epoch[best])})")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    ax_lr.step(epoch, m["lr"], where="pre")           # epoch e trains with lr[e] during (e-1, e]
    ax_lr.set(xlabel="epoch", ylabel="learning rate", title="learning rate", yscale="log")
    for ax in (ax_loss, ax_acc):
        ax.legend()
    for ax in (ax_loss, ax_acc, ax_lr):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion(confusion, classes, path, title=None) -> Path:
    """The confusion matrix (rows: true class, columns: predicted) as a heat map,
    each row normalised to fractions of that class."""
    confusion = np.asarray(confusion)
    k = len(classes)
    fraction = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    size = max(5, min(0.45 * k + 2, 30))
    fig = _figure(size, size)
    ax = fig.subplots()
    image = ax.imshow(fraction, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set(xticks=range(k), yticks=range(k), xlabel="predicted", ylabel="true", title=title or "confusion matrix")
    ax.set_xticklabels(classes, rotation=90, fontsize=8 if k <= 20 else 4)
    ax.set_yticklabels(classes, fontsize=8 if k <= 20 else 4)
    if k <= 20:
        for (i, j), count in np.ndenumerate(confusion):
            ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                    color="white" if fraction[i, j] > 0.5 else "black")
    fig.tight_layout()
    return _save(fig, path)
