"""tinydense.training: the recipe, the loop, checkpoints, exact resume, Ctrl-C, NaN, real data."""
import json
import os
import signal
import time

import numpy as np
import pytest

from tinydense.data import DownloadError
from tinydense.training import (RunLocked, Trainer, TrainingDiverged, build_model, load_model, make_config,
                                paper_milestones, read_checkpoint)

from train_helpers import REAL_DATA_REASON, real_cifar_dir, same_files, write_cifar

TINY = dict(model="densenet", depth=7, growth_rate=4, epochs=3, batch_size=16, limit_train=80, limit_test=40,
            milestones=[2], drop_rate=0.2)


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar(root, per_file=20, test_size=40, learnable=True)
    return root


def _trainer(config, out, data, cls=Trainer, **kwargs):
    return cls(config, out, data_dir=data, progress=False, log=lambda line: None, **kwargs)


# --- the recipe -----------------------------------------------------------------------

def test_defaults_are_the_papers_recipe():
    c = make_config()
    assert (c["model"], c["depth"], c["growth_rate"], c["compression"], c["dataset"]) == \
        ("densenet-bc", 100, 12, 0.5, "cifar10")
    assert (c["epochs"], c["batch_size"], c["lr"], c["momentum"], c["nesterov"], c["weight_decay"]) == \
        (300, 64, 0.1, 0.9, True, 1e-4)
    assert c["milestones"] == [150, 225] and c["gamma"] == 0.1 and c["augment"] and c["drop_rate"] == 0
    assert paper_milestones(30) == [15, 22] and paper_milestones(1) == [] and paper_milestones(3) == [1, 2]
    assert make_config(model="densenet")["compression"] == 1.0 and make_config(model="densenet")["depth"] == 40
    assert make_config(model="resnet")["depth"] == 110


@pytest.mark.parametrize("options, message", [
    (dict(epochs=-3), "epochs must be a positive integer, got -3"),
    (dict(epochs=0), "epochs must be a positive integer, got 0"),
    (dict(model="vgg"), "unknown model 'vgg'"),
    (dict(dataset="mnist"), "unknown dataset 'mnist'"),
    (dict(compression=0.0), r"compression must be in \(0, 1\]"),
    (dict(drop_rate=1.0), r"drop-rate must be in \[0, 1\)"),
    (dict(lr=-0.1), "lr must be a non-negative number"),
    (dict(limit_train=0), "limit-train must be a positive number of images"),
    (dict(milestones=[5, 3]), "milestones must be increasing"),
    (dict(device="tpu"), "unknown device 'tpu'"),
    (dict(device="cpu:7"), "unknown device 'cpu:7'"),
    (dict(momentum=1.0), r"momentum must be in \[0, 1\), got 1.0"),
    (dict(momentum=-0.5), "momentum must be a non-negative number, got -0.5"),
    (dict(model="resnet", depth=20, growth_rate=12), "--growth-rate apply to DenseNets only, not to --model resnet"),
    (dict(model="resnet", compression=0.5, drop_rate=0.1), "--compression, --drop-rate apply to DenseNets only"),
    # DenseNet-BC L=40 k=12: a stem of 24 channels and 6 layers of 12 make 96; floor(0.01 * 96) = 0
    (dict(depth=40, compression=0.01), r"compression 0.01 leaves 0 channels in transition 1 \(96 channels come "
                                        r"out of dense block 1\): use a larger --compression \(at least 0.0104"),
    (dict(val_split=80, limit_train=80), "val-split 80 leaves no training images of the 80 of --limit-train"),
    (dict(val_split=0), "val-split must be a positive number of images"),
])
def test_bad_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        make_config(**options)


def test_momentum_zero_is_plain_sgd():
    assert make_config(momentum=0)["nesterov"] is False and make_config()["nesterov"] is True
    with pytest.raises(ValueError, match="nesterov needs a momentum in"):
        make_config(momentum=0, nesterov=True)


