"""Where one DenseNet-BC training step spends its time on the GPU: per op type,
kernel launches, and host-device synchronisations.

    python benchmarks/gpu_profile.py                          # L=100 k=12, batch 64
    python benchmarks/gpu_profile.py --json p.json --trace trace.json.gz
    python benchmarks/gpu_profile.py --device cpu --depth 16 --batch 4   # dry run on NumPy

The step is what the training loop does per batch: the DataLoader's next batch
(random images, shuffled, cropped and flipped on the device, as in training;
--no-loader: one fixed batch) and tinydense.training.train_step, after --warmup
untimed steps (the first compiles CuPy's kernels). Four passes:

1. the step: over --repeat steps, the median host time of queuing it, its wall
   time (the GPU's queue empty before and after) and the GPU time between CUDA
   events around it.
2. per op type: the forward and backward of every Function, and SGD's step and
   zero_grad, each wrapped with a host clock, CUDA events and an NVTX range
   (outermost call only: an op that calls another counts once, under its own
   name); the loader's batch counts as "DataLoader.batch". "GPU ms" is the time between an op's events on the GPU, idle time
   included: where it is close to "host ms" the GPU waits for Python's launches.
3. host-device synchronisations: every way Python reads a CuPy array (bool(),
   int(), float(), .item(), .get(), .tolist(), cupy.asnumpy, printing), counted
   with the line of tinydense that asked for it.
4. (PyTorch installed) PyTorch's profiler, which records every CUDA kernel,
   memory copy and synchronisation of the process, CuPy's included: kernels per
   step and per op type (the ops of pass 2 as record_function ranges), copies
   device-to-host (each waits for the GPU) and host-to-device, synchronisation
   calls, and the time the GPU is busy. --trace writes the trace (gzip'd Chrome
   JSON, for ui.perfetto.dev or chrome://tracing).

On --device cpu the same passes run on NumPy: no events, nothing to synchronise,
no kernels; only the machinery is exercised.
"""
from __future__ import annotations

import argparse
import collections
import gzip
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import gpu_common

ROOT = gpu_common.HERE.parent


def function_classes():
    """Every Function subclass tinydense defines (its ops and the fused ones)."""
    import tinydense.functional   # noqa: F401  (imports every op module)
    import tinydense.models       # noqa: F401
    from tinydense.autograd import Function
    found, todo = [], [Function]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in found:
                found.append(sub)
                todo.append(sub)
    return found


class Patches:
    """Attributes replaced on classes, and put back by ``restore``."""

    def __init__(self):
        self._saved = []

    def replace(self, owner, name, value):
        self._saved.append((owner, name, owner.__dict__.get(name, Patches)))
        setattr(owner, name, value)

    def restore(self):
        for owner, name, old in reversed(self._saved):
            if old is Patches:
                delattr(owner, name)
            else:
                setattr(owner, name, old)
        self._saved = []


_TIMERS = []        # the OpTimer installed now, if any (see ``section``)


def section(name, fn, *args):
    """``fn(*args)``, timed as an op named ``name`` while an OpTimer is installed."""
    return _TIMERS[-1].call(name, fn, *args) if _TIMERS else fn(*args)


