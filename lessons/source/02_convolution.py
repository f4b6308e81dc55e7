# %% [markdown]
# # Lesson 2: Convolution, from loops to one matrix product
#
# A convolution layer slides a small stack of filters over an image and, at
# every position, takes a dot product between a filter and the patch under
# it. DenseNet is almost nothing but convolutions (3x3 ones inside the dense
# layers, 1x1 ones in the bottlenecks and transitions), so how fast they run
# decides how fast everything runs.
#
# ## What you will learn
#
# - exactly what a convolution layer computes, written as loops;
# - the output-size formula $(W - K + 2P)/S + 1$ and where the rounding happens;
# - **im2col**: rewriting a convolution as a matrix product, and then the whole
#   batch as **one** matrix product (GEMM);
# - the backward pass of a convolution as two more matrix products;
# - as exercises: the convolution as loops, the im2col matrix, the backward pass
#   of a convolution layer, and F(2, 3) over a 1-D signal (checked automatically);
# - how to count a layer's memory, parameters and FLOPs, worked through for
#   AlexNet's first convolution and pooling layer and checked with
#   `tinydense.summary`;
# - how much faster each version is, measured;
# - Winograd's F(2x2, 3x3): a 3x3 convolution with 2.25 times fewer
#   multiplications, what its transforms cost, and tinydense's seam checked and
#   timed against the textbook path.

# %%
%matplotlib inline
import os
import time

import matplotlib.pyplot as plt
import numpy as np

import tinydense as td
import tinydense.functional as F
import tinydense.nn as nn
from tinydense import Function
from tinydense.backend import get_array_module
from tinydense.ops import winograd

from checks.l02_convolution import check_conv2d, check_conv2d_loops, check_im2col, check_winograd_1d
from checks.common import passed

FAST = os.environ.get("TINYDENSE_LESSONS_FAST") == "1"   # small settings for CI
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. What a convolution layer computes
#
# Input $x$ has shape $(N, C, H, W)$: $N$ images with $C$ channels each. The
# weight $w$ has shape $(O, C, K, K)$: $O$ filters, each as deep as the input.
# With stride $S$ and zero padding $P$ on every side, output channel $o$ at
# position $(i, j)$ is
#
# $$y[n, o, i, j] = b[o] + \sum_{c=0}^{C-1}\sum_{a=0}^{K-1}\sum_{b'=0}^{K-1}
#   w[o, c, a, b']\; x_{\text{pad}}[n, c,\; iS + a,\; jS + b'] .$$
#
# (Deep-learning "convolution" does not flip the filter; mathematicians would
# call this a cross-correlation. Since the filters are learned, it makes no
# difference.)
#
# ## 2. The output size
#
# Along one axis, the padded input has $W + 2P$ pixels and a window of $K$
# pixels fits at positions $0, S, 2S, \dots$ as long as it does not run off
# the end. That gives
#
# $$W_{\text{out}} = \left\lfloor \frac{W - K + 2P}{S} \right\rfloor + 1 .$$
#
# When $S$ does not divide $W - K + 2P$, the last few pixels are never the
# start of a window and are simply dropped (the floor). A few cases, checked
# against what `F.conv2d` actually returns:

# %%
def output_size(W, K, S, P):
    return (W - K + 2 * P) // S + 1


cases = [  # (input size, kernel, stride, padding, where it appears)
    (32, 3, 1, 1, "DenseNet 3x3 conv on CIFAR: size kept"),
    (32, 1, 1, 0, "DenseNet-B bottleneck 1x1 conv"),
    (227, 11, 4, 2, "AlexNet conv1"),
    (224, 7, 2, 3, "ImageNet DenseNet stem"),
    (8, 3, 2, 0, "a case where the division is not exact"),
]
for W, K, S, P, where in cases:
    formula = output_size(W, K, S, P)
    x = td.tensor(np.zeros((1, 1, W, W), dtype=np.float32))
    w = td.tensor(np.zeros((1, 1, K, K), dtype=np.float32))
    actual = F.conv2d(x, w, stride=S, padding=P).shape[-1]
    print(f"W={W:3d} K={K:2d} S={S} P={P}: ({W}-{K}+2*{P})/{S}+1 = {(W - K + 2 * P) / S + 1:6.2f}"
          f" -> {formula:3d} (conv2d gives {actual})  {where}")

# %% [markdown]
# ## 3. Version 1: loops
#
# The formula translates directly into nested loops: over images, filters,
# output rows and columns, and inside, over the input channels and the
# kernel's rows and columns. This is the definition, and the reference for
# everything that follows; it is also hopelessly slow, as we will measure.
#
# ### Exercise 1: the convolution as loops
#
# Write `conv2d_loops` with plain Python loops and NumPy indexing: zero-pad the
# input with `np.pad`, compute the output size with `output_size`, and fill
# every output number from the formula of section 1. (Square kernels, one
# stride and one padding for both axes.)