def test_transition_widths_follow_the_models_arithmetic():
    """The compression check computes the channels each transition keeps; it must
    agree with the model itself (random configurations, both DenseNet kinds)."""
    from tinydense.training import transition_widths
    rng = np.random.default_rng(0)
    for _ in range(12):
        kind = str(rng.choice(["densenet", "densenet-bc"]))
        per_layer = 6 if kind == "densenet-bc" else 3
        config = make_config(model=kind, depth=int(per_layer * rng.integers(1, 4) + 4),
                             growth_rate=int(rng.integers(1, 13)), compression=float(rng.uniform(0.3, 1)))
        model = build_model(config)
        transitions = [model.features.transition1.conv, model.features.transition2.conv]
        assert transition_widths(config) == [(t.out_channels, t.in_channels) for t in transitions], config


def test_impossible_depth_is_an_error():
    with pytest.raises(ValueError, match="depth 101 does not fit"):
        build_model(make_config(depth=101))


def test_cuda_device_is_checked():
    from tinydense import backend
    if backend.cuda_available():
        assert make_config(device="cuda")["device"] == "cuda"
    else:
        with pytest.raises(ValueError, match="CUDA is not available"):
            make_config(device="cuda")


# --- a run and its files ----------------------------------------------------------------

def test_a_run_writes_metrics_config_and_checkpoints(tmp_path, fake_data):
    out = tmp_path / "run"
    lines = []
    trainer = Trainer(TINY, out, data_dir=fake_data, progress=False, log=lines.append)
    assert not out.exists()                               # setting up writes nothing
    assert trainer.fit() == "finished"
    assert sorted(os.listdir(out)) == ["best.npz", "config.json", "last.npz", "metrics.csv"]
    rows = [line.split(",") for line in (out / "metrics.csv").read_text().splitlines()]
    assert rows[0] == ["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds", "images_per_s"]
    assert [int(r[0]) for r in rows[1:]] == [1, 2, 3]
    assert [r[5] for r in rows[1:]] == ["0.1", "0.1", "0.01"]      # milestone at epoch 2, not 0.010000000000000002
    assert [line[:9] for line in lines if line.startswith("epoch")] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    config = json.loads((out / "config.json").read_text())
    assert config["depth"] == 7 and config["milestones"] == [2] and config["data_dir"] == str(fake_data)
    last = read_checkpoint(out / "last.npz")
    assert int(last["epoch"]) == 3 and int(last["batch"]) == 0
    assert any("momentum_buffer" in s for s in last["optimizer"]["state"].values())
    # best.npz holds the model with the best test accuracy, which evaluates to that accuracy
    best_acc = max(float(r[4]) for r in rows[1:])
    model, state = load_model(out / "best.npz")
    assert float(state["best_acc"]) == best_acc
    from tinydense.data import DataLoader, load_cifar
    from tinydense.training import evaluate
    test = load_cifar("cifar10", fake_data, train=False).head(40)
    result = evaluate(model, DataLoader(test, 16, mean=state["data"]["mean"], std=state["data"]["std"]), 10)
    assert result["acc"] == pytest.approx(best_acc)
    assert result["confusion"].sum() == 40


def test_a_learnable_task_is_learned(tmp_path, fake_data):
    """The loop really optimises: on data whose class is painted into the image,
    the training loss falls clearly within a few epochs."""
    config = dict(TINY, epochs=4, limit_train=None, drop_rate=0.0, milestones=[10], augment=False)
    trainer = _trainer(config, tmp_path / "run", fake_data)
    trainer.fit()
    losses = [row["train_loss"] for row in trainer.history]
    assert losses[-1] < 0.75 * losses[0], losses


# --- exact resume -------------------------------------------------------------------------