class OpTimer(Patches):
    """Times the outermost calls of every op's forward and backward (and SGD's step and
    zero_grad): host seconds, and on the GPU a pair of CUDA events per call.
    ``annotate``: a context-manager factory called with each op's name (PyTorch's
    record_function, so that its profiler can attribute kernels to ops); ``nvtx``:
    CuPy's NVTX module, for ranges in Nsight Systems."""

    def __init__(self, device, annotate=None, nvtx=None):
        super().__init__()
        self.device, self.annotate, self.nvtx = device, annotate, nvtx
        self.records, self._depth = [], 0

    def install(self):
        from tinydense.optim import SGD
        for cls in function_classes():
            for method in ("forward", "backward"):
                if method in cls.__dict__:
                    self._wrap(cls, method, lambda this: type(this).__name__)
        for method in ("step", "zero_grad"):      # zero_grad is defined by SGD's base class, Optimizer
            owner = next(cls for cls in SGD.__mro__ if method in cls.__dict__)
            self._wrap(owner, method, lambda this: type(this).__name__)
        _TIMERS.append(self)
        return self

    def restore(self):
        if self in _TIMERS:
            _TIMERS.remove(self)
        super().restore()

    def call(self, name, fn, *args):
        return self._timed(name, fn, *args)

    def _wrap(self, owner, method, label):
        original, timer = owner.__dict__[method], self

        def timed(this, *args, **kwargs):
            if timer._depth:
                return original(this, *args, **kwargs)
            return timer._timed(f"{label(this)}.{method}", original, this, *args, **kwargs)

        timed.__name__, timed.__qualname__, timed.__doc__ = original.__name__, original.__qualname__, original.__doc__
        self.replace(owner, method, timed)

    def _timed(self, name, fn, *args, **kwargs):
        cupy = _cupy(self.device)
        self._depth += 1
        context = self.annotate(name) if self.annotate else None
        try:
            if context is not None:
                context.__enter__()
            if self.nvtx is not None:
                self.nvtx.RangePush(name)
            start = end = None
            if cupy is not None:
                start = cupy.cuda.Event()
                start.record()
            t0 = time.perf_counter()
            result = fn(*args, **kwargs)
            host = time.perf_counter() - t0
            if cupy is not None:
                end = cupy.cuda.Event()
                end.record()
            self.records.append((name, host, start, end))
            return result
        finally:
            if self.nvtx is not None:
                self.nvtx.RangePop()
            if context is not None:
                context.__exit__(None, None, None)
            self._depth -= 1

    def table(self, steps):
        """{op name: {"calls", "host_ms", "gpu_ms"}} per step (the GPU's work must be done)."""
        cupy = _cupy(self.device)
        rows = collections.defaultdict(lambda: {"calls": 0, "host_ms": 0.0, "gpu_ms": 0.0})
        for name, host, start, end in self.records:
            row = rows[name]
            row["calls"] += 1 / steps
            row["host_ms"] += 1e3 * host / steps
            if cupy is not None:
                row["gpu_ms"] += cupy.cuda.get_elapsed_time(start, end) / steps
        return dict(rows)


SYNC_METHODS = ("__bool__", "__int__", "__float__", "__complex__", "__index__", "item", "tolist", "get",
                "__repr__", "__str__", "__format__")


class SyncCounter(Patches):
    """Counts the reads of ``array_class``'s values by Python (each one waits until the
    GPU has done everything queued before it), by the line outside CuPy that asked."""

    def __init__(self, array_class):
        super().__init__()
        self.array_class, self.counts, self._inside = array_class, collections.Counter(), False

    def install(self):
        for name in SYNC_METHODS:
            original = getattr(self.array_class, name, None)
            if original is not None:
                self.replace(self.array_class, name, self._hook(name, original))
        return self

    def _hook(self, name, original):
        counter = self

        def read(this, *args, **kwargs):
            if counter._inside:                  # e.g. __repr__ calling get: one read
                return original(this, *args, **kwargs)
            counter._inside = True
            try:
                counter.counts[(where(sys._getframe(1)), name)] += 1
                return original(this, *args, **kwargs)
            finally:
                counter._inside = False
        return read

    def total(self):
        return sum(self.counts.values())


def where(frame):
    """'path:line (function)' of the first frame of this checkout outside the profiler."""
    here = Path(__file__).resolve()
    while frame is not None:
        path = Path(frame.f_code.co_filename).resolve()
        if path != here and ROOT in path.parents and "site-packages" not in path.parts:
            return f"{path.relative_to(ROOT)}:{frame.f_lineno} ({frame.f_code.co_name})"
        frame = frame.f_back
    return "outside the checkout"


