"""The GPU verification scripts (benchmarks/gpu_*.py, bench_gpu.py, gpu_verify.sh) in
their CPU mode: the same code on NumPy, so that they do not rot between the rare
runs on a GPU. Tiny models; a few seconds."""
import collections
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_gpu  # noqa: E402
import gpu_parity  # noqa: E402
import gpu_profile  # noqa: E402

from train_helpers import write_cifar  # noqa: E402

TINY = ["--device", "cpu", "--depth", "10", "--growth-rate", "4", "--batch", "2"]


def test_parity_passes_cpu_against_cpu_and_catches_a_difference(monkeypatch, capsys):
    args = TINY + ["--steps", "2", "--curve-batch", "2"]
    assert gpu_parity.main(args)
    out = capsys.readouterr().out
    assert out.count("largest difference 0.00e+00") == 2 and out.rstrip().endswith("parity: PASS"), out
    assert "largest relative difference 0.00e+00" in out

    real, calls = gpu_parity._run_float64, []

    def second_run_off(device, efficient, a):       # the second ("GPU") run differs in one gradient
        result = real(device, efficient, a)
        calls.append(device)
        if len(calls) % 2 == 0:
            name = next(k for k in result if k.startswith("grad "))
            result[name] = result[name] * (1 + 1e-9)
        return result
    monkeypatch.setattr(gpu_parity, "_run_float64", second_run_off)
    assert not gpu_parity.main(args + ["--steps", "0"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.endswith("in grad features.conv0.weight: FAIL") for line in lines[1:]] == [True, True, False]
    assert lines[-1] == "parity: FAIL"


def test_relative_difference():
    assert gpu_parity._relative(np.array([2.0, -4.0]), np.array([2.0, -4.002])) == pytest.approx(5e-4)
    assert gpu_parity._relative(np.zeros(3), np.array([0, 1e-3, 0])) == 1e-3


def test_bench_runs_on_the_cpu(tmp_path, capsys):
    path = tmp_path / "bench.json"
    results = bench_gpu.main(TINY[:2] + ["--depths", "10", "--growth-rate", "4", "--batch", "2", "--pairs", "2",
                                         "--warmup", "1", "--json", str(path)])
    assert json.loads(path.read_text()) == json.loads(json.dumps(results))
    (r,) = results
    assert r["depth"] == 10 and r["steps"] == 2 and r["median_ms"]["tinydense"] > 0
    assert set(r["ratio"]) == set(r["median_ms"]) - {"tinydense"}
    out = capsys.readouterr().out
    assert "DenseNet-BC L=10 k=4" in out and "not measured on the CPU" in out


def test_profile_counts_each_op_once_under_its_own_name(tmp_path, capsys):
    before = {cls: dict(cls.__dict__) for cls in gpu_profile.function_classes()}
    path = tmp_path / "profile.json"
    r = gpu_profile.main(TINY + ["--warmup", "1", "--repeat", "1", "--op-steps", "1", "--json", str(path)])
    assert json.loads(path.read_text())["ops"].keys() == r["ops"].keys()
    calls = {name: round(row["calls"]) for name, row in r["ops"].items()}
    # DenseNet-BC L=10: 3 blocks of 1 layer, each block one FusedDenseBlock op; the 2 transitions are
    # BatchNormReLUConv1x1; Conv2d is the stem only (the convs inside the fused ops count there)
    assert calls["FusedDenseBlock.forward"] == calls["FusedDenseBlock.backward"] == 3
    assert calls["BatchNormReLUConv1x1.forward"] == calls["BatchNormReLUConv1x1.backward"] == 2
    assert calls["Conv2d.forward"] == calls["Conv2d.backward"] == 1
    assert calls["SGD.step"] == calls["SGD.zero_grad"] == calls["CrossEntropy.forward"] == 1
    assert r["syncs"] == {"inside_step": 0, "with_loss_read": 0, "by_line": {}}      # NumPy: nothing to wait for
    assert {cls: dict(cls.__dict__) for cls in gpu_profile.function_classes()} == before   # the wrappers are gone
    assert "per op type" in capsys.readouterr().out


def test_sync_counter_names_the_line_that_reads():
    class Probe:                       # stands in for cupy.ndarray: every read is a synchronisation
        def __bool__(self):
            return True

        def item(self):
            return 1.5

    counter = gpu_profile.SyncCounter(Probe).install()
    try:
        probe = Probe()
        if probe:                                   # implicit bool()
            value = probe.item()
        line = sys._getframe().f_lineno - 2
    finally:
        counter.restore()
    assert value == 1.5 and counter.total() == 2
    where = f"tests/test_gpu_scripts.py:{line}"
    assert counter.counts == collections.Counter({(f"{where} (test_sync_counter_names_the_line_that_reads)",
                                                   "__bool__"): 1,
                                                  (f"tests/test_gpu_scripts.py:{line + 1} "
                                                   f"(test_sync_counter_names_the_line_that_reads)", "item"): 1})
    assert "__bool__" in Probe.__dict__ and "get" not in Probe.__dict__   # put back as it was
    bool(probe)
    assert counter.total() == 2


def test_trace_summary_attributes_kernels_copies_and_waits_to_ops():
    def x(cat, name, ts, dur=1, **args):
        return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "args": args}
    trace = {"traceEvents": [
        x("user_annotation", "train_step", 0, 100),
        x("user_annotation", "Conv2d.forward", 10, 10),
        x("cuda_driver", "cuLaunchKernel", 11, correlation=1),
        x("cuda_runtime", "cudaLaunchKernel", 12, correlation=2),
        x("user_annotation", "SGD.step", 30, 10),
        x("cuda_driver", "cuLaunchKernel", 31, correlation=3),
        x("cuda_runtime", "cudaMemcpyAsync", 35, correlation=4),
        x("cuda_runtime", "cudaStreamSynchronize", 36, correlation=5),
        x("cuda_runtime", "cudaMemcpy", 37, correlation=7),
        x("cuda_driver", "cuLaunchKernel", 50, correlation=6),          # outside every op
        x("kernel", "gemm", 100, 4, correlation=1), x("kernel", "gemm", 104, 4, correlation=2),
        x("kernel", "axpy", 108, 2, correlation=3), x("kernel", "fill", 110, 2, correlation=6),
        x("gpu_memcpy", "Memcpy DtoH (Device -> Pageable)", 112, 1, correlation=4),
        {"ph": "s", "cat": "ac2g", "name": "flow", "ts": 11, "id": 1},
    ]}
    s = gpu_profile.summarize_trace(trace)
    assert s["kernels"] == 4 and s["kernel_launch_calls"] == 4 and s["op_ranges"] == 2
    assert s["kernels_by_op"] == {"Conv2d.forward": 2, "SGD.step": 1, "outside the ops": 1}
    assert s["kernel_ms_by_op"]["Conv2d.forward"] == pytest.approx(0.008)
    assert s["gpu_busy_ms"] == pytest.approx(0.013)
    assert s["copies_by_op"] == {"SGD.step: Memcpy DtoH (Device -> Pageable)": 1}
    assert s["waits_by_op"] == {"SGD.step: cudaStreamSynchronize": 1, "SGD.step: cudaMemcpy": 1}
    assert s["waits"] == {"cudaStreamSynchronize": 1, "cudaMemcpy": 1}


def test_gpu_verify_script_cpu_mode_writes_a_flat_summary(tmp_path):
    """gpu_verify.sh --cpu, three of its parts: the plumbing (budgets, summary, artifacts)."""
    data, out = tmp_path / "data", tmp_path / "out"
    write_cifar(data, per_file=32, test_size=64, learnable=True)
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_verify.sh"), "--cpu", "--parts",
                             "env,train,evaluate", str(data)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OUT": str(out), "TOTAL": "200"})
    assert result.returncode == 0, result.stdout + result.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == ["artifacts.tar.gz", "env.txt", "summary.txt", "train.log"], files
    summary = (out / "summary.txt").read_text()
    for fragment in ("env: exit 0", "train: exit 0", "evaluate: exit 0", "evaluate on the CPU: ",
                     "tinydense.cuda.is_available(): ", "done: final test accuracy"):
        assert fragment in summary, summary
    with tarfile.open(out / "artifacts.tar.gz") as tar:
        names = tar.getnames()
    assert "run/best.npz" in names and "run/metrics.csv" in names, names
