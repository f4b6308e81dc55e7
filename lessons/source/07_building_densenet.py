# %% [markdown]
# # Lesson 7: Building DenseNet-BC
#
# Lesson 6 took dense connectivity apart. Now we put a whole DenseNet-BC
# together from `tinydense.nn` layers, in about fifty lines, check that it is
# the same network as `tinydense.models.densenet_bc` down to the last weight,
# and read its per-layer cost table.
#
# ## What you will learn
#
# - how a dense layer, a dense block, a transition and the full network are
#   assembled from `Conv2d`, `BatchNorm2d`, `ReLU`, pooling and `Linear` modules
#   (you write the first three, checked against the library);
# - how parameter names such as `features.denseblock2.denselayer5.conv1.weight`
#   arise, and why tinydense uses torchvision's names;
# - how to read `tinydense.summary` for a real network: where the parameters,
#   the multiply-adds and the activation memory are;
# - how weights move between two implementations, and from PyTorch, through a
#   `state_dict`, and why loading a `.pth` file needs care.

# %%
%matplotlib inline
from collections import OrderedDict

import matplotlib.pyplot as plt
import numpy as np

import tinydense as td
import tinydense.functional as F
import tinydense.nn as nn
from tinydense.models import densenet121, densenet_bc
from tinydense.models.densenet import DenseBlock as LibraryDenseBlock, Transition as LibraryTransition

from checks.l07_building_densenet import check_dense_block, check_dense_layer, check_transition
from checks.common import passed

td.manual_seed(0)
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. The dense layer
#
# A DenseNet-BC layer receives the list of all earlier feature maps,
# concatenates them, and applies the bottleneck composite function
#
# $$\text{BN} \to \text{ReLU} \to \text{Conv1x1}(4k) \to \text{BN} \to \text{ReLU} \to \text{Conv3x3}(k).$$
#
# The convolutions have no bias: each is followed by a batch norm whose
# own bias would absorb it. Attribute names become parameter names, so we
# choose the same names as torchvision: `norm1`, `relu1`, `conv1`, `norm2`,
# `relu2`, `conv2`, created in that order.
#
# ### Exercise 1: `DenseLayer`
#
# Write it with `nn.BatchNorm2d`, `nn.ReLU` and `nn.Conv2d(in, out, kernel_size,
# padding=..., bias=False)`. `forward` gets the list of feature maps; `F.cat(features,
# axis=1)` joins them. The check compares the parameter names and shapes with
# `tinydense.models.DenseLayer`, copies its weights into yours and compares the
# outputs in training and eval mode.

# %% tags=["exercise-stub"]
class DenseLayer(nn.Module):
    def __init__(self, in_channels, growth_rate):
        super().__init__()
        raise NotImplementedError("create norm1, relu1, conv1, norm2, relu2, conv2")

    def forward(self, features):
        # features: a list of (N, C_i, H, W) tensors -> (N, growth_rate, H, W)
        raise NotImplementedError("write the dense layer's forward pass")

# %% tags=["exercise-check"]
check_dense_layer(DenseLayer)

# %% [markdown]
# ## 2. The dense block and the transition
#
# The block keeps a Python list of feature maps, hands the whole list to each
# layer, and appends the layer's output. Its output is the concatenation of
# everything: $k_0 + Lk$ channels. Its layers are named `denselayer1`,
# `denselayer2`, ... (`self.add_module(name, layer)` registers a module under a
# name made at run time). The transition between blocks compresses the
# channels with BN-ReLU and a 1x1 convolution (`norm`, `relu`, `conv`) and halves
# the image with 2x2 average pooling, stride 2 (`pool`).
#
# ### Exercise 2: `DenseBlock`

# %% tags=["exercise-stub"]
class DenseBlock(nn.Module):
    def __init__(self, num_layers, in_channels, growth_rate):
        super().__init__()
        raise NotImplementedError("add denselayer1 ... denselayerL, each a DenseLayer")

    def forward(self, x):
        # x (N, in_channels, H, W) -> (N, in_channels + num_layers * growth_rate, H, W)
        raise NotImplementedError("write the dense block's forward pass")

# %% tags=["exercise-check"]
check_dense_block(DenseBlock)

# %% [markdown]
# ### Exercise 3: `Transition`