# %% tags=["exercise-stub"]
def conv2d_loops(x, w, b, stride=1, padding=0):
    """x (N, C, H, W), w (O, C, K, K), b (O,) -> y (N, O, OH, OW), by loops."""
    raise NotImplementedError("write the convolution as loops")

# %% tags=["exercise-check"]
check_conv2d_loops(conv2d_loops)

# %% [markdown]
# The innermost loops compute a dot product between the filter `w[o]` and one
# patch of the input. NumPy can do that dot product for us, which leaves four
# Python loops: one iteration per output number.

# %%
def conv_window_loops(x, w, b, stride=1, padding=0):
    N, C, H, W = x.shape
    O, _, K, _ = w.shape
    OH, OW = output_size(H, K, stride, padding), output_size(W, K, stride, padding)
    xpad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    y = np.empty((N, O, OH, OW), dtype=x.dtype)
    for n in range(N):
        for o in range(O):
            for i in range(OH):
                for j in range(OW):
                    patch = xpad[n, :, i * stride:i * stride + K, j * stride:j * stride + K]
                    y[n, o, i, j] = np.sum(patch * w[o]) + b[o]
    return y


x = rng.standard_normal((2, 3, 7, 7))
w = rng.standard_normal((4, 3, 3, 3))
b = rng.standard_normal(4)
y_ref = F.conv2d(td.tensor(x), td.tensor(w), td.tensor(b), stride=2, padding=1).numpy()
print("output shape", y_ref.shape, "  max |window loops - tinydense| =",
      np.abs(conv_window_loops(x, w, b, 2, 1) - y_ref).max())

# %% [markdown]
# ## 4. Version 2: im2col, one matrix product per image
#
# Every output number is a dot product of one filter with one patch. Put each
# filter in a **row** of a matrix $W_{\text{mat}}$ of shape $(O, CK^2)$ and each
# patch in a **column** of a matrix (the *column matrix*) of shape
# $(CK^2, OH \cdot OW)$. Then all the dot products together are one matrix
# product:
#
# $$Y = W_{\text{mat}}\,\text{cols}, \qquad (O, CK^2) \times (CK^2, OH\,OW) \to (O, OH\,OW).$$
#
# Building the column matrix is called *im2col*. The obvious way copies one
# patch per output pixel:

# %%
def im2col_by_pixel(x1, K, stride=1, padding=0):
    """The column matrix of ONE image x1 (C, H, W): column p is the patch of output pixel p."""
    C, H, W = x1.shape
    OH, OW = output_size(H, K, stride, padding), output_size(W, K, stride, padding)
    xpad = np.pad(x1, ((0, 0), (padding, padding), (padding, padding)))
    cols = np.empty((C * K * K, OH * OW), dtype=x1.dtype)
    for i in range(OH):
        for j in range(OW):
            cols[:, i * OW + j] = xpad[:, i * stride:i * stride + K, j * stride:j * stride + K].reshape(-1)
    return cols

# %% [markdown]
# To see what it builds, take a single-channel 5x5 "image" whose pixels are
# numbered 0 to 24, and a 3x3 kernel. There are 3x3 = 9 output pixels, so 9
# columns, each listing the 9 pixel numbers of its patch. Notice that most
# pixels appear in several columns: the column matrix is up to $K^2$ times as
# big as the image.

# %%
image = np.arange(25, dtype=np.float64).reshape(1, 5, 5)
cols = im2col_by_pixel(image, K=3)
fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), gridspec_kw={"width_ratios": [1, 1.6]})
axes[0].imshow(image[0], cmap="viridis")
for (r, c), v in np.ndenumerate(image[0]):
    axes[0].text(c, r, int(v), ha="center", va="center", color="white")
axes[0].set_title("5x5 input (pixel numbers)")
axes[1].imshow(cols, cmap="viridis", aspect="auto")
for (r, c), v in np.ndenumerate(cols):
    axes[1].text(c, r, int(v), ha="center", va="center", color="white", fontsize=8)
axes[1].set_title("column matrix: one 3x3 patch per column")
axes[1].set_xlabel("output pixel")
axes[1].set_ylabel("position in the patch")
for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
plt.tight_layout()
plt.show()

# %% [markdown]
# The per-pixel copy still loops over output pixels. Look at one *row* of the
# column matrix instead: row $(c, a, b')$ holds pixel $(iS + a, jS + b')$ of
# channel $c$ for every output pixel $(i, j)$, which is just a strided slice of
# the padded input, `xpad[c, a::S, b'::S]` (cut to $OH \times OW$). So the
# matrix can be filled with one slice copy per kernel tap, $K^2$ copies in all,
# for every image and channel at once. This is how `tinydense` builds it.
#
# ### Exercise 2: im2col with one copy per tap
#
# Write `im2col` for a whole batch: the result has shape $(N, CK^2, OH \cdot OW)$,
# row $c K^2 + aK + b'$ of image $n$ holds tap $(a, b')$ of channel $c$. Loop over
# the taps only (hint: fill an array of shape $(N, C, K, K, OH, OW)$, then reshape).