class _StopAfter(Trainer):
    """Requests a stop (as Ctrl-C does) after a given number of batches."""
    stop_at = None

    def train_step(self, x, y):
        result = super().train_step(x, y)
        self.steps = getattr(self, "steps", 0) + 1
        if self.steps == self.stop_at:
            self.request_stop()
        return result


def test_resume_after_a_stop_mid_epoch_is_bit_exact(tmp_path, fake_data, monkeypatch):
    monkeypatch.delenv("TINYDENSE_DATA", raising=False)     # the resumed run finds the data it used
    _trainer(TINY, tmp_path / "a", fake_data).fit()
    stopping = _trainer(TINY, tmp_path / "b", fake_data, cls=_StopAfter)
    stopping.stop_at = 8                               # epoch 2 (5 batches per epoch), batch 3
    assert stopping.fit() == "interrupted"
    saved = read_checkpoint(tmp_path / "b" / "last.npz")
    assert (int(saved["epoch"]), int(saved["batch"])) == (1, 3)
    resumed = Trainer({}, tmp_path / "b", resume=True, progress=False, log=lambda line: None)
    assert resumed.fit() == "finished"
    assert same_files(tmp_path / "a" / "last.npz", tmp_path / "b" / "last.npz") > 20
    a = (tmp_path / "a" / "metrics.csv").read_text().splitlines()
    b = (tmp_path / "b" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[:6] for r in a] == [r.split(",")[:6] for r in b]     # all but the timings


def test_a_real_sigint_saves_and_stops(tmp_path, fake_data):
    class Interrupted(Trainer):
        def train_step(self, x, y):
            result = super().train_step(x, y)
            if self.epoch == 1 and self.batch == 1:
                os.kill(os.getpid(), signal.SIGINT)         # what Ctrl-C sends
                time.sleep(0.05)
            return result
    previous = signal.getsignal(signal.SIGINT)
    trainer = _trainer(TINY, tmp_path / "run", fake_data, cls=Interrupted)
    assert trainer.fit() == "interrupted"
    assert signal.getsignal(signal.SIGINT) is previous        # the handler is put back
    saved = read_checkpoint(tmp_path / "run" / "last.npz")
    assert (int(saved["epoch"]), int(saved["batch"])) == (1, 2)


# --- refusing to do damage ------------------------------------------------------------

class _NaNWeight(Trainer):
    """A NaN weight appears before batch 3 of epoch 2."""

    def train_step(self, x, y):
        if self.epoch == 1 and self.batch == 2:
            self.model.classifier.weight.data[0, 0] = np.nan
        return super().train_step(x, y)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, fake_data):
    out = tmp_path / "run"
    trainer = _trainer(TINY, out, fake_data, cls=_NaNWeight)
    before = {}

    def remember(line):
        before["last"] = (out / "last.npz").read_bytes()
    trainer.log = remember
    with pytest.raises(TrainingDiverged, match=r"loss is nan at epoch 2, batch 3.*last good state \(after epoch 1\)"):
        trainer.fit()
    assert (out / "last.npz").read_bytes() == before["last"]
    assert int(read_checkpoint(out / "last.npz")["epoch"]) == 1


