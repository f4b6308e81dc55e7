# %% [markdown]
# # Lesson 1: Autograd from scratch
#
# Training a network means computing how the loss changes when each weight
# changes, for millions of weights, thousands of times. Nobody writes those
# derivatives by hand: the framework records the computation as a graph and
# walks it backwards, applying the chain rule at every node. That machinery is
# called *reverse-mode automatic differentiation*, or autograd.
#
# ## What you will learn
#
# - how a computation becomes a graph of values and operations;
# - how to build a complete reverse-mode autograd engine in about forty lines;
# - why the backward pass must visit the nodes in **reverse topological order**,
#   and what goes wrong otherwise;
# - why a value that is used twice must **accumulate** its gradient, and why
#   DenseNet, where every layer's output is read by all later layers, depends on it;
# - how the same ideas look in `tinydense` (`Tensor`, `Function`, `backward`), and, as
#   exercises, how to write the backward pass of a `Function` with several inputs.

# %%
%matplotlib inline
import inspect
import math
import os

import matplotlib.pyplot as plt
import numpy as np

import tinydense as td
import tinydense.functional as F
from tinydense import Function
from tinydense.backend import get_array_module

from checks.l01_autograd import check_linear, check_mul

FAST = os.environ.get("TINYDENSE_LESSONS_FAST") == "1"   # small settings for CI

# %% [markdown]
# ## 1. A computation is a graph
#
# Take a tiny function of two numbers:
#
# $$f(x, w) = \tanh(w\,x + x).$$
#
# Evaluating it takes three steps, each feeding the next:
# $a = w\,x$, then $b = a + x$, then $f = \tanh(b)$.
# Drawn as a graph, the leaves are $x$ and $w$, the inner nodes are the three
# operations, and $x$ has **two** outgoing edges: one into the product and one
# into the sum.
#
# The chain rule gives the derivative along every path from $f$ back to a leaf,
# and the contributions of different paths **add up**:
#
# $$\frac{\partial f}{\partial x}
#   = \underbrace{(1 - f^2)\cdot 1 \cdot w}_{\text{through } a}
#   + \underbrace{(1 - f^2)\cdot 1}_{\text{directly into } b}
#   = (1 - f^2)(w + 1),
# \qquad
# \frac{\partial f}{\partial w} = (1 - f^2)\,x .$$
#
# Let us evaluate this by hand at $x = 0.5$, $w = -1.5$, so we have numbers to
# compare against.

# %%
x0, w0 = 0.5, -1.5
f0 = math.tanh(w0 * x0 + x0)
print(f"f            = {f0:.6f}")
print(f"df/dx by hand = {(1 - f0**2) * (w0 + 1):.6f}")
print(f"df/dw by hand = {(1 - f0**2) * x0:.6f}")

# %% [markdown]
# ## 2. An autograd engine in forty lines
#
# Our engine works on single numbers. A `Scalar` stores its value, the
# gradient that the backward pass will fill in, and the list of its **parents**:
# the inputs it was computed from, each paired with the *local derivative*
# (how much this node changes per unit change of that input).
#
# Every operation does two things: compute the value, and record where it
# came from. That record *is* the graph.

# %%
class Scalar:
    """A number that remembers how it was computed."""

    def __init__(self, value, parents=(), op="", name=""):
        self.value = float(value)
        self.grad = 0.0
        self.parents = parents      # pairs (input Scalar, d self / d input)
        self.op = op                # for drawing the graph
        self.name = name

    def __add__(self, other):
        other = other if isinstance(other, Scalar) else Scalar(other)
        return Scalar(self.value + other.value, ((self, 1.0), (other, 1.0)), "+")

    def __mul__(self, other):
        other = other if isinstance(other, Scalar) else Scalar(other)
        return Scalar(self.value * other.value, ((self, other.value), (other, self.value)), "*")

    def tanh(self):
        t = math.tanh(self.value)
        return Scalar(t, ((self, 1 - t * t),), "tanh")

    def __repr__(self):
        return f"Scalar({self.value:.6f}, grad={self.grad:.6f})"


def topological_order(output):
    """Every node reachable from output, each listed after all of its parents."""
    order, seen = [], set()

    def visit(node):
        if id(node) in seen:
            return
        seen.add(id(node))
        for parent, _ in node.parents:
            visit(parent)
        order.append(node)      # only after everything it depends on

    visit(output)
    return order


def backward(output):
    """Fill in .grad of every node: d output / d node."""
    output.grad = 1.0
    for node in reversed(topological_order(output)):   # consumers before producers
        for parent, local in node.parents:
            parent.grad += local * node.grad            # chain rule; += sums over paths

