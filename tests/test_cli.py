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


def environment():
    """The environment of the commands: this one without $TINYDENSE_DATA (each test says
    where its data are, with --data-dir or through a run's recorded directory)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("TINYDENSE_DATA", None)
    return env


def tinydense(*args, cwd, timeout=120):
    """Run ``python -m tinydense ARGS``; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "tinydense", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=environment())


def in_process(*args, capsys):
    """``tinydense ARGS`` run by ``tinydense.cli.main`` in this process (for the quick
    refusals: no interpreter start-up); returns an object like a CompletedProcess."""
    from types import SimpleNamespace

    from tinydense.cli import main
    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=captured.out, stderr=captured.err)


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
    write_cifar(root, per_file=16, test_size=48, learnable=True)           # the runs use 32 (--limit-test)
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
    assert "done: final test accuracy" in result.stdout and "best.npz holds epoch" in result.stdout
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
    assert "test accuracy" in text and " of 32 test images" in text
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
    (["--momentum", "1"], ["momentum must be in [0, 1), got 1.0"]),
    (["--momentum", "-0.1"], ["momentum must be a non-negative number"]),
    (["--compression", "0.01", "--depth", "40"], ["--compression", "0 channels in transition 1", "96 channels"]),
    (["--device", "cpu:7"], ["unknown device 'cpu:7'"]),
    (["--model", "resnet", "--depth", "20", "--growth-rate", "24"], ["--growth-rate apply to DenseNets only"]),
    (["--model", "resnet", "--drop-rate", "0.2"], ["--drop-rate apply to DenseNets only"]),
    (["--threads", "0"], ["threads must be a positive integer"]),
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


