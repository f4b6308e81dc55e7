# %% [markdown]
# # Lesson 10: Memory
#
# DenseNets have few parameters, yet training them is known to need a lot of
# memory. The reason is not the weights but the **activations**: to run the
# backward pass, autograd keeps the arrays the forward pass produced, and a
# straightforward dense block produces a lot of them. This lesson measures
# that memory as the network gets deeper, explains why it grows
# quadratically, builds the standard fix, **recomputation**, from scratch for
# one block, and then measures the version tinydense uses: DenseNet-BC with
# `memory_efficient=True`, whose memory grows linearly.
#
# ## What you will learn
#
# - how to measure the memory one training step (forward + backward) needs;
# - why naive concatenation makes a dense block's memory grow with the square of its depth;
# - the idea of recomputing the cheap concatenation, batch norm and ReLU in the backward
#   pass, written by you as one small `Function`;
# - how tinydense's memory-efficient DenseNet-BC (a shared feature buffer and a fused,
#   recomputed BN-ReLU-convolution) makes memory grow linearly with depth;
# - how to check that both versions give the same loss and the same gradients.

# %%
%matplotlib inline
import os
import time
import tracemalloc

import matplotlib.pyplot as plt
import numpy as np

import tinydense as td
import tinydense.functional as F
from tinydense import Function, memory
from tinydense.models import DenseBlock, densenet_bc, preact_resnet
from tinydense.optim import SGD

from checks.l10_memory import check_recompute
from checks.common import passed

FAST = os.environ.get("TINYDENSE_LESSONS_FAST") == "1"   # small settings for CI
td.manual_seed(0)
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Measuring memory
#
# NumPy reports every array it allocates to Python's `tracemalloc` module, so
# we can ask how many bytes are alive at any moment and what the peak was.
# We measure two numbers for one training step:
#
# - **kept**: the bytes still alive after the forward pass, when the loss is
#   computed. This is the graph: every array some `Function` saved for its
#   backward pass, and every intermediate tensor the graph refers to;
# - **peak**: the highest point during forward and backward together: what the
#   step needs.
#
# One detail: tinydense keeps a few large arrays in a pool (`tinydense/memory.py`)
# and hands them out again in the next step instead of allocating new ones. An
# array the pool already holds is not a new allocation, so `tracemalloc` would
# not see it; `memory.clear()` empties the pool so that every measurement
# starts from nothing.

# %%
def measure(step):
    """Run ``step()`` (a forward pass that returns the loss) and the loss's backward pass.

    Returns the bytes kept after forward, the peak bytes over forward + backward, the seconds."""
    memory.clear()
    tracemalloc.start()
    try:
        start_bytes = tracemalloc.get_traced_memory()[0]
        start = time.perf_counter()
        loss = step()
        kept = tracemalloc.get_traced_memory()[0] - start_bytes
        loss.backward()
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] - start_bytes
    finally:
        tracemalloc.stop()
    return kept, peak, seconds


def square_loss(out):
    """A stand-in loss for a single block: the mean square of its output."""
    return (out * out).mean()


N, K0, K, SIZE = (4, 16, 8, 8) if FAST else (8, 24, 12, 16)   # batch, input channels, growth rate, image size
x = td.tensor(rng.standard_normal((N, K0, SIZE, SIZE)).astype(np.float32), requires_grad=True)
block = DenseBlock(num_layers=6, in_channels=K0, growth_rate=K)
kept, peak, seconds = measure(lambda: square_loss(block(x)))
print(f"one block of 6 layers: {kept / 2**20:.2f} MB kept after forward, {peak / 2**20:.2f} MB peak")
print(f"for comparison: its parameters take {sum(p.size for p in block.parameters()) * 4 / 2**20:.2f} MB, "
      f"its input {x.size * 4 / 2**20:.3f} MB")

