"""What a newcomer tripped on (issue 18, section 2), each kept fixed: the data folder,
the BLAS threads, the size guard, the testing batch, failed writes, damaged checkpoints,
and the smaller surprises of the command line."""
import errno
import json
import pickle
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

from tinydense import checkpoint, memory
from tinydense.data import SPECS
from tinydense.training import Trainer, build_model, make_config, read_checkpoint
from tinydense.training import runfiles, sharing
from tinydense.training.size import check_fits, estimate

from test_cli import in_process, one_error_line
from train_helpers import write_cifar

TINY = dict(model="densenet", depth=7, growth_rate=4, epochs=1, batch_size=16, limit_train=32, limit_test=32)
CLI_TINY = ["--model", "densenet", "--depth", "7", "--growth-rate", "4", "--batch-size", "16", "--epochs", "1",
            "--limit-train", "32", "--limit-test", "32", "--no-progress"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar(root, per_file=8, test_size=32, learnable=True)
    return root


@pytest.fixture
def offline(monkeypatch):
    """No network, no $TINYDENSE_DATA; ``offline.urls`` lists every download tried."""
    monkeypatch.delenv("TINYDENSE_DATA", raising=False)
    tried = []

    def urlopen(url, *args, **kwargs):
        tried.append(url)
        raise OSError("offline (test)")
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return tried


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    """A finished one-epoch run whose config.json records the data folder."""
    out = tmp_path_factory.mktemp("runs") / "run"
    Trainer(TINY, out, data_dir=data, progress=False, log=lambda line: None).fit()
    return out


def _quiet(config, out, data, **kwargs):
    lines = []
    return Trainer(config, out, data_dir=data, progress=False, log=lines.append, **kwargs), lines


# --- 1, 2: the data folder ------------------------------------------------------------------

def test_evaluate_reads_the_data_folder_the_run_recorded(run, tmp_path, monkeypatch, capsys, offline):
    """Regression: README's train-then-evaluate tried to download 170 MB into ./data."""
    monkeypatch.chdir(tmp_path)
    result = in_process("evaluate", run / "best.npz", capsys=capsys)
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout and offline == [] and not (tmp_path / "data").exists()


def test_a_mistyped_data_dir_is_an_error_not_a_download(tmp_path, monkeypatch, capsys, offline):
    monkeypatch.chdir(tmp_path)
    one_error_line(in_process("train", *CLI_TINY, "--data-dir", "dtaa", "--out", "a", capsys=capsys),
                   "CIFAR-10 not found in", "dtaa", "--download")
    assert offline == [] and not (tmp_path / "dtaa").exists() and not (tmp_path / "a").exists()
    # asked for, or into the default folder: it is tried (and fails here, offline)
    one_error_line(in_process("train", *CLI_TINY, "--data-dir", "dtaa", "--download", "--out", "b", capsys=capsys))
    assert len(offline) == 1
    one_error_line(in_process("train", *CLI_TINY, "--out", "c", capsys=capsys))
    assert len(offline) == 2
    one_error_line(in_process("train", *CLI_TINY, "--download", "--no-download", capsys=capsys), "contradict")


def test_evaluate_with_a_folder_without_cifar_says_so(run, tmp_path, capsys, offline):
    empty = tmp_path / "empty"
    empty.mkdir()
    one_error_line(in_process("evaluate", run / "best.npz", "--data-dir", empty, capsys=capsys),
                   "CIFAR-10 not found in", str(empty), "--download")
    assert offline == [] and list(empty.iterdir()) == []


def test_a_relative_data_dir_is_recorded_resolved_and_resumes_from_elsewhere(data, tmp_path, monkeypatch, capsys,
                                                                            offline):
    """Regression: config.json held the --data-dir as typed; --resume from another folder failed."""
    import shutil
    work = tmp_path / "work"
    shutil.copytree(data, work / "cifar")
    monkeypatch.chdir(work)
    result = in_process("train", *CLI_TINY, "--data-dir", "cifar", "--out", "run", capsys=capsys)
    assert result.returncode == 0, result.stderr
    recorded = json.loads((work / "run" / "config.json").read_text())["data_dir"]
    assert recorded == str((work / "cifar").resolve())
    monkeypatch.chdir(tmp_path)
    result = in_process("train", "--out", work / "run", "--resume", "--epochs", "2", "--no-progress", capsys=capsys)
    assert result.returncode == 0, result.stderr
    assert offline == []


# --- 3: sharing the machine -----------------------------------------------------------------

def test_oversubscription_is_told_with_the_threads_advice():
    assert sharing.oversubscription(threads=2, cpus=2, others=0, load=0.3) is None
    one = sharing.oversubscription(threads=2, cpus=2, others=1, load=0.0)
    assert "1 other tinydense run is running" in one and "--threads 1" in one
    three = sharing.oversubscription(threads=16, cpus=16, others=3, load=0.0)
    assert "3 other tinydense runs are running" in three and "--threads 4" in three
    busy = sharing.oversubscription(threads=8, cpus=8, others=0, load=6.2)
    assert "load average 6.2 on 8 cores" in busy and "--threads 2" in busy


def test_other_runs_are_counted_while_they_hold_their_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(sharing, "RUNS_DIR", tmp_path / "runs")
    assert sharing.other_runs() == 0
    first, second = sharing.register(), sharing.register()
    assert sharing.other_runs() == 2 and sharing.other_runs(own=first) == 1
    # a process that ended without unregistering (kill -9) is not counted, and its file goes
    sharing.unregister(second)
    stale = tmp_path / "runs" / "123-abc.run"
    stale.write_text("")
    assert sharing.other_runs(own=first) == 0 and not stale.exists()
    with subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time\n"
                           f"fd = os.open({str(tmp_path / 'runs' / 'child.run')!r}, os.O_RDWR | os.O_CREAT)\n"
                           "fcntl.flock(fd, fcntl.LOCK_EX)\n"
                           "sys.stdout.write('ready\\n'); sys.stdout.flush(); time.sleep(30)"],
                          stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout.readline() == "ready\n"
        assert sharing.other_runs(own=first) == 1
        child.kill()
    child.wait()
    assert sharing.other_runs(own=first) == 0
    sharing.unregister(first)


