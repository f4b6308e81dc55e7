# %% [markdown]
# # Lesson 3: From AlexNet to DenseNet
#
# Between 2012 and 2017 the winners of the ImageNet challenge went from eight
# layers to more than a hundred: AlexNet, ZFNet, VGG, GoogLeNet, ResNet and
# ResNeXt, then DenseNet. Each step is usually told as a story about
# accuracy. This lesson tells it as a story about **cost**: where each network
# keeps its memory, its parameters and its arithmetic, and which design idea
# moved which of the three. Every number here is computed from the models in
# `tinydense.models`, which have torchvision's layers, names and parameter
# counts, so you can check each claim of the lecture yourself, and change the
# models to see what happens.
#
# ## What you will learn
#
# - where AlexNet's activation memory, parameters and multiply-adds sit, layer by layer, and why;
# - how ZFNet and VGG grew it: VGG's design rules, why two 3x3 convolutions beat one 5x5
#   (receptive field, parameters, multiply-adds and time, measured), and why its stages cost the same;
# - GoogLeNet's efficiency tricks: an aggressive stem, 1x1 "reductions" in the Inception
#   module, global average pooling instead of big fully connected layers;
# - ResNet's residual blocks, basic and bottleneck;
# - grouped convolutions and ResNeXt, with the lecture's multiply-add formula checked against `summary`;
# - where DenseNet sits in the lecture's complexity comparison;
# - and, as exercises: the cost of a VGG stage, the ResNeXt formula, and the backward pass of
#   a grouped convolution.
#
# **A word on counting.** `td.summary` counts *multiply-adds* (MACs): a multiplication
# and the addition that follows it count as one. The lecture and most papers call these
# "FLOPs" (torchvision: "GFLOPS"); the floating-point operations are twice as many. A
# convolution producing $C_{out} \times H' \times W'$ values, each a sum over a
# $K \times K$ window of $C_{in}$ channels, costs $C_{out} H' W' \cdot C_{in} K^2$
# multiply-adds. Memory means the bytes of a layer's output (4 per float32 number).

# %%
%matplotlib inline
import os

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display

import tinydense as td
import tinydense.functional as F
from tinydense import Function, models, nn
from tinydense.backend import get_array_module
from tinydense.nn import init
from tinydense.tools.compare import ACCURACY, build, compare, complexity_figure, median_seconds

from checks.l03_architectures import check_grouped_conv, check_resnext_macs, check_vgg_stage

FAST = os.environ.get("TINYDENSE_LESSONS_FAST") == "1"   # small settings for CI
IMAGE = 64 if FAST else 224     # the image size of the VGG and GoogLeNet sections (the lecture's: 224)
rng = np.random.default_rng(0)

# %% [markdown]
# `build(name)` makes a model of `tinydense.models` with all-zero weights: instant even
# for VGG's 138 million parameters, and enough for everything in this lesson except
# training, because what a layer costs does not depend on the values of its weights.
#
# ## 1. AlexNet: memory early, parameters late, arithmetic in the middle
#
# Five convolutions, three max pools and three fully connected layers, on a $227 \times 227$
# image (the lecture's table uses torchvision's version: 64, 192, 384, 256, 256 filters).
# `td.summary` runs one image through it and records every layer:

# %%
alexnet = build("alexnet")
report = td.summary(alexnet, (3, 227, 227))
print(report)

# %% [markdown]
# The first row is the lecture's first worked example. The output is
# $(227 - 11 + 2 \cdot 2)/4 + 1 = 56$ pixels wide with 64 channels, so it takes
# $64 \cdot 56^2 \cdot 4$ bytes $= 784$ KB; the layer has $64 \cdot 3 \cdot 11^2 + 64 = 23{,}296$
# parameters, and each of its $64 \cdot 56^2$ outputs costs $3 \cdot 11^2$ multiply-adds: 72.9 M.
# Now the whole network, one bar per layer (ReLU, dropout and flatten rows left out:
# they cost nothing, and ReLU's output is as big as its input's):

# %%
def short_names(rows):
    """conv1, pool1, ..., fc6, fc7, fc8 for AlexNet-like summary rows."""
    names, counts = [], {"Conv2d": 0, "MaxPool2d": 0, "Linear": 5}
    for r in rows:
        counts[r["type"]] += 1
        names.append({"Conv2d": "conv", "MaxPool2d": "pool", "Linear": "fc"}[r["type"]] + str(counts[r["type"]]))
    return names


