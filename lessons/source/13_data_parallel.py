# %% [markdown]
# # Lesson 13: Data parallelism, from AlexNet's two GPUs to allreduce
#
# DenseNet-BC-100 trains for 300 epochs; on a 2-core CPU that is about six and a
# half days. One process cannot go faster than its cores. This lesson is about
# using several: several processes on one machine, several machines, several GPUs.
#
# ## What you will learn
#
# - model parallelism (AlexNet's two GTX 580s) against data parallelism (the batch
#   split across workers), and why the second is what everyone does for CNNs;
# - why averaging the workers' gradients is exactly one big batch's gradient,
#   and where batch norm breaks that (and how *synchronized* batch norm repairs it);
# - how the workers add up their arrays: the **ring allreduce**, its messages, and
#   what it costs on a real network;
# - a real run on two processes (`mpiexec -n 2`) that gives one process's numbers.

# %%
import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np

import tinydense as td
import tinydense.functional as F
from tinydense.distributed import cost_model, find_mpiexec
from tinydense.models import DenseNet

from checks.l13_data_parallel import check_average_gradients, check_combine_statistics, check_ring_allreduce
from checks.common import passed

FAST = os.environ.get("TINYDENSE_LESSONS_FAST") == "1"   # small settings for CI
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Two ways to use two GPUs
#
# AlexNet (2012) did not fit its training into one GTX 580's 3 GB. Krizhevsky
# split the **model**: each GPU held half of the kernels of every layer, and the
# two halves talked only in some layers (the third convolution and the fully
# connected ones read both halves). That is **model parallelism**: each worker
# holds a part of the network and activations travel between them in every forward
# and backward pass, layer after layer.
#
# The other way, asked about in the lecture after VGG, is **data parallelism**:
# every worker holds the *whole* model and a different part of the batch. They
# compute their gradients independently and exchange only the gradients, once per
# step. For convolutional networks it is the better deal: the weights are small
# (DenseNet-BC-100: 0.77 M parameters, 3 MB) next to the activations, which never
# leave their worker. Krizhevsky's own later paper ("One weird trick", 2014) used
# data parallelism for the convolutions.
#
# In tinydense the workers are processes (ranks 0 .. N-1), started by `mpiexec`.
# Each has the same model, reads its share of every batch and takes the same step.

# %% [markdown]
# ## 2. Why averaging gradients is one big batch
#
# The loss of a batch of $B = N b$ images is the mean of the images' losses. Split
# it among $N$ ranks of $b$ images each:
#
# $$\frac{\partial L}{\partial w} = \frac{1}{B}\sum_{i=1}^{B}\frac{\partial \ell_i}{\partial w}
#   = \frac{1}{N}\sum_{r=1}^{N}\Big(\frac{1}{b}\sum_{i \in \text{rank } r}\frac{\partial \ell_i}{\partial w}\Big).$$
#
# The bracket is what rank $r$ computes from its own images: the gradient of its
# shard's mean loss. So the ranks compute in parallel, **average** their gradients,
# and every rank takes the same SGD step from the same weights: the weights stay
# identical without ever being sent.
#
# ### Exercise 1: `average_gradients`
#
# `grads[r][i]` is rank `r`'s gradient of parameter `i` (a NumPy array). Return one
# list, a gradient per parameter: the average over the ranks. Leave the inputs as
# they are.

# %% tags=["exercise-stub"]
def average_gradients(grads):
    """grads[r][i]: rank r's gradient of parameter i -> [the mean over r of grads[r][i] for each i]."""
    raise NotImplementedError


# %% tags=["exercise-check"]
check_average_gradients(average_gradients)

# %% [markdown]
# The check took a linear classifier, gave 4 "ranks" 3 images each, and compared
# your average with the gradient of all 12 images at once. Here is the same for a
# convolution followed by a classifier, shards of 4 images out of 8:

# %%
x8, y8 = rng.standard_normal((8, 3, 6, 6)), rng.integers(0, 4, 8)
conv_w, fc_w = rng.standard_normal((5, 3, 3, 3)) * 0.3, rng.standard_normal((4, 5)) * 0.3


def conv_net_grads(rows, batch_norm=False):
    """Gradients of a small network's mean loss on images ``rows`` (with batch norm or without)."""
    w1, w2 = td.tensor(conv_w, requires_grad=True), td.tensor(fc_w, requires_grad=True)
    h = F.conv2d(td.tensor(x8[rows]), w1, padding=1)
    if batch_norm:
        h = F.batch_norm(h, None, None, training=True)
    logits = F.linear(F.adaptive_avg_pool2d(F.relu(h), 1).flatten(1), w2)
    F.cross_entropy(logits, y8[rows]).backward()
    return [w1.grad, w2.grad]


if passed("average_gradients"):
    shards = [conv_net_grads(np.arange(r, 8, 2)) for r in range(2)]
    whole = conv_net_grads(np.arange(8))
    gap = max(np.abs(a - b).max() for a, b in zip(average_gradients(shards), whole))
    print(f"without batch norm: average of 2 shards vs the whole batch, largest difference {gap:.1e}")
else:
    print("(write average_gradients above to run this comparison)")

# %% [markdown]
# ## 3. Where batch norm breaks it
#
# The identity needs each image's loss to depend on that image alone. Batch norm
# normalises every image with the **mean and variance of its batch**: on rank $r$
# that is rank $r$'s shard. So $N$ ranks of $b$ images compute a different function
# from one batch of $B$: $N$ small batch norms. The same comparison with batch norm:

# %%
shards = [conv_net_grads(np.arange(r, 8, 2), batch_norm=True) for r in range(2)]
whole = conv_net_grads(np.arange(8), batch_norm=True)
averaged = [sum(g) / 2 for g in zip(*shards)]
print(f"with batch norm: largest difference {max(np.abs(a - b).max() for a, b in zip(averaged, whole)):.2e} "
      f"(gradients of size {max(np.abs(b).max() for b in whole):.2e})")

# %% [markdown]
# Often that is tolerated (each rank's batch is still a batch). But with small
# shards the statistics get noisy, the running statistics become those of one rank,
# and the run is no longer the run one process would have made. The repair is
# **synchronized batch norm**: the ranks add up, per channel, what the statistics
# are made of, and every rank normalises with the whole batch's.
#
# What are they made of? Each rank $r$ can send its count $n_r$, its sum
# $S_r = \sum x$ and its sum of squares $Q_r = \sum x^2$ per channel. Those add up
# across ranks, and
#
# $$\mu = \frac{\sum_r S_r}{\sum_r n_r}, \qquad \sigma^2 = \frac{\sum_r Q_r}{\sum_r n_r} - \mu^2 .$$
#
# ### Exercise 2: `combine_statistics`
#
# `counts` is (R,), `sums` and `sums_of_squares` are (R, C): rank by rank, channel by
# channel. Return `(mean, var)` of the whole batch, each of shape (C,), the variance
# biased (divided by the count), as batch norm uses it.

# %% tags=["exercise-stub"]
def combine_statistics(counts, sums, sums_of_squares):
    """Per-rank count, sum and sum of squares -> the whole batch's per-channel mean and biased variance."""
    raise NotImplementedError


# %% tags=["exercise-check"]
check_combine_statistics(combine_statistics)

# %% [markdown]
# A warning that matters in practice: $E[x^2] - \mu^2$ subtracts two large numbers
# when the values sit far from zero. For $x = 10^4 + $ noise of size $10^{-2}$, both
# terms are $10^8$ and their difference $10^{-4}$: float64 keeps 16 digits, so about
# 4 are left; float32 keeps none.

# %%
far = 1e4 + 1e-2 * rng.standard_normal((2, 1000))          # two ranks of 1000 values
naive = (far ** 2).sum() / far.size - (far.sum() / far.size) ** 2
print(f"true variance {far.var():.6e}, from sums of squares in float64 {naive:.6e}, "
      f"in float32 {float((far.astype(np.float32) ** 2).sum() / far.size - (far.astype(np.float32).mean()) ** 2):.3e}")

