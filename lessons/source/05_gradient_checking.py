# %% [markdown]
# # Lesson 5: Gradient checking
#
# Every op in tinydense has a hand-written backward pass, and a wrong backward
# pass is the worst kind of bug: nothing crashes, the loss still goes down a
# little, and the network just trains badly. The cure is to compare every
# backward pass with a derivative computed a completely different way, from
# the forward pass alone, by finite differences. This lesson shows how to do
# that so the comparison actually means something, and ends with a numeric
# gradient and two backward passes for you to write and check.
#
# ## What you will learn
#
# - forward and central differences, and how their error depends on the step size;
# - the relative error, and how to read its size;
# - why gradient checks run in float64;
# - kinks (ReLU at 0, ties in max pooling), where no difference quotient is right;
# - the `sum(BN(x))` trap: a check that passes whatever the backward pass does;
# - how to use `tinydense.gradcheck`, and then, as exercises, how to write a numeric
#   gradient and the backward passes of sigmoid and concatenation.

# %%
%matplotlib inline
import matplotlib.pyplot as plt
import numpy as np

import tinydense as td
import tinydense.functional as F
from tinydense import Function
from tinydense.backend import get_array_module

from checks.l05_gradient_checking import check_cat, check_numeric_gradient, check_sigmoid

rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Finite differences
#
# The derivative is the limit of a difference quotient. Stopping short of the
# limit gives two estimates:
#
# $$\text{forward: } \frac{f(x + h) - f(x)}{h} = f'(x) + \tfrac{h}{2} f''(x) + O(h^2),\qquad
#   \text{central: } \frac{f(x + h) - f(x - h)}{2h} = f'(x) + \tfrac{h^2}{6} f'''(x) + O(h^4).$$
#
# In the central difference the $f''$ terms of the two Taylor expansions
# cancel, so its *truncation error* shrinks like $h^2$ instead of $h$. But $h$
# cannot be made arbitrarily small: $f(x \pm h)$ are rounded to the precision
# of the floating-point type (about $10^{-16}$ relative for float64, $10^{-7}$
# for float32), and dividing their difference by $h$ amplifies that *rounding
# error* like $1/h$. The total error is smallest in between.

# %%
def f(x):
    return np.sin(x) * np.exp(x)


def f_prime(x):
    return (np.sin(x) + np.cos(x)) * np.exp(x)


x0 = 1.0
steps = np.logspace(-12, -1, 45)
plt.figure(figsize=(7, 4))
for dtype, style in [(np.float64, "-"), (np.float32, "--")]:
    x = dtype(x0)
    forward = [(f(x + dtype(h)) - f(x)) / dtype(h) for h in steps]
    central = [(f(x + dtype(h)) - f(x - dtype(h))) / dtype(2 * h) for h in steps]
    name = np.dtype(dtype).name
    for estimates, color, kind in [(forward, "tab:blue", "forward"), (central, "tab:orange", "central")]:
        errors = np.abs(np.array(estimates, dtype=np.float64) - f_prime(x0)) / abs(f_prime(x0))
        plt.loglog(steps, errors, style, color=color, label=f"{kind}, {name}")
plt.axvline(1e-6, color="gray", lw=0.8)
plt.xlabel("step h")
plt.ylabel("relative error of the estimate")
plt.title("Derivative of sin(x) exp(x) at x = 1: truncation (right) vs rounding (left)")
plt.legend(fontsize=8)
plt.grid(alpha=0.3)
plt.show()

# %% [markdown]
# Read the plot from the right: the error first falls as $h$ shrinks (slope 1
# for forward, slope 2 for central differences), then rises again when
# rounding takes over. In float64 the central difference reaches
# $10^{-11}$ to $10^{-12}$ around $h \approx 10^{-6}$ (the grey line), which is
# why `tinydense.gradcheck` uses `eps=1e-6`. In float32 the same step gives an
# error of a few percent, and even the best step leaves an erratic
# $10^{-6}$ to $10^{-4}$: too coarse to tell a correct gradient from a
# slightly wrong one. **Gradient checks run in float64**, even though training
# runs in float32; `tinydense.gradcheck` refuses anything else:

# %%
try:
    td.gradcheck(lambda x: x.float().sigmoid(), [rng.standard_normal(3)])   # computes in float32