# %% tags=["exercise-stub"]
def im2col(x, K, stride=1, padding=0):
    """Column matrices of a batch x (N, C, H, W) -> (N, C*K*K, OH*OW), one slice copy per tap."""
    raise NotImplementedError("write im2col with one copy per tap")

# %% tags=["exercise-check"]
check_im2col(im2col)

# %% [markdown]
# The rest of this lesson uses your `im2col` once it passes, and the per-pixel
# version until then (which gives the same matrix, only more slowly):

# %%
def columns(x, K, stride=1, padding=0):
    """im2col of a batch: yours if it passed its check, else the per-pixel version."""
    if passed("im2col"):
        return im2col(x, K, stride, padding)
    return np.stack([im2col_by_pixel(x1, K, stride, padding) for x1 in x])


def conv_im2col(x, w, b, stride=1, padding=0):
    """One matrix product per image."""
    N, C, H, W = x.shape
    O, _, K, _ = w.shape
    OH, OW = output_size(H, K, stride, padding), output_size(W, K, stride, padding)
    cols = columns(x, K, stride, padding)
    w_mat = w.reshape(O, C * K * K)
    y = np.empty((N, O, OH * OW), dtype=x.dtype)
    for n in range(N):
        y[n] = w_mat @ cols[n]
    return y.reshape(N, O, OH, OW) + b.reshape(1, O, 1, 1)


print("im2col in use:", "yours" if passed("im2col") else "per pixel")
print("max |im2col - tinydense| =", np.abs(conv_im2col(x, w, b, 2, 1) - y_ref).max())

# %% [markdown]
# ## 5. Version 3: the whole batch as one GEMM
#
# The loop over images is a loop over independent matrix products with the
# same left factor. Place the column matrices of all images side by side and
# it becomes a single product of shape
# $(O, CK^2) \times (CK^2, N \cdot OH \cdot OW)$. One big product is faster
# than many small ones: the BLAS library behind `@` splits it into blocks that
# fit in the CPU caches and spreads them over all cores.

# %%
def conv_gemm(x, w, b, stride=1, padding=0):
    """The whole batch as one matrix product."""
    N, C, H, W = x.shape
    O, _, K, _ = w.shape
    OH, OW = output_size(H, K, stride, padding), output_size(W, K, stride, padding)
    cols = columns(x, K, stride, padding)                           # (N, CKK, OH*OW)
    cols = cols.transpose(1, 0, 2).reshape(C * K * K, N * OH * OW)   # side by side
    y = w.reshape(O, C * K * K) @ cols                              # one GEMM: (O, N*OH*OW)
    return y.reshape(O, N, OH, OW).transpose(1, 0, 2, 3) + b.reshape(1, O, 1, 1)


print("max |one GEMM - tinydense| =", np.abs(conv_gemm(x, w, b, 2, 1) - y_ref).max())

# %% [markdown]
# `F.conv2d` uses this idea with two refinements you can read in
# `tinydense/ops/conv.py`: a 1x1 convolution with stride 1 needs no column
# matrix at all (each pixel already is a column), and a stride-1 convolution
# can read its patches as shifted views of the flattened padded image instead
# of copying them, which saves the $K^2$-fold memory of the column matrix.
# (Wide 3x3 layers take a third road, with fewer multiplications: section 9.)
#
# ## 6. The backward pass is two more matrix products
#
# With $G = \partial L/\partial Y$ laid out like $Y$, as $(O, OH\,OW)$ per image,
# the forward $Y = W_{\text{mat}}\,\text{cols} + b$ gives
#
# $$\frac{\partial L}{\partial W_{\text{mat}}} = \sum_n G_n\, \text{cols}_n^{\top},\qquad
#   \frac{\partial L}{\partial\, \text{cols}_n} = W_{\text{mat}}^{\top} G_n,\qquad
#   \frac{\partial L}{\partial b} = \sum_{n,i,j} G .$$
#
# The gradient for the column matrix must then go back to the image: every
# entry is added to the pixel it was copied from (*col2im*, the reverse of the
# tap-by-tap copy). A pixel copied into several columns collects several
# contributions, the same "used more than once, so gradients add" rule as in
# lesson 1. Finally the padding is cut off: it was not part of the input.
#
# ### Exercise 3: the backward pass of a convolution layer
#
# Here is a convolution `Function` whose forward pass builds the column matrix
# tap by tap and saves it. Write its backward pass from the three formulas:
# `(dx, dweight, dbias)`, each of its input's shape (without a bias, the third
# value is ignored). The check uses odd shapes, strides, padding and a
# non-square kernel. Loop over the kernel's taps at most, never over pixels.