def test_a_new_run_refuses_a_directory_that_holds_one(tmp_path, fake_data):
    out = tmp_path / "run"
    _trainer(dict(TINY, epochs=1), out, fake_data).fit()
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ValueError, match="already holds a run.*--resume"):
        _trainer(dict(TINY, epochs=1), out, fake_data)
    with pytest.raises(ValueError, match="already completed 1 of 1 epochs"):
        _trainer({}, out, fake_data, resume=True)
    with pytest.raises(ValueError, match="--depth 10 differs from the run being resumed"):
        _trainer(dict(depth=10, epochs=2), out, fake_data, resume=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files


def test_a_gpu_run_can_be_evaluated_and_resumed_on_the_cpu(tmp_path, fake_data):
    from tinydense import backend, checkpoint
    out = tmp_path / "run"
    _trainer(dict(TINY, epochs=1), out, fake_data).fit()
    state = checkpoint.load(out / "last.npz")
    state["config"]["device"] = "cuda"                       # as if it had been trained on a GPU
    checkpoint.save(state, out / "last.npz")
    model, saved = load_model(out / "last.npz", device="cpu")
    assert saved["config"]["device"] == "cpu" and next(model.parameters()).device == "cpu"
    if not backend.cuda_available():
        assert load_model(out / "last.npz")[1]["config"]["device"] == "cpu"
        with pytest.raises(ValueError, match="CUDA is not available"):
            _trainer({"epochs": 2}, out, fake_data, resume=True)
    resumed = _trainer({"epochs": 2, "device": "cpu"}, out, fake_data, resume=True)
    assert resumed.fit() == "finished" and resumed.epoch == 2


def test_resume_needs_a_readable_run(tmp_path, fake_data):
    with pytest.raises(ValueError, match="nothing to resume.*last.npz does not exist"):
        _trainer({}, tmp_path / "none", fake_data, resume=True)
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.npz").write_bytes(b"PK\x03\x04 this is not a zip file")
    with pytest.raises(ValueError, match="last.npz is not a readable tinydense training checkpoint"):
        _trainer({}, out, fake_data, resume=True)
    assert (out / "last.npz").read_bytes() == b"PK\x03\x04 this is not a zip file"


# --- the run directory: never lose or mix data --------------------------------------------

ONE = dict(TINY, epochs=1)


def test_a_new_run_writes_only_into_a_new_empty_or_matching_directory(tmp_path, fake_data):
    """Regression: --out into a folder of other files overwrote them. Every refusal
    comes before the data are read (the data directory here does not exist)."""
    no_data = tmp_path / "no-data"
    (tmp_path / "file").write_text("a file")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        _trainer(ONE, tmp_path / "file", no_data)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    (other / "sub").mkdir()
    with pytest.raises(ValueError, match=r"is not empty and not a tinydense run \(it holds notes.txt, sub\).*"
                                         r"--out-exists-ok"):
        _trainer(ONE, other, no_data)
    for name in ("config.json", "best.npz", "curves.png"):       # never overwritten, even with exist_ok
        folder = tmp_path / name.replace(".", "-")
        folder.mkdir()
        (folder / name).write_bytes(b"someone else's")
        with pytest.raises(ValueError, match=f"{name}.*(would overwrite|not this run's configuration)"):
            _trainer(ONE, folder, no_data, exist_ok=True)
        assert os.listdir(folder) == [name] and (folder / name).read_bytes() == b"someone else's"
    # exist_ok: the run's files beside the user's, which are left as they were
    _trainer(ONE, other, fake_data, exist_ok=True).fit()
    assert sorted(os.listdir(other)) == ["best.npz", "config.json", "last.npz", "metrics.csv", "notes.txt", "sub"]
    assert (other / "notes.txt").read_text() == "mine"
    # the config.json of a run with this configuration that saved no epoch (stopped in its first) is no obstacle
    same = tmp_path / "same"
    same.mkdir()
    (same / "config.json").write_text(json.dumps(dict(make_config(**ONE), data_dir=str(fake_data))))
    with pytest.raises(FileNotFoundError, match="CIFAR-10 not found"):    # accepted: it goes on to read the data
        _trainer(ONE, same, no_data)
    with pytest.raises(ValueError, match=r"not this run's configuration \(seed 0 there, 1 here\)"):
        _trainer(dict(ONE, seed=1), same, no_data)


class _Killed(Exception):
    """Stands in for a SIGKILL."""


class _KilledAfterLast(Trainer):
    """Dies right after writing last.npz at the end of epoch 2, before anything else."""

    def _save_last(self, state):
        super()._save_last(state)
        if self.epoch == 2 and self.batch == 0:
            raise _Killed


def _best_epoch_in(metrics_csv, column="test_acc"):
    rows = [r.split(",") for r in metrics_csv.read_text().splitlines()]
    values = [float(r[rows[0].index(column)]) for r in rows[1:]]
    return int(rows[1:][values.index(max(values))][0])


def test_a_kill_between_two_writes_loses_no_epoch(tmp_path, fake_data, monkeypatch):
    """Regression: a SIGKILL between the last.npz and metrics.csv writes lost that
    epoch's row for good, and the best epoch printed disagreed with best.npz. last.npz
    holds the history; metrics.csv and best.npz are rewritten from it on resume."""
    _trainer(TINY, tmp_path / "whole", fake_data).fit()
    out = tmp_path / "killed"
    with pytest.raises(_Killed):
        _trainer(TINY, out, fake_data, cls=_KilledAfterLast).fit()
    assert len((out / "metrics.csv").read_text().splitlines()) == 2          # epoch 2's row never written
    (out / "metrics.csv").unlink()                                           # and even the file lost
    monkeypatch.delenv("TINYDENSE_DATA", raising=False)       # the resumed run finds the data it used
    lines = []
    resumed = Trainer({}, out, resume=True, progress=False, log=lines.append)
    assert resumed.fit() == "finished"
    whole = (tmp_path / "whole" / "metrics.csv").read_text().splitlines()
    rows = (out / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[:6] for r in rows] == [r.split(",")[:6] for r in whole]      # every epoch, same numbers
    best = _best_epoch_in(out / "metrics.csv")
    assert int(read_checkpoint(out / "best.npz")["epoch"]) == best == resumed.best_epoch
    assert int(read_checkpoint(out / "last.npz")["best_epoch"]) == best
    same_files(tmp_path / "whole" / "best.npz", out / "best.npz")
    assert any("wrote" in line and "best.npz (epoch 2)" in line for line in lines) == (best >= 2)


def test_a_second_run_into_the_same_directory_is_refused(tmp_path, fake_data):
    """Regression: two runs into one --out mixed their files. The second one (a
    Trainer set up while the first runs, or one set up before and started during
    it) gets an error naming the first process, and changes nothing."""
    out = tmp_path / "run"
    early = _trainer(ONE, out, fake_data)                 # set up before the first run writes anything
    seen = {}

    class First(Trainer):
        def train_step(self, x, y):
            if not seen:
                for attempt in (lambda: _trainer(ONE, out, fake_data), early.fit):
                    with pytest.raises(RunLocked) as e:
                        attempt()
                    seen.setdefault("errors", []).append(str(e.value))
                seen["files"] = sorted(os.listdir(out))
            return super().train_step(x, y)
    assert _trainer(ONE, out, fake_data, cls=First).fit() == "finished"
    assert len(seen["errors"]) == 2
    for message in seen["errors"]:
        assert f"is in use by another tinydense run (pid {os.getpid()} on " in message
    assert seen["files"] == [".tinydense.lock", "config.json"]
    assert sorted(os.listdir(out)) == ["best.npz", "config.json", "last.npz", "metrics.csv"]   # lock released
    assert json.loads((out / "config.json").read_text())["epochs"] == 1


def test_the_lock_names_another_process_and_outlives_no_one(tmp_path, fake_data):
    """A lock held by another process refuses the run and names it; the lock file of
    a process that died (SIGKILL leaves it behind) is simply taken over."""
    import subprocess
    import sys
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, json, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX); "
        "os.write(fd, json.dumps({'pid': os.getpid(), 'host': 'elsewhere', 'since': 'noon'}).encode()); "
        "print('locked', flush=True); sys.stdin.read()"), str(out / ".tinydense.lock")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(RunLocked, match=f"in use by another tinydense run \\(pid {holder.pid} on elsewhere, "
                                            f"since noon\\)"):
            _trainer(ONE, out, fake_data)
    finally:
        holder.communicate("", timeout=10)
    assert (out / ".tinydense.lock").exists()              # left behind by a process that is gone
    assert _trainer(ONE, out, fake_data).fit() == "finished"
    assert not (out / ".tinydense.lock").exists()