def test_a_run_registers_itself_and_the_cli_warns_beside_another(data, tmp_path, monkeypatch, capsys, offline):
    monkeypatch.setattr(sharing, "RUNS_DIR", tmp_path / "runs")
    other = sharing.register()
    seen = []

    class Looking(Trainer):
        def train_step(self, x, y):
            seen.append(sharing.other_runs(own=other))
            return super().train_step(x, y)
    monkeypatch.setattr("tinydense.training.Trainer", Looking)
    result = in_process("train", *CLI_TINY, "--data-dir", data, "--out", tmp_path / "run", capsys=capsys)
    sharing.unregister(other)
    assert result.returncode == 0, result.stderr
    assert "warning: 1 other tinydense run is running" in result.stderr and "--threads" in result.stderr
    assert seen and set(seen) == {1}                       # the run itself, counted while it trains
    assert sharing.other_runs() == 0                       # and gone when it has finished


def test_resuming_with_other_blas_threads_says_it_is_not_bit_exact(run, data, tmp_path):
    import shutil
    out = tmp_path / "run"
    shutil.copytree(run, out)
    record = json.loads((out / "config.json").read_text())
    assert record["threads"] >= 1
    (out / "config.json").write_text(json.dumps(dict(record, threads=record["threads"] + 7)))
    trainer, lines = _quiet({"epochs": 2}, out, data, resume=True)
    trainer.fit()
    notes = [line for line in lines if "BLAS threads" in line]
    assert len(notes) == 1 and "not bit-exact" in notes[0] and f"--threads {record['threads'] + 7}" in notes[0]
    trainer, lines = _quiet({"epochs": 3}, out, data, resume=True)     # the same threads as recorded now
    trainer.fit()
    assert not [line for line in lines if "BLAS threads" in line]


