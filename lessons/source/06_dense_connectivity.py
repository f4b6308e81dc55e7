# %% [markdown]
# # Lesson 6: Dense connectivity
#
# A ResNet layer adds what it computes to its input. A DenseNet layer keeps its
# input untouched and *appends* what it computes, as new channels. That one
# change, concatenation instead of addition, is the whole idea of DenseNet,
# and this lesson follows its consequences: how the channel count grows, how
# many connections a block has, why the bottleneck and compression variants
# (DenseNet-B, -C and -BC) exist, and how few parameters the result needs
# compared with a ResNet.
#
# ## What you will learn
#
# - the difference between summing features (ResNet) and concatenating them (DenseNet);
# - the growth-rate arithmetic: layer $\ell$ of a block sees $k_0 + k(\ell - 1)$ channels;
# - why a block of $L$ layers has $L(L+1)/2$ direct connections;
# - what the bottleneck (B) and compression (C) change, and when the bottleneck pays off;
# - how to count the parameters of the paper's CIFAR models, checked against its
#   Table 2, next to pre-activation ResNets;
# - as exercises: the channel widths through a whole DenseNet, and its parameter count,
#   computed by hand (without building the model).

# %%
%matplotlib inline
import matplotlib.pyplot as plt
import numpy as np

import tinydense as td
import tinydense.nn as nn
from tinydense.models import DenseBlock, DenseLayer, densenet, densenet_bc, resnet
from tinydense.models import PreActBlock

from checks.l06_dense_connectivity import check_channel_widths, check_densenet_parameters

td.manual_seed(0)
rng = np.random.default_rng(0)


def count_parameters(module):
    return sum(p.size for p in module.parameters())

# %% [markdown]
# ## 1. Adding versus concatenating
#
# A residual block computes $x_{\ell} = x_{\ell-1} + F_\ell(x_{\ell-1})$. After the
# sum, the input and the new features are mixed in the same channels; the
# next layer cannot tell them apart, and the channel count never changes.
#
# A dense layer computes $x_\ell = H_\ell([x_0, x_1, \dots, x_{\ell-1}])$, where
# $[\cdot]$ stacks feature maps along the channel axis. Every feature map made
# so far stays available, unchanged, to every later layer, and the block's
# output is the stack of all of them.
#
# We can see this on real blocks: the first channels of a dense block's output
# **are** its input, bit for bit, and the next $k$ channels are the first
# layer's output. A residual block's output contains its input only blended
# into a sum.

# %%
k0, k = 8, 4
x = td.tensor(rng.standard_normal((2, k0, 6, 6)).astype(np.float32))

block = DenseBlock(num_layers=3, in_channels=k0, growth_rate=k, bottleneck=False)
y = block(x)
print("dense block   :", x.shape, "->", y.shape)
print("  output[:, :k0] is the input exactly:", np.array_equal(y.numpy()[:, :k0], x.numpy()))
print("  next k channels are layer 1's output:",
      np.allclose(y.numpy()[:, k0:k0 + k], block.denselayer1([x]).numpy()))

residual = PreActBlock(k0, k0)
z = residual(x)
print("residual block:", x.shape, "->", z.shape)
print("  output equals the input:", np.allclose(z.numpy(), x.numpy()),
      f"(they differ by {np.abs(z.numpy() - x.numpy()).mean():.2f} on average)")

# %% [markdown]
# ## 2. The growth rate
#
# Every dense layer produces the same number $k$ of new channels, the
# **growth rate**. A block that receives $k_0$ channels therefore feeds its
# layers with
#
# $$\underbrace{k_0}_{\text{layer 1}},\; k_0 + k,\; k_0 + 2k,\; \dots,\quad
#   \text{layer } \ell: \; k_0 + k(\ell - 1) \text{ channels},$$
#
# and ends with $k_0 + kL$ channels. Each layer adds only a little "collective
# knowledge", so $k$ can be small (12 or 24 on CIFAR) where a ResNet layer
# carries hundreds of channels. Here is the arithmetic read off a real block:

# %%
k0, k, L = 16, 12, 6
block = DenseBlock(num_layers=L, in_channels=k0, growth_rate=k, bottleneck=False)
for l, (name, layer) in enumerate(block.named_children(), start=1):
    print(f"{name}: k0 + k(l-1) = {k0} + {k}*{l - 1} = {k0 + k * (l - 1):3d}   "
          f"conv1 reads {layer.conv1.in_channels} channels, writes {layer.conv1.out_channels}")
print(f"block output: k0 + kL = {k0 + k * L} channels (block.out_channels = {block.out_channels})")

# %%
plt.figure(figsize=(6, 3.2))
for growth in (12, 24, 32):
    layers = np.arange(1, 25)
    plt.plot(layers, 2 * growth + growth * (layers - 1), "o-", ms=3, label=f"k = {growth}")
plt.xlabel("layer l in the block")
plt.ylabel("input channels of layer l")
plt.title("Input width grows linearly: k0 + k(l-1), with k0 = 2k")
plt.legend()
plt.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ## 3. $L(L+1)/2$ connections
#
# Count the direct connections in a block of $L$ layers. Layer $\ell$ reads
# the block input $x_0$ and the outputs of the $\ell - 1$ layers before it: $\ell$
# connections. Summed over the block,
#
# $$1 + 2 + \dots + L = \frac{L(L+1)}{2},$$
#
# where a plain chain or a ResNet has $L$. We can count them on a running
# block with a forward hook, which sees the list of feature maps each layer
# receives.

# %%
L = 6
block = DenseBlock(num_layers=L, in_channels=k0, growth_rate=k, bottleneck=False)
received = []
for layer in block.children():
    layer.register_forward_hook(lambda module, inputs, output: received.append(len(inputs[0])))
block(td.tensor(rng.standard_normal((1, k0, 4, 4)).astype(np.float32)))
print("feature maps received by each layer:", received)
print(f"total: {sum(received)}   L(L+1)/2 = {L * (L + 1) // 2}")

connections = np.zeros((L, L))
for l, n in enumerate(received):
    connections[l, :n] = 1
plt.figure(figsize=(4.5, 3.6))
plt.imshow(connections, cmap="Blues")
plt.xticks(range(L), [f"x{s}" for s in range(L)])
plt.yticks(range(L), [f"layer {l}" for l in range(1, L + 1)])
plt.xlabel("source feature map")
plt.title(f"Who reads what: {int(connections.sum())} connections")
plt.show()

# %% [markdown]
# ## 4. The bottleneck: DenseNet-B
#
# The input of a dense layer keeps getting wider, and a 3x3 convolution on
# $c$ input channels producing $k$ channels has $9ck$ weights. DenseNet-B puts a
# 1x1 convolution in front that first reduces the input to $4k$ channels:
#
# $$\text{basic: BN-ReLU-Conv3x3}: \; 9ck \qquad
#   \text{bottleneck: BN-ReLU-Conv1x1(4k)-BN-ReLU-Conv3x3}: \; 4kc + 36k^2$$
#
# weights (plus $2c$, and $2c + 8k$, batch-norm parameters). The bottleneck is
# cheaper once $5ck > 36k^2$, that is, once the layer reads more than $7.2k$
# channels, which happens early in every block of a deep network. The
# arithmetic per output pixel (FLOPs) follows the same ratio.