def test_stale_temporary_files_of_the_run_are_removed_and_nothing_else(tmp_path, fake_data, monkeypatch):
    """Regression: the temporary files of interrupted atomic writes piled up."""
    out = tmp_path / "run"
    out.mkdir()
    (out / ".best.npz.x1y2.tmp").write_bytes(b"half a checkpoint")        # a folder of only these counts as empty
    _trainer(dict(TINY, epochs=1), out, fake_data).fit()
    assert not (out / ".best.npz.x1y2.tmp").exists()
    stale = [".last.npz.ab12cd.tmp", ".metrics.csv.k2j3.tmp", ".config.json.zz.tmp", ".curves.png.0f1e.tmp"]
    kept = [".notes.tmp", "last.npz.tmp", ".last.npz.keep", ".mine.last.npz.1.tmp", "x.tmp"]
    for name in stale + kept:
        (out / name).write_text(name)
    lines = []
    monkeypatch.delenv("TINYDENSE_DATA", raising=False)       # the resumed run finds the data it used
    Trainer({"epochs": 2}, out, resume=True, progress=False, log=lines.append).fit()
    assert sorted(os.listdir(out)) == sorted(["best.npz", "config.json", "last.npz", "metrics.csv"] + kept)
    assert all((out / name).read_text() == name for name in kept)
    assert "removed 4 temporary file(s)" in lines[0]


