"""--device cuda where it cannot work: one line that says why and what to do,
for each way it fails (no CuPy, a broken CuPy, CuPy without a GPU or driver, a
driver too old for the wheel); and the GPU line ``tinydense train`` prints."""
from types import SimpleNamespace

import pytest

from tinydense import backend, cli
from tinydense import cuda as td_cuda


class CudaRuntimeError(RuntimeError):
    """What CuPy raises (cupy_backends.cuda.api.runtime.CUDARuntimeError)."""


def fake_cupy(count=1, error=None, driver=13000, wheel=13000):
    """A stand-in for the cupy module: getDeviceCount gives ``count`` or raises ``error``."""
    def device_count():
        if error is not None:
            raise CudaRuntimeError(error)
        return count
    runtime = SimpleNamespace(getDeviceCount=device_count, driverGetVersion=lambda: driver,
                              runtimeGetVersion=lambda: wheel,
                              getDeviceProperties=lambda i: {"name": b"NVIDIA H200", "major": 9, "minor": 0})
    device = SimpleNamespace(id=0, mem_info=(139 * 2**30, 140 * 2**30))
    return SimpleNamespace(__version__="14.2.0", cuda=SimpleNamespace(runtime=runtime, Device=lambda: device))


@pytest.fixture
def no_cupy(monkeypatch):
    monkeypatch.setattr(backend, "cupy", None)
    monkeypatch.setattr(backend, "_cupy_import_error", None)


def reason_with(monkeypatch, **fake):
    monkeypatch.setattr(backend, "cupy", fake_cupy(**fake))
    monkeypatch.setattr(backend, "_cupy_import_error", None)
    return backend.cuda_unavailable_reason()


def test_without_cupy_the_error_names_the_install_lines(no_cupy):
    reason = backend.cuda_unavailable_reason()
    assert reason.startswith("CuPy is not installed.")
    for fragment in ('pip install -e ".[gpu]"', "CUDA 12", "cupy-cuda13x", "CUDA 13", "nvidia-smi"):
        assert fragment in reason, reason
    assert not backend.cuda_available() and not td_cuda.is_available() and td_cuda.unavailable_reason() == reason
    with pytest.raises(ValueError, match=r"device 'cuda' requested but CUDA is not available: CuPy is not installed"):
        backend.check_device("cuda")


def test_a_cupy_that_does_not_import_is_told_apart(monkeypatch):
    monkeypatch.setattr(backend, "cupy", None)
    monkeypatch.setattr(backend, "_cupy_import_error", "ImportError: libcudart.so.13: cannot open shared object file")
    reason = backend.cuda_unavailable_reason()
    assert "CuPy is installed but does not import (ImportError: libcudart.so.13" in reason
    assert "exactly one CuPy wheel" in reason and "cupy-cuda13x" in reason


def test_cupy_without_a_gpu_points_at_nvidia_smi(monkeypatch):
    reason = reason_with(monkeypatch, error="cudaErrorNoDevice: no CUDA-capable device is detected")
    assert reason.startswith("CuPy 14.2.0 is installed but finds no usable GPU (cudaErrorNoDevice: no CUDA-capable "
                             "device is detected)")
    assert "nvidia-smi" in reason and "pip install" not in reason
    assert "no NVIDIA driver is installed" in reason_with(monkeypatch, error="cudaErrorInsufficientDriver: x", driver=0)
    assert "finds no GPU" in reason_with(monkeypatch, count=0)
    assert reason_with(monkeypatch, count=1) is None and backend.check_device("cuda:0") == "cuda"


def test_a_driver_older_than_the_wheel_names_both_versions(monkeypatch):
    reason = reason_with(monkeypatch, error="cudaErrorInsufficientDriver: CUDA driver version is insufficient",
                         driver=12040, wheel=13020)
    assert "the driver supports CUDA 12.4 but this CuPy wheel needs CUDA 13.2" in reason
    assert 'pip install -e ".[gpu]" for a CUDA 12 driver' in reason


@pytest.mark.parametrize("broken", [{}, {"error": "cudaErrorNoDevice: no CUDA-capable device is detected"}])
def test_train_on_cuda_without_one_is_one_line_and_touches_nothing(tmp_path, monkeypatch, capsys, broken):
    monkeypatch.setattr(backend, "cupy", fake_cupy(**broken) if broken else None)
    monkeypatch.setattr(backend, "_cupy_import_error", None)
    out = tmp_path / "run"
    code = cli.main(["train", "--device", "cuda", "--data-dir", str(tmp_path / "nowhere"), "--out", str(out),
                     "--no-progress"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith("tinydense: error: device 'cuda' requested but CUDA is not available: ")
    assert ("nvidia-smi" in lines[0]) and (("cupy-cuda13x" in lines[0]) == (not broken))
    assert "Traceback" not in err and not out.exists()


def test_describe_names_the_gpu_and_its_memory(monkeypatch):
    monkeypatch.setattr(backend, "cupy", fake_cupy(driver=13000))
    assert td_cuda.describe() == ("GPU 0: NVIDIA H200, 140.0 GiB (139.0 GiB free), compute capability 9.0, "
                                  "driver for CUDA 13.0, CuPy 14.2.0")


def test_train_on_cuda_prints_the_gpu_line(tmp_path, monkeypatch, capsys):
    """cmd_train prints describe() under its first line when the run is on the GPU
    (the Trainer is replaced: no GPU here to train on)."""
    from tinydense import training
    config = dict(training.make_config(), device="cuda")

    class GpuTrainer:
        def __init__(self, options, out, **kwargs):
            self.config, self.data_dir, self.stop_signal = config, tmp_path, None
            self.model = training.build_model(dict(config, device="cpu", depth=10))
            self.train_set = self.test_set = [0] * 3
            self.val_set = None

        def fit(self):
            return "interrupted"
    monkeypatch.setattr(training, "Trainer", GpuTrainer)
    monkeypatch.setattr(td_cuda, "describe", lambda: "GPU 0: NVIDIA H200, 140.0 GiB")
    assert cli.main(["train", "--out", str(tmp_path / "run")]) == cli.EXIT_INTERRUPTED
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("on cuda") and lines[1] == "GPU 0: NVIDIA H200, 140.0 GiB", lines


@pytest.mark.skipif(not backend.cuda_available(), reason="CUDA not available")
def test_a_real_gpu_run_prints_its_gpu(tmp_path):
    import subprocess
    import sys

    from train_helpers import write_cifar
    write_cifar(tmp_path, per_file=16, test_size=32, learnable=True)
    result = subprocess.run([sys.executable, "-m", "tinydense", "train", "--device", "cuda", "--model", "densenet",
                             "--depth", "7", "--growth-rate", "4", "--epochs", "1", "--batch-size", "16",
                             "--data-dir", str(tmp_path), "--out", str(tmp_path / "run"), "--no-progress"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    name = backend.cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    lines = result.stdout.splitlines()
    assert lines[0].endswith("on cuda") and lines[1].startswith(f"GPU 0: {name}, "), lines
    assert "GiB free" in lines[1] and "done: final test accuracy" in result.stdout