def test_an_out_that_is_no_run_directory_is_refused_before_anything(tmp_path, data, capsys, monkeypatch):
    """Regression: --out existing_file printed the header and loaded the data first;
    a folder of other files was written into."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes").write_text("mine")
    result = in_process("train", *TINY, "--data-dir", data, "--out", "notes", capsys=capsys)
    one_error_line(result, "--out notes is a file, not a directory")
    assert result.stdout == "" and (tmp_path / "notes").read_text() == "mine"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.txt").write_text("a")
    one_error_line(in_process("train", *TINY, "--data-dir", tmp_path / "nothing", "--out", "mine", capsys=capsys),
                   "--out mine is not empty and not a tinydense run (it holds a.txt)", "--out-exists-ok")
    result = in_process("train", *TINY, "--epochs", 1, "--data-dir", data, "--out", "mine", "--out-exists-ok",
                        capsys=capsys)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path / "mine")) == ["a.txt", "best.npz", "config.json", "curves.png", "last.npz",
                                                     "metrics.csv"]


def test_the_header_and_the_last_line_say_what_the_run_does(tmp_path, data, capsys, monkeypatch):
    """Regression: "1 epochs", "x0.1 at epochs []", and a "best" accuracy chosen on the test set
    presented as the result."""
    result = tinydense("train", *TINY, "--epochs", 1, "--data-dir", data, "--out", "r", "--threads", 1,
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    header = result.stdout.splitlines()[:2]
    assert header[0].endswith(", 1 BLAS thread")
    assert header[1].startswith("recipe: 1 epoch, batch 32, lr 0.1, no learning-rate drops, momentum 0.9 (Nesterov)")
    assert "epochs" not in header[1] and "[]" not in header[1]
    last = result.stdout.splitlines()[-1]
    assert last.startswith("done: final test accuracy ") and "(epoch 1), the number to report" in last
    assert "chosen on the test set (an optimistic number; --val-split N" in last
    monkeypatch.chdir(tmp_path)
    result = in_process("train", *TINY, "--epochs", 3, "--val-split", 16, "--data-dir", data, "--out", "v",
                        capsys=capsys)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "cifar10 with 64 training images, 16 of them held out for validation (--val-split)" in lines[0]
    assert "lr 0.1 x0.1 after epochs 1, 2" in lines[1]
    assert "val loss" in lines[2] and "the best validation accuracy" in lines[-1]
    estimate = next(line for line in lines if line.startswith("estimated time for the run: "))
    assert "3 epochs x 2 batches" in estimate and "testing 48 images per epoch" in estimate   # 32 test + 16 val


def test_sigterm_saves_exits_143_and_a_second_run_is_locked_out(tmp_path, data):
    """Regression: SIGTERM killed a run without saving, and a second train into the same
    --out ran beside the first."""
    proc = subprocess.Popen([sys.executable, "-m", "tinydense", "train", *TINY, "--epochs", "200",
                             "--data-dir", str(data), "--out", "run"], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment())
    try:
        for line in proc.stdout:                           # wait for the first epoch's line
            if line.startswith("epoch "):
                break
        second = tinydense("train", *TINY, "--epochs", "200", "--data-dir", data, "--out", "run", cwd=tmp_path)
        third = tinydense("train", "--resume", "--out", "run", "--no-progress", cwd=tmp_path)
        assert proc.poll() is None, "the first run ended too early for this test"
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    for other in (second, third):
        one_error_line(other, "is in use by another tinydense run", f"(pid {proc.pid} on ")
    assert proc.returncode == 143, stderr
    assert "SIGTERM: saving after this batch" in stderr and "--resume" in stderr and "Traceback" not in stderr
    epoch = int(checkpoint.load(tmp_path / "run" / "last.npz")["epoch"])
    assert 1 <= epoch < 200
    assert not (tmp_path / "run" / ".tinydense.lock").exists()
    result = tinydense("train", "--resume", "--epochs", epoch + 1, "--out", "run", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, epoch + 2))


def test_evaluate_uses_the_runs_test_images_unless_told(run, data, tmp_path):
    """Regression: evaluate used the whole test set of a run trained with --limit-test."""
    out, _ = run
    default = tinydense("evaluate", out / "best.npz", "--data-dir", data, cwd=tmp_path)
    assert default.returncode == 0, default.stderr
    assert " of 32 test images: the first 32, as the run used (--limit-test 32))" in default.stdout
    every = tinydense("evaluate", out / "best.npz", "--data-dir", data, "--limit-test", "all", cwd=tmp_path)
    assert " of 48 test images: all (--limit-test all))" in every.stdout
    some = tinydense("evaluate", out / "best.npz", "--data-dir", data, "--limit-test", 8, cwd=tmp_path)
    assert " of 8 test images: the first 8 (--limit-test 8))" in some.stdout


def test_evaluate_refuses_a_checkpoint_with_non_finite_weights(run, data, tmp_path, capsys):
    out, _ = run
    state = checkpoint.load(out / "best.npz")
    state["model"]["classifier.weight"][0, 0] = np.inf
    checkpoint.save(state, tmp_path / "broken.npz")
    one_error_line(in_process("evaluate", tmp_path / "broken.npz", "--data-dir", tmp_path / "not-read", capsys=capsys),
                   "holds NaN or infinite weights", "classifier.weight", "Evaluate an earlier checkpoint")


def test_images_take_the_format_of_their_suffix_and_are_checked_first(run, data, tmp_path, capsys):
    """Regression: curves.svg and conf.jpg held PNG bytes; --plot into a missing directory
    failed after the whole evaluation; plot titled a run by its folder's name."""
    out, _ = run
    result = tinydense("evaluate", out / "best.npz", "--data-dir", data, "--plot", tmp_path / "conf.jpg", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "conf.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    for target, message in ((tmp_path / "missing" / "conf.png", "there is no directory"),
                            (tmp_path / "conf.txt", "must end in one of")):
        result = in_process("evaluate", out / "best.npz", "--data-dir", tmp_path / "not-read", "--plot", target,
                            capsys=capsys)
        one_error_line(result, message)
        assert result.stdout == ""                                       # nothing evaluated
    renamed = tmp_path / "my-folder"
    renamed.mkdir()
    for name in ("metrics.csv", "config.json"):
        (renamed / name).write_bytes((out / name).read_bytes())
    result = in_process("plot", renamed, "--out", tmp_path / "curves.svg", capsys=capsys)
    assert result.returncode == 0, result.stderr
    svg = (tmp_path / "curves.svg").read_text()
    assert svg.startswith("<?xml") and "<svg" in svg
    assert "densenet-L7-k4-cifar10" in svg and "my-folder" not in svg          # the run's name as the title
    one_error_line(in_process("plot", renamed, "--out", tmp_path / "curves.bmp", capsys=capsys), "must end in one of")


def test_summary_of_a_huge_image_is_refused_with_an_estimate(capsys):
    """Regression: a huge --image-size died in a raw allocation error."""
    result = in_process("summary", "--depth", 40, "--image-size", 100000, capsys=capsys)
    one_error_line(result, "summary: an input of 1x3x100000x100000 would need about", "GB for the layer outputs")


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


# --- evaluate A.npz B.npz ...: an ensemble (tools/ensemble.py) ------------------------------