def _cupy(device):
    if device != "cuda":
        return None
    import cupy
    return cupy


def time_steps(step, device, repeat):
    """Median (host ms to queue, wall ms, GPU ms) of ``repeat`` steps."""
    cupy = _cupy(device)
    host, wall, gpu = [], [], []
    for _ in range(repeat):
        gpu_common.synchronize(device)
        if cupy is not None:
            start = cupy.cuda.Event()
            start.record()
        t0 = time.perf_counter()
        step()
        host.append(time.perf_counter() - t0)
        if cupy is not None:
            end = cupy.cuda.Event()
            end.record()
        gpu_common.synchronize(device)
        wall.append(time.perf_counter() - t0)
        if cupy is not None:
            gpu.append(cupy.cuda.get_elapsed_time(start, end) / 1e3)
    median = lambda values: 1e3 * statistics.median(values) if values else None   # noqa: E731
    return {"host_ms": median(host), "wall_ms": median(wall), "gpu_ms": median(gpu)}


# --- pass 4: PyTorch's profiler ---------------------------------------------------------------

def is_wait(name):
    """Does a CUDA API call of this name wait for the GPU? Synchronize calls and the
    synchronous copies (cudaMemcpy; CuPy's reads on the default stream use it)."""
    return "Synchronize" in name or name == "cudaMemcpy" or (name.startswith("cuMemcpyDtoH") and "Async" not in name)


