"""Pictures of a run: training curves and a confusion matrix, as image files.

Uses matplotlib's object API with the Agg canvas (no pyplot, no window), so
it works the same on a laptop, a server and in tests. The file's suffix
chooses the format (``.png``, ``.svg``, ``.pdf``, ``.jpg`` ...).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..files import write_atomic


def figure(width, height):
    """An empty matplotlib figure of ``width`` x ``height`` inches on the Agg canvas (no window)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def image_formats() -> dict:
    """The formats matplotlib can write: suffix -> description."""
    from matplotlib.backend_bases import FigureCanvasBase
    return FigureCanvasBase.get_supported_filetypes()


def check_image_path(path) -> str:
    """The image format for ``path`` (from its suffix). ValueError, before any work,
    if the suffix is not a format matplotlib writes or the directory does not exist."""
    path = Path(path)
    suffix = path.suffix.lower().lstrip(".")
    formats = image_formats()
    if suffix not in formats:
        raise ValueError(f"cannot draw to {path}: the file name must end in one of "
                         f"{', '.join('.' + f for f in sorted(formats))} (it chooses the format)")
    if not path.parent.is_dir():
        raise ValueError(f"cannot draw to {path}: there is no directory {path.parent}")
    return suffix


def save_figure(fig, path) -> Path:
    """Save in the format of ``path``'s suffix, atomically (:func:`tinydense.files.write_atomic`)."""
    fmt = check_image_path(path)
    return write_atomic(path, lambda f: fig.savefig(f, format=fmt))


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


def curves_figure(m, title=None):
    """The figure of :func:`plot_curves` for metrics ``m`` (as :func:`read_metrics` returns them).

    Epoch e covers the interval (e-1, e] of the x axis, which starts at 0, so a
    one-epoch run has a visible axis and learning rate. The best epoch is the one
    best.npz holds: the first with the highest validation accuracy when the run
    held some images out (``val_acc``), else the highest test accuracy."""
    from matplotlib.ticker import MaxNLocator
    epoch = m["epoch"]
    style = {"marker": "o", "markersize": 3} if len(epoch) <= 50 else {}
    chosen = "val_acc" if "val_acc" in m else "test_acc"
    best = int(np.argmax(m[chosen]))
    fig = figure(13, 4.6)
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    ax_loss.plot(epoch, m["train_loss"], label="train", **style)
    if "val_loss" in m:
        ax_loss.plot(epoch, m["val_loss"], label="validation", **style)
    ax_loss.plot(epoch, m["test_loss"], label="test", **style)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.plot(epoch, 100 * m["train_acc"], label="train", **style)
    if "val_acc" in m:
        ax_acc.plot(epoch, 100 * m["val_acc"], **style,
                    label=f"validation (best {100 * m['val_acc'][best]:.2f}% at epoch {int(epoch[best])}: best.npz)")
    ax_acc.plot(epoch, 100 * m["test_acc"], **style,
                label=f"test (final {100 * m['test_acc'][-1]:.2f}%"
                      + (f", best {100 * m['test_acc'][best]:.2f}% at epoch {int(epoch[best])})"
                         if chosen == "test_acc" else ")"))
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    edges = np.concatenate([[epoch[0] - 1], epoch])
    ax_lr.stairs(m["lr"], edges, baseline=None, linewidth=1.5)     # epoch e trains with lr[e] during (e-1, e]
    ax_lr.set(xlabel="epoch", ylabel="learning rate", title="learning rate", yscale="log")
    pad = 0.03 * (edges[-1] - edges[0])
    for ax in (ax_loss, ax_acc, ax_lr):
        ax.grid(alpha=0.3)
        ax.set_xlim(edges[0] - pad, edges[-1] + pad)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (ax_loss, ax_acc):          # below the panel, never over the curves
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize="small", frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_curves(metrics_csv, path, title=None) -> Path:
    """Loss, accuracy and learning rate per epoch (train, validation if any, test) to ``path``."""
    check_image_path(path)
    return save_figure(curves_figure(read_metrics(metrics_csv), title), path)


def plot_confusion(confusion, classes, path, title=None) -> Path:
    """The confusion matrix (rows: true class, columns: predicted) as a heat map,
    each row normalised to fractions of that class."""
    check_image_path(path)
    confusion = np.asarray(confusion)
    k = len(classes)
    fraction = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    size = max(5, min(0.45 * k + 2, 30))
    fig = figure(size, size)
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
    return save_figure(fig, path)
