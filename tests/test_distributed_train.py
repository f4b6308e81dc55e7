"""``tinydense train`` on two processes (training/distributed.py), run as a user runs it.

Two processes with a global batch of 32 take the steps one process takes (to float32
rounding: the same images per step, averaged gradients, batch norm over the whole batch);
rank 0 alone prints and writes; a run resumed on another number of processes keeps the global
batch and says so, and still ends where the uninterrupted run ends; a batch that does not
divide among the processes is refused by every rank, naming it; Ctrl-C stops both ranks
after the same batch and --resume continues.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tinydense import checkpoint
from tinydense.distributed import find_mpiexec, mpiexec_command

from train_helpers import write_cifar

TINY = ["--model", "densenet-bc", "--depth", "10", "--growth-rate", "4", "--batch-size", "32",
        "--limit-train", "64", "--limit-test", "32", "--no-progress", "--no-download"]
pytestmark = pytest.mark.slow


def tinydense(*args, cwd, timeout=180):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("TINYDENSE_DATA", None)
    return subprocess.run([sys.executable, "-m", "tinydense", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar(root, per_file=16, test_size=48, learnable=True)
    return root


def arrays(path):
    """The model's arrays and the momentum buffers of a run's last.npz."""
    state = checkpoint.load(path)
    out = {f"model.{k}": np.asarray(v) for k, v in state["model"].items()}
    out.update({f"opt.{k}": v for k, v in state["optimizer"].items() if k.startswith("buffer.")})
    return out


def assert_same_run(a, b):
    """Two runs' models and optimizers agree to float32 rounding, as amplified by a few steps: each
    array within 2e-3 (weights, running statistics) or 3e-2 (momentum) of its largest value. (A few
    float32 roundings flip a ReLU or a near-cancelling sum: one process with 1 and with 2 threads
    differs this much too; the float64 equality is test_distributed_mpi.py's. Without synchronized
    batch norm the differences here are 0.4 and more.)"""
    a, b = arrays(a), arrays(b)
    assert a.keys() == b.keys()
    for key in a:
        if a[key].dtype.kind == "f":
            scale = np.abs(a[key]).max()
            assert np.abs(a[key] - b[key]).max() <= (3e-2 if key.startswith("opt.") else 2e-3) * scale, key
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.fixture(scope="module")
def one_process(data, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("one")
    result = tinydense("train", *TINY, "--epochs", 2, "--data-dir", data, "--out", "run", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return cwd / "run" / "last.npz"


def test_two_processes_train_like_one(data, one_process, tmp_path):
    result = tinydense("train", *TINY, "--epochs", 2, "--nproc", 2, "--data-dir", data, "--out", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.count("data parallel: 2 processes (MPI), 16 images of every batch of 32 each") == 1
    assert out.count("epoch 2/2") == 1 and out.count("done: final test accuracy") == 1     # rank 0 alone prints
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["best.npz", "config.json", "curves.png",
                                                                    "last.npz", "metrics.csv"]
    assert_same_run(tmp_path / "run" / "last.npz", one_process)
    one, two = (np.genfromtxt(d / "metrics.csv", delimiter=",", names=True) for d in (one_process.parent, tmp_path / "run"))
    np.testing.assert_allclose(two["test_acc"], one["test_acc"], atol=1 / 32 + 1e-9)   # at most one image apart


def test_resumed_on_another_number_of_processes_keeps_the_global_batch(data, tmp_path):
    first = tinydense("train", *TINY, "--epochs", 1, "--data-dir", data, "--out", "one", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    resumed = {}
    for name, nproc in (("one", []), ("two", ["--nproc", 2])):
        resumed[name] = tinydense("train", "--resume", "--epochs", 2, *nproc, "--out", name, "--no-progress",
                                  cwd=tmp_path)
        assert resumed[name].returncode == 0, resumed[name].stdout + resumed[name].stderr
    assert ("resumed on 2 processes, the run was on 1: the global batch stays 32 images, now 16 per process"
            in resumed["two"].stdout)
    assert "resuming two at epoch 2 of 2" in resumed["two"].stdout and "resumed on" not in resumed["one"].stdout
    assert_same_run(tmp_path / "two" / "last.npz", tmp_path / "one" / "last.npz")
    assert checkpoint.load(tmp_path / "two" / "last.npz")["ranks"] == 2


def test_a_batch_that_does_not_divide_is_refused_naming_the_rank(data, tmp_path):
    result = tinydense("train", *TINY, "--batch-size", 33, "--epochs", 1, "--nproc", 2, "--data-dir", data,
                       "--out", "run", cwd=tmp_path)
    assert result.returncode != 0
    # every rank refuses the batch; whichever stops the others first is named (a race, either rank)
    assert re.search(r"rank [01] of 2: failed with ValueError: the batch of 33 images \(the global batch\) "
                     r"does not divide among 2 processes", result.stderr), result.stderr
    assert not (tmp_path / "run").exists()


def test_ctrl_c_stops_every_rank_after_the_same_batch_and_resume_continues(data, tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "tinydense", "train", *TINY, "--epochs", "200", "--nproc", "2",
                             "--data-dir", str(data), "--out", "run"], cwd=tmp_path, text=True, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 90
        while not (tmp_path / "run" / "last.npz").exists() and time.time() < deadline:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)          # Ctrl-C reaches the whole foreground process group
        stdout, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stdout + stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    epoch = int(checkpoint.load(tmp_path / "run" / "last.npz")["epoch"])
    result = tinydense("train", "--resume", "--epochs", epoch + 1, "--nproc", 2, "--out", "run", "--no-progress",
                       cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"epoch {epoch + 1}/{epoch + 1}" in result.stdout


def test_the_mpiexec_command_drops_nproc(monkeypatch):
    assert find_mpiexec() is not None
    command = mpiexec_command(3, ["train", "--nproc", "3", "--epochs", "2", "--nproc=3", "--out", "x"])
    assert command[1:] == ["-n", "3", sys.executable, "-m", "tinydense", "train", "--epochs", "2", "--out", "x"]
    with pytest.raises(ValueError, match="--nproc must be a positive number of processes, got 0"):
        mpiexec_command(0, [])
    monkeypatch.setattr("shutil.which", lambda *args, **kwargs: None)
    with pytest.raises(ValueError, match=r"--nproc 2 needs mpiexec \(an MPI runtime\): pip install"):
        mpiexec_command(2, [])
