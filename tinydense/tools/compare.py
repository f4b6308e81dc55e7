"""``compare(names)``: the lecture's architectures side by side, on one footing.

For every model, at its image size (224x224 for the ImageNet models, 32x32 for
the CIFAR ones, or one ``image_size`` for all), one row of:

    params       learnable numbers (``summary``'s total)
    MACs         multiply-adds for one image: ``summary``'s total, i.e. convolutions,
                 linear layers and pooling, a multiplication and its addition counted
                 once (what papers and torchvision quote as "FLOPs" or "G-Ops")
    memory       ``summary``'s activation memory: the bytes of every layer's output for
                 one image in float32, ReLU and batch-norm outputs included. It is what a
                 framework that kept every output for the backward pass would hold; the
                 peak memory of a real training step differs (in-place and fused ops
                 keep less, workspace and gradients add more)
    inference    images per second of a forward pass under ``no_grad`` in eval mode
    training     images per second of a training step: forward, cross-entropy,
                 backward, SGD update (momentum 0.9), in train mode
    top-1        the published accuracy of the architecture, with its source (ACCURACY)

Throughput is measured on this machine: ``batch`` random float32 images, the
median of ``repeats`` timed runs after ``warmup`` untimed ones. The weights are
all zero (the models are built under ``init.skip_init()``, which is instant even
for VGG): the time of a matrix product does not depend on the values in it.

``Comparison.plot(path)`` draws the lecture's complexity chart (after Canziani
et al., "An Analysis of Deep Neural Network Models for Practical Applications",
2016): x the multiply-adds, y the top-1 accuracy, bubble area the parameters
(tools/complexity_chart.py).
"""
from __future__ import annotations

import difflib
import gc
import os
import statistics
import textwrap
import time
from dataclasses import dataclass

import numpy as np

from .. import memory, models
from ..autograd import Tensor, no_grad
from ..nn import init
from ..optim import SGD
from ..text import format_duration
from ..threads import blas_threads, load_average
from ..training.loop import train_step
# BUBBLE_AREA and complexity_figure: also under this module's name (lesson 3 imports them from here)
from .complexity_chart import BUBBLE_AREA, check_drawable, complexity_figure, plot_complexity  # noqa: F401
from .summary import summary


@dataclass(frozen=True)
class Accuracy:
    """A published top-1 accuracy (percent) on ``dataset``: ``source`` says where (the
    table's footnote), ``detail`` where in it for this model."""
    top1: float
    dataset: str
    source: str
    detail: str = ""


TORCHVISION = ("torchvision 0.29.1: acc@1 (ImageNet-1K validation set, one 224x224 centre crop) in the "
               "metadata of <Model>_Weights.IMAGENET1K_V1, torchvision/models/<file>.py")


def _tv(weights, file, top1):
    return Accuracy(top1, "ImageNet", TORCHVISION, f"torchvision/models/{file}.py, {weights}.IMAGENET1K_V1")