def test_a_nan_test_loss_stops_the_run_and_never_becomes_best(tmp_path, fake_data):
    """Regression: a NaN test loss was success (exit 0, a best.npz that gives NaN).
    A NaN running variance leaves training (batch statistics) intact but not testing."""
    class Poisoned(Trainer):
        def train_step(self, x, y):
            if self.epoch == 1 and self.batch == 2:
                self.model.features.norm5.running_var[0] = np.nan
            return super().train_step(x, y)
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"the test loss is nan after epoch 2: training stopped; .*last.npz "
                                               r"keeps the last good state \(after epoch 1\)"):
        _trainer(TINY, out, fake_data, cls=Poisoned).fit()
    for name in ("last.npz", "best.npz"):
        state = read_checkpoint(out / name)
        assert int(state["epoch"]) == 1
        assert all(np.isfinite(v).all() for v in state["model"].values() if v.dtype.kind == "f")
    assert len((out / "metrics.csv").read_text().splitlines()) == 2


def test_a_model_with_non_finite_weights_is_never_written_as_best(tmp_path, fake_data):
    """An infinite running variance gives a finite loss (the features become constant),
    but such a model must not become best.npz."""
    class Poisoned(Trainer):
        def train_step(self, x, y):
            if self.batch == 4:
                self.model.features.norm5.running_var[:] = np.inf
            return super().train_step(x, y)
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"non-finite values \(features.norm5.running_var\) after epoch 1.*"
                                               r"nothing had been saved.*--lr 0.01"):
        _trainer(TINY, out, fake_data, cls=Poisoned).fit()
    assert not out.exists()                     # a run that saved nothing takes its directory away again