# --- 4: the size guard ----------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_the_size_estimate_is_what_summary_counts_on_the_built_model(seed):
    from tinydense import summary
    rng = np.random.default_rng(seed)
    kind = ("densenet", "densenet-bc", "resnet")[seed % 3]
    if kind == "resnet":
        config = make_config(model=kind, depth=int(rng.choice([8, 11, 20, 29])))
    else:
        per_layer = 6 if kind == "densenet-bc" else 3
        config = make_config(model=kind, depth=int(per_layer * rng.integers(1, 4) + 4),
                             growth_rate=int(rng.integers(1, 13)), compression=float(rng.uniform(0.3, 1)),
                             dataset=str(rng.choice(["cifar10", "cifar100"])))
    s = summary(build_model(config), (3, 32, 32))
    params, per_image, least = estimate(config)
    assert (params, per_image) == (s.total_params, s.total_memory_bytes), config
    assert 16 * params < least < 2 * config["batch_size"] * per_image + 16 * params


def test_a_model_larger_than_the_machine_is_refused_with_the_estimate_before_anything(run, tmp_path, capsys,
                                                                                     monkeypatch):
    """Regression: --depth 100000000 used all memory and set off a system-wide OOM kill."""
    one_error_line(in_process("train", "--depth", "100000000", "--out", tmp_path / "a", capsys=capsys),
                   "too large for this machine", "parameters", "GB available", "--depth")
    one_error_line(in_process("train", "--growth-rate", "1000000", "--out", tmp_path / "a", capsys=capsys),
                   "5,146,502,338,000,010 parameters")
    one_error_line(in_process("summary", "--depth", "100000000", capsys=capsys), "too large for this machine")
    assert not (tmp_path / "a").exists()
    config = make_config(**TINY)
    least = estimate(config)[2]
    check_fits(config, available=least)
    with pytest.raises(ValueError, match="batch 16 needs at least"):
        check_fits(config, available=least - 1)
    state = checkpoint.load(run / "best.npz")                   # a checkpoint naming a huge model
    state["config"]["depth"] = 100000000
    checkpoint.save(state, tmp_path / "huge.npz")
    one_error_line(in_process("evaluate", tmp_path / "huge.npz", capsys=capsys),
                   "huge.npz describes a model too large to build here")
    monkeypatch.setattr(memory, "available_memory", lambda: least - 1)
    with pytest.raises(ValueError, match="too large"):        # before the data are even looked for
        Trainer(TINY, tmp_path / "b", data_dir=tmp_path / "no-data", progress=False)


# --- 5: the testing batch -------------------------------------------------------------------

def test_testing_uses_the_training_batch_size_unless_told(data, tmp_path, monkeypatch):
    """Regression: testing used max(batch, 128) and raised a depth-100 run's peak by 40%."""
    trainer, _ = _quiet(dict(TINY, val_split=8), tmp_path / "a", data)
    assert trainer.test_loader.batch_size == trainer.val_loader.batch_size == 16
    trainer, _ = _quiet(dict(TINY, eval_batch_size=8), tmp_path / "b", data)
    assert trainer.test_loader.batch_size == 8 and trainer.train_loader.batch_size == 16
    with pytest.raises(ValueError, match="eval-batch-size must be a positive number"):
        make_config(eval_batch_size=0)


# --- 6: a full disk, a read-only folder -----------------------------------------------------

def test_a_full_disk_names_the_file_what_is_intact_and_how_to_resume(data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real = runfiles.write_atomic

    def full(path, text):
        if path.name == "metrics.csv" and "\n2," in text:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, text)
    monkeypatch.setattr(runfiles, "write_atomic", full)
    trainer, _ = _quiet(dict(TINY, epochs=2), out, data)
    with pytest.raises(OSError) as error:
        trainer.fit()
    message = str(error.value)
    assert message.startswith(f"could not write {out / 'metrics.csv'}: No space left on device")
    assert f"{out / 'last.npz'} keeps the state after epoch 2" in message
    assert f"tinydense train --out {out} --resume" in message and "[Errno" not in message
    assert int(read_checkpoint(out / "last.npz")["epoch"]) == 2
    monkeypatch.undo()
    trainer, _ = _quiet({"epochs": 3}, out, data, resume=True)
    trainer.fit()
    assert len((out / "metrics.csv").read_text().splitlines()) == 4