# the accuracy of each architecture, as its source gives it
ACCURACY = {
    "alexnet": _tv("AlexNet_Weights", "alexnet", 56.522),
    "alexnet_2012": Accuracy(59.3, "ImageNet", "Krizhevsky, Sutskever and Hinton, NeurIPS 2012, Table 2: one CNN, "
                                               "40.7% top-1 error on the ILSVRC-2012 validation set (ten crops, "
                                               "with local response normalisation)"),
    "zfnet": Accuracy(62.5, "ImageNet", "Zeiler and Fergus, ECCV 2014, Table 2, row (b): one convnet as in "
                                        "Fig. 3 with layers 3, 4, 5 of 512, 1024, 512 maps, 37.5% top-1 "
                                        "validation error (ten crops)"),
    "vgg11": _tv("VGG11_Weights", "vgg", 69.020), "vgg11_bn": _tv("VGG11_BN_Weights", "vgg", 70.370),
    "vgg13": _tv("VGG13_Weights", "vgg", 69.928), "vgg13_bn": _tv("VGG13_BN_Weights", "vgg", 71.586),
    "vgg16": _tv("VGG16_Weights", "vgg", 71.592), "vgg16_bn": _tv("VGG16_BN_Weights", "vgg", 73.360),
    "vgg19": _tv("VGG19_Weights", "vgg", 72.376), "vgg19_bn": _tv("VGG19_BN_Weights", "vgg", 74.218),
    "googlenet": _tv("GoogLeNet_Weights", "googlenet", 69.778),
    "resnet18": _tv("ResNet18_Weights", "resnet", 69.758), "resnet34": _tv("ResNet34_Weights", "resnet", 73.314),
    "resnet50": _tv("ResNet50_Weights", "resnet", 76.130), "resnet101": _tv("ResNet101_Weights", "resnet", 77.374),
    "resnet152": _tv("ResNet152_Weights", "resnet", 78.312),
    "resnext50_32x4d": _tv("ResNeXt50_32X4D_Weights", "resnet", 77.618),
    "resnext101_32x8d": _tv("ResNeXt101_32X8D_Weights", "resnet", 79.312),
    "resnext101_64x4d": _tv("ResNeXt101_64X4D_Weights", "resnet", 83.246),    # a newer training recipe
    "wide_resnet50_2": _tv("Wide_ResNet50_2_Weights", "resnet", 78.468),
    "wide_resnet101_2": _tv("Wide_ResNet101_2_Weights", "resnet", 78.848),
    "densenet121": _tv("DenseNet121_Weights", "densenet", 74.434),
    "densenet161": _tv("DenseNet161_Weights", "densenet", 77.138),
    "densenet169": _tv("DenseNet169_Weights", "densenet", 75.600),
    "densenet201": _tv("DenseNet201_Weights", "densenet", 76.896),
    "densenet_bc": Accuracy(95.49, "CIFAR-10+", "Huang, Liu, van der Maaten and Weinberger, CVPR 2017, Table 2: "
                                                "DenseNet-BC (L=100, k=12), 4.51% test error on CIFAR-10 with "
                                                "crops and flips (C10+)"),
}

# the lecture's models and the DenseNets, at 224x224
ZOO = ("alexnet", "zfnet", "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn",
       "googlenet", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
       "wide_resnet50_2", "densenet121", "densenet169", "densenet201")
# the 32x32 models (10 classes); densenet_bc is DenseNet-BC L=100 k=12
CIFAR = ("densenet_bc", "cifar_resnet18", "cifar_resnet34", "cifar_resnet50", "cifar_resnext50_32x4d",
         "cifar_se_resnet18", "cifar_se_resnet34", "cifar_se_resnet50", "cifar_se_resnext50_32x4d",
         "cifar_vgg11_bn", "cifar_vgg16_bn")
# also at 224x224, outside the zoo group; the SENets (lecture section 11) have no accuracy here: torchvision
# publishes none, and timm's weights come from its own training recipe, not the paper's
OTHERS = ("alexnet_2012", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet101_2", "densenet161", "densenet264",
          "se_resnet18", "se_resnet34", "se_resnet50", "se_resnet101", "se_resnet152", "se_resnext50_32x4d")
GROUPS = {"zoo": ZOO, "cifar": CIFAR}
MODELS = ZOO + CIFAR + OTHERS

# The time estimate (rough: within a factor of about 2). Per image, an inference pass or a
# training step runs the model's multiply-adds at a fraction of the rate of one float32
# matrix product (MAC_EFFICIENCY), streams the parameters through memory a few times
# (PARAM_PASSES; the fully connected layers of AlexNet and VGG are limited by it), and
# pays a fixed cost per layer (LAYER_SECONDS, at a matrix-product rate of REFERENCE_RATE,
# scaled by the rate probed). Fitted to the zoo's times at batch 2 on this project's
# 2-core machines.
MAC_EFFICIENCY = {"inference": 0.5, "training": 0.156}
PARAM_PASSES = {"inference": 2.0, "training": 4.0}
LAYER_SECONDS = {"inference": 0.005, "training": 0.038}
REFERENCE_RATE = 14.5e9


def native_size(name):
    """The image size a model's published accuracy is for: 32 for the CIFAR models, else 224."""
    return 32 if name in CIFAR else 224


