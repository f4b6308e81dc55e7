"""The tinydense command, run as a user runs it: in a subprocess."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tinydense import checkpoint

from train_helpers import same_files, write_cifar

TINY = ["--model", "densenet", "--depth", "7", "--growth-rate", "4", "--batch-size", "32",
        "--limit-train", "64", "--limit-test", "32", "--no-progress", "--no-download"]


def tinydense(*args, cwd, timeout=120):
    """Run ``python -m tinydense ARGS``; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "tinydense", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def one_error_line(result, *fragments):
    """A failure with exactly one line on stderr, naming what was wrong."""
    assert result.returncode != 0, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tinydense: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar(root, per_file=16, test_size=32, learnable=True)
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory, data):
    """A finished two-epoch run (the paper's schedule would drop the rate after epoch 1)."""
    cwd = tmp_path_factory.mktemp("work")
    result = tinydense("train", *TINY, "--epochs", 2, "--data-dir", data, "--out", "runs/tiny", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return cwd / "runs" / "tiny", result


def test_train_writes_a_run(run):
    out, result = run
    assert sorted(os.listdir(out)) == ["best.npz", "config.json", "curves.png", "last.npz", "metrics.csv"]
    assert "epoch 1/2" in result.stdout and "epoch 2/2" in result.stdout and "img/s" in result.stdout
    assert "lr 0.1 " in result.stdout and "lr 0.01 " in result.stdout             # milestones [1]
    assert "done: best test accuracy" in result.stdout
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_bar_shows_the_epoch(tmp_path, data):
    args = [a for a in TINY if a != "--no-progress"]
    result = tinydense("train", *args, "--epochs", 1, "--data-dir", data, "--out", "r", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "epoch 1/1" in result.stderr and "batch" in result.stderr       # the tqdm bar, on stderr


def test_default_run_directory_is_named_after_the_model(tmp_path, data):
    result = tinydense("train", *TINY, "--epochs", 1, "--data-dir", data, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "runs" / "densenet-L7-k4-cifar10" / "last.npz").is_file()


def test_resume_through_the_cli_is_bit_exact(tmp_path, data):
    common = [*TINY, "--drop-rate", "0.2", "--milestones", "2", "--data-dir", data]
    assert tinydense("train", *common, "--epochs", 3, "--out", "a", cwd=tmp_path).returncode == 0
    assert tinydense("train", *common, "--epochs", 1, "--out", "b", cwd=tmp_path).returncode == 0
    result = tinydense("train", "--resume", "--epochs", 3, "--out", "b", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "resuming b at epoch 2 of 3" in result.stdout
    assert same_files(tmp_path / "a" / "last.npz", tmp_path / "b" / "last.npz") > 20
    assert len((tmp_path / "b" / "metrics.csv").read_text().splitlines()) == 4


def test_ctrl_c_saves_exits_130_and_resumes(tmp_path, data):
    proc = subprocess.Popen([sys.executable, "-m", "tinydense", "train", *TINY, "--epochs", "200",
                             "--data-dir", str(data), "--out", "run"], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while not (tmp_path / "run" / "last.npz").exists() and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "--resume" in stderr and "Traceback" not in stderr
    epoch = int(checkpoint.load(tmp_path / "run" / "last.npz")["epoch"])
    assert 1 <= epoch < 200
    result = tinydense("train", "--resume", "--epochs", epoch + 1, "--out", "run", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"epoch {epoch + 1}/{epoch + 1}" in result.stdout


def test_evaluate_prints_accuracy_per_class_and_confusion(run, data, tmp_path):
    out, _ = run
    png = tmp_path / "confusion.png"
    result = tinydense("evaluate", out / "best.npz", "--data-dir", data, "--plot", png, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "test accuracy" in text and " of 32)" in text
    assert "class" in text and "class0" in text and "class9" in text
    assert "confusion matrix (rows: true class, columns: predicted)" in text
    matrix = [line.split()[1:] for line in text.splitlines() if line.startswith("class") and
              len(line.split()) == 11]
    assert len(matrix) == 10 and sum(int(v) for row in matrix for v in row) == 32
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_plot_draws_the_curves(run, tmp_path):
    out, _ = run
    result = tinydense("plot", out, "--out", tmp_path / "c.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    one_error_line(tinydense("plot", tmp_path, cwd=tmp_path), "no metrics file")


def test_summary_of_the_default_model():
    result = tinydense("summary", "--level", 2, cwd=".")
    assert result.returncode == 0, result.stderr
    assert "features.denseblock3" in result.stdout
    assert "Total parameters:   769,162" in result.stdout          # DenseNet-BC L=100 k=12: 0.8M


def test_gradcheck_table():
    result = tinydense("gradcheck", cwd=".")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "conv2d 3x3, padding 1" in result.stdout and "batch_norm (training)" in result.stdout
    lines = result.stdout.splitlines()
    assert lines[-1].endswith("ops pass the gradient check") and lines[-1].split()[0] == lines[-1].split()[2]


# --- bad input: one clear line, non-zero exit, nothing damaged --------------------------------

@pytest.mark.parametrize("args, fragments", [
    (["--depth", "101", "--model", "densenet-bc"], ["depth 101 does not fit"]),
    (["--epochs", "-2"], ["epochs must be a positive integer, got -2"]),
    (["--limit-train", "0"], ["limit-train must be a positive number"]),
    (["--device", "cuda"], ["CUDA is not available"]),
    (["--compression", "1.5", "--model", "densenet-bc"], ["compression must be in (0, 1]"]),
])
def test_bad_training_options(tmp_path, data, args, fragments):
    from tinydense.backend import cuda_available
    if "cuda" in args and cuda_available():
        fragments = ["already holds a run"]
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.npz").write_bytes(b"precious")
    result = tinydense("train", "--data-dir", data, "--out", out, "--no-progress", *args, cwd=tmp_path)
    one_error_line(result, *fragments)
    assert os.listdir(out) == ["last.npz"] and (out / "last.npz").read_bytes() == b"precious"


def test_unknown_names_are_refused_by_argparse(tmp_path):
    for args in (["--model", "vgg"], ["--dataset", "mnist"]):
        result = tinydense("train", *args, cwd=tmp_path)
        assert result.returncode == 2 and "invalid choice" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_resume_without_a_run(tmp_path):
    one_error_line(tinydense("train", "--resume", "--out", "nothing", cwd=tmp_path), "nothing to resume")
    assert not (tmp_path / "nothing").exists()


def test_existing_run_is_not_overwritten(run, data, tmp_path):
    out, _ = run
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    one_error_line(tinydense("train", *TINY, "--data-dir", data, "--out", out, cwd=tmp_path), "already holds a run")
    one_error_line(tinydense("train", "--resume", "--out", out, cwd=tmp_path), "already completed 2 of 2 epochs")
    one_error_line(tinydense("train", "--resume", "--depth", "10", "--epochs", "3", "--out", out, cwd=tmp_path),
                   "--depth 10 differs")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_data_directory_without_cifar(tmp_path):
    result = tinydense("train", *TINY, "--data-dir", tmp_path / "empty", "--out", "r", cwd=tmp_path)
    one_error_line(result, "CIFAR-10 not found", "cifar-10-python.tar.gz", str(tmp_path / "empty"))
    assert not (tmp_path / "r").exists()


def test_corrupt_checkpoints(tmp_path, data, run):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"\x00" * 100)
    one_error_line(tinydense("evaluate", bad, "--data-dir", data, cwd=tmp_path), "not a readable")
    # a damaged last.npz: resume refuses it and leaves it as it was
    out = tmp_path / "run"
    out.mkdir()
    good = (run[0] / "last.npz").read_bytes()
    (out / "last.npz").write_bytes(good[: len(good) // 2])
    one_error_line(tinydense("train", "--resume", "--epochs", 5, "--data-dir", data, "--out", out, cwd=tmp_path),
                   "not a readable tinydense training checkpoint")
    assert (out / "last.npz").read_bytes() == good[: len(good) // 2]
    assert sorted(os.listdir(out)) == ["last.npz"]


def test_gradcheck_table_reports_a_wrong_backward():
    """The table is not a rubber stamp: an op with a wrong backward pass fails."""
    from tinydense import Function
    from tinydense.tools.op_checks import OpCase, check_all_ops, format_table

    class WrongSquare(Function):
        def forward(self, x):
            self.x = x
            return x * x

        def backward(self, g):
            return g * self.x          # should be 2 * g * x

    results = check_all_ops([OpCase("wrong square", WrongSquare.apply, (np.linspace(0.5, 1.5, 6).reshape(2, 3),))])
    assert not results[0].ok and "gradcheck failed" in results[0].detail
    table = format_table(results)
    assert "FAIL" in table and "0 of 1 ops pass" in table