def torch_profile(step, device, trace_path=None):
    """Run ``step`` once under PyTorch's profiler with the ops as record_function ranges;
    returns the summary of :func:`summarize_trace` (and writes the trace, gzip'd)."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function
    activities = [ProfilerActivity.CPU]
    if device == "cuda":
        torch.cuda.init()
        activities.append(ProfilerActivity.CUDA)
    options = {}
    try:
        options["experimental_config"] = torch._C._profiler._ExperimentalConfig(enable_cuda_sync_events=True)
    except Exception:            # an older PyTorch: synchronisations show as API calls only
        pass
    timer = OpTimer(device, annotate=record_function).install()
    try:
        with profile(activities=activities, **options) as prof:
            with record_function("train_step"):
                step()
            gpu_common.synchronize(device)
    finally:
        timer.restore()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(raw))
        trace = json.loads(raw.read_text())
        if trace_path:
            with open(raw, "rb") as f, gzip.open(trace_path, "wb") as g:
                shutil.copyfileobj(f, g)
    return summarize_trace(trace)


def summarize_trace(trace):
    """Kernels, copies and synchronisations of a Chrome trace from PyTorch's profiler,
    attributed to the innermost op range (record_function) that launched them."""
    import bisect
    events = [e for e in trace.get("traceEvents", []) if e.get("ph") == "X"]
    ranges = sorted((e for e in events if e.get("cat") == "user_annotation" and e["name"] != "train_step"),
                    key=lambda e: e["ts"])
    starts = [e["ts"] for e in ranges]
    launches = {e["args"]["correlation"]: e for e in events
                if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})}

    def op_at(ts):
        i = bisect.bisect_right(starts, ts) - 1
        if i >= 0 and ts <= ranges[i]["ts"] + ranges[i].get("dur", 0):
            return ranges[i]["name"]
        return "outside the ops"

    def op_of(event):
        launch = launches.get(event.get("args", {}).get("correlation"))
        return op_at(launch["ts"]) if launch is not None else "unattributed"

    kernels = [e for e in events if e.get("cat") == "kernel"]
    copies = [e for e in events if e.get("cat") in ("gpu_memcpy", "gpu_memset")]
    api = [e for e in events if e.get("cat") in ("cuda_runtime", "cuda_driver")]
    waits = [e for e in api if is_wait(e["name"])] + [e for e in events if e.get("cat") == "cuda_sync"]
    launch_calls = [e for e in api if "Launch" in e["name"]]
    return {
        "op_ranges": len(ranges),
        "kernels": len(kernels),
        "kernel_launch_calls": len(launch_calls),
        "kernels_by_op": dict(collections.Counter(op_of(e) for e in kernels).most_common()),
        "kernel_ms_by_op": {op: sum(e.get("dur", 0) for e in kernels if op_of(e) == op) / 1e3
                            for op in {op_of(e) for e in kernels}},
        "gpu_busy_ms": sum(e.get("dur", 0) for e in kernels + copies) / 1e3,
        "copies": dict(collections.Counter(e["name"] for e in copies)),
        "copies_by_op": dict(collections.Counter(f"{op_of(e)}: {e['name']}" for e in copies).most_common()),
        "waits": dict(collections.Counter(e["name"] for e in waits)),
        "waits_by_op": dict(collections.Counter(f"{op_at(e['ts'])}: {e['name']}" for e in waits).most_common()),
        "top_kernels": collections.Counter(e["name"][:90] for e in kernels).most_common(15),
    }


# --- the report -----------------------------------------------------------------------------

def profile(args, show=lambda result: None):
    """The four passes; ``show(result)`` after the first three (PyTorch's profiler can be slow)."""
    import tinydense
    from tinydense.training import train_step
    device = args.device
    model, optimizer, x, y = gpu_common.densenet_bc_setup(args.depth, args.growth_rate, args.batch, device)
    batches = None
    if args.loader:
        batches = _batches(args.batch, device)

    def step():
        if batches is not None:
            xb, yb = section("DataLoader.batch", next, batches)
            return train_step(model, optimizer, xb, yb)
        return train_step(model, optimizer, x, y)

    for _ in range(args.warmup):
        gpu_common.seconds(step, device)
    result = {"depth": args.depth, "growth_rate": args.growth_rate, "batch": args.batch, "device": device,
              "loader": args.loader, "step": time_steps(step, device, args.repeat)}

    cupy = _cupy(device)
    nvtx = cupy.cuda.nvtx if cupy is not None and getattr(cupy.cuda.nvtx, "available", False) else None
    timer = OpTimer(device, nvtx=nvtx).install()
    try:
        for _ in range(args.op_steps):
            step()
        gpu_common.synchronize(device)
    finally:
        timer.restore()
    result["ops"] = timer.table(args.op_steps)

    counter = SyncCounter(cupy.ndarray if cupy is not None else _NoArray).install()
    try:
        loss, correct = step()
        inside = counter.total()
        float(tinydense.backend.to_numpy(loss))            # what the training loop reads, once in a while
    finally:
        counter.restore()
    result["syncs"] = {"inside_step": inside, "with_loss_read": counter.total(),
                       "by_line": {f"{line} [{how}]": n for (line, how), n in counter.counts.most_common()}}
    result["torch_profile"] = "not run"
    show(result)
    try:
        import torch  # noqa: F401
    except ImportError:
        result["torch_profile"] = "PyTorch not installed: no kernel counts"
    else:
        try:
            result["torch_profile"] = torch_profile(step, device, args.trace)
        except Exception as error:           # the other passes' results still count
            result["torch_profile"] = f"PyTorch's profiler failed: {type(error).__name__}: {error}"
    return result


def _batches(batch, device):
    """Endless training batches of random uint8 images through tinydense's DataLoader
    (shuffled, normalised, cropped and flipped on ``device``, as the training loop gets them)."""
    import numpy as np

    from tinydense.data import DataLoader, ImageDataset
    rng = np.random.default_rng(0)
    data = ImageDataset(rng.integers(0, 256, (4 * batch, 3, 32, 32), dtype=np.uint8),
                        rng.integers(0, 10, 4 * batch), [str(k) for k in range(10)])
    loader = DataLoader(data, batch, shuffle=True, augment=True, mean=data.channel_stats()[0],
                        std=data.channel_stats()[1], device=device)
    while True:
        yield from loader


class _NoArray:
    """On the CPU there is no device array whose reads would wait: nothing to hook."""


def report(r):
    """Passes 1 to 3."""
    s = r["step"]
    out = [f"DenseNet-BC L={r['depth']} k={r['growth_rate']}, batch {r['batch']}, on {r['device']}: one training step "
           f"({'a DataLoader batch and ' if r['loader'] else ''}tinydense.training.train_step)",
           f"  step: queued in {s['host_ms']:.1f} ms of host time, {s['wall_ms']:.1f} ms wall"
           + (f", {s['gpu_ms']:.1f} ms between the GPU's events" if s["gpu_ms"] is not None else ""),
           f"  per op type (per step; outermost calls):\n    {'op':34s} {'calls':>6s} {'host ms':>9s} {'GPU ms':>9s}"]
    for name, row in sorted(r["ops"].items(), key=lambda kv: -max(kv[1]["gpu_ms"], kv[1]["host_ms"])):
        out.append(f"    {name:34s} {row['calls']:6.0f} {row['host_ms']:9.2f} {row['gpu_ms']:9.2f}")
    out.append(f"    {'(all ops)':34s} {'':6s} {sum(row['host_ms'] for row in r['ops'].values()):9.2f} "
               f"{sum(row['gpu_ms'] for row in r['ops'].values()):9.2f}")
    sy = r["syncs"]
    out.append(f"  host-device synchronisations (Python reads of CuPy arrays): {sy['inside_step']} inside the step, "
               f"{sy['with_loss_read']} with the loop's loss read")
    out += [f"    {n:4d}  {line}" for line, n in sy["by_line"].items()]
    return "\n".join(out)


def report_kernels(tp):
    """Pass 4 (a dict from :func:`summarize_trace`, or why there is none)."""
    if not isinstance(tp, dict):
        return f"  {tp}"
    out = [f"  PyTorch's profiler: {tp['kernels']} kernels in the step ({tp['kernel_launch_calls']} launch calls seen), "
           f"GPU busy {tp['gpu_busy_ms']:.1f} ms; {tp['op_ranges']} op ranges",
           f"    {'op':34s} {'kernels':>8s} {'kernel ms':>10s}"]
    for name, n in tp["kernels_by_op"].items():
        out.append(f"    {name:34s} {n:8d} {tp['kernel_ms_by_op'].get(name, 0):10.2f}")
    out.append(f"    copies: {tp['copies'] or 'none'}")
    out += [f"      {n:4d}  copy in {what}" for what, n in list(tp["copies_by_op"].items())[:15]]
    out.append(f"    waiting calls (synchronisations): {tp['waits'] or 'none'}")
    out += [f"      {n:4d}  {what}" for what, n in list(tp["waits_by_op"].items())[:15]]
    if tp["top_kernels"]:
        out.append("    most launched kernels:")
        out += [f"      {n:5d}  {name}" for name, n in tp["top_kernels"]]
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    gpu_common.add_device_option(p)
    p.add_argument("--depth", type=int, default=100)
    p.add_argument("--growth-rate", type=int, default=12)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeat", type=int, default=5, help="pass 1: steps timed (default: 5)")
    p.add_argument("--op-steps", type=int, default=3, help="pass 2: steps timed per op (default: 3)")
    p.add_argument("--no-loader", dest="loader", action="store_false",
                   help="train on one fixed batch, without the DataLoader")
    p.add_argument("--json", help="write the results to this file")
    p.add_argument("--trace", help="write PyTorch's profiler trace here (gzip'd Chrome JSON)")
    args = p.parse_args(argv)
    gpu_common.require(args.device, "gpu_profile")

    def show(result):
        print(report(result), flush=True)
        gpu_common.write_json(args.json, result)
    result = profile(args, show)
    print(report_kernels(result["torch_profile"]), flush=True)
    gpu_common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