except TypeError as e:
    print("TypeError:", e)

# %% [markdown]
# ### Exercise 1: a numeric gradient
#
# Write the check's other half yourself: the numeric gradient of the scalar
# $\phi(x) = \sum f(x) \cdot g$ for an upstream gradient $g$, by central differences,
# one element of $x$ at a time. `f` takes and returns NumPy arrays. Put every
# element of `x` back after perturbing it: the caller's array must come back
# unchanged.

# %% tags=["exercise-stub"]
def numeric_gradient(f, x, g, eps=1e-6):
    """d/dx of sum(f(x) * g) by central differences; x is a float64 array, same shape as g."""
    raise NotImplementedError("write the numeric gradient")

# %% tags=["exercise-check"]
check_numeric_gradient(numeric_gradient)

# %% [markdown]
# ## 2. The relative error and what its size means
#
# Gradients come in every size, from $10^{-8}$ to $10^{3}$, so an absolute
# difference says little. The usual measure is the **relative error**
#
# $$r = \frac{|a - n|}{\max(|a|, |n|)}$$
#
# between the analytic value $a$ (from backward) and the numeric one $n$. With
# central differences in float64 and $h = 10^{-6}$, a rough guide is:
#
# | relative error | verdict |
# |---|---|
# | below $10^{-7}$ | correct |
# | $10^{-7}$ to $10^{-5}$ | probably correct; expected for values near zero, or many chained ops |
# | $10^{-5}$ to $10^{-2}$ | suspicious: look for a kink, or a small bug |
# | above $10^{-2}$ | wrong |
#
# Near-zero gradients make the relative error unreliable (a tiny absolute
# difference divided by a tiny value), so `gradcheck` declares a mismatch only
# when $|a - n| > \text{atol} + \text{rtol}\,|n|$ (by default
# $\text{atol} = 10^{-5}$, $\text{rtol} = 10^{-4}$) and reports the relative
# error of the worst element.
#
# Small relative errors are not automatically fine, though. Here is a
# realistic bug: a batch-norm backward that divides by $M - 1$ (the
# "unbiased" count) in one place where the forward pass divided by $M$. The
# error it causes is about $1/M$, so with many values per channel it hides:

# %%
class BatchNormOffByOne(Function):
    # training-mode batch norm without weight and bias, and a backward with M - 1 for M
    def forward(self, x, eps=1e-5):
        xp = get_array_module(x)
        mean = x.mean(axis=(0, 2, 3), keepdims=True)
        self.s = 1 / xp.sqrt(x.var(axis=(0, 2, 3), keepdims=True) + eps)
        self.xhat = (x - mean) * self.s
        return self.xhat

    def backward(self, g):
        M = g.size // g.shape[1]
        sum_g = g.sum(axis=(0, 2, 3), keepdims=True)
        sum_g_xhat = (g * self.xhat).sum(axis=(0, 2, 3), keepdims=True)
        return self.s / M * (M * g - sum_g - self.xhat * sum_g_xhat * M / (M - 1))   # the bug


for shape in [(2, 1, 2, 2), (4, 1, 4, 4), (8, 1, 8, 8)]:
    x = td.tensor(rng.standard_normal(shape), requires_grad=True)
    y = BatchNormOffByOne.apply(x)
    g = rng.standard_normal(shape)
    y.backward(g)
    xr = td.tensor(x.numpy(), requires_grad=True)
    F.batch_norm(xr, None, None, training=True).backward(g)
    rel = np.abs(x.grad - xr.grad) / np.maximum(np.abs(x.grad), np.abs(xr.grad))
    print(f"M = {np.prod(shape):4d} values per channel: median relative error {np.median(rel):.1e}")

# %% [markdown]
# The lesson: check on **small** inputs, where every term of the formula has
# a visible effect, and treat any relative error clearly above the float64
# noise level as a bug until proven otherwise.
#
# ## 3. Kinks
#
# A difference quotient assumes the function is smooth between $x - h$ and
# $x + h$. ReLU is not smooth at 0: exactly there the central difference gives
# $(h - 0)/(2h) = 0.5$, a value that no backward pass returns (left slope 0,
# right slope 1). Any input closer to 0 than $h$ straddles the kink too. Below,
# elements 1 (exactly 0) and 2 ($3 \cdot 10^{-7}$) fail; the values printed are
# these slopes times the random upstream gradient.