# %% [markdown]
# That is the whole engine. `backward` starts at the output with gradient 1
# ($\partial f/\partial f$) and visits the nodes from the output towards the
# leaves. When a node is visited its gradient is complete, and it passes
# `local * node.grad` on to each parent.
#
# Let us run it on our function and compare with the hand derivation.

# %%
x = Scalar(x0, name="x")
w = Scalar(w0, name="w")
a = w * x
b = a + x
f = b.tanh()
backward(f)
print("f =", f.value)
print("x:", x, "  by hand:", (1 - f0**2) * (w0 + 1))
print("w:", w, "  by hand:", (1 - f0**2) * x0)

# %% [markdown]
# The graph that `topological_order` walks can be drawn. Each node sits one
# column to the right of its deepest parent, so every arrow points right, and
# the topological order is simply "left to right". The backward pass reads
# the picture from right to left.

# %%
def draw_graph(output, ax):
    """Draw the graph that produced ``output``: leaves on the left, output on the right."""
    order = topological_order(output)
    depth = {}
    for node in order:
        depth[id(node)] = 1 + max((depth[id(p)] for p, _ in node.parents), default=-1)
    rows = {}
    position = {}
    for node in order:
        d = depth[id(node)]
        position[id(node)] = (d, rows.get(d, 0))
        rows[d] = rows.get(d, 0) + 1
    for node in order:
        x1, y1 = position[id(node)]
        for parent, local in node.parents:
            x2, y2 = position[id(parent)]
            ax.annotate("", xy=(x1, y1), xytext=(x2, y2),
                        arrowprops=dict(arrowstyle="-|>", color="gray", shrinkA=32, shrinkB=32))
            ax.text((x1 + x2) / 2, (y1 + y2) / 2 + 0.08, f"{local:.2f}", fontsize=8,
                    color="tab:blue", ha="center")
    for node in order:
        px, py = position[id(node)]
        label = node.name or node.op or f"{node.value:g}"
        ax.text(px, py, f"{label}\nvalue {node.value:.3f}\ngrad {node.grad:.3f}", ha="center",
                va="center", fontsize=8, bbox=dict(boxstyle="round", fc="lightyellow", ec="gray"))
    ax.set_xlim(-0.6, max(depth.values()) + 0.6)
    ax.set_ylim(-0.7, max(rows.values()) - 0.3)
    ax.axis("off")


fig, ax = plt.subplots(figsize=(9, 3))
draw_graph(f, ax)
ax.set_title("f = tanh(w*x + x): local derivatives (blue) on the edges")
plt.show()

# %% [markdown]
# ## 3. Why the order matters
#
# A node may pass its gradient on only when it is complete, that is, after
# **every** node that consumes it has been visited. The reverse topological
# order guarantees this. A plausible-looking alternative does not: visit the
# nodes breadth-first from the output, each once, in the order they are first
# reached.
#
# To see it fail we need a value that reaches the output along a short path
# and a long one: $u = 3x$, $f = \tanh(2u) + u$. Breadth-first, $u$ is reached
# directly from the final sum, before the long path through $\tanh$ has
# delivered its share, and $u$ passes on a gradient that is missing a term.

# %%
def backward_breadth_first(output):
    """A WRONG backward: visits each node once, in breadth-first order."""
    output.grad = 1.0
    queue, seen = [output], {id(output)}
    while queue:
        node = queue.pop(0)
        for parent, local in node.parents:
            parent.grad += local * node.grad
            if id(parent) not in seen:
                seen.add(id(parent))
                queue.append(parent)


def make_graph():
    x = Scalar(0.3, name="x")
    u = x * 3
    f = (u * 2).tanh() + u
    return x, f


x, f = make_graph()
backward(f)
right = x.grad
x, f = make_graph()
backward_breadth_first(f)
exact = 3 * (2 * (1 - math.tanh(1.8) ** 2) + 1)
print(f"d f / d x, topological order : {right:.6f}")
print(f"d f / d x, breadth first      : {x.grad:.6f}")
print(f"d f / d x, by hand            : {exact:.6f}")

# %% [markdown]
# The breadth-first version got only the short path's share. Real networks
# are full of such diamonds: skip connections in ResNet, and in DenseNet
# every layer's output travels to the block's end along many paths of
# different lengths.
#
# ## 4. A value used twice accumulates its gradient
#
# In `backward` the line `parent.grad += local * node.grad` **adds**. If it
# assigned instead, a value used by two operations would keep only the
# gradient from whichever consumer happened to be visited last. The smallest
# example is $y = x \cdot x$: the product uses $x$ twice, once as each factor,
# and $dy/dx = x + x = 2x$.

# %%
def backward_assigning(output):
    """A WRONG backward: '=' instead of '+=' forgets all but one path."""
    output.grad = 1.0
    for node in reversed(topological_order(output)):
        for parent, local in node.parents:
            parent.grad = local * node.grad