def resolve(names):
    """Model names (any case, with or without ``-`` and ``_``: densenet-121, vgg16_bn) and the
    groups ``zoo`` and ``cifar`` -> the model names, in order, each once. ValueError naming
    every valid name for an unknown one."""
    if isinstance(names, str):
        names = [names]
    key = lambda text: str(text).strip().lower().replace("-", "").replace("_", "")      # noqa: E731
    known = {key(n): n for n in MODELS + tuple(GROUPS)}
    out = []
    for given in names:
        name = known.get(key(given))
        if name in GROUPS:
            out += [n for n in GROUPS[name] if n not in out]
            continue
        if name is None:
            close = difflib.get_close_matches(str(given).strip().lower().replace("-", "_"),
                                              MODELS + tuple(GROUPS), n=1)
            raise ValueError(f"compare: unknown model {given!r}" + (f" (did you mean {close[0]}?)" if close else "")
                             + f"; the models are {', '.join(MODELS)}; the groups zoo (the lecture's "
                             f"{len(ZOO)} ImageNet models) and cifar (the {len(CIFAR)} 32x32 models)")
        if name not in out:
            out.append(name)
    if not out:
        raise ValueError("compare: give at least one model (or zoo, or cifar)")
    return out


def check_plottable(names):
    """ValueError unless some of the models (names, as :func:`resolve` returns them) has a
    published accuracy to draw."""
    check_drawable([{"name": n, "accuracy": ACCURACY.get(n)} for n in names], known=ACCURACY)


def build(name):
    """The model ``name`` with all-zero weights (instant: no random draws)."""
    with init.skip_init():
        return getattr(models, name)()


def _positive(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"compare: {what} must be a positive integer, got {value!r}")
    return int(value)


def median_seconds(fn, repeats, warmup=1, clock=time.perf_counter):
    """The median wall-clock time of ``repeats`` calls of ``fn()``, after ``warmup`` calls
    that are not timed (the first calls allocate buffers and warm the caches)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times)


def measure(model, image_size, batch=2, repeats=3, warmup=1, seed=0):
    """(inference, training) images per second of ``model`` on ``batch`` random float32
    images of 3 x image_size x image_size: the median of ``repeats`` runs after ``warmup``.
    Inference: eval mode, ``no_grad``, forward. Training: train mode, the training loop's
    step (:func:`tinydense.training.loop.train_step`: forward, cross-entropy, backward, SGD
    step; lr 1e-3, momentum 0.9). The model's weights change (SGD steps)."""
    rng = np.random.default_rng(seed)
    x = Tensor(rng.standard_normal((batch, 3, image_size, image_size)).astype(np.float32))
    mode = model.training

    def infer():
        with no_grad():
            model(x)

    try:
        model.eval()
        inference = median_seconds(infer, repeats, warmup)
        with no_grad():
            y = Tensor(np.arange(batch) % model(x).shape[1])
        model.train()
        optimizer = SGD(model.parameters(), lr=1e-3, momentum=0.9)
        training = median_seconds(lambda: train_step(model, optimizer, x, y), repeats, warmup)
    finally:
        model.train(mode)
    return batch / inference, batch / training


def count(model, image_size):
    """(parameters, multiply-adds, activation memory in bytes, number of layers) for one
    image, from ``summary``."""
    s = summary(model, (3, image_size, image_size))
    return s.total_params, s.total_macs, s.total_memory_bytes, len(s.rows)


