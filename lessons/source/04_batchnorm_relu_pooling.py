# %% [markdown]
# # Lesson 4: Batch norm, ReLU and pooling
#
# Every DenseNet layer applies the same three steps before its convolution:
# batch normalisation, then ReLU, then the convolution (the "pre-activation"
# order BN-ReLU-Conv). Between dense blocks, transition layers shrink the
# image with average pooling, and the network ends with a global average
# pool. In this lesson we derive the backward pass of each of these ops by
# hand, and you implement each one as a `Function`, checked against `tinydense`
# and against finite differences.
#
# ## What you will learn
#
# - why ReLU's backward is a mask, and what happens at its kink;
# - how max pooling routes the gradient to one input per window, and how
#   average pooling spreads it over the window;
# - the derivation of batch norm's backward pass in training mode, down to
#   a three-term formula, and the two properties that formula guarantees;
# - the difference between batch norm in training and in evaluation mode;
# - as exercises: the backward passes of ReLU, max pooling, average pooling and batch
#   norm (training and eval), the same classes your workspace (the capstone lesson) runs on.

# %%
%matplotlib inline
import matplotlib.pyplot as plt
import numpy as np

import tinydense as td
import tinydense.functional as F
from tinydense import Function
from tinydense.backend import get_array_module

from checks.l04_batchnorm_relu_pooling import check_avg_pool, check_batch_norm, check_max_pool, check_relu

rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. ReLU
#
# $\text{ReLU}(x) = \max(x, 0)$ passes positive values and zeroes the rest. Its
# derivative is 1 where $x > 0$ and 0 where $x < 0$, so the backward pass just
# multiplies the incoming gradient by a 0/1 mask:
#
# $$\frac{\partial L}{\partial x} = \frac{\partial L}{\partial y}\cdot[\,x > 0\,].$$
#
# At exactly $x = 0$ the function has a kink and no derivative; frameworks
# pick a value there, and `tinydense` (like PyTorch) picks 0. The mask can be
# computed from the output ($y > 0$ exactly when $x > 0$), so ReLU only needs
# to keep its output for the backward pass.

# %%
xs = np.linspace(-3, 3, 601)
t = td.tensor(xs, requires_grad=True)
F.relu(t).backward(np.ones_like(xs))
fig, axes = plt.subplots(1, 2, figsize=(8, 2.8))
axes[0].plot(xs, np.maximum(xs, 0))
axes[0].set_title("ReLU(x)")
axes[1].plot(xs, t.grad, color="tab:orange")
axes[1].set_title("d ReLU / dx from tinydense's backward")
for ax in axes:
    ax.axvline(0, color="gray", lw=0.5)
    ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()

z = td.tensor(np.array([-1.0, 0.0, 2.0]), requires_grad=True)
F.relu(z).backward(np.ones(3))
print("gradient at x = -1, 0, 2:", z.grad)

# %% [markdown]
# ### Exercise 1: ReLU
#
# The forward pass keeps its output. Write the backward pass: the mask times
# the upstream gradient.

# %% tags=["exercise-stub"]
class ReLU(Function):
    # y = max(x, 0), elementwise
    def forward(self, x):
        xp = get_array_module(x)
        self.out = xp.maximum(x, 0)
        return self.out

    def backward(self, g):
        # g: dL/dy, x's shape. Return dL/dx (0 where x <= 0, as PyTorch).
        raise NotImplementedError("write the backward pass of ReLU")

# %% tags=["exercise-check"]
check_relu(ReLU)

# %% [markdown]
# ## 2. Max pooling routes, average pooling spreads
#
# Max pooling outputs the largest value of each window. Only that one input
# affects the output (nudging any other input by a little changes nothing),
# so the whole gradient of the window goes to the position of the maximum
# and every other input gets zero. The forward pass must remember *where*
# the maximum was.
#
# Average pooling outputs the mean of a window of $K^2$ values, so each of
# them gets $1/K^2$ of the window's gradient. When windows overlap (stride
# smaller than the kernel) an input collects a share from every window that
# covers it.
#
# The pictures show, for a random 6x6 input and an upstream gradient of ones,
# where the gradient lands.