# %% tags=["workspace"]
def pair(value):
    """An int or a pair of ints -> a pair (stride=2 means (2, 2))."""
    return (value, value) if isinstance(value, int) else tuple(value)

# %% tags=["exercise-stub"]
class Conv2d(Function):
    # x (N, C, H, W) * weight (O, C, kh, kw) + bias (O,) -> y (N, O, OH, OW), by im2col:
    # y[n] = weight as an (O, C*kh*kw) matrix @ cols[n], the (C*kh*kw, OH*OW) patches of image n
    def forward(self, x, weight, bias=None, stride=1, padding=0):
        xp = get_array_module(x)
        (sh, sw), (ph, pw) = pair(stride), pair(padding)
        N, C, H, W = x.shape
        O, _, kh, kw = weight.shape
        OH, OW = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
        xpad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        cols = xp.empty((N, C, kh, kw, OH, OW), dtype=x.dtype)
        for a in range(kh):                       # one strided copy per tap (a, b)
            for b in range(kw):
                cols[:, :, a, b] = xpad[:, :, a:a + sh * OH:sh, b:b + sw * OW:sw]
        self.cols = cols.reshape(N, C * kh * kw, OH * OW)
        self.x_shape, self.weight, self.stride, self.padding = x.shape, weight, (sh, sw), (ph, pw)
        y = xp.matmul(weight.reshape(O, -1), self.cols).reshape(N, O, OH, OW)
        return y if bias is None else y + bias.reshape(1, O, 1, 1)

    def backward(self, g):
        # g: (N, O, OH, OW). Return (dx, dweight, dbias) with the shapes of x, weight and bias.
        raise NotImplementedError("write the backward pass of Conv2d")

# %% tags=["exercise-check"]
check_conv2d(Conv2d)

# %% [markdown]
# ## 7. Counting memory, parameters and FLOPs: AlexNet's first layers
#
# Three numbers describe what a layer costs:
#
# - **memory** of its output: number of output elements times 4 bytes (float32).
#   These activations are kept for the backward pass, so they add up over
#   the whole network;
# - **parameters**: the learnable numbers, $C_{\text{out}} C_{\text{in}} K^2$
#   weights plus $C_{\text{out}}$ biases for a convolution, none for pooling;
# - **FLOPs**: here, as in the lecture, one multiply-add counts as one
#   operation. Each of the $C_{\text{out}} \cdot H' \cdot W'$ outputs of a
#   convolution takes $C_{\text{in}} K^2$ multiply-adds; each output of a
#   $K \times K$ pooling window looks at $K^2$ inputs.
#
# AlexNet starts with 64 filters of size 11x11, stride 4, padding 2, on a
# 3x227x227 image, followed by 3x3 max pooling with stride 2.

# %%
C_in, H_in = 3, 227
C_out, K, S, P = 64, 11, 4, 2
H_conv = output_size(H_in, K, S, P)
conv_memory = C_out * H_conv * H_conv * 4
conv_params = C_out * C_in * K * K + C_out
conv_flops = (C_out * H_conv * H_conv) * (C_in * K * K)
print(f"conv1: output {C_out}x{H_conv}x{H_conv}")
print(f"  memory : {C_out}*{H_conv}*{H_conv}*4 bytes = {conv_memory} bytes = {conv_memory / 1024:.2f} KB")
print(f"  params : {C_out}*{C_in}*{K}*{K} + {C_out} = {conv_params}")
print(f"  FLOPs  : ({C_out}*{H_conv}*{H_conv}) * ({C_in}*{K}*{K}) = {conv_flops} = {conv_flops / 1e6:.1f} M")

K_pool, S_pool = 3, 2
H_pool = output_size(H_conv, K_pool, S_pool, 0)
pool_memory = C_out * H_pool * H_pool * 4
pool_flops = (C_out * H_pool * H_pool) * (K_pool * K_pool)
print(f"pool1: ({H_conv}-{K_pool})/{S_pool}+1 = {(H_conv - K_pool) / S_pool + 1} -> output {C_out}x{H_pool}x{H_pool}")
print(f"  memory : {pool_memory} bytes = {pool_memory / 1024:.2f} KB")
print(f"  params : 0")
print(f"  FLOPs  : ({C_out}*{H_pool}*{H_pool}) * ({K_pool}*{K_pool}) = {pool_flops} = {pool_flops / 1e6:.1f} M")

# %% [markdown]
# The convolution's output takes four times the memory of the pooled one,
# and the convolution does about 170 times as much arithmetic, while pooling
# has no parameters at all. Early layers of image networks are like this:
# big activations, few parameters, much arithmetic.
#
# `tinydense.summary` computes the same table for any model by running it once
# on a dummy input of the given shape. Let us build the two layers and check
# our numbers against it.

