# %% [markdown]
# # Lesson 11: The same code on a GPU, with CuPy
#
# Every op in tinydense asks `get_array_module` for `xp`, the array library of
# its inputs, and does its math with `xp.matmul`, `xp.zeros` and so on. With
# NumPy arrays `xp` is NumPy; with CuPy arrays (which live in GPU memory) it is
# CuPy, whose functions have the same names and run on an NVIDIA GPU. That is
# the whole GPU story of tinydense: no second implementation, one line of
# dispatch.
#
# This lesson runs one training step of a DenseNet-BC on the CPU and, if
# there is a GPU, on the GPU, checks that both compute the same thing, and
# compares their speed. **On a machine without a CUDA GPU (or without CuPy)
# it says so and skips the GPU measurements**; everything else still runs.
#
# ## What you will learn
#
# - how tinydense picks NumPy or CuPy, and how to move tensors and models between devices;
# - why mixing devices is an error, and what the error says;
# - how to time GPU code honestly (GPU work is asynchronous);
# - how to check that CPU and GPU compute the same gradients, up to float32 rounding;
# - how throughput depends on the batch size on each device.

# %%
%matplotlib inline
import os
import time

import matplotlib.pyplot as plt
import numpy as np

import tinydense as td
import tinydense.functional as F
from tinydense.backend import get_array_module
from tinydense.models import densenet_bc
from tinydense.optim import SGD

FAST = os.environ.get("TINYDENSE_LESSONS_FAST") == "1"   # small settings for CI
GPU = td.cuda.is_available()
DEVICES = ["cpu", "cuda"] if GPU else ["cpu"]

if GPU:
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(0)
    print(f"GPU found: {props['name'].decode()}, {props['totalGlobalMem'] / 2**30:.0f} GB. "
          f"Every cell below runs on the CPU and on the GPU.")
else:
    print("No CUDA GPU available here (or CuPy is not installed): the GPU cells below say so and "
          "measure the CPU only.\nOn a machine with an NVIDIA GPU: pip install 'tinydense[gpu]' "
          "(cupy-cuda12x; cupy-cuda13x for CUDA 13).")

# %% [markdown]
# ## 1. One code path, two array libraries
#
# A function written with `xp` runs wherever its input lives. Here is a small
# example, a numerically stable softmax, applied to a NumPy array and (with a
# GPU) to a CuPy copy of it:

# %%
def softmax(z):
    xp = get_array_module(z)                       # numpy or cupy, from the argument
    e = xp.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


z = np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)
print("NumPy:", type(softmax(z)).__module__, softmax(z)[0].round(4))
if GPU:
    z_gpu = cupy.asarray(z)
    print("CuPy :", type(softmax(z_gpu)).__module__, cupy.asnumpy(softmax(z_gpu))[0].round(4))
else:
    print("CuPy : skipped, no GPU")

# %% [markdown]
# ## 2. Moving tensors and models
#
# `tensor.to("cuda")` copies a tensor to the GPU and `.to("cpu")` (or
# `.numpy()`) brings it back; `model.to("cuda")` moves every parameter and
# buffer in place, so an optimiser created before still holds the right
# objects. Every op checks that its inputs live on the same device, because
# mixing them would mean a silent, slow copy or a crash deep inside CuPy. Asking
# for a GPU that is not there is an error with a clear message too:

# %%
t = td.tensor([1.0, 2.0, 3.0])
print("t lives on:", t.device)
if GPU:
    t_gpu = t.to("cuda")
    print("t_gpu lives on:", t_gpu.device, " back on the CPU:", t_gpu.numpy())
    try:
        t + t_gpu
    except ValueError as error:
        print("mixing devices:", error)
else:
    try:
        t.to("cuda")
    except ValueError as error:
        print("asking for the GPU:", error)

# %% [markdown]
# ## 3. The same training step on every device
#
# The step below does not mention a device at all: it runs where the model and
# the batch are. GPU work is **asynchronous**: a CuPy call queues work on the
# GPU and returns immediately, so a timer stopped right after it measures only
# the queuing. `td.cuda.synchronize()` waits until the GPU is done (on the CPU
# it does nothing). We also run a couple of untimed warm-up steps, because the
# first use of each GPU kernel compiles it.

# %%
DEPTH, GROWTH = (16, 8) if FAST else (40, 12)
BATCH = 16 if FAST else 64


def train_step(model, optimizer, x, y):
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def make_model(device, state=None):
    td.manual_seed(0)
    model = densenet_bc(DEPTH, GROWTH)
    if state is not None:
        model.load_state_dict(state)
    return model.to(device)


