# %% [markdown]
# # Lesson 9: Memory
#
# DenseNets have few parameters, yet training them is known to need a lot of
# memory. The reason is not the weights but the **activations**: to run the
# backward pass, autograd keeps the arrays the forward pass produced, and a
# straightforward dense block produces a lot of them. This lesson measures
# that memory as the block gets deeper, explains why it grows
# quadratically, and builds the standard fix, **recomputation**, which makes
# it grow linearly for the price of some extra arithmetic.
#
# ## What you will learn
#
# - how to measure the memory a forward pass keeps for the backward pass;
# - why naive concatenation makes a dense block's memory grow with the square of its depth;
# - how recomputing the cheap concatenation, batch norm and ReLU in the backward pass
#   (the "memory-efficient" DenseNet) brings it down to linear growth;
# - what that costs in time, and how to check that the gradients are unchanged.

# %%
%matplotlib inline
import os
import time
import tracemalloc

import matplotlib.pyplot as plt
import numpy as np

import tinydense as td
import tinydense.functional as F
from tinydense import Function
from tinydense.models import DenseBlock

FAST = os.environ.get("TINYDENSE_LESSONS_FAST") == "1"   # small settings for CI
td.manual_seed(0)
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Measuring memory
#
# NumPy reports every array it allocates to Python's `tracemalloc` module, so
# we can ask how many bytes are alive at any moment and what the peak was.
# We measure two numbers for one training step of a block:
#
# - **kept**: the bytes still alive after the forward pass, when the loss is
#   computed. This is the graph: every array some `Function` saved for its
#   backward pass, and every intermediate tensor the graph refers to;
# - **peak**: the highest point during forward and backward together.

# %%
def measure(forward, x):
    """Memory (bytes) kept after forward and peak over forward + backward; seconds taken."""
    tracemalloc.start()
    try:
        start_bytes = tracemalloc.get_traced_memory()[0]
        start = time.perf_counter()
        out = forward(x)
        loss = (out * out).mean()
        kept = tracemalloc.get_traced_memory()[0] - start_bytes
        loss.backward()
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] - start_bytes
    finally:
        tracemalloc.stop()
    return kept, peak, seconds


N, K0, K, SIZE = (4, 16, 8, 8) if FAST else (8, 24, 12, 16)   # batch, input channels, growth rate, image size
x = td.tensor(rng.standard_normal((N, K0, SIZE, SIZE)).astype(np.float32), requires_grad=True)
block = DenseBlock(num_layers=6, in_channels=K0, growth_rate=K)
kept, peak, seconds = measure(block, x)
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
    naive.append(measure(block, x))
    print(f"L = {L:2d}: kept {naive[-1][0] / 2**20:7.2f} MB, peak {naive[-1][1] / 2**20:7.2f} MB, "
          f"{naive[-1][2]:.2f} s")

# %% [markdown]
# ## 3. The fix: recompute instead of remember
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
# In tinydense it is one `Function` whose `backward` runs a small forward and
# backward pass of its own. Parameters used inside receive their gradients
# from that inner backward pass, exactly as they would have otherwise.

# %%
class Recompute(Function):
    """Run ``fn(*tensors)`` without keeping its graph; rebuild the graph in backward.

    fn(*tensors, recompute) must give the same result both times (batch norm must
    not update its running statistics on the second call: that is the flag)."""

    def forward(self, *arrays, fn):
        self.arrays, self.fn = arrays, fn
        with td.no_grad():
            return fn(*[td.Tensor(a) for a in arrays], recompute=False).data

    def backward(self, g):
        inputs = [td.Tensor(a, requires_grad=need) for a, need in zip(self.arrays, self.needs_grad)]
        self.fn(*inputs, recompute=True).backward(g)      # a small forward + backward of its own
        return tuple(x.grad if need else None for x, need in zip(inputs, self.needs_grad))


def bottleneck_input(layer, *features, recompute):
    """The first half of a DenseNet-B layer: cat, BN, ReLU, 1x1 conv (4k channels out)."""
    x = F.cat(list(features), axis=1)
    bn = layer.norm1
    track = not recompute or not layer.training            # eval mode always uses the running stats
    x = F.batch_norm(x, bn.running_mean if track else None, bn.running_var if track else None,
                     bn.weight, bn.bias, training=layer.training, momentum=bn.momentum, eps=bn.eps)
    return layer.conv1(F.relu(x))