# %% [markdown]
# tinydense's synchronized batch norm (`tinydense/ops/stats_reducer.py`) therefore
# sends each rank's sum of squares *about its own mean*, and adds the spread of the
# ranks' means separately (Chan, Golub and LeVeque's formula):
#
# $$\sum (x - \mu)^2 = \sum_r \Big[\sum_{x \in r} (x - \mu_r)^2 + n_r (\mu_r - \mu)^2\Big].$$
#
# The backward pass needs the same treatment: batch norm's $dx$ uses $\sum g$ and
# $\sum g\,\hat x$ over the batch (lesson 4), so those two sums are added across the
# ranks too. With both, $N$ ranks compute exactly the function of one batch. All batch
# norms of a DenseNet go through it, the fused ones of the memory-efficient blocks
# included.

# %% [markdown]
# ## 4. Adding arrays across ranks: allreduce
#
# Averaging needs an **allreduce**: every rank starts with an array and ends with
# the sum of all of them. The obvious way, everyone sends to rank 0, which adds and
# sends back, makes rank 0 receive $N-1$ whole arrays: its link is the bottleneck and
# the time grows with $N$.
#
# The **ring allreduce** (Patarasuk and Yuan, 2009; brought to deep learning by Baidu
# in 2017) puts the ranks on a ring, each sending only to its right neighbour, and
# cuts each array into $N$ chunks:
#
# 1. **reduce-scatter**, $N - 1$ steps: in step $s$ rank $r$ sends chunk $(r - s) \bmod N$
#    to rank $r + 1$, which adds it to its own copy of that chunk. After $N-1$ steps
#    rank $r$ holds the full sum of chunk $(r + 1) \bmod N$.
# 2. **allgather**, $N - 1$ steps: the finished chunks travel once around the ring,
#    each rank overwriting its copy with the sum it receives.
#
# Every rank sends $2(N-1)$ messages of $1/N$ of the array: $2(N-1)/N$ arrays in all,
# **less than twice the array whatever $N$**, and all links are busy at once.
#
# ### Exercise 3: `ring_allreduce`
#
# `buffers[r]` is rank `r`'s flat array. `send(src, dst, array)` returns what arrives
# at `dst` (a copy); it counts the messages and only lets a rank send to its right
# neighbour, `(src + 1) % N`. Cut each buffer with `np.array_split(buffer, N)`, run the
# two phases (in each step, let every rank send before any adds what it received),
# and return the list of every rank's result.

# %% tags=["exercise-stub"]
def ring_allreduce(buffers, send):
    """Every rank's buffer -> the sum of all of them on every rank, by reduce-scatter and allgather."""
    raise NotImplementedError


# %% tags=["exercise-check"]
check_ring_allreduce(ring_allreduce)

# %% [markdown]
# ### What it costs
#
# With a link of bandwidth $\beta$, one allreduce of $M$ bytes takes about
# $t = 2\frac{N-1}{N}\frac{M}{\beta}$ (latency aside). The computation of a step, with the
# global batch fixed, shrinks like $1/N$. So communication wins from
# $N \ge 1 + t_\text{step}\,\beta / (2M)$. `tinydense.distributed.cost_model` tabulates it, here
# for the 2.3 s a DenseNet-BC-100 batch of 64 takes on a 2-core CPU, and for ResNet-50 at
# the same step time (its 25.6 M parameters are 100 MB of gradients):

# %%
for line in cost_model.cost_table([("DenseNet-BC-100", cost_model.DENSENET_BC_100_BYTES, 2.3),
                                   ("ResNet-50", cost_model.RESNET50_BYTES, 2.3)]):
    print(line)

# %% [markdown]
# DenseNet's few parameters are its advantage here: 3 MB go around a 10 Gbit/s ring in
# about 5 ms, and hundreds of CPUs would be needed before that mattered. ResNet-50's
# 100 MB take 160 ms, as much as the computation from 16 machines on.