layers = [r for r in report.rows if r["type"] in ("Conv2d", "MaxPool2d", "Linear")]
names = short_names(layers)
colours = ["tab:blue" if r["type"] == "Conv2d" else "tab:gray" if r["type"] == "MaxPool2d" else "tab:red"
           for r in layers]
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
for ax, key, scale, label in [(axes[0], "memory_bytes", 1024, "output memory (KB)"),
                              (axes[1], "params", 1e6, "parameters (M)"),
                              (axes[2], "macs", 1e6, "multiply-adds (M)")]:
    ax.bar(names, [r[key] / scale for r in layers], color=colours)
    ax.set_title(label)
    ax.tick_params(axis="x", rotation=60)
    ax.grid(alpha=0.3, axis="y")
fig.suptitle("AlexNet on one 227x227 image (blue: conv, gray: pool, red: fully connected)")
plt.tight_layout()
plt.show()

kinds = {"conv": "Conv2d", "fully connected": "Linear"}
for what, key in [("memory", "memory_bytes"), ("parameters", "params"), ("multiply-adds", "macs")]:
    total = sum(r[key] for r in layers)
    shares = ", ".join(f"{k} {sum(r[key] for r in layers if r['type'] == t) / total:.1%}" for k, t in kinds.items())
    print(f"{what:14s}: {shares}")
first_two = sum(r["memory_bytes"] for r in layers[:3]) / sum(r["memory_bytes"] for r in layers)
fc6 = layers[names.index("fc6")]
print(f"conv1, pool1 and conv2 hold {first_two:.0%} of the output memory; "
      f"fc6 alone has {fc6['params']:,} parameters ({fc6['params'] / report.total_params:.0%} of all)")

# %% [markdown]
# The lecture's three observations, now measured:
#
# - **Memory is in the early layers.** They run at high resolution (56x56, 27x27) with many
#   channels. Training keeps these outputs for the backward pass, so they decide the batch size
#   that fits.
# - **Parameters are in the fully connected layers.** `fc6` connects every one of the
#   $256 \cdot 6 \cdot 6 = 9216$ values of the last feature map to each of 4096 units.
# - **Arithmetic is in the convolutions.** A fully connected layer uses each weight once per
#   image; a convolution uses each weight at every output pixel.
#
# (The 2012 network itself, `models.alexnet_2012()`, had 96, 256, 384, 384, 256 filters and split
# conv2, conv4 and conv5 across two GPUs: grouped convolutions with two groups, the idea
# section 6 comes back to.)
#
# ## 2. ZFNet: the same network, bigger
#
# ZFNet changed AlexNet's first layer from 11x11 with stride 4 to 7x7 with stride 2 (it
# downsamples less, so every later layer sees more pixels) and widened conv3, conv4 and
# conv5 to 512, 1024 and 512 filters:

# %%
zfnet = td.summary(build("zfnet"), (3, 224, 224))
alexnet224 = td.summary(alexnet, (3, 224, 224))
for name, s in [("AlexNet", alexnet224), ("ZFNet", zfnet)]:
    print(f"{name:8s} at 224x224: {s.total_params / 1e6:6.1f} M parameters, {s.total_macs / 1e9:.2f} G multiply-adds, "
          f"{s.total_memory_bytes / 2 ** 20:5.1f} MB of layer outputs")
print(f"published top-1: AlexNet {ACCURACY['alexnet_2012'].top1}% (one CNN, 2012), "
      f"ZFNet {ACCURACY['zfnet'].top1}% (one net, 2014), both with ten-crop testing")

# %% [markdown]
# More than three times the arithmetic for about three points of accuracy: the lesson of
# 2013 was "bigger is better", found by trial and error, one layer at a time.
#
# ## 3. VGG: deeper, with one rule for every layer
#
# VGG replaced the hand-tuned layer list by a rule: every convolution is **3x3 with stride 1
# and padding 1**, every pool is **2x2 max pooling with stride 2**, and after each pool the
# number of channels **doubles**. A network is then a list of *stages*, each a few convs
# and a pool. Why only 3x3 kernels?
#
# ### Two 3x3 convolutions or one 5x5?
#
# The *receptive field* of an output pixel is the set of input pixels it depends on. We can
# find it without any reasoning, by backpropagation: the gradient of one output pixel with
# respect to the input is non-zero exactly where the input matters.