def time_steps(device, batch, steps, warmup=1):
    """Seconds per training step of DenseNet-BC on ``device`` for a random batch."""
    model = make_model(device)
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    rng = np.random.default_rng(0)
    x = td.tensor(rng.standard_normal((batch, 3, 32, 32)).astype(np.float32), device=device)
    y = td.tensor(rng.integers(0, 10, batch), device=device)
    for _ in range(warmup):
        train_step(model, optimizer, x, y)
    td.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        train_step(model, optimizer, x, y)
    td.cuda.synchronize()
    return (time.perf_counter() - start) / steps


for device in DEVICES:
    seconds = time_steps(device, BATCH, steps=1 if FAST else 3, warmup=1 if device == "cpu" else 2)
    print(f"{device}: {seconds * 1e3:8.1f} ms per step of DenseNet-BC L={DEPTH} k={GROWTH}, batch {BATCH} "
          f"({BATCH / seconds:,.0f} images/s)")
if not GPU:
    print("cuda: skipped, no GPU")

# %% [markdown]
# ## 4. Do both devices compute the same thing?
#
# Start both models from the same weights, train one step on the same batch,
# and compare the loss and the gradients. They agree only up to float32
# rounding: the GPU adds numbers in a different order (in parallel), and
# floating-point addition is not associative. A relative difference around
# $10^{-5}$ or below is what to expect; a real bug would show up as something
# far larger.

# %%
if GPU:
    state = make_model("cpu").state_dict()
    rng = np.random.default_rng(1)
    x_np = rng.standard_normal((8, 3, 32, 32)).astype(np.float32)
    y_np = rng.integers(0, 10, 8)
    results = {}
    for device in DEVICES:
        model = make_model(device, state)
        loss = F.cross_entropy(model(td.tensor(x_np, device=device)), td.tensor(y_np, device=device))
        loss.backward()
        results[device] = (loss.item(), {n: td.backend.to_numpy(p.grad) for n, p in model.named_parameters()})
    (loss_cpu, grads_cpu), (loss_gpu, grads_gpu) = results["cpu"], results["cuda"]
    worst = max(np.abs(grads_cpu[n] - grads_gpu[n]).max() / (np.abs(grads_cpu[n]).max() + 1e-12)
                for n in grads_cpu)
    print(f"loss on the CPU {loss_cpu:.6f}, on the GPU {loss_gpu:.6f}")
    print(f"largest gradient difference, relative to each parameter's largest gradient: {worst:.1e}")
else:
    print("Skipped: no GPU to compare with.")

# %% [markdown]
# ## 5. Throughput against batch size
#
# A GPU has thousands of arithmetic units and needs large matrix products to
# keep them busy; with a small batch it mostly waits for Python and for the
# kernel launches. A CPU has a few cores that a modest batch already fills.
# So the GPU's advantage grows with the batch size.

# %%
batches = [4, 8, 16] if FAST else [8, 16, 32, 64, 128]
throughput = {device: [] for device in DEVICES}
for device in DEVICES:
    for batch in batches:
        seconds = time_steps(device, batch, steps=1 if FAST else 2, warmup=1 if device == "cpu" else 2)
        throughput[device].append(batch / seconds)

plt.figure(figsize=(6, 3.6))
for device, values in throughput.items():
    plt.plot(batches, values, "o-", label=device)
plt.xscale("log", base=2)
plt.yscale("log")
plt.xlabel("batch size")
plt.ylabel("training images per second")
plt.title(f"DenseNet-BC L={DEPTH} k={GROWTH}" + ("" if GPU else " (CPU only: no GPU here)"))
plt.legend()
plt.grid(alpha=0.3)
plt.show()

# %% [markdown]
# To train on the GPU for real, put the model and the data loader on it
# (`model.to("cuda")`, `DataLoader(..., device="cuda")`) and run the loop of
# lesson 8 unchanged, or pass the GPU option to the command-line trainer.
#
# ## Questions and exercises
#
# 1. Remove the `td.cuda.synchronize()` calls and time again on a GPU. What do you
#    measure now?
# 2. Which is faster on your GPU: moving each batch from the CPU, or keeping the whole
#    (small) data set in GPU memory from the start? Why?
# 3. Section 4 compares gradients relative to each parameter's largest gradient. Why
#    not element by element?
# 4. Write a small function with `xp` (for example the cross-entropy of lesson 8) and
#    check that it gives the same result for NumPy and CuPy inputs.
# 5. Lesson 10 measured memory with `tracemalloc`, which does not see GPU memory. Use
#    `td.cuda.memory_pool_peak_bytes()` to measure a DenseNet-BC step on the GPU.