def probe_speed():
    """(multiply-adds per second of a float32 matrix product shaped like a convolution's,
    bytes per second streamed through a matrix-vector product of a 64 MB matrix)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((256, 1152)).astype(np.float32)
    b = rng.standard_normal((1152, 3136)).astype(np.float32)
    rate = a.shape[0] * a.shape[1] * b.shape[1] / median_seconds(lambda: a @ b, repeats=3, warmup=1)
    big = rng.standard_normal((2048, 8192)).astype(np.float32)
    v = rng.standard_normal((8192, 2)).astype(np.float32)
    return rate, big.nbytes / median_seconds(lambda: big @ v, repeats=3, warmup=1)


def estimate_seconds(rows, batch, repeats, warmup=1, speed=None):
    """Roughly how long :func:`measure` takes for every row (its ``macs``, ``params`` and
    ``layers``), at ``speed`` = (multiply-adds/s, bytes/s) (default: :func:`probe_speed` now)."""
    rate, bandwidth = probe_speed() if speed is None else speed
    per_mac = sum(1 / (rate * e) for e in MAC_EFFICIENCY.values())
    per_param = 4 * sum(PARAM_PASSES.values()) / bandwidth
    per_layer = sum(LAYER_SECONDS.values()) * REFERENCE_RATE / rate
    return sum((warmup + repeats) * (batch * r["macs"] * per_mac + r["params"] * per_param + r["layers"] * per_layer)
               for r in rows)


class Comparison:
    """The result of :func:`compare`: ``rows`` (dicts: name, image_size, params, macs,
    memory_bytes, layers (summary's rows), inference and training in images/s or None, load
    (the load average after measuring it, if measured), accuracy an Accuracy or None),
    the measurement settings, ``str()`` the table and ``plot(path)`` the complexity chart."""

    def __init__(self, rows, batch, repeats, warmup, threads, measured):
        self.rows, self.batch, self.repeats, self.warmup = rows, batch, repeats, warmup
        self.threads, self.measured = threads, measured

    def sources(self):
        """The distinct accuracy sources of the rows, in order (the table numbers them)."""
        out = []
        for r in self.rows:
            if r["accuracy"] is not None and r["accuracy"].source not in out:
                out.append(r["accuracy"].source)
        return out

    def __str__(self):
        sources = self.sources()
        rate = lambda v: "-" if v is None else (f"{v:.3g}" if v < 100 else f"{v:.0f}")     # noqa: E731
        header = ("model", "image", "params (M)", "G MACs", "memory (MB)", "infer img/s", "train img/s",
                  "top-1 %", "on", "src")
        cells = []
        for r in self.rows:
            a = r["accuracy"]
            cells.append((r["name"], f"{r['image_size']}", f"{r['params'] / 1e6:.2f}", f"{r['macs'] / 1e9:.3f}",
                          f"{r['memory_bytes'] / 2 ** 20:.1f}", rate(r["inference"]), rate(r["training"]),
                          "-" if a is None else f"{a.top1:.2f}", "" if a is None else a.dataset,
                          "" if a is None else f"[{sources.index(a.source) + 1}]"))
        widths = [max(len(row[i]) for row in [header] + cells) for i in range(len(header))]
        left = (0, 8, 9)
        fmt = lambda row: "  ".join(c.ljust(w) if i in left else c.rjust(w)           # noqa: E731
                                    for i, (c, w) in enumerate(zip(row, widths))).rstrip()
        rule = "-" * len(fmt(header))
        notes = ["params: learnable numbers. G MACs: multiply-adds for one image, in billions (summary's total: "
                 "convolutions, linear layers and pooling; a multiply and its add count once). memory: every "
                 "layer's output for one image in float32 (summary's activation memory), not a training step's "
                 "peak memory."]
        if self.measured:
            threads = f"{self.threads} BLAS threads" if self.threads else "the BLAS library's own thread count"
            notes += [f"img/s: measured on this machine (CPU, float32, {threads}), batch {self.batch}, the median "
                      f"of {self.repeats} runs after {self.warmup} warm-up; infer: forward under no_grad in eval "
                      f"mode; train: forward, cross-entropy, backward and an SGD step in train mode. "
                      + load_note([r.get("load") for r in self.rows], self.threads)]
        else:
            notes += ["img/s: not measured (--no-measure)."]
        notes += ["top-1: the published accuracy of the architecture (not of these zero weights):"]
        notes += [f"  [{i + 1}] {s}" for i, s in enumerate(sources)]
        wrap = lambda text: textwrap.fill(text, width=max(100, len(rule)), subsequent_indent="      ")  # noqa: E731
        return "\n".join([rule, fmt(header), rule] + [fmt(c) for c in cells] + [rule] + [wrap(n) for n in notes])

    __repr__ = __str__

    def plot(self, path, title=None):
        """The complexity chart to ``path`` (the suffix chooses the format); see :func:`plot_complexity`."""
        return plot_complexity(self.rows, path, title)


def compare(names, image_size=None, batch=2, repeats=3, warmup=1, measure_speed=True, log=None):
    """A :class:`Comparison` of the models ``names`` (see :func:`resolve`): each at
    ``image_size`` (default: its native size, 224 or 32), counted with ``summary``, and
    with ``measure_speed`` its throughput measured (see :func:`measure`). ``log(text)``,
    if given, hears the progress, and the estimated time before the measuring starts."""
    names = resolve(names)
    if image_size is not None:
        image_size = _positive(image_size, "image_size")
    batch, repeats = _positive(batch, "batch"), _positive(repeats, "repeats")
    warmup = int(warmup)
    if warmup < 0:
        raise ValueError(f"compare: warmup must be 0 or more, got {warmup!r}")
    return compare_models([(n, None, image_size or native_size(n)) for n in names], batch, repeats, warmup,
                          measure_speed, log)


def compare_models(entries, batch=2, repeats=3, warmup=1, measure_speed=True, log=None):
    """:func:`compare` for ``entries`` of (name, model or None, image size); a model of
    None is built from ``tinydense.models`` by name, each in its turn."""
    say = log or (lambda text: None)
    rows = []
    if measure_speed:
        say(f"counting parameters and multiply-adds: one image through each of {len(entries)} models ...")
    for name, model, size in entries:
        m = build(name) if model is None else model
        try:
            params, macs, nbytes, layers = count(m, size)
        except ValueError as e:
            raise ValueError(f"compare: {name} at {size}x{size}: {e}") from None
        rows.append({"name": name, "image_size": size, "params": params, "macs": macs, "memory_bytes": nbytes,
                     "layers": layers, "inference": None, "training": None, "accuracy": ACCURACY.get(name)})
        del m
    threads = None
    if measure_speed:
        threads = blas_threads()
        available = memory.available_memory()
        for r in rows:
            needed = memory.training_step_bytes(r["memory_bytes"], r["params"], batch)
            if available is not None and needed > 0.8 * available:
                raise ValueError(f"compare: training {r['name']} at {r['image_size']}x{r['image_size']} with "
                                 f"batch {batch} would need about {needed / 2 ** 30:.1f} GB, more than the "
                                 f"{available / 2 ** 30:.1f} GB available: use a smaller --batch or --image-size")
        seconds = estimate_seconds(rows, batch, repeats, warmup)
        say(f"measuring throughput (batch {batch}, median of {repeats} after {warmup} warm-up, "
            f"{threads or 'default'} BLAS threads): about {format_duration(seconds)} (a rough estimate from the "
            f"multiply-adds, parameters and layers, and this machine's speed now)")
        for (name, model, size), r in zip(entries, rows):
            start = time.perf_counter()
            m = build(name) if model is None else model
            try:
                r["inference"], r["training"] = measure(m, size, batch, repeats, warmup)
            except MemoryError:
                raise ValueError(f"compare: not enough memory to train {name} at {size}x{size} with batch "
                                 f"{batch}: use a smaller --batch or --image-size") from None
            finally:
                del m
                gc.collect()
                memory.clear()
            r["load"] = load_average()
            say(f"  {name}: {r['inference']:.3g} img/s inference, {r['training']:.3g} img/s training "
                f"({format_duration(time.perf_counter() - start)})")
    return Comparison(rows, batch, repeats, warmup, threads, measure_speed)


def load_note(loads, threads, cpus=None):
    """The table's line on the machine load during the measurements: the range of the
    1-minute load averages, and a warning when more was running than this measurement's
    own ``threads`` (so other processes took CPU time from it)."""
    loads = [v for v in loads if v is not None]
    if not loads:
        return ""
    cpus = cpus or os.cpu_count()
    low, high = f"{min(loads):.1f}", f"{max(loads):.1f}"
    span = low if low == high else f"{low} to {high}"
    text = f"1-minute load average during the measurements: {span} on {cpus} CPUs"
    if max(loads) > (threads or cpus) + 1:
        text += ("; other processes were competing for the CPUs, so these img/s are lower and noisier than on "
                 "an idle machine (run again when it is quiet)")
    return text + "."
