# %% [markdown]
# # Lesson 9: Does a DenseNet reuse its features?
#
# Dense connectivity *allows* every layer to read every earlier feature map of
# its block. Whether a trained network actually *does* is a question about its
# weights, and the DenseNet paper answers it with one figure (its Fig. 5): for
# every layer it measures how strongly the layer's filters weigh each earlier
# source. The paper's figure is for the plain DenseNet with $L = 40$ and $k = 12$
# (no bottleneck, no compression), trained for 300 epochs. We draw it for that
# network when its checkpoint is there (one command makes it, below), and for
# the DenseNet-BC ($L = 40$, $k = 12$) of the training lesson as a comparison.
#
# ## What you will learn
#
# - how to read, from a layer's weights, how much it draws on each earlier layer;
# - how to compute the paper's feature-reuse heatmap for every dense block;
# - what a trained network shows that an untrained one does not: long-range reuse,
#   transitions that read everything, and a classifier that reads the last layers.

# %%
%matplotlib inline
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import tinydense as td
import tinydense.functional as F
from tinydense.data import DataLoader, load_cifar
from tinydense.models import DenseBlock, densenet_bc
from tinydense.optim import SGD
from tinydense.training import evaluate, load_model, plural

from checks.l09_feature_reuse import check_long_range_share
from checks.common import passed

FAST = os.environ.get("TINYDENSE_LESSONS_FAST") == "1"   # small settings for CI
DATA = os.environ.get("TINYDENSE_DATA") or Path("..") / "data"   # as in the training lesson
DEPTH, GROWTH = 40, 12
td.manual_seed(0)

# %% [markdown]
# ## 1. Trained networks
#
# **The paper's network.** Training the plain DenseNet $L = 40$, $k = 12$ takes
# hours on a CPU, so it is not done inside this notebook. One command does it
# and leaves its checkpoint where this lesson looks for it
# (`runs/densenet40/last.npz` in the repository, or the folder named by
# `$TINYDENSE_PAPER_RUN`):
#
# ```bash
# tinydense train --model densenet --depth 40 --growth-rate 12 --out runs/densenet40
# ```
#
# (the paper's recipe, 300 epochs; `--epochs N` for a shorter run, `--resume` to
# continue one). Without that file the lesson says so loudly and shows only
# the DenseNet-BC below: its pictures are then **not** the paper's result.
#
# **DenseNet-BC, for comparison.** The training lesson saves its model to a
# temporary folder when run with the student settings. If that file is there
# we use it; otherwise we train one here with the same recipe (a few minutes;
# in the fast test settings only a few steps, so its pictures then show little
# more than the initial weights).

# %%
PAPER_COMMAND = "tinydense train --model densenet --depth 40 --growth-rate 12 --out runs/densenet40"
paper_run = Path(os.environ.get("TINYDENSE_PAPER_RUN") or Path("..") / "runs" / "densenet40")
paper_model = None
if (paper_run / "last.npz").exists():
    paper_model, paper_state = load_model(paper_run / "last.npz", device="cpu")
    paper_epochs = int(paper_state["epoch"])
    print(f"loaded the paper's network (plain DenseNet L=40 k=12) from {paper_run / 'last.npz'}, "
          f"trained for {plural(paper_epochs, 'epoch')}" + ("" if paper_epochs >= 300 else
          f" (the paper trains 300: the figure below is for a SHORTER run than the paper's)"))
else:
    print("=" * 88)
    print("NOT THE PAPER'S RESULT: no trained plain DenseNet L=40 k=12 was found at")
    print(f"    {paper_run / 'last.npz'}")
    print("The heatmaps below are for a DenseNet-BC trained for a few epochs (or, in the fast test")
    print("settings, barely at all). To draw the paper's Fig. 5 for the paper's network, run once:")
    print(f"    {PAPER_COMMAND}")
    print("=" * 88)

checkpoint = Path(tempfile.gettempdir()) / "tinydense-lessons" / f"densenet_bc_L{DEPTH}_k{GROWTH}.npz"
model = densenet_bc(DEPTH, GROWTH)
untrained = densenet_bc(DEPTH, GROWTH)         # for comparison: the weights before any training

if checkpoint.exists() and not FAST:
    model.load_state_dict(td.load(checkpoint))
    bc_label = "trained for 3 epochs in the training lesson"
    print("DenseNet-BC: loaded the training lesson's model from", checkpoint)
else:
    train_set = load_cifar("cifar10", root=DATA, train=True, download=True).head(64 if FAST else 5085)
    mean, std = train_set.channel_stats()
    loader = DataLoader(train_set, 32 if FAST else 64, shuffle=True, augment=True, mean=mean, std=std)
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    epochs = 1 if FAST else 3
    for epoch in range(epochs):
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f"DenseNet-BC, epoch {epoch + 1}/{epochs}: last batch loss {loss.item():.3f}")
    bc_label = f"trained for {epochs} epoch(s) here" + (" on 64 images: practically UNTRAINED" if FAST else "")