def efficient_block(block, x):
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
td.manual_seed(0)
block = DenseBlock(num_layers=4, in_channels=K0, growth_rate=K)
results = []
for forward in (block, lambda t: efficient_block(block, t)):
    block.zero_grad()
    xi = td.tensor(x.numpy(), requires_grad=True)
    out = forward(xi)
    (out * out).mean().backward()
    results.append((out.numpy(), xi.grad.copy(), [p.grad.copy() for p in block.parameters()]))
(out_a, gx_a, gp_a), (out_b, gx_b, gp_b) = results
print("same output          :", np.allclose(out_a, out_b, atol=1e-6))
print("same input gradient  :", np.allclose(gx_a, gx_b, atol=1e-6))
print("same parameter grads :", all(np.allclose(a, b, atol=1e-5) for a, b in zip(gp_a, gp_b)))

# %% [markdown]
# ## 4. Memory against depth
#
# Now the same measurement for the memory-efficient version.

# %%
efficient = []
for L in depths:
    td.manual_seed(0)
    block = DenseBlock(num_layers=L, in_channels=K0, growth_rate=K)
    efficient.append(measure(lambda t: efficient_block(block, t), x))
    print(f"L = {L:2d}: kept {efficient[-1][0] / 2**20:7.2f} MB, peak {efficient[-1][1] / 2**20:7.2f} MB, "
          f"{efficient[-1][2]:.2f} s")

# %%
naive_mb = np.array([r[0] for r in naive]) / 2**20
efficient_mb = np.array([r[0] for r in efficient]) / 2**20
L = np.array(depths)
channels = 4 * (L * K0 + K * L * (L - 1) / 2)               # the quadratic term of section 2
predicted = channels * N * SIZE * SIZE * 4 / 2**20

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
axes[0].plot(L, naive_mb, "o-", label="naive concatenation")
axes[0].plot(L, efficient_mb, "s-", label="recomputed (memory-efficient)")
axes[0].plot(L, naive_mb - efficient_mb, "^:", label="difference: what recomputation saves")
axes[0].plot(L, predicted, "k--", lw=0.8, label="predicted: 4 (L k0 + k L(L-1)/2) channels")
axes[0].set_xlabel("layers in the block (L)")
axes[0].set_ylabel("MB kept for the backward pass")
axes[0].set_title(f"Memory, batch {N}, {SIZE}x{SIZE}, k0={K0}, k={K}")
axes[0].legend(fontsize=8)
axes[1].plot(L, [r[2] for r in naive], "o-", label="naive")
axes[1].plot(L, [r[2] for r in efficient], "s-", label="recomputed")
axes[1].set_xlabel("layers in the block (L)")
axes[1].set_ylabel("seconds for forward + backward")
axes[1].set_title("Time")
axes[1].legend(fontsize=8)
for ax in axes:
    ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()
print(f"at L = {depths[-1]}: {naive_mb[-1] / efficient_mb[-1]:.1f} times less memory kept, "
      f"{efficient[-1][2] / naive[-1][2]:.2f} times the time")

# %% [markdown]
# The naive curve bends upwards. The difference between the two curves, the
# memory that recomputation saves, lies on the predicted quadratic term: the
# four copies of the concatenated input per layer are exactly where the extra
# memory goes. The recomputed version keeps only what is the same size in
# every layer and grows in a straight line. The price is running the cheap first
# half of every layer twice, which shows up in the time plot. For a
# DenseNet-BC-250 on a GPU that is the difference between a batch that does
# not fit and one that does.
#
# (Timings measured while `tracemalloc` is running are inflated, and on a
# small problem they are noisy: trust the memory plot more than the time plot.)
#
# ## Questions and exercises
#
# 1. Count the arrays of size $k_0 + (\ell-1)k$ channels that layer $\ell$ keeps in the
#    naive version. Read `tinydense/ops/shape.py`, `norm.py` and `activation.py`: which
#    op saves which array, and which tensors stay alive only because the graph refers
#    to them?
# 2. The recomputed version still keeps the block's final concatenation. Why is that
#    array not a problem?
# 3. Batch norm in training mode updates its running statistics. What would go wrong if
#    `bottleneck_input` updated them during the recomputation too?
# 4. Use `Recompute` around a whole dense layer instead of its first half. How does the
#    memory change, and what does it cost?
# 5. Estimate the activation memory of DenseNet-BC-100 on a batch of 64 CIFAR images with
#    the naive implementation, using the formula of section 2 for each block.