# %% [markdown]
# ## 2. Why it grows quadratically
#
# Layer $\ell$ of a block starts by concatenating $k_0 + (\ell-1)k$ channels into a
# new array, normalises it (a second array of the same size, plus the
# normalised values batch norm saves for its backward pass) and applies ReLU
# (a fourth). All of them are kept until the backward pass. So layer $\ell$
# keeps about $4(k_0 + (\ell-1)k)$ channels' worth of memory, and a block of $L$
# layers
#
# $$\sum_{\ell=1}^{L} 4\big(k_0 + (\ell-1)k\big) = 4\Big(L k_0 + k\,\frac{L(L-1)}{2}\Big)
#   \quad\text{channels} \times N \times H \times W \times 4 \text{ bytes},$$
#
# which grows like $L^2$. The rest of each layer (the bottleneck's $4k$ channels
# and the $k$ new ones) is the same size in every layer and grows only like
# $L$. Let us measure blocks of increasing depth.

# %%
depths = [2, 4, 6, 8] if FAST else [2, 4, 8, 12, 16, 20, 24]
naive = []
for L in depths:
    td.manual_seed(0)
    block = DenseBlock(num_layers=L, in_channels=K0, growth_rate=K)
    naive.append(measure(lambda: square_loss(block(x))))
    print(f"L = {L:2d}: kept {naive[-1][0] / 2**20:7.2f} MB, peak {naive[-1][1] / 2**20:7.2f} MB")

# %% [markdown]
# ## 3. The idea: recompute instead of remember
#
# The concatenation, batch norm and ReLU at the start of each layer are cheap
# to compute (no multiply-adds) but expensive to store. So we do not store
# them: we run the first part of the layer, concatenate, BN, ReLU and the 1x1
# convolution, **without recording a graph**, keep only its inputs (the
# feature maps, which exist anyway) and its small output ($4k$ channels). In
# the backward pass we run that part again, this time with a graph, and
# backpropagate through it. This is called *gradient checkpointing*; applied
# to the dense layer it is the idea of the memory-efficient DenseNet
# implementation (Pleiss et al., 2017).
#
# Written from scratch it is one `Function` whose `backward` runs a small forward and
# backward pass of its own. Parameters used inside receive their gradients
# from that inner backward pass, exactly as they would have otherwise.
#
# ### Exercise 1: `Recompute.backward`
#
# Forward runs `fn` under `td.no_grad()` and keeps only its input arrays. Write
# the backward pass: make fresh leaf tensors from the saved arrays (those with
# `self.needs_grad[i]` true require a gradient), call `self.fn(*inputs,
# recompute=True)` to rebuild the graph, backpropagate `g` through it, and return
# every input's `.grad` (None where no gradient is needed), as a tuple.

# %% tags=["exercise-stub"]
class Recompute(Function):
    """Run ``fn(*tensors)`` without keeping its graph; rebuild the graph in backward.

    fn(*tensors, recompute) must give the same result both times (batch norm must
    not update its running statistics on the second call: that is the flag)."""

    def forward(self, *arrays, fn):
        self.arrays, self.fn = arrays, fn
        with td.no_grad():
            return fn(*[td.Tensor(a) for a in arrays], recompute=False).data

    def backward(self, g):
        # g: dL/d(output). Return one gradient per input array, as a tuple.
        raise NotImplementedError("write Recompute.backward")

# %% tags=["exercise-check"]
check_recompute(Recompute)

# %% [markdown]
# The rest of this section uses your `Recompute` once it passes (until then it
# measures only the naive block). One layer's first half, and a block built
# from such layers:

# %%
def bottleneck_input(layer, *features, recompute):
    """The first half of a DenseNet-B layer: cat, BN, ReLU, 1x1 conv (4k channels out)."""
    x = F.cat(list(features), axis=1)
    bn = layer.norm1
    track = not recompute or not layer.training            # eval mode always uses the running stats
    x = F.batch_norm(x, bn.running_mean if track else None, bn.running_var if track else None,
                     bn.weight, bn.bias, training=layer.training, momentum=bn.momentum, eps=bn.eps)
    return layer.conv1(F.relu(x))


def recomputed_block(block, x):
    """The forward pass of a tinydense DenseBlock, with each layer's first half recomputed."""
    features = [x]
    for layer in block.children():
        out = Recompute.apply(*features, fn=lambda *fs, recompute, layer=layer:
                              bottleneck_input(layer, *fs, recompute=recompute))
        features.append(layer.conv2(layer.relu2(layer.norm2(out))))
    return F.cat(features, axis=1)

# %% [markdown]
# First, correctness. The same block, run both ways from the same weights,
# must give the same output, the same input gradient and the same parameter
# gradients:

# %%
RECOMPUTE = passed("Recompute")
td.manual_seed(0)
block = DenseBlock(num_layers=4, in_channels=K0, growth_rate=K)
results = []
for forward in (block, lambda t: recomputed_block(block, t) if RECOMPUTE else block(t)):
    block.zero_grad()
    xi = td.tensor(x.numpy(), requires_grad=True)
    out = forward(xi)
    square_loss(out).backward()
    results.append((out.numpy(), xi.grad.copy(), [p.grad.copy() for p in block.parameters()]))
(out_a, gx_a, gp_a), (out_b, gx_b, gp_b) = results
print("(your Recompute is not finished: comparing the plain block with itself)" if not RECOMPUTE else
      "plain block against the recomputed one:")
print("same output          :", np.allclose(out_a, out_b, atol=1e-6))
print("same input gradient  :", np.allclose(gx_a, gx_b, atol=1e-6))
print("same parameter grads :", all(np.allclose(a, b, atol=1e-5) for a, b in zip(gp_a, gp_b)))

# %% [markdown]
# Now the memory of the recomputed block, against the naive one of section 2:

# %%
recomputed = []
for L in depths if RECOMPUTE else []:
    td.manual_seed(0)
    block = DenseBlock(num_layers=L, in_channels=K0, growth_rate=K)
    recomputed.append(measure(lambda: square_loss(recomputed_block(block, x))))

naive_mb = np.array([r[0] for r in naive]) / 2**20
recomputed_mb = np.array([r[0] for r in recomputed]) / 2**20 if RECOMPUTE else np.full(len(depths), np.nan)
L = np.array(depths)
channels = 4 * (L * K0 + K * L * (L - 1) / 2)               # the quadratic term of section 2
predicted = channels * N * SIZE * SIZE * 4 / 2**20

plt.figure(figsize=(6, 3.8))
plt.plot(L, naive_mb, "o-", label="naive concatenation")
plt.plot(L, recomputed_mb, "s-", label="first half recomputed")
plt.plot(L, naive_mb - recomputed_mb, "^:", label="difference: what recomputation saves")
plt.plot(L, predicted, "k--", lw=0.8, label="predicted: 4 (L k0 + k L(L-1)/2) channels")
plt.xlabel("layers in the block (L)")
plt.ylabel("MB kept for the backward pass")
plt.title(f"One dense block, batch {N}, {SIZE}x{SIZE}, k0={K0}, k={K}")
plt.legend(fontsize=8)
plt.grid(alpha=0.3)
plt.tight_layout()
plt.show()
print(f"at L = {depths[-1]}: {naive_mb[-1]:.2f} MB kept naively, {recomputed_mb[-1]:.2f} MB recomputed"
      + ("" if RECOMPUTE else " (finish the exercise to measure the recomputed block)"))

# %% [markdown]
# The naive curve bends upwards. The difference between the two curves, the
# memory that recomputation saves, lies on the predicted quadratic term: the
# four copies of the concatenated input per layer are exactly where the extra
# memory goes. The recomputed block keeps only what is the same size in
# every layer and grows in a straight line.
#
# ## 4. The library's memory-efficient DenseNet-BC
#
# Our `Recompute` shows the idea, but it still wastes memory and time: it runs
# the 1x1 convolution twice (that is real arithmetic), it builds the whole
# concatenation again in every layer's backward pass, and the block's output
# is one more concatenated copy of all features. tinydense's DenseNet does it
# differently when it is built with `memory_efficient=True` (the default of
# `densenet_bc`; `memory_efficient=False` gives the plain path of section 2):
#
# - **one shared buffer per block** (`tinydense/ops/dense_block.py`, which runs the whole
#   block as one op for `EfficientDenseBlock` in `tinydense/models/efficient_densenet.py`): the block
#   allocates room for all its $k_0 + Lk$ channels once, and every layer writes its
#   $k$ new channels into the next slot. Layer $\ell$'s concatenated input is then just
#   the first $k_0 + (\ell-1)k$ channels of that buffer: a view, never a copy. The
#   buffer is also the block's output.
# - **BN-ReLU-convolution as one op** (`tinydense/ops/bn_relu.py`): $\mathrm{relu}(\mathrm{bn}(x))$
#   lives only in a scratch array while the convolution reads it, and is
#   recomputed from $x$ in the backward pass. Only the cheap part is recomputed:
#   the convolution's output ($4k$ channels) is kept. The recomputation uses the
#   batch statistics saved in the forward pass, so the running statistics are
#   updated exactly once.
# - the scratch arrays come from the pool of `tinydense/memory.py`, so a few of
#   them serve every layer of every block.
#
# What each layer keeps is therefore the same size in every layer: its $k$ new
# channels (in the shared buffer), its $4k$ bottleneck channels and a few numbers
# per channel. A block of $n$ layers keeps $O(n)$; the plain path keeps
# $\sum_\ell 4(k_0 + (\ell-1)k) = O(n^2)$. A DenseNet-BC of depth $D$ has three blocks of
# $n = (D - 4)/6$ layers each, so the plain network's memory grows with $D^2$ and
# the memory-efficient one's with $D$.
#
# Let us measure one training step (forward, cross-entropy, backward) of the
# whole network in both modes, for increasing depth.