# %%
alexnet_start = nn.Sequential(nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.MaxPool2d(3, 2))
report = td.summary(alexnet_start, (3, 227, 227))
print(report)
conv_row, pool_row = report.rows
assert conv_row["output_shape"][-3:] == (C_out, H_conv, H_conv)
assert pool_row["output_shape"][-3:] == (C_out, H_pool, H_pool)
assert (conv_row["params"], conv_row["memory_bytes"], conv_row["flops"]) == (conv_params, conv_memory, conv_flops)
assert (pool_row["params"], pool_row["memory_bytes"], pool_row["flops"]) == (0, pool_memory, pool_flops)
print("summary agrees with the hand calculation")

# %% [markdown]
# ## 8. How fast is each version?
#
# We time every version on the same layer, a 3x3 convolution with padding 1
# as in a DenseNet layer, and report the achieved speed in GFLOP/s (here two
# floating-point operations per multiply-add, the usual unit for hardware).
# The seven-loop version is so slow that we time it on a smaller batch; the
# rate makes the numbers comparable.

# %%
def best_time(fn, repeat=3):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


N, C, H, O = (4, 8, 8, 16) if FAST else (16, 16, 16, 32)
xb = rng.standard_normal((N, C, H, H)).astype(np.float32)
wb = (rng.standard_normal((O, C, 3, 3)) / np.sqrt(9 * C)).astype(np.float32)
bb = np.zeros(O, dtype=np.float32)
macs_per_image = O * H * H * C * 9

versions = {
    "your loops (exercise 1)": (lambda: conv2d_loops(xb[:1], wb, bb, 1, 1), 1),
    "4 loops + np.sum": (lambda: conv_window_loops(xb, wb, bb, 1, 1), N),
    "im2col, GEMM per image": (lambda: conv_im2col(xb, wb, bb, 1, 1), N),
    "im2col, one GEMM": (lambda: conv_gemm(xb, wb, bb, 1, 1), N),
    "F.conv2d": (lambda: F.conv2d(td.tensor(xb), td.tensor(wb), td.tensor(bb), padding=1), N),
}
if not passed("conv2d_loops"):
    del versions["your loops (exercise 1)"]
    print("(your loops are timed here once exercise 1 passes)")
rates = {}
for name, (fn, images) in versions.items():
    seconds = best_time(fn, repeat=1 if "loops" in name else 5)
    rates[name] = 2 * macs_per_image * images / seconds / 1e9
    print(f"{name:24s} {seconds * 1e3:9.2f} ms for {images:2d} images  {rates[name]:9.4f} GFLOP/s")

plt.figure(figsize=(7, 3))
plt.barh(list(rates), list(rates.values()), color="tab:blue")
plt.xscale("log")
plt.xlabel("GFLOP/s (log scale)")
plt.title(f"3x3 convolution, {C}->{O} channels, {H}x{H} images")
plt.gca().invert_yaxis()
plt.grid(axis="x", alpha=0.3)
plt.show()

# %% [markdown]
# Each step is worth orders of magnitude: the loops pay Python's overhead
# for every single multiply-add, NumPy's `sum` pays it once per output value,
# and the matrix product pays it once per layer, leaving the work to an
# optimised BLAS library. That is why every deep-learning framework turns
# convolutions into GEMMs (or into something even more specialised, as the
# next section shows).
#
# ## 9. Fewer multiplications: Winograd's minimal filtering
#
# Every version so far does the same arithmetic: 9 multiply-adds per output
# and input channel of a 3x3 convolution. A faster product is one way to go
# faster; doing fewer multiplications is another. Winograd's *minimal
# filtering* algorithms, brought to convolutional networks by Lavin and Gray
# (2016), compute a few neighbouring outputs together and share work between
# them: they add and subtract inputs first and multiply afterwards.
#
# ### One dimension: F(2, 3)
#
# Two neighbouring outputs of a 3-tap filter $g$ read four inputs $d_0 \dots d_3$:
#
# $$y_0 = d_0 g_0 + d_1 g_1 + d_2 g_2, \qquad y_1 = d_1 g_0 + d_2 g_1 + d_3 g_2,$$
#
# six multiplications written like this. F(2, 3) (2 outputs, 3 taps) gets
# them from four products:
#
# $$m_1 = (d_0 - d_2)\,g_0,\quad m_2 = (d_1 + d_2)\,\frac{g_0 + g_1 + g_2}{2},\quad
#   m_3 = (d_2 - d_1)\,\frac{g_0 - g_1 + g_2}{2},\quad m_4 = (d_1 - d_3)\,g_2,$$
#
# $$y_0 = m_1 + m_2 + m_3, \qquad y_1 = m_2 - m_3 - m_4 .$$
#
# Multiply out $m_2 + m_3$: the $d_1 g_0$ and $d_1 g_2$ terms cancel, the
# halves add up to $d_1 g_1 + d_2 g_0 + d_2 g_2$, and $m_1$ supplies
# $d_0 g_0 - d_2 g_0$. The filter's factors $(g_0 \pm g_1 + g_2)/2$ depend on
# the filter alone: a layer makes them once and uses them for every position
# of every image, so they cost nothing per output. What remains per pair of
# outputs is 4 multiplications instead of 6, bought with a few additions of
# inputs. On random numbers:

# %%
d0, d1, d2, d3 = rng.standard_normal(4)
g0, g1, g2 = rng.standard_normal(3)
m1 = (d0 - d2) * g0
m2 = (d1 + d2) * (g0 + g1 + g2) / 2
m3 = (d2 - d1) * (g0 - g1 + g2) / 2
m4 = (d1 - d3) * g2
y0, y1 = m1 + m2 + m3, m2 - m3 - m4
y0_direct, y1_direct = d0 * g0 + d1 * g1 + d2 * g2, d1 * g0 + d2 * g1 + d3 * g2
print(f"F(2, 3), 4 multiplications: y0 = {y0:.15f}, y1 = {y1:.15f}")
print(f"direct,  6 multiplications: y0 = {y0_direct:.15f}, y1 = {y1_direct:.15f}")
print("largest difference:", max(abs(y0 - y0_direct), abs(y1 - y1_direct)))

# %% [markdown]
# The same four lines as matrices: transform the inputs with $B^\top$ (4x4,
# additions only), the filter with $G$ (4x3), multiply the two elementwise
# ($\odot$: the four products), and combine with $A^\top$ (2x4, additions only):
#
# $$y = A^\top \big[(G g) \odot (B^\top d)\big],\qquad
#   B^\top = \begin{pmatrix} 1 & 0 & -1 & 0 \\ 0 & 1 & 1 & 0 \\ 0 & -1 & 1 & 0 \\ 0 & 1 & 0 & -1 \end{pmatrix},\quad
#   G = \begin{pmatrix} 1 & 0 & 0 \\ \tfrac12 & \tfrac12 & \tfrac12 \\ \tfrac12 & -\tfrac12 & \tfrac12 \\ 0 & 0 & 1 \end{pmatrix},\quad
#   A^\top = \begin{pmatrix} 1 & 1 & 1 & 0 \\ 0 & 1 & -1 & -1 \end{pmatrix}.$$

# %%
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=float)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=float)
d, g = np.array([d0, d1, d2, d3]), np.array([g0, g1, g2])
print("A^T [(G g) * (B^T d)] =", AT @ ((G @ g) * (BT @ d)), "  y0, y1 from the m's:", np.array([y0, y1]))

# %% [markdown]
# ### Exercise 4: F(2, 3) over a whole signal
#
# A signal of $n + 2$ values ($n$ even) has $n$ outputs
# $y_i = d_i g_0 + d_{i+1} g_1 + d_{i+2} g_2$. Cut them into $n/2$ tiles of
# two: tile $t$ gives $y_{2t}, y_{2t+1}$ and reads $d_{2t} \dots d_{2t+3}$, so
# neighbouring tiles share two inputs (as neighbouring 3x3 windows share
# pixels). Write `winograd_1d(d, g)` with F(2, 3) on every tile: at most 4
# multiplications of a signal value by a filter value per tile. The check
# compares your result with the direct sum, and then hands your function
# numbers that count their multiplications: use `+`, `-`, `*` and `/` on `d`
# and `g` (loops, slices and `np.empty` are fine; turning them into floats,
# with `float()` or `dtype=float`, hides the count).

# %% tags=["exercise-stub"]
def winograd_1d(d, g):
    """d (n + 2,), g (3,) -> y (n,), y[i] = d[i] g[0] + d[i+1] g[1] + d[i+2] g[2], by F(2, 3) per tile."""
    raise NotImplementedError("write F(2, 3) tile by tile")

# %% tags=["exercise-check"]
check_winograd_1d(winograd_1d)

# %% [markdown]
# ### Two dimensions: F(2x2, 3x3)
#
# A 2x2 tile of outputs of a 3x3 kernel $g$ reads a 4x4 patch $d$ of the
# padded input. F(2, 3) along the columns and then along the rows gives
#
# $$Y = A^\top \big[(G g G^\top) \odot (B^\top d B)\big] A .$$
#
# $U = G g G^\top$ is the kernel's 4x4 transform (once per kernel),
# $V = B^\top d B$ the patch's (additions only), and the elementwise product
# is 16 multiplications for the 4 outputs, where the direct sum takes
# $4 \times 9 = 36$. One tile, by hand:

# %%
patch = rng.standard_normal((4, 4))
kernel = rng.standard_normal((3, 3))
U = G @ kernel @ G.T                            # (4, 4): the kernel, transformed
V = BT @ patch @ BT.T                           # (4, 4): the patch, transformed (B = BT.T)
Y = AT @ (U * V) @ AT.T                         # (2, 2): 16 multiplications
Y_direct = np.array([[np.sum(kernel * patch[i:i + 3, j:j + 3]) for j in range(2)] for i in range(2)])
print("Winograd:\n", Y, "\ndirect:\n", Y_direct, "\nlargest difference:", np.abs(Y - Y_direct).max())

# %% [markdown]
# ### A layer: 16 matrix products over the channels
#
# In a layer, output channel $o$ of tile $p$ sums over the input channels $c$.
# The transforms are linear, so the sum moves inside, before $A$:
#
# $$Y_{p,o} = A^\top \Big[\sum_c U_{o,c} \odot V_{p,c}\Big] A,\qquad
#   M[k, l]_{p,o} = \sum_c V[k, l]_{p,c}\; U[k, l]_{c,o} .$$
#
# For each of the 16 positions $(k, l)$ of the 4x4 tile that sum is a matrix
# product, $(P, C) @ (C, O)$, with $P = N \cdot \frac{H}{2} \cdot \frac{W}{2}$
# tiles. All 16 together are one batched product,
# $(16, P, C) @ (16, C, O) \to (16, P, O)$: 16 GEMMs like section 5's, each
# over the $P$ tiles instead of all the output pixels.
# It makes $16\,P\,C\,O$ multiplications where the direct sum makes
# $36\,P\,C\,O$ (4 outputs per tile, 9 taps): 2.25 times fewer for every 2x2
# tile, whatever the numbers of channels. The whole layer in NumPy:

# %%
def winograd_conv(x, w):
    """conv2d(x, w, padding=1) for x (N, C, H, W) with H and W even and a 3x3 w (O, C, 3, 3)."""
    N, C, H, W = x.shape
    O = w.shape[0]
    th, tw = H // 2, W // 2                                                      # tiles down and across
    xpad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    d = np.lib.stride_tricks.sliding_window_view(xpad, (4, 4), axis=(2, 3))[:, :, ::2, ::2]  # (N, C, th, tw, 4, 4)
    V = (BT @ d @ BT.T).transpose(4, 5, 0, 2, 3, 1).reshape(16, N * th * tw, C)   # (16, P, C)
    U = (G @ w @ G.T).transpose(2, 3, 1, 0).reshape(16, C, O)                      # (16, C, O)
    M = V @ U                                                                      # (16, P, O): the 16 products
    m = M.reshape(4, 4, N, th, tw, O).transpose(2, 5, 3, 4, 0, 1)                  # (N, O, th, tw, 4, 4)
    Y = AT @ m @ AT.T                                                              # (N, O, th, tw, 2, 2)
    return Y.transpose(0, 1, 2, 4, 3, 5).reshape(N, O, H, W)