x = Scalar(3.0)
backward(x * x)
print("with +=  d(x*x)/dx =", x.grad, "(right: 2x = 6)")
x = Scalar(3.0)
backward_assigning(x * x)
print("with =   d(x*x)/dx =", x.grad)

# %% [markdown]
# ## 5. The same in tinydense
#
# `tinydense` does the same with arrays instead of numbers. The differences
# are practical, not conceptual:
#
# - a `Tensor` wraps a NumPy (or CuPy) array; leaves that need gradients are
#   created with `requires_grad=True`;
# - every operation is a `Function` subclass with a `forward` and a
#   hand-written `backward` side by side. For arrays the local derivative
#   would be a huge Jacobian matrix, so instead of storing it, `forward` saves
#   what it needs and `backward` computes the product of the incoming
#   gradient with the Jacobian directly;
# - the topological sort is iterative rather than recursive: a DenseNet-BC
#   graph has thousands of nodes, more than Python's recursion limit.
#
# Our example, in tinydense:

# %%
x = td.tensor([x0], requires_grad=True, dtype=np.float64)
w = td.tensor([w0], requires_grad=True, dtype=np.float64)
f = (w * x + x).tanh()
f.backward()
print("df/dx =", x.grad, "  df/dw =", w.grad)

# %% [markdown]
# Here is the heart of `Tensor.backward`. Find the two ideas of this lesson
# in it: the loop over `_topological_order()` and the line that **sums** the
# gradients arriving at a tensor that feeds several ops.

# %%
print(inspect.getsource(td.Tensor.backward))

# %% [markdown]
# ### Exercise 1: a `Function` with two inputs
#
# A `Function`'s `backward(self, g)` receives $g = \partial L/\partial z$, with the
# output's shape, and returns one gradient per input of `forward`, as a **tuple**
# in the same order, each with its input's shape. It can use what `forward`
# saved on `self`. Write the backward pass of the elementwise product
# $z = a \cdot b$ (the local derivatives are the other factor, as in
# `Scalar.__mul__`), run the cell, then run the check below it.

# %% tags=["exercise-stub"]
class Mul(Function):
    # z = a * b, elementwise (a and b have the same shape)
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        # g: dL/dz, z's shape. Return (dL/da, dL/db): a tuple, in the order of forward's inputs.
        raise NotImplementedError("write the backward pass of Mul")

# %% tags=["exercise-check"]
check_mul(Mul)

# %% [markdown]
# ### Exercise 2: a fully connected layer
#
# $y = x W^\top + b$ for a batch $x$ of shape $(N, \text{in})$, a weight $W$ of shape
# $(\text{out}, \text{in})$ (PyTorch's layout) and a bias of shape $(\text{out},)$.
# Work out each gradient for one element, $y_{nj} = \sum_i x_{ni} W_{ji} + b_j$, then
# write it as a matrix product; check every shape against its input's.

# %% tags=["exercise-stub"]
class Linear(Function):
    # x (N, in) @ weight (out, in)^T + bias (out,) -> y (N, out)
    def forward(self, x, weight, bias=None):
        self.x, self.weight = x, weight
        y = x @ weight.T
        return y if bias is None else y + bias

    def backward(self, g):
        # g: (N, out). Return (dx, dweight, dbias) with the shapes of x, weight and bias
        # (without a bias the third value is ignored).
        raise NotImplementedError("write the backward pass of Linear")

# %% tags=["exercise-check"]
check_linear(Linear)

# %% [markdown]
# Leaves accumulate too, across calls: calling `backward` twice without
# clearing `.grad` adds the second gradient to the first. That is why every
# training step starts by zeroing the gradients.

# %%
x = td.tensor(3.0, requires_grad=True, dtype=np.float64)
(x * x).backward()
print("after one backward :", x.grad)
(x * x).backward()
print("after two backwards:", x.grad, "(accumulated, not 6)")
x.zero_grad()
(x * x).backward()
print("after zero_grad    :", x.grad)

# %% [markdown]
# ## 6. Dense connectivity depends on accumulation
#
# In a dense block, layer $\ell$ receives the concatenation of **all** earlier
# feature maps, $x_\ell = H_\ell([x_0, x_1, \dots, x_{\ell-1}])$. So the block's
# input $x_0$ is read by every layer of the block. In the backward pass $x_0$
# receives one gradient from each of those layers, and its total gradient is
# their sum. Without accumulation a dense block would train only through one
# of those connections.
#
# Let us build a small dense "block" of fully connected layers on vectors
# (the real one uses convolutions; the graph is the same) and check this.
# `retain_grad()` keeps the gradient of each layer's concatenated input, whose
# first columns are the share that reaches $x_0$ through that layer.