# %% [markdown]
# ## 5. A real run on two processes
#
# `tinydense.distributed` does all of the above with an existing MPI library
# (`mpi4py`; NCCL on GPUs): `broadcast_state` gives every rank rank 0's model,
# `GradientAverager` averages the gradients in a few large buffers,
# `synchronized_batch_norm` reaches every batch norm. The script below trains a small
# DenseNet-BC in float64 for a few steps on two processes, each with half of every
# batch, and rank 0 compares the result with one process on the whole batches.

# %%
SCRIPT = textwrap.dedent(f'''
    import numpy as np
    import tinydense as td, tinydense.functional as F
    from tinydense import distributed
    from tinydense.models import DenseNet

    STEPS, BATCH = {2 if FAST else 4}, {4 if FAST else 16}
    def model():
        td.manual_seed(0)
        return DenseNet(growth_rate=4, block_config=(2, 2), num_init_features=8, num_classes=10,
                        stem="cifar", memory_efficient=True).double()
    def train(net, comm, pick):
        opt = distributed.MultiNodeOptimizer(td.optim.SGD(net.parameters(), lr=0.1, momentum=0.9), comm)
        data = np.random.default_rng(1)
        for step in range(STEPS):
            x, y = data.standard_normal((BATCH, 3, 8, 8)), data.integers(0, 10, BATCH)
            opt.zero_grad()
            F.cross_entropy(net(td.tensor(x[pick])), y[pick]).backward()
            opt.step()
        return net

    comm = distributed.init()
    with distributed.synchronized_batch_norm(comm):
        mine = train(model(), comm, distributed.shard(np.arange(BATCH), comm.size, comm.rank))
    if comm.rank == 0:
        one = train(model(), distributed.SingleProcess(), np.arange(BATCH))
        gap = max(np.abs(a - b).max() for a, b in zip(mine.state_dict().values(), one.state_dict().values()))
        print(f"{{comm.size}} processes vs 1: largest difference in weights and running statistics {{gap:.1e}}")
''')
mpiexec = find_mpiexec()
if mpiexec is None:
    print("no mpiexec here: pip install -e '.[mpi]' (mpi4py and mpich) to run this cell")
else:
    with tempfile.TemporaryDirectory() as folder:
        script = os.path.join(folder, "two_ranks.py")
        with open(script, "w") as f:
            f.write(SCRIPT)
        run = subprocess.run([mpiexec, "-n", "2", sys.executable, script], capture_output=True, text=True,
                             timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1"))
        print(run.stdout.strip() or run.stderr[-2000:])

# %% [markdown]
# The difference is rounding: about $10^{-15}$. The same machinery trains from the
# command line: `tinydense train --nproc 2 ...` on one machine, or
# `mpiexec -n 8 -hosts a,b tinydense train ...` across machines; rank 0 writes the
# run's files, and the configuration's batch size stays the global batch.
#
# ## Questions
#
# 1. AlexNet's two GPUs exchanged activations in some layers. Estimate the bytes one
#    image's forward pass would send for AlexNet's third convolution (input 256 x 13 x 13,
#    split in two) and compare with the gradients data parallelism sends per step.
# 2. Without synchronized batch norm, what do the running statistics rank 0 saves
#    describe? Why can evaluation with them be worse than training suggested?
# 3. With 2 ranks and a global batch of 64, the ring allreduce of DenseNet-BC-100's
#    gradients sends how many bytes per rank per step? How many with 8 ranks?
# 4. Why must every rank call the collectives in the same order, and what happens if
#    one rank skips a batch (a shorter shard)? How does the sampler prevent it?
# 5. The learning rate of the paper's recipe is for a batch of 64. If 8 machines each
#    keep 64 images, the global batch is 512: what does Goyal et al.'s linear scaling rule
#    suggest, and why does tinydense instead keep the global batch fixed?