# %%
image = rng.standard_normal((1, 1, 6, 6))


def input_gradient(pool, **options):
    x = td.tensor(image, requires_grad=True)
    y = pool(x, **options)
    y.backward(np.ones(y.shape))
    return x.grad[0, 0]


panels = [
    ("input", image[0, 0]),
    ("max pool 2x2, stride 2", input_gradient(F.max_pool2d, kernel_size=2, stride=2)),
    ("max pool 3x3, stride 1", input_gradient(F.max_pool2d, kernel_size=3, stride=1)),
    ("avg pool 2x2, stride 2", input_gradient(F.avg_pool2d, kernel_size=2, stride=2)),
    ("avg pool 3x3, stride 1", input_gradient(F.avg_pool2d, kernel_size=3, stride=1)),
]
fig, axes = plt.subplots(1, 5, figsize=(15, 3.2))
for ax, (title, values) in zip(axes, panels):
    ax.imshow(values, cmap="viridis")
    for (r, c), v in np.ndenumerate(values):
        ax.text(c, r, f"{v:.2g}", ha="center", va="center", color="white", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
plt.suptitle("Where the gradient of the input goes (upstream gradient: all ones)")
plt.tight_layout()
plt.show()

# %% [markdown]
# With non-overlapping max pooling, exactly one pixel per 2x2 block receives
# the gradient 1. With overlapping windows a large pixel can be the maximum
# of several windows and receives several gradients. Overlapping average
# pooling gives the centre pixels a share from each of the 9 windows that
# cover them and the corners a share from only one.
#
# Both ops read each window as $K^2$ strided slices of the padded input, one
# per tap $(a, b)$ of the window: tap $(a, b)$ of every window at once is
# `xpad[:, :, a : a + S*OH : S, b : b + S*OW : S]`. The backward passes go the other
# way: each tap's share of the gradient is **added** into that same slice of a
# zero array the size of the padded input, and the padding is cut off at the end.
#
# ### Exercise 2: max pooling
#
# The forward pass records, for every window, which tap held the maximum
# (`self.argmax`, the number $t = a\,k_w + b$; the first one on ties). Send each
# window's gradient to that tap only. Windows may overlap and the input may be
# padded (with $-\infty$): the check tests both.

# %% tags=["workspace"]
def pair(value):
    """An int or a pair of ints -> a pair (stride=2 means (2, 2))."""
    return (value, value) if isinstance(value, int) else tuple(value)


def pool_geometry(x, kernel_size, stride, padding):
    """Kernel, stride, padding (pairs; stride defaults to the kernel) and output size of a pooling."""
    (kh, kw), (ph, pw) = pair(kernel_size), pair(padding)
    sh, sw = pair(kernel_size if stride is None else stride)
    H, W = x.shape[2:]
    return (kh, kw), (sh, sw), (ph, pw), ((H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1)

# %% tags=["exercise-stub"]
class MaxPool2d(Function):
    # x (N, C, H, W) -> y (N, C, OH, OW): the largest value of each window (padding counts as -inf)
    def forward(self, x, kernel_size, stride=None, padding=0):
        xp = get_array_module(x)
        (kh, kw), (sh, sw), (ph, pw), (OH, OW) = pool_geometry(x, kernel_size, stride, padding)
        xpad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-xp.inf)
        y = xp.full(x.shape[:2] + (OH, OW), -xp.inf, dtype=x.dtype)
        self.argmax = xp.zeros(y.shape, dtype=xp.int64)     # which tap t = a*kw + b held the maximum
        for a in range(kh):
            for b in range(kw):
                v = xpad[:, :, a:a + sh * OH:sh, b:b + sw * OW:sw]
                better = v > y                             # strict: ties keep the first maximum
                y = xp.where(better, v, y)
                self.argmax = xp.where(better, a * kw + b, self.argmax)
        self.x_shape, self.geometry = x.shape, ((kh, kw), (sh, sw), (ph, pw), (OH, OW))
        return y

    def backward(self, g):
        # g: (N, C, OH, OW). Return dL/dx, of shape self.x_shape.
        raise NotImplementedError("write the backward pass of max pooling")

# %% tags=["exercise-check"]
check_max_pool(MaxPool2d)

# %% [markdown]
# ### Exercise 3: average pooling
#
# Every tap of a window gets $1/(k_h k_w)$ of the window's gradient. Padded zeros
# count in the divisor (PyTorch's default), so the divisor is always $k_h k_w$.

# %% tags=["exercise-stub"]
class AvgPool2d(Function):
    # x (N, C, H, W) -> y (N, C, OH, OW): the mean of each window (zero padding, counted in the divisor)
    def forward(self, x, kernel_size, stride=None, padding=0):
        xp = get_array_module(x)
        (kh, kw), (sh, sw), (ph, pw), (OH, OW) = pool_geometry(x, kernel_size, stride, padding)
        xpad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        y = xp.zeros(x.shape[:2] + (OH, OW), dtype=x.dtype)
        for a in range(kh):
            for b in range(kw):
                y += xpad[:, :, a:a + sh * OH:sh, b:b + sw * OW:sw]
        self.x_shape, self.geometry = x.shape, ((kh, kw), (sh, sw), (ph, pw), (OH, OW))
        return y / (kh * kw)

    def backward(self, g):
        # g: (N, C, OH, OW). Return dL/dx, of shape self.x_shape.
        raise NotImplementedError("write the backward pass of average pooling")

# %% tags=["exercise-check"]
check_avg_pool(AvgPool2d)

# %% [markdown]
# ## 3. Batch norm: the forward pass
#
# Batch normalisation standardises every channel over the batch. For a
# channel with values $x_1, \dots, x_M$ ($M = N \cdot H \cdot W$ values: all
# images and all pixels of that channel),
#
# $$\mu = \frac1M \sum_i x_i,\qquad
#   \sigma^2 = \frac1M \sum_i (x_i - \mu)^2,\qquad
#   \hat x_i = \frac{x_i - \mu}{\sqrt{\sigma^2 + \epsilon}},\qquad
#   y_i = \gamma\,\hat x_i + \beta .$$
#
# $\gamma$ (`weight`) and $\beta$ (`bias`) are learned per channel, so the
# layer can undo the standardisation if that helps. Whatever scale and
# offset the previous layer produces, the next layer sees values of a
# controlled size, which is what lets deep networks train with large
# learning rates.

# %%
x = (3 * rng.standard_normal((16, 4, 8, 8)) + np.array([5, -2, 0, 10]).reshape(1, 4, 1, 1))
weight, bias = td.tensor(np.ones(4), requires_grad=True), td.tensor(np.zeros(4), requires_grad=True)
y = F.batch_norm(td.tensor(x), None, None, weight, bias, training=True)
fig, axes = plt.subplots(1, 2, figsize=(9, 3), sharey=True)
for c in range(4):
    axes[0].hist(x[:, c].ravel(), bins=40, histtype="step", label=f"channel {c}")
    axes[1].hist(y.numpy()[:, c].ravel(), bins=40, histtype="step")
axes[0].set_title("before batch norm")
axes[1].set_title("after batch norm (weight 1, bias 0)")
axes[0].legend(fontsize=8)
plt.tight_layout()
plt.show()
print("largest |per-channel mean| after:", f"{np.abs(y.numpy().mean(axis=(0, 2, 3))).max():.1e}")
print("per-channel std after           :", y.numpy().std(axis=(0, 2, 3)).round(4))

# %% [markdown]
# ## 4. Batch norm: deriving the backward pass
#
# Write $g_i = \partial L/\partial y_i$ and $s = 1/\sqrt{\sigma^2 + \epsilon}$.
# The easy parts first: $y_i = \gamma \hat x_i + \beta$ gives
#
# $$\frac{\partial L}{\partial \beta} = \sum_i g_i,\qquad
#   \frac{\partial L}{\partial \gamma} = \sum_i g_i\,\hat x_i,\qquad
#   \frac{\partial L}{\partial \hat x_i} = \gamma\, g_i .$$
#
# The hard part is $x$: every $x_j$ affects **every** $\hat x_i$ of its
# channel, through $\mu$ and $\sigma^2$ (the batch statistics are functions of
# the whole batch). So
#
# $$\frac{\partial L}{\partial x_j} = \sum_i \gamma\, g_i\, \frac{\partial \hat x_i}{\partial x_j}.$$
#
# With $\hat x_i = (x_i - \mu)\,s$, $\partial\mu/\partial x_j = 1/M$ and
# $\partial\sigma^2/\partial x_j = \frac{2}{M}(x_j - \mu)$ (the terms with
# $\partial\mu/\partial x_j$ cancel, because $\sum_i (x_i - \mu) = 0$), so
# $\partial s/\partial x_j = -\tfrac12 s^3\,\tfrac2M (x_j - \mu) = -\tfrac{s}{M}\hat x_j\, s$,
# and
#
# $$\frac{\partial \hat x_i}{\partial x_j}
#   = s\Big([i = j] - \frac1M\Big) + (x_i - \mu)\,\frac{\partial s}{\partial x_j}
#   = s\Big([i = j] - \frac1M - \frac{\hat x_i\, \hat x_j}{M}\Big).$$
#
# Summing against $\gamma g_i$ gives the compact form that `tinydense` uses:
#
# $$\boxed{\;\frac{\partial L}{\partial x_j}
#   = \frac{\gamma\, s}{M}\Big(M g_j - \sum_i g_i - \hat x_j \sum_i g_i \hat x_i\Big)\;}$$
#
# Three terms: the plain scaled gradient, minus its mean (because shifting
# all inputs of a channel does not change $\hat x$), minus its component
# along $\hat x$ (because scaling all inputs does not change $\hat x$ either).
# The two sums are exactly the $\beta$ and $\gamma$ gradients, so they cost
# nothing extra.
#
# You will write this formula as code at the end of the lesson. First we
# check the two properties it promises, on tinydense's own batch norm. For
# every channel, the gradient $\partial L/\partial x$ sums to zero and is
# orthogonal to $\hat x$:
#
# $$\sum_j \frac{\partial L}{\partial x_j} = 0, \qquad \sum_j \hat x_j\, \frac{\partial L}{\partial x_j} = 0 .$$
#
# (Sum the boxed formula over $j$, using $\sum_j \hat x_j = 0$ and
# $\sum_j \hat x_j^2 = M$ up to $\epsilon$.) This is the backward-pass view of
# "batch norm output does not change if you shift or scale a channel's
# inputs". It also means that any loss that only sees $\sum_i y_i$ gives
# batch norm's input a gradient of exactly zero, a trap for gradient checks
# that the gradient-checking lesson explores.

# %%
x = rng.standard_normal((4, 3, 5, 5)) * 2 + 1
gamma, beta = 1 + rng.standard_normal(3) * 0.3, rng.standard_normal(3)
xt, wt, bt = (td.tensor(a, requires_grad=True) for a in (x, gamma, beta))
yt = F.batch_norm(xt, None, None, wt, bt, training=True)
yt.backward(rng.standard_normal(yt.shape))
xhat = (x - x.mean(axis=(0, 2, 3), keepdims=True)) / np.sqrt(x.var(axis=(0, 2, 3), keepdims=True) + 1e-5)
print("per-channel sum of dx       :", xt.grad.sum(axis=(0, 2, 3)))
print("per-channel sum of dx * xhat:", (xt.grad * xhat).sum(axis=(0, 2, 3)))

# %% [markdown]
# ## 5. Training mode and evaluation mode
#
# At test time we want the prediction for an image not to depend on which
# other images share its batch. So during training batch norm also keeps
# **running averages** of each channel's mean and variance (updated in place,
# with `momentum` 0.1 by default), and in evaluation mode it normalises with
# those fixed numbers instead of the batch statistics.
#
# In evaluation mode $\mu$ and $\sigma^2$ are constants, so the whole
# derivation above collapses: batch norm is just a per-channel scale and
# shift, and $\partial L/\partial x_j = \gamma\, s\, g_j$.

# %%
running_mean, running_var = np.zeros(3), np.ones(3)
history = []
for step in range(60):
    batch = rng.standard_normal((8, 3, 4, 4)) * np.array([1, 2, 3]).reshape(1, 3, 1, 1) + 4
    F.batch_norm(td.tensor(batch), running_mean, running_var, training=True)
    history.append(running_mean.copy())
history = np.array(history)
plt.figure(figsize=(6, 2.8))
plt.plot(history)
plt.axhline(4, color="gray", ls="--", lw=0.8)
plt.xlabel("training step")
plt.ylabel("running mean")
plt.title("Running means approach the true mean 4 (momentum 0.1)")
plt.grid(alpha=0.3)
plt.show()
print("running var after training:", running_var.round(2), "(true: 1, 4, 9)")

x_eval = td.tensor(rng.standard_normal((2, 3, 4, 4)), requires_grad=True)
w_eval = td.tensor(1 + rng.standard_normal(3) * 0.3)
y_eval = F.batch_norm(x_eval, running_mean, running_var, w_eval, td.tensor(np.zeros(3)), training=False)
g = rng.standard_normal(y_eval.shape)
y_eval.backward(g)
expected = g * (w_eval.numpy() / np.sqrt(running_var + 1e-5)).reshape(1, 3, 1, 1)
print("eval-mode gradient is a per-channel scale:", np.allclose(x_eval.grad, expected))

# %% [markdown]
# ### Exercise 4: batch norm, in training and in evaluation mode
#
# The forward pass below is tinydense's batch norm, line for line the math of
# sections 3 and 5: it normalises with the batch statistics in training
# (updating the running statistics in place) and with the running statistics
# in eval mode, and applies `weight` and `bias` when they are given. Write the
# backward pass: the boxed formula in training mode, the per-channel scale in
# eval mode. The running statistics are inputs of `forward` but get no
# gradient: return `None` in their places.

# %% tags=["exercise-stub"]
class BatchNorm(Function):
    # x (N, C, H, W) or (N, C); statistics per channel over the M = N*H*W values of that channel
    def forward(self, x, running_mean, running_var, weight=None, bias=None,
                training=False, momentum=0.1, eps=1e-5):
        xp = get_array_module(x)
        axes = (0,) if x.ndim == 2 else (0, 2, 3)
        shape = (1, -1) + (1,) * (x.ndim - 2)          # a (C,) vector shaped to broadcast against x
        M = x.size // x.shape[1]
        if training:
            mean, var = x.mean(axis=axes), x.var(axis=axes)     # var: biased, used to normalise
            if running_mean is not None:                         # in place, PyTorch's rule
                running_mean *= 1 - momentum
                running_mean += momentum * mean
                running_var *= 1 - momentum
                running_var += momentum * var * (M / (M - 1))
        else:
            mean, var = running_mean, running_var
        self.invstd = 1 / xp.sqrt(var + eps)
        self.xhat = (x - mean.reshape(shape)) * self.invstd.reshape(shape)
        self.weight, self.training, self.axes, self.shape, self.M = weight, training, axes, shape, M
        if weight is None:
            return self.xhat
        return self.xhat * weight.reshape(shape) + bias.reshape(shape)

    def backward(self, g):
        # g: dL/dy, x's shape. Return one value per input of forward, in order:
        # (dx, None, None, dweight, dbias), or (dx, None, None) when weight is None.
        raise NotImplementedError("write the backward pass of batch norm")

# %% tags=["exercise-check"]
check_batch_norm(BatchNorm)

# %% [markdown]
# ## Questions and exercises
#
# 1. ReLU's backward can be computed from its output or from its input. Which
#    one does tinydense keep, and why does it not matter which?
# 2. In max pooling with overlapping windows, what is the largest gradient a
#    single input pixel can receive from a 3x3, stride-1 pooling with an upstream
#    gradient of ones? Construct an input where it happens.
# 3. Derive $\partial L/\partial x$ for batch norm **without** the learned $\gamma$
#    and $\beta$, then for a version that divides by $\sigma$ without $\epsilon$. Where
#    does $\epsilon$ matter?
# 4. Use the two properties of section 4 to explain why a network with batch norm
#    directly after a convolution does not need the convolution's bias.
# 5. What goes wrong if you train with a batch of one image of size 1x1? What does
#    `F.batch_norm` do in that case?