# %%
k = 12
widths = np.arange(k, 40 * k + 1, k)
basic = [count_parameters(DenseLayer(c, k, bottleneck=False)) for c in widths]
bottleneck = [count_parameters(DenseLayer(c, k, bottleneck=True)) for c in widths]
assert basic == [9 * c * k + 2 * c for c in widths]
assert bottleneck == [4 * k * c + 36 * k * k + 2 * c + 8 * k for c in widths]
plt.figure(figsize=(6, 3.2))
plt.plot(widths, basic, label="basic: 9ck")
plt.plot(widths, bottleneck, label="bottleneck: 4kc + 36k^2")
plt.axvline(7.2 * k, color="gray", ls="--", lw=0.8)
plt.xlabel("input channels c")
plt.ylabel("parameters of one layer")
plt.title(f"One dense layer, k = {k}")
plt.legend()
plt.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ## 5. Compression: DenseNet-C
#
# A block ends with $k_0 + kL$ channels, and the next block starts from there.
# Without intervention the width would keep growing from block to block. The
# **transition layers** between blocks (BN-ReLU-Conv1x1-AvgPool 2x2) halve the
# image, and with a compression factor $\theta < 1$ their 1x1 convolution keeps
# only $\lfloor \theta m \rfloor$ of the $m$ channels. DenseNet-BC uses both the
# bottleneck and $\theta = 0.5$.
#
# The plot follows the channel count through a 100-layer network with and
# without compression, read from the models.

# %%
def channel_trace(model):
    """Channels after the stem, after every dense layer and after every transition."""
    trace = []
    for name, module in model.features.named_children():
        if name == "conv0":
            trace.append(module.out_channels)
        elif isinstance(module, DenseBlock):
            for layer in module.children():
                trace.append(trace[-1] + (layer.conv2 if layer.bottleneck else layer.conv1).out_channels)
        elif name.startswith("transition"):
            trace.append(module.conv.out_channels)
    return trace


plt.figure(figsize=(7, 3.2))
for label, model in [("DenseNet-B, theta = 1", densenet(100, 12, bottleneck=True, compression=1.0)),
                     ("DenseNet-BC, theta = 0.5", densenet_bc(100, 12))]:
    plt.plot(channel_trace(model), label=f"{label}: {count_parameters(model) / 1e6:.2f} M parameters")
plt.xlabel("position in the network (layers and transitions)")
plt.ylabel("channels")
plt.title("L = 100, k = 12: the transitions reset the width")
plt.legend()
plt.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ### Exercise 1: the widths through the network
#
# For the paper's CIFAR networks (section 6 below explains the depth: $n = (L-4)/3$
# layers per block, or $(L-4)/6$ with the bottleneck; the stem has 16 channels,
# or $2k$ for DenseNet-BC), compute by hand, **without building a model**, the
# channel counts after the stem, after each block and after each transition.

# %% tags=["exercise-stub"]
def channel_widths(depth, growth_rate, bottleneck, compression):
    """[stem, block 1, transition 1, block 2, transition 2, block 3]: channels after each."""
    raise NotImplementedError("compute the channel widths")

# %% tags=["exercise-check"]
check_channel_widths(channel_widths)

# %% [markdown]
# ### Exercise 2: the parameter count, by hand
#
# Now count every parameter, still without building a model: the stem
# convolution (no bias), every dense layer (section 4's formulas, with the
# input width of each layer), the transitions (BN and a 1x1 convolution), the
# final batch norm `norm5` and the classifier (weights and bias, 10 classes).
# The check compares with the models for six configurations.

# %% tags=["exercise-stub"]
def densenet_parameters(depth, growth_rate, bottleneck, compression):
    """The number of parameters of densenet(depth, growth_rate, bottleneck, compression), counted by hand."""
    raise NotImplementedError("count the parameters")

# %% tags=["exercise-check"]
check_densenet_parameters(densenet_parameters)

# %% [markdown]
# ## 6. The paper's Table 2, counted
#
# On CIFAR the paper uses three dense blocks on 32x32, 16x16 and 8x8 images.
# The depth $L$ counts the layers with weights: the stem convolution, the two
# transition convolutions, the classifier, and the convolutions of the three
# blocks, so a block has $(L - 4)/3$ layers, or $(L - 4)/6$ with bottlenecks
# (two convolutions each). `densenet(depth, growth_rate, ...)` builds exactly
# these models, and `resnet(depth)` the pre-activation ResNets the paper
# compares with. Their parameter counts, next to the paper's (the error
# column is the paper's test error on CIFAR-10 with augmentation, C10+):

