# %% [markdown]
# # Lesson 12 (capstone): a DenseNet on your own ops
#
# In the earlier lessons you wrote the backward passes of every op a DenseNet
# needs: convolution, batch norm, ReLU, max and average pooling,
# concatenation, the fully connected layer, log-softmax and cross-entropy.
# Here they come together: tinydense runs a whole DenseNet-BC on **your**
# implementations, and we check, step by step, that its training is the
# library's, to the last digit of float64.
#
# ## What you will learn
#
# - how a framework's public functions dispatch to the classes that do the work,
#   and how `td.ops.override` swaps those classes for yours;
# - how to compare two training runs exactly: the same start, the same batches,
#   float64, every loss and every gradient;
# - that your ops are enough to train a DenseNet on real images.
#
# ## Your workspace
#
# Your ops live in one file, `student/my_ops.py` next to this notebook (or the
# file named by `$TINYDENSE_WORKSPACE`). The cell below creates it from the
# template `my_ops_template.py` if it does not exist yet (as does
# `python lessons/build_notebooks.py --workspace` in the repository), and never
# overwrites it. The template holds the classes of the exercises in the convolution,
# batch-norm, gradient-checking, autograd and training lessons, with their
# forward passes and `NotImplementedError` in every backward pass: copy your
# answers from those lessons into it (or write them there directly), save, and
# run this notebook again.

# %%
import os
import time
from pathlib import Path

import numpy as np

import tinydense as td
import tinydense.functional as F
from tinydense.data import DataLoader, load_cifar
from tinydense.models import densenet_bc
from tinydense.optim import SGD

from checks.l12_build_your_own_densenet import check_workspace, compare_training, load_workspace

FAST = os.environ.get("TINYDENSE_LESSONS_FAST") == "1"   # small settings for CI
my_ops = load_workspace()                   # a fresh import every time this cell runs

# %% [markdown]
# ## 1. Every op, checked
#
# The same checks as in the lessons, for every class in your file: forward
# against tinydense's, backward against tinydense's (to $10^{-9}$) and against
# central differences, on odd shapes, strides, padding, and batch norm in
# training and eval mode.

# %% tags=["workspace-check"]
verdicts = check_workspace(my_ops)
print(f"\n{sum(verdicts.values())} of {len(verdicts)} ops pass")

# %% [markdown]
# ## 2. The switch
#
# Each public op function (`F.conv2d`, `F.batch_norm`, ...) checks its
# arguments and then calls a `Function` class that it looks up in its module
# at call time (`tinydense/ops/conv.py` calls `Conv2d.apply`). Inside
# `with td.ops.override(my_ops):` those names point to your classes, so every
# layer of every model runs your code; on leaving the block, even through an
# error, the library's classes are back. An op whose backward still raises
# `NotImplementedError` is left to the library. (The fused ops of the
# memory-efficient DenseNet are the library's own, so we build the model with
# `memory_efficient=False`: then every op is one of the nine.)

# %%
with td.ops.override(my_ops) as report:
    for name, who in report.items():
        print(f"  {name:13s} {who}")
    x = td.tensor(np.random.default_rng(0).standard_normal((2, 3, 8, 8)))
    print("a convolution inside the block uses:", type(F.conv2d(x, td.tensor(np.ones((1, 3, 3, 3))))._creator).__module__)
print("and outside it:", type(F.conv2d(x, td.tensor(np.ones((1, 3, 3, 3))))._creator).__module__)

# %% [markdown]
# ## 3. Step for step: your training against the library's
#
# Two runs of DenseNet-BC start from the same weights and see the same
# batches of CIFAR-10 in float64: one on the library's ops, one on yours. After
# every SGD step we compare the loss and the gradient of every parameter. In
# float64 the two must agree to about $10^{-12}$ (the same numbers summed in a
# different order); the verdict is `MATCH` below $10^{-8}$. Otherwise it names
# the first step and the first parameter, in the network's order, whose
# gradient differs: the op just before that parameter is where to look.