# %%
BATCH, IMAGE = (8, 16) if FAST else (8, 32)
net_depths = [10, 16, 22, 28, 34] if FAST else [10, 22, 40, 64, 100]
images = td.tensor(rng.standard_normal((BATCH, 3, IMAGE, IMAGE)).astype(np.float32))
labels = rng.integers(0, 10, BATCH)

steps = {False: [], True: []}          # memory_efficient -> [(kept, peak, seconds) per depth]
print(f"batch {BATCH} of {IMAGE}x{IMAGE} images, k = 12")
print(" depth  n |   plain: kept    peak |  efficient: kept    peak | peak ratio")
for depth in net_depths:
    for efficient in (False, True):
        td.manual_seed(0)
        model = densenet_bc(depth, growth_rate=12, memory_efficient=efficient)
        steps[efficient].append(measure(lambda: F.cross_entropy(model(images), labels)))
    (pk, pp, _), (ek, ep, _) = steps[False][-1], steps[True][-1]
    print(f"{depth:6d} {(depth - 4) // 6:2d} | {pk / 2**20:8.2f} MB {pp / 2**20:6.2f} MB "
          f"| {ek / 2**20:8.2f} MB {ep / 2**20:6.2f} MB | {pp / ep:5.2f}")

# %%
D = np.array(net_depths)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for efficient, marker, name in ((False, "o", "plain"), (True, "s", "memory-efficient")):
    kept_mb, peak_mb, seconds = (np.array(column) for column in zip(*steps[efficient]))
    line, = axes[0].plot(D, peak_mb / 2**20, marker + "-", label=f"{name}: peak")
    axes[0].plot(D, kept_mb / 2**20, marker + "--", color=line.get_color(), alpha=0.6,
                 label=f"{name}: kept after forward")
    axes[1].plot(D, seconds, marker + "-", label=name)