# %%
rng = np.random.default_rng(0)
batch, k0, k, layers = 5, 4, 3, 4
x_in = td.tensor(rng.standard_normal((batch, k0)), requires_grad=True)
weights = [td.tensor(rng.standard_normal((k0 + l * k, k)) / np.sqrt(k0 + l * k))
           for l in range(layers)]

features = [x_in]
concatenated = []
for W in weights:
    h = F.cat(features, axis=1).retain_grad()      # [x_0, x_1, ..., x_{l-1}]
    concatenated.append(h)
    features.append((h @ W).tanh())                # x_l, k new features
loss = F.cat(features, axis=1).sum()               # the block's output feeds the loss
loss.backward()

shares = [h.grad[:, :k0] for h in concatenated]    # what reached x_0 through each layer
direct = np.ones((batch, k0))                      # the block's output also contains x_0 itself
total = sum(shares) + direct
print("x_0 gradient equals the sum of the shares:", np.allclose(total, x_in.grad))
for l, s in enumerate(shares, start=1):
    print(f"  through layer {l}: |share| = {np.linalg.norm(s):.3f}")
print(f"  directly       : |share| = {np.linalg.norm(direct):.3f}")

# %% [markdown]
# ## 7. Short paths keep gradients alive
#
# Why connect every layer to every later one? One reason is visible in the
# gradients. In a plain chain $x_\ell = \tanh(W_\ell x_{\ell-1})$ the gradient
# reaching the input is a product of one Jacobian per layer; when those are
# small, it shrinks exponentially with depth (the *vanishing gradient*). A
# residual chain (ResNet), $x_\ell = x_{\ell-1} + \tanh(W_\ell x_{\ell-1})$, adds an
# identity path around every layer; a densely connected chain lets the input
# reach the output directly, and by every combination of layers in between.
# Either way part of the gradient always travels a short path.
#
# The plot measures $\|\partial\,\text{loss}/\partial x_0\|$ for the three kinds of
# chain, with the same small random weights, as the depth grows.

# %%
def input_gradient_norm(depth, kind, width=8, scale=0.5, seed=0):
    """|d loss / d x_0| for a chain of `depth` tanh layers: kind "plain", "residual" or "dense"."""
    rng = np.random.default_rng(seed)
    x = td.tensor(rng.standard_normal((4, width)), requires_grad=True, dtype=np.float64)
    features = [x]
    for _ in range(depth):
        inp = F.cat(features, axis=1) if kind == "dense" else features[-1]
        W = td.tensor(rng.standard_normal((inp.shape[1], width)) * scale / np.sqrt(inp.shape[1]))
        new = (inp @ W).tanh()
        features.append(features[-1] + new if kind == "residual" else new)
    out = F.cat(features[1:], axis=1) if kind == "dense" else features[-1]   # what the chain produced
    out.sum().backward()
    return np.linalg.norm(x.grad)


depths = range(1, 13 if FAST else 31)
plt.figure(figsize=(6, 3.5))
for kind, marker in [("plain", "o-"), ("residual", "^-"), ("dense", "s-")]:
    plt.semilogy(depths, [input_gradient_norm(d, kind) for d in depths], marker, label=f"{kind} chain")
plt.xlabel("number of layers")
plt.ylabel("|gradient at the input|")
plt.title("Gradient reaching the first layer")
plt.legend()
plt.grid(alpha=0.3)
plt.show()

# %% [markdown]
# In the plain chain the gradient at the input drops by roughly a constant
# factor per layer. The residual and the dense chain both keep it of the same
# order however deep the chain is: what helps is the **short path**, which an
# addition (ResNet) provides as well as a concatenation (DenseNet). In the
# residual chain the identity path makes every Jacobian $I + J_\ell$, so the
# gradient cannot vanish (it may grow slowly); in the dense chain the input is
# one of the concatenated features of every layer. Concatenation's advantages
# are elsewhere: the dense-connectivity lesson shows that it keeps every feature map intact for
# later layers, with far fewer parameters. Both rest on the `+=` of section 2.
#
# ## Questions and exercises
#
# 1. Add `__sub__`, `__pow__` (for a constant exponent) and `exp` to `Scalar`,
#    and check the gradient of $x^3 - e^{x}$ at $x = 1$ against the derivative you
#    compute by hand.
# 2. `backward_breadth_first` failed on the diamond. Find a graph on which it
#    happens to give the right answer, and explain why.
# 3. In section 6, how many gradient contributions does the input $x_0$ of a dense
#    block with $L$ layers receive? How many does $x_1$ receive?
# 4. Why does `Tensor.backward` clear the saved arrays of every `Function` after
#    using them? What would it cost to keep them on a DenseNet-BC with 100 layers?
# 5. In section 7, raise `scale` to 2. What happens to the plain chain, and why
#    do the residual and the dense chain still behave?