# %% [markdown]
# ## 2. From weights to "how much does layer $\ell$ use source $s$"
#
# In a DenseNet-BC block, layer $\ell$ starts with a 1x1 convolution on the
# concatenation $[x_0, x_1, \dots, x_{\ell-1}]$. Its weight has shape
# $(4k, k_0 + (\ell-1)k, 1, 1)$, and the input channels come in blocks: the first
# $k_0$ belong to the block input $x_0$, the next $k$ to $x_1$, and so on. So the
# weights that connect layer $\ell$ to source $s$ are one slice of that array.
#
# As in the paper, we summarise each slice by its **average absolute weight**:
# the mean of $|w|$ over the slice, which does not favour sources with more
# channels. The same measure applies to the layer that reads the block's
# whole output: the transition's 1x1 convolution after blocks 1 and 2, and
# the classifier after block 3 (through the global average pooling, each of
# its inputs is one channel).

# %%
def reuse_matrix(block, reader_weight):
    """Average |weight| from source s (rows 0..L) into layer l (columns 1..L) and into
    the block's reader (last column). NaN where layer l cannot see source s."""
    layers = list(block.children())
    L = len(layers)
    k0 = layers[0].conv1.in_channels
    k = (layers[0].conv2 if layers[0].bottleneck else layers[0].conv1).out_channels
    bounds = [(0, k0)] + [(k0 + (s - 1) * k, k0 + s * k) for s in range(1, L + 1)]
    usage = np.full((L + 1, L + 1), np.nan)
    readers = [layer.conv1.weight.numpy() for layer in layers] + [reader_weight]
    for column, weight in enumerate(readers):
        weight = np.abs(weight.reshape(weight.shape[0], weight.shape[1], -1))
        sources = column + 1                      # layer l = column + 1 reads x_0 .. x_{l-1}
        for s in range(sources):
            lo, hi = bounds[s]
            usage[s, column] = weight[:, lo:hi].mean()
    return usage


def all_blocks(model):
    """(block name, reuse matrix, reader name) for every dense block of a DenseNet."""
    children = dict(model.features.named_children())
    names = [n for n, m in children.items() if isinstance(m, DenseBlock)]
    result = []
    for i, name in enumerate(names, start=1):
        if i < len(names):
            reader, label = children[f"transition{i}"].conv.weight.numpy(), "transition"
        else:
            reader, label = model.classifier.weight.numpy(), "classifier"
        result.append((name, reuse_matrix(children[name], reader), label))
    return result


trained_blocks = all_blocks(model)
name, usage, reader = trained_blocks[0]
print(f"{name}: {usage.shape[0] - 1} layers; average |w| from x_0 into each layer and the {reader}:")
print(np.round(usage[0], 4))

# %% [markdown]
# ## 3. The heatmap
#
# One panel per dense block. Column $\ell$ is a reading layer (the last column is
# the transition or the classifier), row $s$ a source ($s = 0$ is the block's
# input: the stem convolution for block 1, the previous transition for the
# others). Each column is divided by its largest entry, so colours compare the
# sources *of one layer*: a dark cell means "this layer relies on this source
# about as much as on its favourite one".

# %%
def plot_reuse(blocks, title):
    fig, axes = plt.subplots(1, len(blocks), figsize=(4.2 * len(blocks), 3.9))
    for ax, (name, usage, reader) in zip(axes, blocks):
        scaled = usage / np.nanmax(usage, axis=0, keepdims=True)
        image = ax.imshow(np.ma.masked_invalid(scaled), cmap="viridis", vmin=0, vmax=1, origin="upper")
        L = usage.shape[0] - 1
        ax.set_xticks(range(L + 1), [str(l) for l in range(1, L + 1)] + [reader[:5]], fontsize=8)
        ax.set_yticks(range(L + 1), [f"x{s}" for s in range(L + 1)], fontsize=8)
        ax.set_xlabel("target layer")
        ax.set_ylabel("source")
        ax.set_title(name.replace("denseblock", "dense block "))
    fig.colorbar(image, ax=axes, fraction=0.02, label="average |w|, relative to the column's largest")
    fig.suptitle(title)
    plt.show()


if paper_model is not None:
    plot_reuse(all_blocks(paper_model), f"The paper's network, DenseNet L=40 k=12, after {paper_epochs} epochs")
else:
    print(f"(The paper's network is missing: the figures are DenseNet-BC only. Make it with: {PAPER_COMMAND})")