# %%
def receptive_field(kernels, size=17):
    """Height and width of the input region that the centre output of a stack of convolutions
    (one channel, stride 1, 'same' padding, all weights 1) depends on, from its gradient."""
    net = nn.Sequential(*[nn.Conv2d(1, 1, k, padding=k // 2, bias=False) for k in kernels]).double()
    for conv in net:
        init.ones_(conv.weight)
    x = td.tensor(np.ones((1, 1, size, size)), requires_grad=True)
    y = net(x)
    g = np.zeros(y.shape)
    g[0, 0, size // 2, size // 2] = 1.0               # d(centre output) / d(input)
    y.backward(g)
    rows, cols = np.nonzero(x.grad[0, 0])
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


for kernels in [(3,), (3, 3), (5,), (3, 3, 3), (7,)]:
    h, w = receptive_field(kernels)
    print(f"{' + '.join(f'{k}x{k}' for k in kernels):18s} sees {h}x{w} input pixels")

# %% [markdown]
# Two stacked 3x3 convolutions see the same 5x5 window as one 5x5 convolution, and three see
# 7x7. What do they cost, on $C$ channels in and out at $H \times H$? The weights: $2 \cdot 9C^2$
# against $25C^2$. The multiply-adds: $2 \cdot 9C^2H^2$ against $25C^2H^2$. And the stack has
# two ReLUs where the big kernel has one. `summary` confirms the counts, and a timing of the
# forward and backward pass shows what they mean on this machine:

# %%
C, H, N = (32, 16, 4) if FAST else (64, 56, 4)
td.manual_seed(0)
stacks = {"two 3x3": nn.Sequential(nn.Conv2d(C, C, 3, padding=1), nn.ReLU(), nn.Conv2d(C, C, 3, padding=1), nn.ReLU()),
          "one 5x5": nn.Sequential(nn.Conv2d(C, C, 5, padding=2), nn.ReLU())}
x = td.tensor(rng.standard_normal((N, C, H, H)).astype(np.float32), requires_grad=True)


def forward_backward(net):
    y = net(x)
    y.backward(np.ones(y.shape, np.float32))


for name, net in stacks.items():
    s = td.summary(net, (C, H, H))
    seconds = median_seconds(lambda: forward_backward(net), repeats=3 if FAST else 5)
    print(f"{name}: {s.total_params:8,} parameters, {s.total_macs / 1e6:7.1f} M multiply-adds per image, "
          f"forward + backward of {N} images in {1e3 * seconds:6.1f} ms (median, measured)")

# %% [markdown]
# The stack has 28% fewer parameters and multiply-adds ($18/25$) for the same receptive
# field, and more non-linearity. The measured time shrinks too, but usually by less than the
# count: two layers make two passes over the activations (and two ReLUs), and two smaller
# matrix products run a little less efficiently than one larger one. With three 3x3 convs
# against one 7x7 the saving in arithmetic is $27/49$. So the kernel size stops being a design
# choice: VGG only chooses *how many* 3x3 convs each stage has.
#
# ### VGG-16, stage by stage
#
# Why double the channels after each pool? Halving the image divides a conv's outputs by 4;
# doubling the channels multiplies its work per output by 2 (input channels) and the number of
# outputs by 2 (output channels). So every C -> C conv of the stages costs the same
# $9 C^2 H^2$. Here is VGG-16 by stages (on a $224 \times 224$ image in the lecture; the fast
# settings of this notebook use a smaller one: the memory and multiply-adds of the
# convolutions scale with the image's area, the parameters do not change):

# %%
vgg16 = build("vgg16")
vgg = td.summary(vgg16, (3, IMAGE, IMAGE))
stages, current = [], []
for r in vgg.rows:
    if r["name"].startswith("features."):
        current.append(r)
        if r["type"] == "MaxPool2d":
            stages.append(current)
            current = []
print(f"VGG-16 at {IMAGE}x{IMAGE}")
print(f"{'stage':6s} {'convs':>5s} {'output':>12s} {'memory MB':>10s} {'params M':>9s} {'G MACs':>8s} "
      f"{'G MACs of one C->C conv':>24s}")
for i, stage in enumerate(stages):
    convs = [r for r in stage if r["type"] == "Conv2d"]
    c, h, _ = convs[-1]["output_shape"]
    print(f"{i + 1:<6d} {len(convs):5d} {f'{c}x{h}x{h}':>12s} {sum(r['memory_bytes'] for r in stage) / 2**20:10.2f} "
          f"{sum(r['params'] for r in stage) / 1e6:9.2f} {sum(r['macs'] for r in convs) / 1e9:8.3f} "
          f"{convs[-1]['macs'] / 1e9:24.3f}")
head = [r for r in vgg.rows if r["type"] == "Linear"]
print(f"classifier: {sum(r['params'] for r in head) / 1e6:.1f} M parameters "
      f"({sum(r['params'] for r in head) / vgg.total_params:.0%} of {vgg.total_params / 1e6:.1f} M), "
      f"{sum(r['macs'] for r in head) / 1e6:.0f} M multiply-adds")

# %% [markdown]
# Reading down the table: the memory halves from stage to stage, the parameters grow
# fourfold (until the channels stop at 512), and one C -> C conv costs the same in the first
# four stages. VGG-16 is far bigger than AlexNet in every column, and the lecture's
# conclusion was the same as ZFNet's: deeper and bigger is better, if you can afford it.
# (VGG was trained with the batches split over four GPUs, each GPU a copy of the whole
# network: data parallelism, not AlexNet's model split.)
#
# ### Exercise 1: the cost of a VGG stage
#
# Write `vgg_stage_cost(c_in, c, n_convs, size)`: the parameters and multiply-adds of a
# stage's `n_convs` 3x3 convolutions (padding 1, with bias) on `size` x `size` images, the
# first from `c_in` channels to `c`, the others from `c` to `c`. Leave the pool out (it has no
# parameters). Return `(parameters, multiply_adds)`. The check compares your numbers with
# `summary` of stages built by `tinydense.models.vgg.make_layers`.

# %% tags=["exercise-stub"]
def vgg_stage_cost(c_in, c, n_convs, size):
    # return (parameters, multiply_adds) of n_convs 3x3 convs (padding 1, bias) at size x size:
    # the first c_in -> c channels, the others c -> c
    raise NotImplementedError("compute the parameters and multiply-adds of a VGG stage")

# %% tags=["exercise-check"]
check_vgg_stage(vgg_stage_cost)

# %% [markdown]
# ## 4. GoogLeNet: the same accuracy for much less
#
# GoogLeNet (Inception v1, 2014) was designed for efficiency. Three of its ideas are still
# in almost every network.
#
# ### The stem: downsample fast, cheaply
#
# A few layers take the image from 224x224 to 28x28 (conv 7x7/2, max pool, 1x1 conv, 3x3 conv,
# max pool). VGG-16 reaches 28x28 only after its third stage:

# %%
googlenet = build("googlenet")
goog = td.summary(googlenet, (3, IMAGE, IMAGE))
names = [r["name"] for r in goog.rows]
stem = goog.rows[:names.index("maxpool2") + 1]
vgg_names = [r["name"] for r in vgg.rows]
vgg_to_same = vgg.rows[:vgg_names.index("features.16") + 1]          # the end of VGG's third stage
for name, rows in [("GoogLeNet's stem", stem), ("VGG-16's stages 1-3", vgg_to_same)]:
    c, h, w = rows[-1]["output_shape"]
    print(f"{name:20s} -> {c}x{h}x{w}: {sum(r['memory_bytes'] for r in rows) / 2**20:6.2f} MB, "
          f"{sum(r['params'] for r in rows) / 1e6:5.2f} M parameters, {sum(r['macs'] for r in rows) / 1e9:6.3f} G MACs")
ratio = sum(r["macs"] for r in vgg_to_same) / sum(r["macs"] for r in stem)
print(f"VGG-16 spends {ratio:.0f} times the multiply-adds to reach the same resolution")

# %% [markdown]
# ### The Inception module: every kernel size, after a 1x1 reduction
#
# Instead of choosing a kernel size, an Inception module runs several branches side by side on
# the same input and concatenates their outputs along the channels: a 1x1 conv, a 3x3 conv, a
# 5x5 conv and a 3x3 max pool. Run naively on the 192 channels that enter `inception3a`, the 3x3
# and 5x5 convs are expensive, and the pool branch passes all 192 channels on, so the output
# grows with every module. GoogLeNet puts **1x1 convolutions** in front of the 3x3 and 5x5 convs
# (and after the pool) to reduce the channels first: a "bottleneck". (torchvision's GoogLeNet,
# whose weights `tinydense` loads, uses a 3x3 conv where the paper has the 5x5 one.)

# %%
class NaiveInception(nn.Module):
    """The module without reductions: 1x1, 3x3 and 5x5 convs and a 3x3 max pool on the input."""

    def __init__(self, c_in, c1, c3, c5):
        super().__init__()
        self.branch1 = nn.Conv2d(c_in, c1, 1)
        self.branch2 = nn.Conv2d(c_in, c3, 3, padding=1)
        self.branch3 = nn.Conv2d(c_in, c5, 5, padding=2)
        self.branch4 = nn.MaxPool2d(3, stride=1, padding=1)

    def forward(self, x):
        return F.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], axis=1)


with init.skip_init():
    naive = NaiveInception(192, 64, 128, 32)
for name, module in [("naive module", naive), ("inception3a", googlenet.inception3a)]:
    s = td.summary(module, (192, 28, 28), depth=1)
    branches = ", ".join(f"{r['name']} {r['output_shape'][0]} ch {r['macs'] / 1e6:.0f} M" for r in s.rows)
    out = sum(r["output_shape"][0] for r in s.rows)
    print(f"{name:12s}: {s.total_params:7,} parameters, {s.total_macs / 1e6:5.0f} M multiply-adds, "
          f"{out} channels out  ({branches})")

# %% [markdown]
# The reductions cut the module's arithmetic by more than half and keep its output at 256
# channels. The same idea, a cheap 1x1 conv that shrinks the channels before an expensive
# one, is ResNet's bottleneck block and DenseNet-B's bottleneck layer.
#
# ### Global average pooling instead of big fully connected layers
#
# At the end, GoogLeNet averages each of its 1024 channels over the 7x7 pixels and applies
# **one** linear layer. AlexNet and VGG flatten the last feature map instead, and pay for it in
# parameters:

# %%
vgg_head = sum(p.size for p in vgg16.classifier.parameters())
goog_head = sum(p.size for p in googlenet.fc.parameters())
print(f"VGG-16's classifier (flatten 512x7x7, 4096, 4096, 1000): {vgg_head:>11,} parameters "
      f"({vgg_head / sum(p.size for p in vgg16.parameters()):.0%} of the model)")
print(f"GoogLeNet's (average pool to 1024, one linear layer):     {goog_head:>11,} parameters "
      f"({goog_head / sum(p.size for p in googlenet.parameters()):.0%} of the model)")
with init.skip_init():
    with_aux = sum(p.size for p in models.googlenet(aux_logits=True).parameters())
print(f"the two auxiliary classifiers add {with_aux - sum(p.size for p in googlenet.parameters()):,} parameters, "
      f"used only in training")

# %% [markdown]
# The **auxiliary classifiers** were a trick of the time before batch norm: two small
# classifiers attached in the middle of the network add their losses to the final one, so
# that the early layers receive a gradient strong enough to learn. With batch norm
# (torchvision's GoogLeNet has it) they are no longer needed; `models.googlenet(aux_logits=True)`
# builds them for loading the published weights.
#
# ## 5. ResNet: make the identity easy to learn
#
# With batch norm, networks of 20 and more layers trained, but a 56-layer plain network did
# *worse* than a 20-layer one, on the training set too: not overfitting, but an optimisation
# problem. A deeper network could copy the shallow one and set its extra layers to the
# identity, yet plain layers find the identity hard to learn. A **residual block** computes
# $\text{relu}(F(x) + x)$: setting $F$ to zero gives the identity. Here a basic block whose last
# batch norm has weight 0 passes its (non-negative) input through unchanged:

# %%
td.manual_seed(0)
block = models.BasicBlock(8, 8).eval()
init.zeros_(block.bn2.weight)                    # F(x) = 0: what zero_init_residual=True does
x = td.tensor(np.maximum(rng.standard_normal((2, 8, 6, 6)), 0).astype(np.float32))
with td.no_grad():
    print("block(x) == x:", np.array_equal(block(x).numpy(), x.numpy()))

# %% [markdown]
# The shortcut also helps the gradient: the backward pass of $F(x) + x$ copies the incoming
# gradient to $x$ unchanged, past the block. ResNet takes its stages and doubling channels from
# VGG and its stem and global average pooling from GoogLeNet; only the blocks are new.
#
# ### Basic and bottleneck blocks
#
# A **basic block** is two 3x3 convs on $C$ channels. A **bottleneck block** takes $4C$
# channels, reduces them to $C$ with a 1x1 conv, does the 3x3 conv on $C$, and expands back to
# $4C$ with another 1x1 conv. At 56x56 with $C = 64$:

# %%
with init.skip_init():
    blocks = {"basic (64 channels)": (models.BasicBlock(64, 64), 64),
              "bottleneck (256 channels)": (models.Bottleneck(256, 64), 256)}
for name, (module, channels) in blocks.items():
    s = td.summary(module, (channels, 56, 56))
    convs = ", ".join(f"{r['name']} {r['macs'] / 1e6:.0f} M" for r in s.rows if r["type"] == "Conv2d")
    print(f"{name:26s}: {s.total_params:7,} parameters, {s.total_macs / 1e6:4.0f} M multiply-adds ({convs})")

# %% [markdown]
# The bottleneck block works on four times as many channels, with one more non-linearity, for
# slightly fewer multiply-adds: ResNet-50, -101 and -152 are ResNet-34 with bottleneck blocks,
# and grow deeper at little extra cost (the comparison in section 7 has the numbers). Later
# work moved batch norm and ReLU *before* each convolution ("pre-activation", `models.PreActBlock`,
# the CIFAR ResNet of `tinydense train --model resnet`), the order DenseNet uses too.
#
# ## 6. ResNeXt: many thin paths, as grouped convolutions
#
# ### Grouped convolution
#
# A convolution with `groups=G` splits its input channels into $G$ groups and its output
# channels into $G$ groups; output group $g$ sees only input group $g$. The weight has shape
# $(C_{out}, C_{in}/G, K, K)$, so the parameters and the multiply-adds are divided by $G$. It is
# exactly $G$ ordinary convolutions on the channel slices, side by side:

# %%
G, c_in, c_out = 4, 8, 12
x = td.tensor(rng.standard_normal((2, c_in, 7, 7)))
w = td.tensor(rng.standard_normal((c_out, c_in // G, 3, 3)))
grouped = F.conv2d(x, w, groups=G).numpy()
pieces = [F.conv2d(td.tensor(x.numpy()[:, g * c_in // G:(g + 1) * c_in // G]),
                   td.tensor(w.numpy()[g * c_out // G:(g + 1) * c_out // G])).numpy() for g in range(G)]
print("groups=4 equals four convolutions side by side:", np.allclose(grouped, np.concatenate(pieces, axis=1)))
for groups in (1, 2, 4, 32, 128):
    s = td.summary(nn.Conv2d(128, 128, 3, padding=1, groups=groups, bias=False), (128, 28, 28))
    print(f"3x3 conv 128 -> 128 at 28x28, groups={groups:3d}: {s.total_params:7,} parameters, "
          f"{s.total_macs / 1e6:6.1f} M multiply-adds")

# %% [markdown]
# With `groups` equal to the number of channels each filter sees one channel: a *depthwise*
# convolution (MobileNet's building block).
#
# ### The ResNeXt block
#
# If one bottleneck is good, are several in parallel better? A ResNeXt block has $G$ paths,
# each a small bottleneck on the block's $4C$ channels: a 1x1 conv $4C \to c$, a 3x3 conv
# $c \to c$, and a 1x1 conv $c \to 4C$; the paths' outputs are added, then the shortcut. The
# $G$ first 1x1 convs together are one 1x1 conv $4C \to Gc$; the $G$ 3x3 convs are one
# 3x3 conv on $Gc$ channels with `groups=G`; and adding the outputs of the $G$ last 1x1 convs
# is one 1x1 conv $Gc \to 4C$ on their concatenation. So a ResNeXt block is a bottleneck block
# whose 3x3 conv is grouped: torchvision's `Bottleneck` with `groups=G` (ResNeXt-50 32x4d has
# $G = 32$ paths of $c = 4$ channels in its first stage).
#
# The lecture's slide gives the block's cost as $(8Cc + 9c^2) \cdot HWG$ and notes that
# $G = 4, c = 24$ and $G = 32, c = 4$ cost about the same as a plain bottleneck ($C = 64$).
#
# ### Exercise 2: the ResNeXt formula
#
# Derive it: write `resnext_block_macs(C, G, c, H, W)`, the multiply-adds of the block's
# convolutions at $H \times W$ (stride 1, so the size does not change). Count one
# multiply-add per product, as `summary` does.

# %% tags=["exercise-stub"]
def resnext_block_macs(C, G, c, H, W):
    # multiply-adds of a ResNeXt block: 4C channels in and out, G paths of
    # 1x1 conv 4C -> c, 3x3 conv c -> c, 1x1 conv c -> 4C, all at H x W
    raise NotImplementedError("count the multiply-adds of a ResNeXt block")

# %% tags=["exercise-check"]
check_resnext_macs(resnext_block_macs)

# %% [markdown]
# What exactly does the formula count? Per path and output pixel: $4C \cdot c$ for the first
# 1x1 conv, $9c^2$ for the 3x3 conv, $c \cdot 4C$ for the second 1x1 conv, so
# $(8Cc + 9c^2)HW$ per path and $(8Cc + 9c^2)HWG$ for the block. These are **multiply-adds of
# the three convolutions only**, one per product (the lecture calls them FLOPs; there are twice
# as many floating-point operations): no batch norm, ReLU or the shortcut's addition, and no
# projection shortcut, because the block keeps its size (stride 1, $4C$ channels in and out).
# `summary` counts batch norm and ReLU as zero multiply-adds, so its total for torchvision's
# block must be the formula exactly:

# %%
C, H = 64, 56
print(f"C = {C}, at {H}x{H}:")
for G, c in [(1, 64), (4, 24), (32, 4)]:
    with init.skip_init():
        block = models.Bottleneck(4 * C, C, groups=G, base_width=c)     # G groups of c channels in conv2
    s = td.summary(block, (4 * C, H, H))
    formula = (8 * C * c + 9 * c * c) * H * H * G
    print(f"G = {G:2d}, c = {c:2d}: formula {formula:,}, summary {s.total_macs:,} multiply-adds "
          f"({'equal' if formula == s.total_macs else 'DIFFERENT'}); {s.total_params:,} parameters")
for name in ("resnet50", "resnext50_32x4d"):
    print(f"{name}: published top-1 {ACCURACY[name].top1}%")

# %% [markdown]
# Same cost, and, trained, more accuracy: ResNeXt-50 32x4d beats ResNet-50 by about 1.5 points
# at 3% more multiply-adds. Adding paths (cardinality) helped more than making the paths wider.
#
# ### Exercise 3: the backward pass of a grouped convolution
#
# The forward pass below computes a grouped convolution (stride 1, no padding) with one
# `einsum` over all windows of the input: `windows[n, g, c, i, j, a, b]` is the input pixel
# `(i + a, j + b)` of channel `c` of group `g`, and
# $y_{n,g,o,i,j} = \sum_{c,a,b} x_{n,g,c,i+a,j+b}\, w_{g,o,c,a,b}$. Write `backward`: return
# `(dx, dw)` with the shapes of `x` and `w`. No loops over pixels or images; a loop over
# the $k_h k_w$ taps of the kernel is fine. The check compares your gradients with central
# differences for groups 1, 2 and $C$ (depthwise), odd sizes and a non-square kernel.

# %% tags=["exercise-stub"]
class GroupedConv2d(Function):
    # x (N, C, H, W), w (O, C/G, kh, kw), G groups; stride 1, no padding -> y (N, O, H-kh+1, W-kw+1).
    # Group g's O/G outputs see only its C/G input channels:
    #   y[n, g, o, i, j] = sum over c, a, b of x[n, g, c, i+a, j+b] * w[g, o, c, a, b]
    def forward(self, x, w, groups):
        xp = get_array_module(x)
        N, C, H, W = x.shape
        O, Cg, kh, kw = w.shape
        G = groups
        OH, OW = H - kh + 1, W - kw + 1
        # windows[n, g, c, i, j, a, b] = x[n, g*Cg + c, i + a, j + b]  (a view: nothing is copied)
        windows = xp.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
        self.windows = windows.reshape(N, G, Cg, OH, OW, kh, kw)
        self.wg, self.x_shape = w.reshape(G, O // G, Cg, kh, kw), x.shape
        return xp.einsum("ngcijab,gocab->ngoij", self.windows, self.wg).reshape(N, O, OH, OW)

    def backward(self, g):
        # g: (N, O, OH, OW). Return (dx, dw) with the shapes of x and w.
        raise NotImplementedError("write the backward pass of grouped convolution")

# %% tags=["exercise-check"]
check_grouped_conv(GroupedConv2d)

# %% [markdown]
# tinydense's own `Conv2d` (in `tinydense/ops/conv.py`) does the same with matrix products over
# strided views, all groups in one batched product; compare your version with it.
#
# ## 7. The complexity comparison, and where DenseNet sits
#
# The lecture's summary chart (from Canziani et al., 2016) puts every architecture on one
# picture: multiply-adds across, top-1 accuracy up, and the size of each bubble its number of
# parameters. `tinydense.tools.compare` builds the table and the chart from the same models
# (the accuracies are the published ones, cited in `ACCURACY`; the fast settings count fewer
# models at a smaller image):

# %%
if FAST:
    zoo = compare(["alexnet", "vgg16", "googlenet", "resnet34", "resnet50", "resnext50_32x4d", "densenet121",
                   "densenet201"], image_size=64, measure_speed=False)
else:
    zoo = compare(["zoo"], measure_speed=False)
print(zoo)
display(complexity_figure(zoo.rows, title="The complexity comparison (tinydense's models)"))

# %% [markdown]
# What the chart says, in the lecture's words and in numbers you can read off the table:
#
# - **VGG** has the most memory and the most arithmetic, for accuracy that ResNets reach at a
#   quarter of the cost: inefficient.
# - **GoogLeNet** is very cheap, but only about as accurate as the smallest VGG.
# - **AlexNet** does little arithmetic but has many parameters (its fully connected layers).
# - **ResNets** are simple and efficient; accuracy grows with depth.
#
# And **DenseNet**? Each layer receives the feature maps of every earlier layer of its block,
# so its layers can be thin (32 new channels each in DenseNet-121) and it needs far fewer
# parameters for a given accuracy:

# %%
rows = {r["name"]: r for r in zoo.rows}
for dense, rival in [("densenet121", "resnet34"), ("densenet121", "resnet50"), ("densenet201", "resnet50"),
                     ("densenet201", "resnext50_32x4d")]:
    d, r = rows[dense], rows[rival]
    print(f"{dense} vs {rival}: {d['params'] / r['params']:.2f}x the parameters, {d['macs'] / r['macs']:.2f}x the "
          f"multiply-adds, {d['memory_bytes'] / r['memory_bytes']:.2f}x the activation memory, top-1 "
          f"{d['accuracy'].top1 - r['accuracy'].top1:+.1f} points")

# %% [markdown]
# DenseNet sits at the left edge of the good models: the smallest bubbles at a given accuracy,
# and few multiply-adds. What the chart does not show is its activation memory: concatenation
# makes the inputs of the late layers of each block wide, and every batch norm and ReLU on
# those inputs writes an output as wide. DenseNet-121 has a third of ResNet-50's parameters and
# two thirds of its multiply-adds, but more layer output to keep for the backward pass. Memory,
# not arithmetic, limits how large a batch of DenseNet fits, which is why tinydense has a
# memory-efficient implementation (the lesson "Memory" measures it). Which of the two numbers
# predicts its training speed is question 10.
#
# On CIFAR-10, DenseNet-BC (L=100, k=12) reaches 95.5% with 0.8 M parameters. The same table for
# the 32x32 models, with the throughput measured on this machine (with the student settings;
# `tinydense compare zoo` in a terminal measures the whole ImageNet zoo, which takes a while):

# %%
cifar = compare(["densenet_bc", "cifar_resnet18", "cifar_vgg16_bn"] + ([] if FAST else ["cifar_resnext50_32x4d"]),
                measure_speed=not FAST, batch=4, repeats=2, log=print)
print(cifar)

# %% [markdown]
# ## Questions
#
# 1. Compute AlexNet's conv2 row of the table by hand (output size, memory, parameters,
#    multiply-adds) and check it against `summary`.
# 2. Why do the fully connected layers hold most of AlexNet's parameters but little of its
#    arithmetic? What would you change to cut the parameters by 90% without touching the
#    convolutions?
# 3. Three stacked 3x3 convolutions versus one 7x7: work out the receptive field, the
#    parameters and the multiply-adds on $C$ channels, then measure both as in section 3.
# 4. VGG-16's memory halves from stage to stage while a conv's multiply-adds stay the same.
#    Which of the two limits the batch size in training, and in which stage?
# 5. GoogLeNet's stem reaches 28x28 for about a twentieth of VGG's arithmetic. What does it
#    give up?
# 6. In the naive Inception module the pooling branch keeps all input channels. What happens
#    to the channel count after ten such modules? How does the 1x1 projection after the pool
#    fix it?
# 7. A bottleneck block with $C = 64$ and a basic block with 64 channels cost about the same.
#    Why is the bottleneck still the better block for deep networks?
# 8. Using the formula, find another (G, c) pair with about the same cost as the ResNet
#    bottleneck at C = 64, and build it with `models.Bottleneck(256, 64, groups=G, base_width=c)`
#    to check with `summary`. What is c for G = 64?
# 9. A depthwise convolution (`groups` = channels) has very few multiply-adds. Why is it often
#    *not* correspondingly faster? (Time one against a grouped conv with 4 groups.)
# 10. DenseNet-121 has fewer multiply-adds than ResNet-50, but more activation memory. Which of
#     the two numbers predicts its training speed on this machine better? Measure both with
#     `tinydense compare resnet50 densenet121`.