axes[0].set_ylabel("MB for one training step")
axes[0].set_title(f"DenseNet-BC (k=12), batch {BATCH}, {IMAGE}x{IMAGE}")
axes[1].set_ylabel("seconds for forward + backward")
axes[1].set_title("Time (measured under tracemalloc)")
for ax in axes:
    ax.set_xlabel("depth D (three blocks of (D - 4) / 6 layers)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# With only a few points a curve and a straight line are hard to tell apart
# by eye. A sharper test: how much memory does one more layer per block add?
# For a straight line that is the same at every depth; for a quadratic it
# grows with the depth.

# %%
n = (D - 4) // 6
for efficient, name in ((False, "plain"), (True, "memory-efficient")):
    peak_mb = np.array([r[1] for r in steps[efficient]]) / 2**20
    per_layer = np.diff(peak_mb) / np.diff(n)
    print(f"{name:16s}: MB of peak added per extra layer in each block, from depth to depth: "
          + ", ".join(f"{v:.2f}" for v in per_layer))

# %% [markdown]
# The plain network's step adds more memory with every layer (each new layer
# keeps four arrays as wide as all the features before it), the memory-efficient one's adds
# about the same amount every time. The scratch arrays and the block's gradient
# buffer are as wide as the whole block, so they grow with $n$ too, but only
# linearly and there are only a few of them. With the students' settings the
# plain step at depth 100 needs about five times the memory of the
# memory-efficient one (about 570 MB against 115 MB when this lesson was
# written); for DenseNet-BC-190 on a GPU it is the difference between a batch
# that does not fit and one that does.
#
# As for time: recomputing BN-ReLU is extra work, but the fused op also makes
# fewer passes over memory and no copies, so the memory-efficient step is not
# slower for it: at depth 100 it took about half the time of the plain one
# when this lesson was written. (Timings measured while `tracemalloc` is
# running are inflated, and on a small, shared machine they are noisy: trust
# the memory plot more than the time plot. `benchmarks/bench_train.py` times
# both modes properly.)
#
# ## 5. Same loss, same gradients
#
# Saving memory must not change the result. We build both versions with the
# same weights (`load_state_dict` copies them), in float64 so that rounding
# does not hide a mistake, run one training step and compare the loss, some
# parameter gradients and the running statistics batch norm updated.

# %%
td.manual_seed(0)
plain = densenet_bc(16, growth_rate=12, memory_efficient=False).double()
efficient = densenet_bc(16, growth_rate=12, memory_efficient=True).double()
efficient.load_state_dict(plain.state_dict())
losses = []
for model in (plain, efficient):
    loss = F.cross_entropy(model(images.double()), labels)
    loss.backward()
    losses.append(loss.item())
print(f"loss: plain {losses[0]:.15f}, memory-efficient {losses[1]:.15f}")

grads = dict(efficient.named_parameters())
for name in ("features.conv0.weight", "features.denseblock1.denselayer1.norm1.weight",
             "features.denseblock2.denselayer2.conv1.weight", "features.transition2.conv.weight",
             "classifier.weight"):
    a, b = dict(plain.named_parameters())[name].grad, grads[name].grad
    print(f"{name:46s} largest |gradient| {np.abs(a).max():.2e}, largest difference {np.abs(a - b).max():.1e}")
worst = max(np.abs(p.grad - grads[name].grad).max() for name, p in plain.named_parameters())
stats = dict(efficient.named_buffers())
worst_stat = max(np.abs(np.asarray(b) - np.asarray(stats[name])).max() for name, b in plain.named_buffers())
print(f"all {len(grads)} parameter gradients: largest difference {worst:.1e}; "
      f"running statistics: largest difference {worst_stat:.1e}")

# %% [markdown]
# The differences are at the level of float64 rounding ($10^{-16}$ relative):
# the two paths add the same numbers in a different order, nothing more. In
# float32 the same comparison gives differences of about $10^{-7}$ to $10^{-6}$
# of the gradients' size, float32's rounding.
#
# ## 6. DenseNet-BC against ResNet at equal cost
#
# The paper's central comparison (its Figs. 3 and 4) is at equal cost: for the
# same number of parameters or of multiply-adds, DenseNets reach a lower error
# than ResNets. At CIFAR scale the pair to compare is DenseNet-BC with
# $L = 100$, $k = 12$ against the pre-activation ResNet-164 of the paper's
# Table 2: fewer than half the parameters, a few more multiply-adds. We measure
# both on one training step with the tools of section 1, and this time read
# memory at three moments: after the forward pass (the graph), at the peak,
# and **after** the step (once `optimizer.step()` has run and the loss is gone).

# %%
def measure_step(model, images, labels):
    """One SGD step. Returns bytes kept after forward, peak bytes, bytes alive after the step, seconds."""
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    memory.clear()
    tracemalloc.start()
    try:
        start_bytes = tracemalloc.get_traced_memory()[0]
        start = time.perf_counter()
        loss = F.cross_entropy(model(images), labels)
        kept = tracemalloc.get_traced_memory()[0] - start_bytes
        loss.backward()
        optimizer.step()
        seconds = time.perf_counter() - start
        del loss
        memory.clear()                   # the pool's spare arrays are not in use
        after = tracemalloc.get_traced_memory()[0] - start_bytes
        peak = tracemalloc.get_traced_memory()[1] - start_bytes
    finally:
        tracemalloc.stop()
    return kept, peak, after, seconds


rivals = {"DenseNet-BC-100 (k=12)": lambda: densenet_bc(100, growth_rate=12),
          "ResNet-164 (pre-activation)": lambda: preact_resnet(164)}
N6 = 2 if FAST else 16
images6 = td.tensor(rng.standard_normal((N6, 3, 32, 32)).astype(np.float32))
labels6 = rng.integers(0, 10, N6)
print(f"one training step, batch {N6} of 32x32 images")
print(f"{'network':<28} {'parameters':>10} {'MACs/image':>10} | {'kept':>8} {'peak':>8} {'after':>8} {'time':>7}")
for name, build in rivals.items():
    td.manual_seed(0)
    net = build()
    cost = td.summary(net, (3, 32, 32))
    kept, peak, after, seconds = measure_step(net, images6, labels6)
    print(f"{name:<28} {cost.total_params:>10,} {cost.total_macs / 1e6:>9.0f}M | {kept / 2**20:>5.0f} MB "
          f"{peak / 2**20:>5.0f} MB {after / 2**20:>5.1f} MB {seconds:>6.2f} s")

# %% [markdown]
# **Why the memory after a step is not the peak.** After the step only the
# weights' gradients and the optimizer's momentum buffers are alive (about two
# copies of the parameters: a few MB); the activations that backward needed
# were freed as soon as it was done with them. The peak happened in the middle
# of backward, when the arrays kept for backward and the gradients being made
# existed together. A memory reading taken after a step (`tracemalloc`'s
# current size, or `torch.cuda.memory_allocated()` in PyTorch) therefore says
# nothing about what the step needs; ask for the peak (`tracemalloc`'s second
# number, `torch.cuda.max_memory_allocated()`, or the process's `VmHWM`). The
# opposite trap exists too: the resident memory of the process (`VmRSS`, what
# `top` shows) stays close to the peak after the step, because the allocator
# and tinydense's pool keep the freed memory for the next step.
#
# DenseNet-BC keeps less than ResNet-164 although its concatenated inputs are
# wider: the memory-efficient blocks keep $O(L)$ small arrays, while
# ResNet-164, built from plain modules, keeps everything its 164 layers' batch
# norms, ReLUs and convolutions saved.
#
# **Measured at full size** (2026-12-08, a quiet 2-core AMD EPYC with AVX2, batch 64,
# float32, two threads: `python benchmarks/bench_densenet_vs_resnet.py`). The four
# training steps alternate in one process: tinydense's two networks and the same two
# architectures written in plain PyTorch 2.13 (eager CPU; `benchmarks/bench_models.py`
# holds them); each peak memory is read in a fresh process. The accuracies come from two
# `tinydense train` runs with the same 5-epoch schedule on the course's subset
# (2026-12-02; `--model densenet-bc --depth 100` and `--model resnet --depth 164`,
# `--epochs 5`, everything else the defaults):
#
# | | DenseNet-BC-100 (k=12) | ResNet-164 (pre-activation) | DenseNet-BC / ResNet-164 |
# | --- | ---: | ---: | ---: |
# | parameters | 769,162 | 1,703,258 | 0.45 |
# | multiply-adds per image | 288 M | 248 M | 1.16 |
# | training step, tinydense (median of 5) | 2.04 s | 3.39 s | 0.60 |
# | training step, PyTorch (median of 5) | 2.95 s | 1.98 s | 1.49 |
# | peak memory of one step, tinydense | 909 MB | 3,096 MB | 0.29 |
# | peak memory of one step, PyTorch | 2,641 MB | 2,061 MB | 1.28 |
# | test accuracy after 5 epochs (tinydense) | 51.4% | 42.7% | |
#
# What the architectures do: with fewer than half the parameters and 16% more
# multiply-adds, DenseNet-BC's step takes **1.49x** ResNet-164's in PyTorch:
# it is **slower** per step than ResNet-164 in PyTorch, as in every mainstream
# framework (the DenseNet authors' own notes found DenseNet-201 about three times slower
# to train than ResNet-50 at similar FLOPs). Each dense layer reads the whole
# concatenation of the features before it for its batch norm, ReLU and 1x1
# convolution, so a DenseNet moves more memory per multiply-add, in many small
# products of 12 to 48 channels, than a ResNet, whose blocks are fixed-width products.
#
# What the implementation does: in tinydense both networks run on fused seams (DenseNet-BC
# on the memory-efficient seam, which makes each dense block one op; ResNet-164 on the
# BN-ReLU seam of `models/fused_layers.py`), and here
# DenseNet-BC's step takes **0.60x** ResNet-164's in tinydense, **faster** per step than ResNet-164 in tinydense.
# That is the implementation, not the architecture: tinydense's DenseNet seam beats
# PyTorch's DenseNet (2.04 s against 2.95 s), while its ResNet-164 is still 1.7x
# PyTorch's (3.39 s against 1.98 s, benchmarks/README.md says where the time goes).
# The memory-efficient seam is what changes the memory:
# DenseNet-BC's peak memory is **0.29x** ResNet-164's in tinydense, while
# its peak memory is **1.28x** ResNet-164's in PyTorch, whose DenseNet stores every
# layer's normalised concatenation. So: fewer parameters for DenseNet-BC; less memory
# only with a memory-efficient implementation (more without one); a slower step per
# multiply-add in a mainstream framework; and ahead after the same short schedule. Five epochs on 5,085 images say which network learns faster, not
# which ends better (the paper's 300-epoch errors are 4.51% against 5.46% on full CIFAR-10).
#

# %% [markdown]
# ## 7. The seed notes' experiment: DenseNet-201 against ResNet-50
#
# The first seed note of this course ends with its own experiment: timm's
# ImageNet-pretrained `densenet201` and `resnet50`, each fine-tuned for one epoch on
# CIFAR-10 at 32x32 (batch 32, SGD with learning rate 0.001 and momentum 0.9) on one
# RTX 3090, with the multiply-adds counted by `thop` for a batch of 128. Its
# observations: at similar "GFLOPS" DenseNet-201 has clearly fewer parameters and a
# better accuracy, but takes about three times as long to train, and, to the author's
# surprise, needs *less* GPU memory.
#
# `thop.profile` counts one multiply-add as one "FLOP", so its "FLOPs" are what
# tinydense calls MACs. The counts need no training: here they are for the two
# networks with a 10-class classifier at 32x32 (the ImageNet stems shrink a 32x32
# image to 8x8 before the first block, and both end at 1x1):

# %%
from tinydense import models
from tinydense.nn import init

for name in ("densenet201", "resnet50"):
    with init.skip_init():                                   # counting only: no random draws needed
        net = getattr(models, name)(num_classes=10)
    cost = td.summary(net, (3, 32, 32))
    print(f"{name:<12} {cost.total_params / 1e6:6.2f} M parameters, {cost.total_macs / 1e6:5.1f} M MACs per "
          f"image, {128 * cost.total_macs / 1e9:5.2f} G MACs for a batch of 128 (thop's \"FLOPs\")")

# %% [markdown]
# The whole experiment is one command, `tinydense compare densenet201 resnet50 --train cifar10`
# (tinydense/tools/train_compare.py): the seed's settings by default (one epoch, batch 32,
# SGD lr 0.001, momentum 0.9), each network trained with the training loop's own step in a
# fresh process, and its table. The peak memory is the growth of that process's peak
# resident memory (`VmHWM`) during training, CPU memory where the seed read the GPU's.
# Without pretrained weights at hand it trains from scratch and says so; `--weights DEFAULT`
# starts from torchvision's ImageNet weights (downloaded once; timm's files are other
# trainings of the same architectures) with a new 10-class classifier.
#
# **Measured** (2026-12-08, the course's whole subset: one epoch over its 5,085 training
# images, tested on all 1,017; a quiet 2-core AMD EPYC, two BLAS threads, 1-minute load
# average 1.8 to 2.1, which is the run's own two threads; from scratch, as no weights could
# be downloaded). `benchmarks/seed_experiment.py` runs this command and, in the same run, the
# same training in PyTorch 2.13 eager CPU with torchvision's models of the same names (same
# images in the same order, same optimiser, each model in a fresh process):
#
#     tinydense compare densenet201 resnet50 --train cifar10 --epochs 1 --batch-size 32 --lr 0.001
#
# | | DenseNet-201 | ResNet-50 | DenseNet / ResNet |
# | --- | ---: | ---: | ---: |
# | parameters (10 classes) | 18.11 M | 23.53 M | 0.77x |
# | multiply-adds per image (32x32) | 87.6 M | 83.5 M | 1.05x |
# | multiply-adds for a batch of 128 (thop's "FLOPs") | 11.21 G | 10.68 G | 1.05x |
# | seconds for the epoch (159 steps), tinydense | 142.7 | 88.1 | 1.62x |
# | seconds for the epoch, PyTorch | 95.4 | 73.2 | 1.30x |
# | peak memory growth while training, tinydense | 275 MB | 344 MB | 0.80x |
# | peak memory growth while training, PyTorch | 300 MB | 314 MB | 0.96x |
# | test accuracy after the epoch, tinydense | 33.43% | 29.50% | |
# | test accuracy after the epoch, PyTorch | 30.58% | 22.91% | |
#
# What tinydense reproduces, and why the rest differs:
#
# - **Similar multiply-adds, far fewer parameters: reproduced exactly.** These are counts of
#   the architectures, the same on any machine (and PyTorch's models have the same
#   parameter counts: 18,112,138 and 23,528,522).
# - **A longer training time for DenseNet: reproduced, by less.** DenseNet-201's epoch takes
#   1.62x ResNet-50's in tinydense and 1.30x in PyTorch on this CPU, against about 3x on the
#   seed's RTX 3090. On a GPU the time follows the number of small kernels (201 layers, each
#   a batch norm, a ReLU, a convolution and a concatenation, against 50) more than the
#   multiply-adds, which a GPU does fast; on a CPU the multiply-adds weigh more, and they are
#   about the same. tinydense's ratio is higher than PyTorch's: its DenseNet-201 epoch takes
#   1.50x PyTorch's, its ResNet-50 epoch 1.20x. DenseNet-201 is made of many thin products (a
#   3x3 convolution of 128 channels in and 32 out in every layer), where NumPy's BLAS is
#   furthest from PyTorch's direct convolutions; ResNet-50's wide 3x3 convolutions take
#   tinydense's Winograd seam (`ops/winograd.py`, lesson 2).
# - **Less memory for DenseNet: reproduced** (0.80x in tinydense, 0.96x in PyTorch), though on
#   the CPU, not the GPU. At 32x32 the activations are small, so a good part of each number is
#   the two extra copies of the weights that training makes, the gradients and the momentum
#   buffers (138 MB against 180 MB); tinydense's DenseNet-201 also runs its blocks
#   memory-efficiently (section 4).
# - **Better accuracy for DenseNet: seen in this one run, not established.** The seed
#   fine-tuned ImageNet-pretrained networks; here both start from random weights and take 159
#   small steps, and DenseNet-201 ends ahead in both frameworks (33.4% against 29.5%, 30.6%
#   against 22.9%). One short run with one seed each says nothing certain about which network
#   ends better. With `--weights DEFAULT` on a machine that can download them, the same command
#   runs the seed's fine-tuning.

# %% [markdown]
# ## Questions and exercises
#
# 1. Count the arrays of size $k_0 + (\ell-1)k$ channels that layer $\ell$ keeps in the
#    naive version. Read `tinydense/ops/shape.py`, `norm.py` and `activation.py`: which
#    op saves which array, and which tensors stay alive only because the graph refers
#    to them?
# 2. Our `recomputed_block` still keeps the block's final concatenation. Why is that
#    array not a problem? How does the library's shared buffer avoid it altogether?
# 3. Batch norm in training mode updates its running statistics. What would go wrong if
#    `bottleneck_input` updated them during the recomputation too? How does
#    `FusedDenseBlock` in `tinydense/ops/dense_block.py` avoid the problem?
# 4. Use `Recompute` around a whole dense layer instead of its first half. How does the
#    memory change, and what does it cost?
# 5. In section 4, plot the plain mode's peak against $n^2$ and the memory-efficient
#    mode's against $n$. Are both straight lines? Fit them with `np.polyfit` and use
#    the fits to predict depth 190; compare with `benchmarks/README.md`.
# 6. Estimate the activation memory of DenseNet-BC-100 on a batch of 64 CIFAR images with
#    the naive implementation, using the formula of section 2 for each block, and compare
#    with what section 4 measures (scaled to batch 64).
# 7. In section 6, which network has the larger *parameter* memory, and which the larger
#    *activation* memory? Build ResNet-164's bottleneck block with a `Recompute` around its
#    first BN-ReLU-convolution: how much of the gap closes?