plot_reuse(trained_blocks, f"DenseNet-BC (L={DEPTH}, k={GROWTH}), {bc_label}")
plot_reuse(all_blocks(untrained), "DenseNet-BC before training")

# %% [markdown]
# ## 4. What to look for
#
# Before training the picture carries no information: the weights are drawn
# at random with the same spread for every input channel of a layer, so every
# visible source gets about the same average weight.
#
# The paper's fully trained network (300 epochs) shows four things. With our
# short training you may see them only faintly; training longer sharpens them.
#
# 1. **Layers spread their weight over many sources**, including the block
#    input and the earliest layers. Features made early in a block really are
#    read by layers deep in the same block: that is feature reuse.
# 2. **The transition layers read everything.** Their columns are evenly
#    coloured: information from the first layers of a block reaches the next
#    block, with few steps in between.
# 3. **In blocks 2 and 3 the row of the block input ($x_0$, the transition's
#    output) is pale** for most layers: the compressed transition outputs are
#    used relatively little. They are redundant, which is why compressing
#    them (DenseNet-C) costs so little accuracy.
# 4. **The classifier leans on the last layers** of block 3: the final,
#    high-level features matter most for the decision, although it still
#    reads some earlier ones.
#
# A single number per block summarises point 1: the share of a layer's total
# weight that goes to sources more than two layers back, averaged over the
# layers that have such sources.
#
# ### Exercise 1: the long-range share
#
# Compute it from one block's reuse matrix `usage` (rows: sources $x_0 .. x_L$;
# column $\ell - 1$: layer $\ell$; the last column is the block's reader, not a
# layer; NaN where a layer cannot see a source): for every layer $\ell \ge 4$,
# the weight from sources $x_0 .. x_{\ell-3}$ divided by the weight from all its
# sources $x_0 .. x_{\ell-1}$; then the mean over those layers.

# %% tags=["exercise-stub"]
def long_range_share(usage):
    """Mean over layers l >= 4 of the share of layer l's weight on sources more than two layers back."""
    raise NotImplementedError("compute the long-range share")

# %% tags=["exercise-check"]
check_long_range_share(long_range_share)

# %% [markdown]
# Once your function passes, the cell below uses it on every network we have:

# %%
networks = [("DenseNet-BC untrained", all_blocks(untrained)), (f"DenseNet-BC, {bc_label}", trained_blocks)]
if paper_model is not None:
    networks.append((f"paper's DenseNet-40, {paper_epochs} epochs", all_blocks(paper_model)))
if passed("long_range_share"):
    for label, blocks in networks:
        shares = [long_range_share(usage) for _, usage, _ in blocks]
        print(f"{label}: {np.mean(shares):.0%} of a layer's weight goes to sources more than two layers "
              f"back (blocks: {', '.join(f'{v:.0%}' for v in shares)})")
else:
    print("(finish exercise 1 to see the long-range share of each network)")

# %% [markdown]
# (Before training the share is simply the fraction of such sources. The
# question is whether training drives it towards zero, as it would if layers
# only cared about their immediate predecessors.)
#
# ## 5. A functional test: switch the long-range connections off
#
# Large weights suggest use; the direct test is to remove a connection and see
# what the network loses. In every layer $\ell \ge 4$ of every block we zero the
# weights of the layer's first convolution that read sources more than two
# layers back ($x_0 .. x_{\ell-3}$), and measure the test accuracy. Removing
# something always hurts a little, so we compare with removing **the same
# number of weights** elsewhere: the weights that read the two most recent
# sources $x_{\ell-2}, x_{\ell-1}$ ($2k$ input channels), and, as the fair
# comparison, $2k$ input channels drawn at random from the long-range sources.
# The weights are restored after each measurement.

# %%
def reading_layers(model):
    """For every layer l >= 4 of every dense block: (its first conv's weight, `cut`, 2k), where
    input channels 0 .. cut-1 come from x_0 .. x_{l-3} and the last 2k from x_{l-2}, x_{l-1}."""
    for block in model.features.children():
        if not isinstance(block, DenseBlock):
            continue
        layers = list(block.children())
        k0 = layers[0].conv1.in_channels
        k = (layers[0].conv2 if layers[0].bottleneck else layers[0].conv1).out_channels
        for l, layer in enumerate(layers, start=1):
            if l >= 4:
                yield layer.conv1.weight, k0 + (l - 3) * k, 2 * k


def accuracy_without(model, loader, choose):
    """Test accuracy with, in every layer l >= 4, the input channels choose(cut, two_k) of its
    first convolution zeroed; returns (accuracy, number of weights zeroed). Restores the weights."""
    saved, zeroed = [], 0
    try:
        for weight, cut, two_k in reading_layers(model):
            channels = choose(cut, two_k)
            saved.append((weight, weight.data.copy()))
            weight.data[:, channels] = 0
            zeroed += weight.data[:, channels].size
        return evaluate(model, loader, 10)["acc"], zeroed
    finally:
        for weight, original in saved:
            weight.data[...] = original


