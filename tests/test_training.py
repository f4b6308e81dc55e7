"""tinydense.training: the recipe, the loop, checkpoints, exact resume, Ctrl-C, NaN, real data."""
import json
import os
import signal
import time

import numpy as np
import pytest

from tinydense.training import (Trainer, TrainingDiverged, build_model, load_model, make_config,
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
])
def test_bad_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        make_config(**options)


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
    assert [float(r[5]) for r in rows[1:]] == pytest.approx([0.1, 0.1, 0.01])      # milestone at epoch 2
    assert len(lines) == 3 and lines[0].startswith("epoch 1/3")
    config = json.loads((out / "config.json").read_text())
    assert config["depth"] == 7 and config["milestones"] == [2] and config["data_dir"] == str(fake_data)
    last = read_checkpoint(out / "last.npz")
    assert int(last["epoch"]) == 3 and int(last["batch"]) == 0
    assert any(k.startswith("buffer.") for k in last["optimizer"])
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


def test_resume_after_a_stop_mid_epoch_is_bit_exact(tmp_path, fake_data):
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

def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, fake_data):
    class Poisoned(Trainer):
        def train_step(self, x, y):
            if self.epoch == 1 and self.batch == 2:
                self.model.classifier.weight.data[0, 0] = np.nan
            return super().train_step(x, y)
    out = tmp_path / "run"
    trainer = _trainer(TINY, out, fake_data, cls=Poisoned)
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