def test_resume_can_change_the_learning_rate(tmp_path, fake_data):
    """Regression: the NaN advice "a smaller --lr" could not be followed, --resume
    refused a changed --lr. The new rate is the base rate from the resumed epoch on
    (the drops still apply) and is recorded in the configuration."""
    out = tmp_path / "run"
    _trainer(dict(TINY, epochs=2), out, fake_data).fit()          # milestones [2]: lr 0.1, 0.1, then 0.01 ...
    resumed = _trainer({"epochs": 4, "lr": 0.05}, out, fake_data, resume=True)
    assert resumed.optimizer.lr == pytest.approx(0.005)            # 0.05, dropped once
    resumed.fit()
    change = [{"epoch": 3, "batch": 0, "lr": 0.05}]
    assert json.loads((out / "config.json").read_text())["lr_changes"] == change
    assert read_checkpoint(out / "last.npz")["config"]["lr_changes"] == change
    assert read_checkpoint(out / "last.npz")["config"]["lr"] == 0.1        # the original stays on record
    rates = [line.split(",")[5] for line in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert rates == ["0.1", "0.1", "0.005", "0.005"]
    again = _trainer({"epochs": 5, "lr": 0.05}, out, fake_data, resume=True)   # the same rate: no new change
    assert again.config["lr_changes"] == change
    with pytest.raises(ValueError, match="--momentum 0.5 differs.*only --epochs, --device and --lr may change"):
        _trainer({"epochs": 5, "momentum": 0.5}, out, fake_data, resume=True)


def test_the_advice_after_a_nan_loss_can_be_followed(tmp_path, fake_data):
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as e:
        _trainer(TINY, out, fake_data, cls=_NaNWeight).fit()
    advice = str(e.value).split("Continue with a smaller learning rate: ")[1]
    assert advice == f"tinydense train --out {out} --resume --lr 0.01"
    resumed = _trainer({"lr": 0.01}, out, fake_data, resume=True)
    assert resumed.fit() == "finished" and resumed.epoch == 3


def test_resume_takes_the_data_directory_as_a_fresh_run_does(tmp_path, fake_data, monkeypatch):
    """Regression: resume ignored $TINYDENSE_DATA. --data-dir, else $TINYDENSE_DATA,
    else the directory the run used, else data/. A missing data directory is not
    created just to fail."""
    import urllib.error
    import urllib.request
    out = tmp_path / "run"
    _trainer(dict(TINY, epochs=1), out, fake_data).fit()
    copy = tmp_path / "copy"
    write_cifar(copy, per_file=20, test_size=40, learnable=True)           # the same images elsewhere
    monkeypatch.delenv("TINYDENSE_DATA", raising=False)
    resume = dict(config={"epochs": 2}, out_dir=out, resume=True, progress=False, log=lambda line: None)
    assert Trainer(**resume).data_dir == fake_data                        # the recorded one
    monkeypatch.setenv("TINYDENSE_DATA", str(copy))
    assert Trainer(**resume).data_dir == copy
    assert Trainer(**resume, data_dir=fake_data).data_dir == fake_data

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    gone = tmp_path / "deleted" / "data"
    monkeypatch.setenv("TINYDENSE_DATA", str(gone))
    with pytest.raises(DownloadError, match="could not download CIFAR-10"):
        Trainer(**resume, download=True)
    assert not (tmp_path / "deleted").exists()
    kept = tmp_path / "empty-but-mine"
    kept.mkdir()
    with pytest.raises(DownloadError):
        Trainer(**resume, data_dir=kept, download=True)
    assert kept.is_dir() and os.listdir(kept) == []                        # a directory that was there stays


def test_val_split_holds_out_training_images_and_chooses_best_npz(tmp_path, fake_data):
    """--val-split N: the last N of the training images used are never trained on (nor
    augmented, nor in the normalisation statistics); best.npz is chosen by their accuracy."""
    from tinydense.data import load_cifar
    out = tmp_path / "run"
    trainer = _trainer(dict(TINY, val_split=16), out, fake_data)
    images = load_cifar("cifar10", fake_data).head(80)
    assert len(trainer.train_set) == 64 and len(trainer.val_set) == 16
    np.testing.assert_array_equal(trainer.train_set.images, images.images[:64])
    np.testing.assert_array_equal(trainer.val_set.images, images.images[64:])
    np.testing.assert_array_equal(trainer.mean, images.head(64).channel_stats()[0])
    assert not trainer.val_loader.augment and not trainer.val_loader.shuffle
    assert trainer.fit() == "finished"
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[-2:] == ["val_loss", "val_acc"]
    best = _best_epoch_in(out / "metrics.csv", "val_acc")
    assert int(read_checkpoint(out / "best.npz")["epoch"]) == best == trainer.best_epoch
    with pytest.raises(ValueError, match="--val-split 8 differs"):
        _trainer({"epochs": 4, "val_split": 8}, out, fake_data, resume=True)


def test_the_time_of_the_whole_run_is_estimated_after_the_first_batches(tmp_path, fake_data):
    lines = []
    trainer = Trainer(dict(TINY, epochs=2, batch_size=8), tmp_path / "a", data_dir=fake_data, progress=False,
                      log=lines.append)
    trainer.fit()
    estimates = [line for line in lines if line.startswith("estimated time for the run: ")]
    assert len(estimates) == 1 and lines.index(estimates[0]) == 0          # before the first epoch ends
    assert "(2 epochs x 10 batches at " in estimates[0] and "testing 40 images per epoch" in estimates[0]
    assert "measured on batches 2-6 of this epoch" in estimates[0] and trainer.estimate_s > 0
    lines.clear()
    Trainer(dict(TINY, epochs=2), tmp_path / "b", data_dir=fake_data, progress=False, log=lines.append).fit()
    assert lines[1].startswith("estimated time for the run: ") and "measured on epoch 1)" in lines[1]
    from tinydense.training import format_duration
    assert [format_duration(s) for s in (0.04, 59.6, 3725, 19 * 86400 + 3 * 3600 + 5)] == \
        ["0.0 s", "1 min 0 s", "1 h 2 min", "19 d 3 h"]


def test_blas_threads_are_set_in_the_library_numpy_uses():
    """--threads N: measured in a fresh process, by the library's own count and by the
    CPU time of its worker threads during matrix products (none with one thread)."""
    import subprocess
    import sys
    script = (
        "import os, numpy as np\n"
        "from tinydense.training import blas_threads, set_blas_threads\n"
        "def workers():\n"
        "    total = 0\n"
        "    for t in os.listdir('/proc/self/task'):\n"
        "        if int(t) != os.getpid():\n"
        "            f = open(f'/proc/self/task/{t}/stat').read().rsplit(')', 1)[1].split()\n"
        "            total += int(f[11]) + int(f[12])\n"
        "    return total\n"
        "set_blas_threads(1)\n"
        "a = np.random.default_rng(0).random((600, 600))\n"
        "before = workers()\n"
        "for _ in range(20): a @ a\n"
        "print(blas_threads(), workers() - before, os.environ['OPENBLAS_NUM_THREADS'])\n"
        "set_blas_threads(2)\n"
        "print(blas_threads())\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.split("\n")[:2]
    threads, worker_ticks, env = first.split()
    assert (threads, env, second) == ("1", "1", "2")
    if os.path.isdir("/proc/self/task"):
        assert worker_ticks == "0"
    from tinydense.training import set_blas_threads
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        set_blas_threads(0)


# --- real data ------------------------------------------------------------------------------

@pytest.mark.slow
def test_training_on_real_cifar_beats_chance(tmp_path):
    """A small DenseNet trained briefly on the real CIFAR-10 subset gets well
    above the 10% of guessing (fixed seed; about half a minute on 2 cores)."""
    root = real_cifar_dir()
    if not root:
        pytest.skip(REAL_DATA_REASON)
    config = dict(model="densenet", depth=7, growth_rate=8, epochs=3, batch_size=32, lr=0.1,
                  limit_train=2048, limit_test=500, milestones=[2], augment=False, seed=0)
    trainer = _trainer(config, tmp_path / "run", root)
    trainer.fit()
    accuracy = trainer.history[-1]["test_acc"]
    assert accuracy > 0.25, f"test accuracy {accuracy:.3f} after {len(trainer.history)} epochs"
