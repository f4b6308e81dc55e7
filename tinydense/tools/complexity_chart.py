"""The lecture's complexity chart (after Canziani et al., "An Analysis of Deep Neural
Network Models for Practical Applications", 2016) of :func:`tinydense.tools.compare.compare`'s
rows: x the multiply-adds per image, y the published top-1 accuracy, bubble area the
parameters, one panel per data set of the accuracies, a colour per family.
"""
from __future__ import annotations

import numpy as np

from .plots import check_image_path, figure, save_figure

# families, for the chart's colours: (prefix, family)
FAMILIES = (("alexnet", "AlexNet"), ("zfnet", "AlexNet"), ("vgg", "VGG"), ("cifar_vgg", "VGG"),
            ("googlenet", "GoogLeNet"), ("resnext", "ResNeXt"), ("cifar_resnext", "ResNeXt"),
            ("wide_resnet", "ResNet"), ("resnet", "ResNet"), ("cifar_resnet", "ResNet"), ("densenet", "DenseNet"),
            ("se_res", "SENet"), ("cifar_se_", "SENet"))
COLOURS = {"AlexNet": "tab:red", "VGG": "tab:orange", "GoogLeNet": "tab:green", "ResNet": "tab:blue",
           "ResNeXt": "tab:purple", "DenseNet": "tab:brown", "SENet": "tab:pink", "other": "tab:gray"}


def family(name):
    return next((f for prefix, f in FAMILIES if name.startswith(prefix)), "other")


def check_drawable(rows, known=()):
    """ValueError unless some row (a dict with ``name`` and ``accuracy``) has a published
    accuracy to draw; the message lists ``known``, the models that have one."""
    if not any(r["accuracy"] is not None for r in rows):
        raise ValueError("compare: none of these models has a published accuracy to plot ("
                         + ", ".join(r["name"] for r in rows) + ")"
                         + (f"; the ones with one: {', '.join(known)}" if known else ""))


BUBBLE_AREA = 8.0            # points^2 of bubble per million parameters


def _label(fig, ax, bubbles):
    """Name each bubble (x, y, area in points^2, name) at the first of a few spots around
    it (above, below, right, left, the diagonals, then further out) where the name covers
    no other name and no other bubble's centre; the highest bubbles choose first."""
    from matplotlib.transforms import Bbox
    renderer = fig.canvas.get_renderer()
    centres = ax.transData.transform([(x, y) for x, y, _, _ in bubbles])
    spots = [(0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (-1, 1), (1, -1), (-1, -1)]
    taken = []
    for i in sorted(range(len(bubbles)), key=lambda i: -bubbles[i][1]):
        x, y, area, name = bubbles[i]
        gap = np.sqrt(area / np.pi) + 2
        others = [Bbox.from_bounds(cx - 3, cy - 3, 6, 6) for j, (cx, cy) in enumerate(centres) if j != i]
        for scale in (1, 1.8, 2.6):
            for dx, dy in spots:
                text = ax.annotate(name, (x, y), xytext=(dx * gap * scale, dy * gap * scale),
                                   textcoords="offset points", fontsize=7,
                                   ha={0: "center", 1: "left", -1: "right"}[dx],
                                   va={0: "center", 1: "bottom", -1: "top"}[dy])
                box = text.get_window_extent(renderer)
                if not any(box.overlaps(b) for b in taken + others):
                    break
                text.remove()
            else:
                continue
            break
        else:                        # no free spot: above it all the same
            text = ax.annotate(name, (x, y), xytext=(0, gap), textcoords="offset points", fontsize=7,
                               ha="center", va="bottom")
            box = text.get_window_extent(renderer)
        taken.append(box)


def complexity_figure(rows, title=None):
    """The figure of :func:`plot_complexity`: one panel per data set of the accuracies."""
    check_drawable(rows)
    drawn = [r for r in rows if r["accuracy"] is not None]
    datasets = list(dict.fromkeys(r["accuracy"].dataset for r in drawn))
    fig = figure(9.5 * len(datasets), 6.5)
    axes = np.atleast_1d(fig.subplots(1, len(datasets)))
    labels = []
    for ax, dataset in zip(axes, datasets):
        here = [r for r in drawn if r["accuracy"].dataset == dataset]
        bubbles = []
        for r in here:
            x, y, area = r["macs"] / 1e9, r["accuracy"].top1, BUBBLE_AREA * r["params"] / 1e6
            ax.scatter(x, y, s=area, color=COLOURS[family(r["name"])], alpha=0.45, edgecolors="black",
                       linewidths=0.6)
            bubbles.append((x, y, area, r["name"]))
        labels.append(bubbles)
        sizes = sorted({r["image_size"] for r in here})
        at = f"{sizes[0]}x{sizes[0]}" if len(sizes) == 1 else "each model's image size"
        ax.set(xlabel=f"G multiply-adds per image (at {at})", ylabel=f"top-1 accuracy on {dataset} (%)",
               title=f"{dataset}: bubble area = parameters")
        ax.grid(alpha=0.3)
        ax.margins(0.12)
        families = list(dict.fromkeys(family(r["name"]) for r in here))
        handles = [ax.scatter([], [], color=COLOURS[f], alpha=0.45, edgecolors="black", s=60, label=f)
                   for f in families]
        handles += [ax.scatter([], [], color="white", edgecolors="black", s=BUBBLE_AREA * m,
                               label=f"{m}M parameters") for m in (10, 50, 100)]
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), labelspacing=1.6,
                  borderpad=1.2, frameon=False)
    missing = [r["name"] for r in rows if r["accuracy"] is None]
    note = "accuracies: papers and torchvision's weights, cited in tinydense.tools.compare.ACCURACY"
    if missing:
        note += "; not drawn (no published accuracy): " + ", ".join(missing)
    fig.text(0.01, 0.01, note, fontsize=7, color="gray")
    fig.suptitle(title or "The complexity comparison")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    for ax, bubbles in zip(axes, labels):   # the axes are final now: names where they overlap no other
        ax.set(xlim=ax.get_xlim(), ylim=ax.get_ylim())
        _label(fig, ax, bubbles)
    return fig


def plot_complexity(rows, path, title=None):
    """The lecture's complexity chart of ``rows`` (Comparison.rows) to ``path``: x the
    multiply-adds, y the published top-1 accuracy, bubble area the parameters."""
    check_image_path(path)
    return save_figure(complexity_figure(rows, title), path)