def _accuracies(stdout):
    """{first word of a line: its test accuracy in %} of evaluate's ensemble table."""
    return {line.split()[0]: float(line.split("test accuracy ")[1].split("%")[0])
            for line in stdout.splitlines() if "test accuracy " in line}


def test_an_ensemble_of_one_checkpoint_twice_is_that_checkpoint(run, data, tmp_path):
    out, _ = run
    single = tinydense("evaluate", out / "best.npz", "--data-dir", data, cwd=tmp_path)
    twice = tinydense("evaluate", out / "best.npz", out / "best.npz", "--data-dir", data, cwd=tmp_path)
    assert single.returncode == 0 and twice.returncode == 0, twice.stderr
    alone = float(single.stdout.split("test accuracy ")[1].split("%")[0])
    acc = _accuracies(twice.stdout)
    assert acc[str(out / "best.npz")] == alone and acc["ensemble"] == alone, twice.stdout
    assert "the averaged softmax of these 2" in twice.stdout and "the first 32, as the run used" in twice.stdout


def test_an_ensemble_averages_the_softmax_of_its_members(run, data, tmp_path, capsys):
    """Against numpy: each member's logits on its own normalisation, softmax, mean, argmax."""
    from tinydense.autograd import Tensor, no_grad
    from tinydense.data import DataLoader, load_cifar
    from tinydense.training import load_model
    out, _ = run
    state = checkpoint.load(out / "best.npz")
    rng = np.random.default_rng(1)
    paths = [out / "best.npz"]
    for i in range(2):                                # two more members: the weights moved at random
        changed = {k: (v + 0.3 * rng.standard_normal(v.shape).astype(v.dtype)
                       if k.endswith("weight") else v) for k, v in state["model"].items()}
        checkpoint.save(dict(state, model=changed), tmp_path / f"m{i}.npz")
        paths.append(tmp_path / f"m{i}.npz")
    result = in_process("evaluate", *paths, "--data-dir", data, "--limit-test", "all", capsys=capsys)
    assert result.returncode == 0, result.stderr
    test = load_cifar("cifar10", data, train=False)
    probabilities = []
    for path in paths:
        model, s = load_model(path, device="cpu")
        model.eval()
        (x, y), = DataLoader(test, len(test), mean=s["data"]["mean"], std=s["data"]["std"])
        with no_grad():
            z = model(x).data.astype(np.float64)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        probabilities.append(e / e.sum(axis=1, keepdims=True))
    labels = y.data
    expected = [100 * np.mean(p.argmax(1) == labels) for p in probabilities]
    expected.append(100 * np.mean(np.mean(probabilities, axis=0).argmax(1) == labels))
    acc = _accuracies(result.stdout)
    assert [acc[str(p)] for p in paths] + [acc["ensemble"]] == pytest.approx(expected, abs=0.006), result.stdout
    assert result.stdout.count(" of 48)") == 4


def test_an_ensemble_of_different_data_sets_or_bad_files_is_refused(run, data, tmp_path, capsys):
    out, _ = run
    state = checkpoint.load(out / "best.npz")
    model = dict(state["model"])
    model["classifier.weight"] = np.zeros((100, model["classifier.weight"].shape[1]), np.float32)
    model["classifier.bias"] = np.zeros(100, np.float32)
    checkpoint.save(dict(state, model=model, config=dict(state["config"], dataset="cifar100")),
                    tmp_path / "c100.npz")
    not_read = tmp_path / "not-read"                           # refused before any data are read
    one_error_line(in_process("evaluate", out / "best.npz", tmp_path / "c100.npz", "--data-dir", not_read,
                              capsys=capsys), "trained on different ones", "best.npz on cifar10",
                   "c100.npz on cifar100")
    (tmp_path / "junk.npz").write_bytes(b"\x00" * 64)
    for bad, message in ((tmp_path / "missing.npz", "no checkpoint at"), (tmp_path / "junk.npz", "not a readable"),
                         (tmp_path / "w.pth", "is a PyTorch file")):
        one_error_line(in_process("evaluate", out / "best.npz", bad, "--data-dir", not_read, capsys=capsys),
                       str(bad), message)
    result = in_process("evaluate", out / "best.npz", out / "last.npz", "--plot", tmp_path / "c.png",
                        "--data-dir", not_read, capsys=capsys)
    one_error_line(result, "--plot draws the confusion matrix of one checkpoint", "2 were given")
    assert not (tmp_path / "c.png").exists()