# %%
table = [  # name, builder, paper's parameter count (millions), paper's C10+ error (%)
    ("ResNet (pre-act.) L=164", lambda: resnet(164), 1.7, 5.46),
    ("ResNet (pre-act.) L=1001", lambda: resnet(1001), 10.2, 4.62),
    ("DenseNet k=12 L=40", lambda: densenet(40, 12), 1.0, 5.24),
    ("DenseNet k=12 L=100", lambda: densenet(100, 12), 7.0, 4.10),
    ("DenseNet k=24 L=100", lambda: densenet(100, 24), 27.2, 3.74),
    ("DenseNet-BC k=12 L=100", lambda: densenet_bc(100, 12), 0.8, 4.51),
    ("DenseNet-BC k=24 L=250", lambda: densenet_bc(250, 24), 15.3, 3.62),
    ("DenseNet-BC k=40 L=190", lambda: densenet_bc(190, 40), 25.6, 3.46),
]
counts, differ = {}, []
print(f"{'model':26s} {'tinydense':>12s} {'paper':>7s} {'C10+ error':>11s}")
for name, build, paper, error in table:
    counts[name] = count_parameters(build())
    same = round(counts[name] / 1e6, 1) == paper
    differ += [] if same else [name]
    print(f"{name:26s} {counts[name]:12,d} {paper:6.1f}M {error:10.2f}%" + ("" if same else "   <- differs"))

resnet1001 = resnet(1001)
without_bn = count_parameters(resnet1001) - sum(
    count_parameters(m) for m in resnet1001.modules() if isinstance(m, nn.BatchNorm2d))
print(f"\nResNet-1001 without its batch-norm parameters: {without_bn:,d}")
assert differ == ["ResNet (pre-act.) L=1001"] and round(without_bn / 1e6, 1) == 10.2

# %% [markdown]
# Every DenseNet matches the paper to the digit it gives. ResNet-1001 comes
# out about 1% above the quoted 10.2 M; leaving out its batch-norm parameters
# gives exactly 10.2 M, a reminder that published counts follow conventions
# that are not always stated. Plotted against the error, the point of the
# design shows: DenseNet-BC with 0.8 M parameters is about as accurate as a ResNet
# with 10.2 M, and the largest DenseNets are the most accurate of all.

# %%
plt.figure(figsize=(6.5, 3.8))
for name, _, _, error in table:
    marker, color = ("s", "tab:red") if name.startswith("ResNet") else (
        ("o", "tab:green") if "BC" in name else ("^", "tab:blue"))
    plt.scatter(counts[name] / 1e6, error, marker=marker, color=color, s=50)
    plt.annotate(name, (counts[name] / 1e6, error), fontsize=7, xytext=(4, 4), textcoords="offset points")
plt.xscale("log")
plt.xlabel("parameters (millions, log scale)")
plt.ylabel("C10+ test error (%), from the paper")
plt.title("Accuracy per parameter: DenseNet vs ResNet")
plt.grid(alpha=0.3)
plt.show()

# %% [markdown]
# Why is concatenation so economical? A ResNet layer must carry everything
# the network knows in its channels and rewrite them, so every layer is wide.
# A dense layer only adds $k$ new channels and reads the rest, so its
# convolutions are narrow, and the features of early layers are **reused**
# directly by later ones instead of being re-learned. Lesson 9 looks at
# whether a trained network actually uses those connections.
#
# ## Questions and exercises
#
# 1. How many channels leave each of the three blocks of DenseNet-BC with
#    $L = 100$, $k = 12$? Compute it by hand, then check with `channel_trace`.
# 2. With your `densenet_parameters`, find where DenseNet ($k=12$, $L=40$) keeps most
#    of its parameters: which block, and the 3x3 convolutions or everything else?
# 3. For which growth rate does a *first* layer of a block (with $k_0 = 2k$ input
#    channels) already benefit from the bottleneck?
# 4. Counting connections: how many does the whole DenseNet-BC ($L = 100$) have,
#    summed over its three blocks?
# 5. A ResNet layer of width 64 and a dense layer with $k = 12$ both read 64
#    channels. Compare their parameters and what each passes on to the next layer.