# %% tags=["exercise-stub"]
class Transition(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        raise NotImplementedError("create norm, relu, conv and pool")

    def forward(self, x):
        # x (N, in_channels, H, W) -> (N, out_channels, H // 2, W // 2)
        raise NotImplementedError("write the transition's forward pass")

# %% tags=["exercise-check"]
check_transition(Transition)

# %% [markdown]
# The network below is built from your block and transition once their checks
# pass, and from the library's until then (the same modules, with the same
# names):

# %%
Block = DenseBlock if passed("DenseBlock") and passed("DenseLayer") else LibraryDenseBlock
Trans = Transition if passed("Transition") else LibraryTransition
print("dense blocks:", "yours" if Block is DenseBlock else "the library's",
      "  transitions:", "yours" if Trans is Transition else "the library's")

# %% [markdown]
# ## 3. The network
#
# For CIFAR: a 3x3 stem convolution to $2k$ channels, three dense blocks of
# $n = (L - 4)/6$ layers on 32x32, 16x16 and 8x8 images, transitions with
# compression $\theta = 0.5$, a final batch norm and ReLU, global average
# pooling and a linear classifier. As in torchvision, everything up to the
# final batch norm lives in one `Sequential` called `features`.

# %%
class DenseNetBC(nn.Module):
    def __init__(self, depth=100, growth_rate=12, num_classes=10):
        super().__init__()
        n = (depth - 4) // 6
        channels = 2 * growth_rate
        layers = OrderedDict(conv0=nn.Conv2d(3, channels, 3, padding=1, bias=False))
        for b in range(1, 4):
            layers[f"denseblock{b}"] = Block(n, channels, growth_rate)
            channels += n * growth_rate
            if b < 3:
                layers[f"transition{b}"] = Trans(channels, channels // 2)
                channels //= 2
        layers["norm5"] = nn.BatchNorm2d(channels)
        self.features = nn.Sequential(layers)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x):
        out = F.relu(self.features(x))
        out = F.flatten(F.adaptive_avg_pool2d(out, 1))
        return self.classifier(out)


ours = DenseNetBC(depth=100, growth_rate=12)
print("parameters:", f"{sum(p.size for p in ours.parameters()):,}")

# %% [markdown]
# ## 4. Is it the same network as `tinydense.models.densenet_bc`?
#
# Two models are the same architecture if they have the same parameters
# under the same names and compute the same function with the same weights.
# A `state_dict` maps names to arrays, so we can copy the library model's
# random weights into ours and compare outputs on a batch of images (in
# evaluation mode, so batch norm uses the copied running statistics).

# %%
reference = densenet_bc(100, 12)
ours_keys, reference_keys = list(ours.state_dict()), list(reference.state_dict())
print("same names in the same order:", ours_keys == reference_keys, f"({len(ours_keys)} entries)")
for key in ours_keys[:8] + ["..."] + ours_keys[-4:]:
    print("  ", key)

ours.load_state_dict(reference.state_dict())
ours.eval()
reference.eval()
images = td.tensor(rng.standard_normal((2, 3, 32, 32)).astype(np.float32))
with td.no_grad():
    difference = np.abs(ours(images).numpy() - reference(images).numpy()).max()
print("largest output difference:", difference)

# %% [markdown]
# The names follow a simple rule: the path of attributes from the model to the
# parameter, joined with dots. `features.denseblock2.denselayer5.conv1.weight`
# is the weight of the first convolution of the fifth layer of the second
# block. torchvision uses exactly these names for its ImageNet DenseNets, so a
# file of PyTorch weights is, after unpickling, a dictionary tinydense can
# load directly into `densenet121()` and the others. Here are the names and
# shapes at the start of DenseNet-121:

# %%
imagenet = densenet121()
state = imagenet.state_dict()
for key in list(state)[:14]:
    print(f"{key:48s} {state[key].shape}")
print(f"... {len(state)} entries, {sum(p.size for p in imagenet.parameters()):,} parameters")

# %% [markdown]
# ## 5. Loading PyTorch weights
#
# PyTorch saves a `state_dict` with `torch.save`, which writes a **pickle** (plus
# the raw bytes of every tensor, in a zip archive). A pickle is a small program:
# loading one with Python's `pickle.load` may call any function it names, so a
# weights file from the internet could run anything on your machine.
# `tinydense.load_pth` reads these files without PyTorch and without that risk:
# its unpickler accepts only the few names a tensor needs and refuses the file
# before running anything else. It returns a dictionary name -> NumPy array,
# ready for `load_state_dict`.
#
# The repository's tests keep a tiny DenseNet saved **by PyTorch** (ImageNet
# stem, growth rate 4, two blocks of two layers, 5 classes), together with the
# logits PyTorch computed for a fixed input. If tinydense loads the weights and
# computes the same logits, the names, the layouts of the arrays and every op
# on the way agree with PyTorch's.

# %%
from pathlib import Path

fixtures = Path("..") / "tests" / "fixtures"
if not fixtures.is_dir():          # the student release keeps them beside the notebooks
    fixtures = Path("fixtures")
state = td.load_pth(fixtures / "tiny_densenet.pth")
expected = np.load(fixtures / "expected.npz", allow_pickle=False)
print(f"{len(state)} arrays, for example:")
for key in list(state)[:3]:
    print(f"  {key:42s} {state[key].dtype} {state[key].shape}")

tiny = td.models.DenseNet(growth_rate=4, block_config=(2, 2), num_init_features=8, bn_size=2, num_classes=5)
tiny.load_state_dict(state)
tiny.eval()
with td.no_grad():
    logits = tiny(td.tensor(expected["input"])).numpy()
print("PyTorch's logits :", expected["logits"][0].round(4))
print("tinydense logits :", logits[0].round(4))
print("largest difference:", np.abs(logits - expected["logits"]).max())

# %% [markdown]
# torchvision's published DenseNet weights are older files, from before
# PyTorch 1.6, in a different layout and with older names
# (`denselayer1.norm.1.weight` instead of `denselayer1.norm1.weight`, from a
# time when module names could contain dots). `load_pth` reads that format too
# and renames the keys as PyTorch itself does. The fixtures include the same
# tiny network saved that way:

# %%
legacy = td.load_pth(fixtures / "tiny_densenet_legacy.pth")
print("same names after renaming:", list(legacy) == list(state))
print("same arrays:", all(np.array_equal(legacy[k], state[k]) for k in state if "num_batches" not in k))

# %% [markdown]
# With the real file (about 30 MB, from the address torchvision lists for
# `densenet121`), the same two lines give you an ImageNet classifier:
#
# ```python
# model = td.models.densenet121()
# model.load_state_dict(td.load_pth("densenet121-a639ec97.pth"))
# ```
#
# ## 6. The cost of every layer
#
# `tinydense.summary(model, (C, H, W))` runs the model once on a zero image
# and tabulates every layer's output shape, parameters, multiply-adds and
# output memory, the same quantities we computed by hand for AlexNet in
# lesson 2. With `depth=2` it folds the layers of each block into one row:

# %%
report = td.summary(reference, (3, 32, 32), depth=2)
print(report)

# %% [markdown]
# The full table has a row per layer. Plotted along the network it shows the
# pattern of a DenseNet: inside each block the memory and multiply-adds of
# the `norm1` and `conv1` rows grow steadily (they see the ever wider
# concatenated input), while the 3x3 convolutions cost the same in every
# layer of a block. Each transition quarters the image and so drops the
# cost by a large step.

# %%
rows = td.summary(reference, (3, 32, 32)).rows
fig, axes = plt.subplots(3, 1, figsize=(10, 7), sharex=True)
positions = np.arange(len(rows))
for ax, key, label in [(axes[0], "memory_bytes", "output memory (KB)"),
                       (axes[1], "flops", "multiply-adds (M)"),
                       (axes[2], "params", "parameters (K)")]:
    scale = 1024 if key == "memory_bytes" else (1e6 if key == "flops" else 1e3)
    ax.bar(positions, [r[key] / scale for r in rows], width=1.0,
           color=["tab:orange" if r["type"] == "BatchNorm2d" else "tab:blue" for r in rows])
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
for r_index, r in enumerate(rows):
    if r["name"].startswith("features.transition") and r["name"].endswith(".conv"):
        for ax in axes:
            ax.axvline(r_index, color="gray", ls="--", lw=0.8)
axes[2].set_xlabel("layer (in the order they run); dashed lines: transitions")
axes[0].set_title("DenseNet-BC (L=100, k=12) on a 32x32 image: orange = batch norm")
plt.tight_layout()
plt.show()

totals = {t: sum(r["flops"] for r in rows if r["type"] == t) for t in ("Conv2d", "Linear", "AvgPool2d")}
print({t: f"{v / report.total_flops:.1%}" for t, v in totals.items()}, "of the multiply-adds")
print(f"total: {report.total_params:,} parameters, {report.total_flops / 1e6:.0f} M multiply-adds, "
      f"{report.total_memory_bytes / 2**20:.1f} MB of layer outputs per image")

# %% [markdown]
# Two numbers to remember: a DenseNet-BC-100 has under a million parameters
# but needs about 0.3 G multiply-adds per image, and its layer outputs take
# megabytes per image, many times the size of its weights. Training stores
# those outputs for the backward pass, so for DenseNets the **activations**,
# not the parameters, fill the memory. Lesson 10 measures this and shows what
# to do about it.
#
# ## Questions and exercises
#
# 1. Add dropout (rate 0.2) after each convolution of `DenseLayer`, as the paper does
#    for CIFAR without augmentation. Does the `state_dict` change? Why not?
# 2. Change `DenseNetBC` into a plain DenseNet (no bottleneck, no compression, 16 stem
#    channels) and check it against `tinydense.models.densenet(40, 12)`.
# 3. From the summary, which layer of DenseNet-BC-100 has the largest output? Compute
#    its size by hand.
# 4. Why can the same weights run on a 32x32 image and a 64x64 one? What changes in
#    the summary, and what breaks if you remove the global average pooling?
# 5. Look at the keys of `imagenet.state_dict()` (DenseNet-121): which entries are buffers rather than
#    parameters, and why must they be saved too?