N, C, H, W, O = 2, 5, 6, 8, 3
x = rng.standard_normal((N, C, H, W))
w = rng.standard_normal((O, C, 3, 3))
P = N * (H // 2) * (W // 2)
y_ref = F.conv2d(td.tensor(x), td.tensor(w), padding=1).numpy()
print(f"P = {P} tiles; V {(16, P, C)} @ U {(16, C, O)} -> M {(16, P, O)}")
print("max |winograd_conv - F.conv2d| =", np.abs(winograd_conv(x, w) - y_ref).max())
direct_mults, winograd_mults = N * O * H * W * C * 9, 16 * P * C * O
print(f"multiplications: direct {direct_mults}, Winograd {winograd_mults}, "
      f"ratio {direct_mults / winograd_mults:.2f}")

# %% [markdown]
# ### What the transforms cost, and when tinydense uses them
#
# The multiplications are not the whole bill. $V$ holds 16 numbers for every
# tile of 4 input pixels: it is 4 times the size of the input, and $M$ 4
# times the size of the output. Making $V$ from the input and $y$ from $M$
# are passes over these big arrays with a few additions per number: memory
# traffic, which the matrix product does not hide. Per pixel, the products'
# work grows like $C \cdot O$ and the transforms' like $C + O$, so the saving
# pays for the passes only when the layers are wide. tinydense's seam,
# `tinydense/ops/winograd.py`, does the computation above channels-last and
# on several threads (and backward as the transposes of the same three
# linear maps); `Conv2d` takes it for 3x3 kernels with stride 1, padding 1,
# no dilation, one group and at least `winograd.MIN_CHANNELS` input and
# output channels (the threshold the cell below prints, measured when the
# seam was tuned). Like every seam of tinydense it must give the textbook
# numbers: the same layer with the seam on and off (off, a stride-1 3x3
# convolution takes the row layout of section 5), output and both
# gradients, in float64. `y._creator` is the `Function` node that made `y`;
# its `path` says which computation ran (read it before `backward`, which
# frees the graph).

# %%
def conv_with_seam(seam, x, w, g):
    """(path, y, dx, dw) of conv2d(x, w, padding=1) with the Winograd seam on or off."""
    before, winograd.ENABLED = winograd.ENABLED, seam
    try:
        xt, wt = td.tensor(x, requires_grad=True), td.tensor(w, requires_grad=True)
        y = F.conv2d(xt, wt, padding=1)
        path = y._creator.path
        y.backward(td.tensor(g))
        return path, y.numpy(), np.asarray(xt.grad), np.asarray(wt.grad)
    finally:
        winograd.ENABLED = before


C = O = winograd.MIN_CHANNELS
print("winograd.MIN_CHANNELS =", winograd.MIN_CHANNELS)
x = rng.standard_normal((2, C, 8, 8))
w = rng.standard_normal((O, C, 3, 3)) / np.sqrt(9 * C)
g = rng.standard_normal((2, O, 8, 8))
seam_on, seam_off = conv_with_seam(True, x, w, g), conv_with_seam(False, x, w, g)
print(f"path with the seam on: {seam_on[0]!r}, off: {seam_off[0]!r}")
assert seam_on[0] == "winograd" and seam_off[0] != "winograd"
for name, a, b in zip(("y", "dx", "dw"), seam_on[1:], seam_off[1:]):
    diff = np.abs(a - b).max()
    print(f"{name:2s}: max |seam on - seam off| = {diff:.2e}")
    assert diff < 1e-10

# %% [markdown]
# The differences are rounding: additions in another order. Now the time of
# one convolution of 256 channels at 8x8, batch 16, forward and backward in
# float32, with the seam on and off, alternating (so that a busy moment of
# the machine hits both), and the median of each:

# %%
N, C, H = 16, 256, 8
x = rng.standard_normal((N, C, H, H)).astype(np.float32)
w = (rng.standard_normal((C, C, 3, 3)) / np.sqrt(9 * C)).astype(np.float32)
g = rng.standard_normal((N, C, H, H)).astype(np.float32)
times = {True: [], False: []}
paths = [conv_with_seam(seam, x, w, g)[0] for seam in (True, False)]     # once untimed: the buffers are made
print(f"paths: seam on {paths[0]!r}, off {paths[1]!r}")
for _ in range(3 if FAST else 7):
    for seam in (True, False):
        start = time.perf_counter()
        conv_with_seam(seam, x, w, g)
        times[seam].append(time.perf_counter() - start)
on, off = np.median(times[True]), np.median(times[False])
print(f"seam on {on * 1e3:.1f} ms, off {off * 1e3:.1f} ms (medians of {len(times[True])}): on / off = {on / off:.2f}")
print(f"multiplications alone would give 1 / 2.25 = {1 / 2.25:.2f};",
      "the seam saved time here" if on < off else "the seam did NOT save time here")

# %% [markdown]
# The printed ratio is this machine's answer. Set it beside the 0.44 that
# the multiplications alone would give (printed too): the gap is what the
# transforms' passes over memory cost here, with the 16 products being
# smaller than one GEMM over the same data (the docstring of
# `ops/winograd.py` records what was measured when the seam was tuned). On
# GPUs, cuDNN picks Winograd kernels of its own for such layers. Larger tiles
# save more multiplications (question 6) at the price of larger constants in
# the transforms, and so of larger rounding errors in float32.
#
# ## Questions and exercises
#
# 1. A 3x3 convolution with stride 1 keeps the image size only with the right
#    padding. Which $P$ keeps the size for a 5x5 or a 7x7 kernel? What about
#    stride 2?
# 2. How many bytes does the column matrix of a DenseNet layer take for a batch of
#    64 CIFAR images with 200 input channels and a 3x3 kernel? Compare with the
#    input itself.
# 3. Compute memory, parameters and FLOPs of AlexNet's second convolution
#    (192 filters of 5x5, padding 2, on the 64x27x27 output of pool1), then check
#    your answer with `tinydense.summary`.
# 4. Why can a 1x1 convolution skip im2col entirely? Write it with `np.matmul`
#    and compare with `F.conv2d`.
# 5. Time `conv_gemm` with float64 instead of float32 inputs. What changes, and why?
# 6. F(4x4, 3x3) computes a 4x4 tile of outputs from a 6x6 patch with one
#    elementwise product of 6x6 transforms. How many multiplications is that
#    per tile, how many does the direct sum take, and what is the ratio? How
#    big is the transformed input $V$ now, relative to the input?