# %%
relu_input = td.tensor(np.array([-0.5, 0.0, 3e-7, 0.4]), requires_grad=True)
try:
    td.gradcheck(F.relu, [relu_input])
except td.GradcheckError as e:
    print(e)

# %% [markdown]
# Max pooling has the same problem with **ties**: if two values in a window
# are equal, nudging either one up makes it the maximum, and the difference
# quotient splits the gradient where the backward pass gives it all to one.
# Both failures say nothing about the code. The remedy is in the inputs:
# random continuous values almost never land within $h$ of a kink or a tie,
# and where an op has a known kink (ReLU), tests move the inputs away from it.

# %%
tied = td.tensor(np.array([[[[1.0, 1.0], [0.0, -1.0]]]]), requires_grad=True)
print("tie:", td.gradcheck(lambda x: F.max_pool2d(x, 2), [tied], raise_exception=False))
spread = td.tensor(rng.standard_normal((2, 2, 4, 4)), requires_grad=True)
print("random values:", td.gradcheck(lambda x: F.max_pool2d(x, 2), [spread], raise_exception=False))

# %% [markdown]
# ## 4. The `sum(BN(x))` trap
#
# A gradient check compares the gradient of **one number** with respect to the
# inputs. The obvious number to pick is the sum of the op's output. For many
# ops that works. For batch norm it proves nothing: the output of every channel
# is normalised to mean zero, so (without weight and bias)
#
# $$\sum_i \text{BN}(x)_i = 0 \quad\text{for every } x,$$
#
# and its gradient is exactly zero. The numeric gradient is zero, and so is
# the analytic gradient of any backward pass whose result vanishes when the
# upstream gradient is constant. Here is one that forgot the whole
# $\hat x \sum g \hat x$ term:

# %%
class BatchNormForgetful(BatchNormOffByOne):
    def backward(self, g):
        M = g.size // g.shape[1]
        return self.s / M * (M * g - g.sum(axis=(0, 2, 3), keepdims=True))   # a term is missing


def check_with_upstream(fn, x, upstream, eps=1e-6):
    """Largest |analytic - numeric| for the scalar  sum(fn(x) * upstream)."""
    xt = td.tensor(x.copy(), requires_grad=True)
    fn(xt).backward(upstream)
    numeric = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        for sign in (1, -1):
            shifted = x.copy()
            shifted[idx] += sign * eps
            numeric[idx] += sign * (fn(td.tensor(shifted)).numpy() * upstream).sum() / (2 * eps)
    return np.abs(xt.grad - numeric).max()


x = rng.standard_normal((3, 2, 2, 2))
ones, random = np.ones(x.shape), rng.standard_normal(x.shape)
for name, upstream in [("sum(BN(x))       ", ones), ("sum(BN(x) * g)   ", random)]:
    print(f"{name}: max |analytic - numeric| = {check_with_upstream(BatchNormForgetful.apply, x, upstream):.1e}")

# %% [markdown]
# With the sum, the broken backward "passes" with an error of $10^{-10}$. With a
# random upstream gradient $g$, the scalar $\langle \text{BN}(x), g\rangle$
# depends on every part of the Jacobian, and the bug shows at once. The same
# trap hides elsewhere: `mean(softmax(x))` is a constant too, and any op
# followed by a normalisation has directions the sum cannot see. That is why
# `tinydense.gradcheck` always uses a random upstream gradient and never the
# sum.
#
# ## 5. Using `tinydense.gradcheck`
#
# `td.gradcheck(fn, inputs)` runs `fn(*inputs)` in float64, backpropagates a
# random upstream gradient, and compares every input that requires a gradient
# element by element with central differences. It returns `True`, or raises
# `GradcheckError` naming the input, the worst index, both values and the
# relative error (`raise_exception=False` returns `False` instead). With
# `verbose=True` it prints one line per input.

# %%
x = td.tensor(rng.standard_normal((2, 3, 5, 5)), requires_grad=True)
w = td.tensor(rng.standard_normal((4, 3, 3, 3)), requires_grad=True)
b = td.tensor(rng.standard_normal(4), requires_grad=True)
td.gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1), [x, w, b], verbose=True)