# %%
DATA = os.environ.get("TINYDENSE_DATA") or Path("..") / "data"
if FAST:
    DEPTH, GROWTH, COMPARE_BATCH, COMPARE_STEPS, TRAIN_IMAGES, TEST_IMAGES = 10, 4, 8, 3, 64, 100
else:
    DEPTH, GROWTH, COMPARE_BATCH, COMPARE_STEPS, TRAIN_IMAGES, TEST_IMAGES = 40, 12, 16, 4, 5085, 1017
train_set = load_cifar("cifar10", root=DATA, train=True, download=True).head(TRAIN_IMAGES)
test_set = load_cifar("cifar10", root=DATA, train=False, download=True).head(TEST_IMAGES)
mean, std = train_set.channel_stats()
loader = DataLoader(train_set, COMPARE_BATCH, mean=mean, std=std)
batches = []
for x, y in loader:                            # the first batches, in order, no augmentation
    batches.append((x.numpy(), y.numpy()))
    if len(batches) == COMPARE_STEPS:
        break
start = time.perf_counter()
matched = compare_training(my_ops, batches, depth=DEPTH, growth_rate=GROWTH)
print(f"({COMPARE_STEPS} steps of DenseNet-BC L={DEPTH} k={GROWTH}, batch {COMPARE_BATCH}, twice: "
      f"{time.perf_counter() - start:.0f} s)")

# %% [markdown]
# ## 4. Train it
#
# Now a real (short) training run in float32, entirely on your ops: one epoch
# of the course's subset with the paper's optimiser, then the test accuracy.
# With the reference solutions this reached 31.2% (chance: 10%; the training
# lesson's runs on the library's ops had 27% to 29% after their first epoch); yours
# should land close to that, since it computes the same thing. Your ops are
# simpler than the library's (no special 1x1 path, a new array at every step):
# the epoch took about three times as long as on the library's ops (3 min 36 s
# with the test on a quiet 2-core machine, against 71 s in the training lesson).

# %%
td.manual_seed(0)
model = densenet_bc(DEPTH, GROWTH, memory_efficient=False)
optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
train_loader = DataLoader(train_set, 64, shuffle=True, augment=True, mean=mean, std=std, seed=0)
test_loader = DataLoader(test_set, 250, mean=mean, std=std)
start = time.perf_counter()
with td.ops.override(my_ops) as report:
    for step, (x, y) in enumerate(train_loader):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 20 == 0:
            print(f"step {step:3d}: loss {loss.item():.3f}")
    model.eval()
    correct = 0
    with td.no_grad():
        for x, y in test_loader:
            correct += int((model(x).numpy().argmax(axis=1) == y.numpy()).sum())
seconds = time.perf_counter() - start
yours = [name for name, who in report.items() if who == "yours"]
print(f"one epoch on {len(train_set)} images and the test on {len(test_set)}: {seconds:.0f} s, "
      f"test accuracy {correct / len(test_set):.1%}, with {len(yours)} of {len(report)} ops yours"
      + ("" if matched else "  (but section 3 found a difference: fix that first)"))

# %% [markdown]
# ## Questions
#
# 1. Make one op subtly wrong on purpose (for example, multiply batch norm's
#    `dweight` by 1.001). Which parameter does section 3 name, and why that one?
# 2. Why does the comparison run in float64? What would the largest relative
#    difference be in float32, even with correct ops?
# 3. The comparison passes the same batches to both runs and resets the seed before
#    building each model. What else must be identical for the runs to agree step
#    for step?
# 4. Time one training step on the library's ops and on yours (profile with
#    `cProfile`). Which op costs the most time in yours, and what does the library
#    do differently there (read `tinydense/ops/conv.py`)?
# 5. `td.ops.override` swaps classes that the public functions look up at call time.
#    What would go wrong if `tinydense/ops/conv.py` had written
#    `from .conv_impl import Conv2d as _Conv2d` and called `_Conv2d.apply`?