if paper_model is not None:
    reuse_model, reuse_label, stats = paper_model, f"the paper's DenseNet-40 ({paper_epochs} epochs)", paper_state["data"]
else:
    reuse_model, reuse_label = model, f"DenseNet-BC, {bc_label} (NOT the paper's network)"
    train_images = load_cifar("cifar10", root=DATA, train=True, download=True).head(64 if FAST else 5085)
    stats = dict(zip(("mean", "std"), train_images.channel_stats()))
test_set = load_cifar("cifar10", root=DATA, train=False, download=True).head(64 if FAST else 1017)
test_loader = DataLoader(test_set, 128, mean=stats["mean"], std=stats["std"])
ablation_rng = np.random.default_rng(0)

base = evaluate(reuse_model, test_loader, 10)["acc"]
long_acc, n_long = accuracy_without(reuse_model, test_loader, lambda cut, two_k: np.arange(cut))
recent_acc, n_recent = accuracy_without(reuse_model, test_loader, lambda cut, two_k: np.arange(cut, cut + two_k))
draws = [accuracy_without(reuse_model, test_loader, lambda cut, two_k: ablation_rng.choice(cut, two_k, replace=False))
         for _ in range(1 if FAST else 3)]
random_acc, n_random = float(np.mean([a for a, _ in draws])), draws[0][1]
print(f"{reuse_label}, {len(test_set)} test images: accuracy {base:.1%}")
for what, acc, n in (("every long-range weight (sources > 2 layers back)", long_acc, n_long),
                     ("the two most recent sources, x_(l-2) and x_(l-1)", recent_acc, n_recent),
                     (f"as many long-range weights, random channels (mean of {len(draws)})", random_acc, n_random)):
    print(f"  without {what:<68} {n:>9,} weights zeroed: {acc:6.1%}  (drop {base - acc:+.1%})")

# %% [markdown]
# **What we measured** (2026-12-02, the paper's plain DenseNet $L = 40$, $k = 12$
# trained for 20 epochs on the course's CIFAR-10 subset with the command above and
# `--epochs 20`: 70.99% test accuracy; its heatmap is
# `docs/results/densenet-L40-k12-20-epochs-fig5.png`):
#
# | what is zeroed in every layer $\ell \ge 4$ | weights zeroed | test accuracy | drop |
# | --- | ---: | ---: | ---: |
# | nothing | 0 | 71.0% | |
# | every weight from sources more than two layers back | 641,520 | 10.0% (chance) | 61.0 points |
# | the two most recent sources $x_{\ell-2}, x_{\ell-1}$ | 69,984 | 41.7% | 29.3 points |
# | as many long-range weights, random channels (mean of 3 draws) | 69,984 | 45.9% | 25.1 points |
#
# Per weight, the two newest sources matter a little more than a random
# long-range pair of sources (29 against 25 points), as the heatmap's bright
# diagonal suggests, but the long-range weights are far from idle: removing a
# random tenth of them costs a quarter of the accuracy, and removing all of them
# leaves a network at chance. Its long-range share (exercise 1) was 71% of each
# layer's weight, the same as at initialisation (72% for 12 layers a block: the
# fraction of such sources), so training did not concentrate the weight on the
# recent layers: the network really reads its early features.
#
# Two cautions when you read such numbers. First, a drop measures what the
# network *has come to depend on*, not what it could do without: a network
# trained without long-range connections would learn to do without them.
# Second, zeroing weights shifts the statistics that the next batch norm was
# trained with (its running mean and variance), so part of every drop is that
# shift; the equal-size comparisons share it, which is why we compare them.
#
# ## Questions and exercises
#
# 1. Batch norm's scale $\gamma$ multiplies each channel before the convolution reads
#    it. Recompute the heatmap with every weight column multiplied by the $\gamma$ of
#    `norm1`. Does the picture change?
# 2. Train for longer (the training lesson with more epochs) and redraw. Which of the four
#    observations become clearer?
# 3. Compare the paper's network (no compression) with DenseNet-BC: is the $x_0$ row
#    of blocks 2 and 3 pale in both? What does compression change in that row?
# 4. Why is "average absolute weight" a better measure here than "sum of absolute
#    weights"? When would both mislead you?
# 5. If a source were never used, what could you do with its channels? (Think
#    about pruning, and about the compression factor.)
# 6. In section 5, which removal costs more accuracy per weight: the recent sources or an
#    equal number of long-range ones? What would the answer be for a ResNet-like network in
#    which a layer read only its predecessor? Repeat the test for DenseNet-BC, whose 1x1
#    bottleneck reads the sources: does compression change the answer?