def test_a_read_only_out_is_found_before_the_data_are_read(tmp_path, monkeypatch, capsys):
    from tinydense.training import rundir

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(rundir.tempfile, "TemporaryFile", refused)
    one_error_line(in_process("train", *CLI_TINY, "--data-dir", tmp_path / "no-data", "--out", tmp_path / "ro",
                              capsys=capsys), f"--out {tmp_path / 'ro'}: cannot write in {tmp_path}",
                   "Permission denied")


# --- 8: damaged checkpoints -----------------------------------------------------------------

@pytest.mark.parametrize("damage, fragments", [
    (lambda s: s["data"].update(std=np.zeros(3, np.float32)), ["'data/std'", "divide every image by 0"]),
    (lambda s: s["model"]["features.norm5.running_var"].__setitem__(0, -1.0),
     ["'model/features.norm5.running_var'", "negative variances"]),
    (lambda s: s.pop("data"), ["has no 'data' entry"]),
    (lambda s: s.update(epoch="abc"), ["entry 'epoch' is 'abc'"]),
    (lambda s: s["model"]["classifier.bias"].__setitem__(1, np.nan), ["NaN or infinite weights", "classifier.bias"]),
])
def test_a_damaged_checkpoint_is_named_by_file_and_entry(run, tmp_path, capsys, damage, fragments):
    """Regression: std 0 or a negative running_var printed an accuracy with loss nan and
    exit 0; a missing key gave a KeyError traceback; epoch 'abc' did not name the file."""
    state = checkpoint.load(run / "best.npz")
    damage(state)
    path = tmp_path / "damaged.npz"
    checkpoint.save(state, path)
    with pytest.raises(ValueError) as error:
        read_checkpoint(path)
    assert str(path) in str(error.value) and all(f in str(error.value) for f in fragments), str(error.value)
    one_error_line(in_process("evaluate", path, capsys=capsys), str(path), *fragments)


def test_a_constant_image_channel_is_named_not_blamed_on_the_learning_rate(tmp_path):
    root = tmp_path / "flat"
    write_cifar(root, per_file=4, test_size=8)
    folder = root / SPECS["cifar10"].folder
    for name in SPECS["cifar10"].train_files:
        with open(folder / name, "rb") as f:
            batch = pickle.load(f)
        images = batch[b"data"].reshape(-1, 3, 1024)
        images[:, 2] = 77
        batch[b"data"] = images.reshape(len(images), -1)
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with pytest.raises(ValueError, match="colour channel 2 of the 20 training images .* is constant"):
        Trainer(TINY, tmp_path / "run", data_dir=root, progress=False)


# --- 9: the smaller surprises ---------------------------------------------------------------

def test_the_smaller_surprises(run, data, tmp_path, capsys, monkeypatch):
    one_error_line(in_process("summary", "--level", "-1", capsys=capsys), "--level must be 1 or more")
    one_error_line(in_process("train", "--out", "", capsys=capsys), "--out is empty")
    one_error_line(in_process("evaluate", tmp_path / "weights.pth", capsys=capsys),
                   "is a PyTorch file", "tinydense.load_pth")
    level = in_process("summary", "--model", "densenet", "--depth", "7", "--growth-rate", "4", "--level", "1",
                       capsys=capsys)
    assert "Params and MACs of a row are the totals of everything inside it, Memory is only its own" in level.stdout
    trainer, lines = _quiet(dict(TINY, limit_train=500, limit_test=400), tmp_path / "big", data)
    assert len(trainer.train_set) == 40 and len(trainer.test_set) == 32
    assert any("--limit-train 500 is more than the 40 training images" in line for line in lines)
    assert any("--limit-test 400 is more than the 32 test images" in line for line in lines)


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path):
    """Regression: `tinydense ... | head` ended with "Broken pipe" and a traceback."""
    import os
    env = dict(os.environ)
    command = [sys.executable, "-m", "tinydense", "summary", "--model", "densenet", "--depth", "250"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as proc:
        proc.stdout.close()                         # what `head` does once it has its lines
        stderr = proc.stderr.read().decode()
        code = proc.wait(timeout=120)
    assert code == 141 and stderr == "", stderr