# %% [markdown]
# Checking every element costs two forward passes per element, fine for the
# small inputs of a unit test but not for a whole network with a million
# weights. `mode="direction"` instead checks the derivative along a few random
# unit directions $v$: it compares $\langle \nabla, v\rangle$ from backward with
# $(\phi(x + hv) - \phi(x - hv))/2h$, two forward passes per direction whatever
# the size. A wrong gradient is very unlikely to agree along a random
# direction, though the check no longer says *which* element is wrong.
#
# And a failing check reads like this (here we feed it the forgetful batch
# norm from section 4):

# %%
try:
    td.gradcheck(BatchNormForgetful.apply, [rng.standard_normal((3, 2, 2, 2))])
except td.GradcheckError as e:
    print(e)

# %% [markdown]
# ## 6. Exercises: two backward passes
#
# Each exercise gives you a `Function` whose forward pass is done and whose
# backward pass raises `NotImplementedError`. Replace that line with your code,
# run the cell, then run the check below it. The check runs your op on small
# float64 inputs, compares the forward pass with tinydense's own op and the
# backward pass with tinydense's (to $10^{-9}$ relative) and with central
# differences, and prints `PASS` or a `FAIL` that says which gradient is wrong,
# where, by how much, and what kind of mistake it looks like.
#
# Rules of the game, as everywhere in tinydense: `backward(self, g)` receives
# $g = \partial L/\partial y$ with the output's shape and returns
# $\partial L/\partial x$ with the input's shape, one per input of `forward`
# (a tuple when there are several), using what `forward` saved on `self`. No
# loops over pixels or images.
#
# ### Exercise 2: sigmoid
#
# $y = \sigma(x) = 1/(1 + e^{-x})$. Show that $\sigma'(x) = \sigma(x)(1 - \sigma(x))$,
# and use the saved output.

# %% tags=["exercise-stub"]
class Sigmoid(Function):
    # y = 1 / (1 + e^-x), elementwise
    def forward(self, x):
        xp = get_array_module(x)
        self.out = 1 / (1 + xp.exp(-x))
        return self.out

    def backward(self, g):
        # g: dL/dy, same shape as y. Return dL/dx.
        raise NotImplementedError("write the backward pass of sigmoid")

# %% tags=["exercise-check"]
check_sigmoid(Sigmoid)

# %% [markdown]
# ### Exercise 3: concatenation
#
# The op at the heart of every dense block: $[x_0, x_1, \dots]$ along an axis
# (the channels, axis 1, in a DenseNet). Return one gradient per input, in
# order. The check also joins along axis 0.

# %% tags=["exercise-stub"]
class Cat(Function):
    # xs: arrays that agree in every dimension but `axis` -> y, joined along `axis`
    def forward(self, *xs, axis=1):
        xp = get_array_module(*xs)
        self.axis, self.sizes = axis, [x.shape[axis] for x in xs]
        return xp.concatenate(xs, axis=axis)

    def backward(self, g):
        # g: the shape of y. Return a tuple: one gradient per input, each of its input's shape.
        raise NotImplementedError("write the backward pass of concatenation")

# %% tags=["exercise-check"]
check_cat(Cat)

# %% [markdown]
# When they pass, compare your code with tinydense's versions in
# `tinydense/ops/` (`arithmetic.py`, `shape.py`).
#
# ## Questions
#
# 1. Make a deliberate mistake in your sigmoid backward (for example, forget the
#    `1 -`). What does the check report, and does the relative error match what
#    you expect?
# 2. Why does the pooling lesson's average-pooling check include overlapping windows? Write a
#    backward pass that is right only for non-overlapping ones and watch it fail.
# 3. `gradcheck` perturbs one element at a time by `eps = 1e-6`. Roughly how many
#    forward passes does a full check of a 3x3 convolution with 64 input and 64
#    output channels take for its weight alone? What does `mode="direction"` cost?
# 4. Find another scalar loss, besides the sum, whose gradient through batch norm is
#    always zero.
# 5. Dropout is random. How can a finite-difference check work at all for it?
#    (Read how `tinydense.gradcheck` handles the random generator.)
