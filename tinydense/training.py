"""Training a model on CIFAR: the loop, metrics, checkpoints and exact resume.

One epoch is the textbook loop, batch after batch:

    logits = model(x)                      forward
    loss = cross_entropy(logits, y)
    optimizer.zero_grad(); loss.backward() backward
    optimizer.step()                       update

then an evaluation on the test set and one step of the learning-rate
schedule. Around it sits what makes a long run safe to leave alone:

* ``DIR/metrics.csv`` (one row per epoch) and ``DIR/config.json``;
* ``DIR/last.npz`` after every epoch: the model, the optimizer's momentum
  buffers, the schedule, the epoch and the state of every random
  generator, so ``resume=True`` continues exactly where the run stopped;
  ``DIR/best.npz``: the model with the best test accuracy so far. Both are
  written atomically (a crash mid-write leaves the previous file intact);
* Ctrl-C finishes the current batch, saves the state in the middle of the
  epoch (the data order of an epoch is determined by the loader's state at
  its start, so the epoch can be replayed from that batch) and stops;
* a NaN or infinite loss stops the run before the bad update is saved.

On the CPU an interrupted and resumed run ends with exactly the same
arrays as an uninterrupted one. (On the GPU the dropout generator's state is
not saved, so resuming a run with dropout there is not bit-exact.)
"""
from __future__ import annotations

import csv
import json
import math
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import backend, models
from . import functional as F
from .autograd import no_grad
from .checkpoint import load as load_checkpoint_file
from .checkpoint import save as save_checkpoint_file
from .data import DataLoader, default_data_dir, load_cifar
from .optim import SGD, MultiStepLR

MODELS = ("densenet-bc", "densenet", "resnet")
DATASETS = {"cifar10": 10, "cifar100": 100}
DEFAULT_DEPTH = {"densenet-bc": 100, "densenet": 40, "resnet": 110}
METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds", "images_per_s")
CHECKPOINT_FORMAT = "tinydense-run-1"

# The paper's recipe (Huang et al. 2017, Section 4.2), the defaults of every run.
PAPER_RECIPE = dict(model="densenet-bc", depth=100, growth_rate=12, compression=None, drop_rate=0.0,
                    dataset="cifar10", epochs=300, batch_size=64, lr=0.1, momentum=0.9, nesterov=True,
                    weight_decay=1e-4, milestones=None, gamma=0.1, augment=True,
                    limit_train=None, limit_test=None, seed=0, device="cpu")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def paper_milestones(epochs: int) -> list:
    """The epochs at which the learning rate drops: 50% and 75% of the run
    (150 and 225 of 300; 15 and 22 of 30)."""
    return sorted({m for m in (epochs // 2, epochs * 3 // 4) if m > 0})


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def make_config(**options) -> dict:
    """The full run configuration: the paper's recipe with ``options`` on top,
    checked (ValueError naming the option and value) and completed
    (default depth per model, compression, milestones)."""
    unknown = set(options) - set(PAPER_RECIPE)
    if unknown:
        raise ValueError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    c = dict(PAPER_RECIPE)
    c.update({k: v for k, v in options.items() if v is not None})
    if options.get("depth") is None and c["model"] in DEFAULT_DEPTH:
        c["depth"] = DEFAULT_DEPTH[c["model"]]
    if c["model"] not in MODELS:
        raise ValueError(f"unknown model {c['model']!r}: expected one of {', '.join(MODELS)}")
    if c["dataset"] not in DATASETS:
        raise ValueError(f"unknown dataset {c['dataset']!r}: expected one of {', '.join(DATASETS)}")
    for name in ("epochs", "batch_size", "depth", "growth_rate"):
        if not _is_int(c[name]) or c[name] <= 0:
            raise ValueError(f"{name.replace('_', '-')} must be a positive integer, got {c[name]!r}")
    for name in ("limit_train", "limit_test"):
        if c[name] is not None and (not _is_int(c[name]) or c[name] <= 0):
            raise ValueError(f"{name.replace('_', '-')} must be a positive number of images, got {c[name]!r}")
    if not _is_int(c["seed"]) or c["seed"] < 0:
        raise ValueError(f"seed must be a non-negative integer, got {c['seed']!r}")
    for name in ("lr", "momentum", "weight_decay", "gamma", "drop_rate"):
        value = c[name]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name.replace('_', '-')} must be a non-negative number, got {value!r}")
    if c["lr"] == 0:
        raise ValueError("lr must be positive, got 0")
    if not c["drop_rate"] < 1:
        raise ValueError(f"drop-rate must be in [0, 1), got {c['drop_rate']}")
    if c["compression"] is None:
        c["compression"] = 0.5 if c["model"] == "densenet-bc" else 1.0
    if not 0 < c["compression"] <= 1:
        raise ValueError(f"compression must be in (0, 1], got {c['compression']}")
    if c["milestones"] is None:
        c["milestones"] = paper_milestones(c["epochs"])
    c["milestones"] = list(c["milestones"])
    if any(not _is_int(m) or m <= 0 for m in c["milestones"]) or c["milestones"] != sorted(set(c["milestones"])):
        raise ValueError(f"milestones must be increasing positive epochs, got {c['milestones']}")
    c["device"] = backend.check_device(c["device"])
    if c["model"] == "resnet":            # options that do not apply to a ResNet
        c["growth_rate"], c["compression"], c["drop_rate"] = None, None, None
    return c


def run_name(config) -> str:
    """A short name for a run, e.g. ``densenet-bc-L100-k12-cifar10`` (the default output directory)."""
    if config["model"] == "resnet":
        return f"resnet-{config['depth']}-{config['dataset']}"
    return f"{config['model']}-L{config['depth']}-k{config['growth_rate']}-{config['dataset']}"


def build_model(config):
    """The model a configuration describes, float32 on the configured device.
    Raises ValueError for impossible architectures (e.g. a depth that does not fit)."""
    num_classes = DATASETS[config["dataset"]]
    if config["model"] == "resnet":
        model = models.resnet(config["depth"], num_classes=num_classes)
    else:
        model = models.densenet(config["depth"], config["growth_rate"],
                                bottleneck=config["model"] == "densenet-bc",
                                compression=config["compression"], num_classes=num_classes,
                                drop_rate=config["drop_rate"])
    return model.to(config["device"])


def evaluate(model, loader, num_classes, progress=False, desc="test"):
    """Loss, accuracy and confusion matrix of ``model`` on ``loader``'s data.

    Returns a dict: ``loss`` (mean cross-entropy), ``acc`` (fraction correct),
    ``confusion`` ((K, K) counts, rows: true class, columns: predicted)."""
    model.eval()
    loss_sum, confusion = 0.0, np.zeros((num_classes, num_classes), np.int64)
    with no_grad():
        for x, y in tqdm(loader, desc=desc, leave=False, disable=not progress, unit="batch"):
            logits = model(x)
            loss_sum += float(F.cross_entropy(logits, y).item()) * len(y)
            predicted = backend.to_numpy(logits.data.argmax(axis=1))
            truth = backend.to_numpy(y.data)
            confusion += np.bincount(truth * num_classes + predicted,
                                     minlength=num_classes ** 2).reshape(num_classes, num_classes)
    n = int(confusion.sum())
    return {"loss": loss_sum / max(n, 1), "acc": float(np.trace(confusion)) / max(n, 1), "confusion": confusion}


def write_atomic(path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename, so the
    file is always either the old or the new version."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)           # mkstemp's 0600 -> what open() would give
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read_checkpoint(path) -> dict:
    """A run checkpoint (``last.npz`` or ``best.npz``) as a nested dict (see
    :meth:`Trainer.state`), its configuration checked. ValueError if the file
    is missing, corrupt, or not a checkpoint of a training run."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no checkpoint at {path}")
    try:
        state = load_checkpoint_file(path)
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"format {found!r}, expected {CHECKPOINT_FORMAT!r}")
        saved = dict(state["config"])
        device = saved.pop("device", "cpu")         # checked where it is used: a GPU run can be read anywhere
        state["config"] = make_config(**saved) | {"device": device}
    except Exception as e:   # a damaged zip, a truncated array, a foreign file, a bad configuration ...
        raise ValueError(f"{path} is not a readable tinydense training checkpoint ({type(e).__name__}: {e})") from e
    return state


def load_model(path, device=None):
    """The model saved in a run checkpoint, ready for evaluation; returns
    ``(model, state)`` where ``state`` holds the configuration, the epoch and
    the normalisation statistics. ``device``: default the run's own, or the
    CPU when that was a GPU and none is available here."""
    state = read_checkpoint(path)
    if device is None:
        saved = state["config"]["device"]
        device = saved if saved == "cpu" or backend.cuda_available() else "cpu"
    config = make_config(**dict(state["config"], device=device))
    model = build_model(config)
    try:
        model.load_state_dict(state["model"])
    except ValueError as e:
        raise ValueError(f"{path} does not match the model it describes: {e}") from e
    state["config"] = config
    return model, state


class Trainer:
    """Set up a run (checking everything, writing nothing), then :meth:`fit` it.

    config:   options for :func:`make_config` (on resume: the saved configuration
              is used; only ``epochs`` and ``device`` may differ, and any other
              option given must match it).
    out_dir:  the run directory. A new run refuses a directory that already
              holds one; ``resume=True`` needs its ``last.npz``.
    data_dir: where the data set lives (see :func:`tinydense.data.default_data_dir`);
              download: fetch it when missing.
    """

    def __init__(self, config, out_dir, resume=False, data_dir=None, download=False,
                 progress=True, log=print):
        self.out = Path(out_dir)
        self.last_path, self.best_path = self.out / "last.npz", self.out / "best.npz"
        self.metrics_path, self.config_path = self.out / "metrics.csv", self.out / "config.json"
        self.progress, self.log = progress, log
        self.resume = resume
        checkpoint = None
        if resume:
            if not self.last_path.is_file():
                raise ValueError(f"nothing to resume: {self.last_path} does not exist "
                                 f"(start the run without --resume, or give the run's --out directory)")
            checkpoint = read_checkpoint(self.last_path)
            config = self._resumed_config(checkpoint["config"], config)
        else:
            config = make_config(**config)
        if data_dir is None and resume:           # where the run found its data before
            data_dir = self._saved_data_dir()
        self.config, self.data_dir = config, default_data_dir(data_dir)
        self.config["data_dir"] = str(self.data_dir)

        # the model first (an impossible architecture is reported before the data are read), seeded
        backend.manual_seed(config["seed"])
        self.model = build_model(config)

        # data: the first limit_* images; normalisation statistics from the training images used
        train_set = load_cifar(config["dataset"], self.data_dir, train=True, download=download)
        test_set = load_cifar(config["dataset"], self.data_dir, train=False, download=download)
        self.train_set = train_set.head(config["limit_train"])
        self.test_set = test_set.head(config["limit_test"])
        self.mean, self.std = self.train_set.channel_stats()
        self.num_classes = self.train_set.num_classes

        # optimizer, schedule, loaders
        self.optimizer = SGD(self.model.parameters(), lr=config["lr"], momentum=config["momentum"],
                             nesterov=config["nesterov"], weight_decay=config["weight_decay"])
        self.scheduler = MultiStepLR(self.optimizer, config["milestones"], gamma=config["gamma"])
        self.train_loader = DataLoader(self.train_set, config["batch_size"], shuffle=True,
                                       augment=config["augment"], mean=self.mean, std=self.std,
                                       device=config["device"], seed=[config["seed"], 1])
        self.test_loader = DataLoader(self.test_set, max(config["batch_size"], 128), mean=self.mean,
                                      std=self.std, device=config["device"])
        self.epoch, self.batch, self.best_acc = 0, 0, -1.0
        self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        self.history = []
        self.stop_requested = False
        self.saved_at = None                        # (epoch, batch) that last.npz holds
        if checkpoint is not None:
            self._restore(checkpoint)
        else:
            existing = [p.name for p in (self.last_path, self.metrics_path) if p.exists()]
            if existing:
                raise ValueError(f"{self.out} already holds a run ({', '.join(existing)}): pass --resume to "
                                 f"continue it, or choose another --out directory")

    # --- configuration on resume -------------------------------------------------------
    @staticmethod
    def _resumed_config(saved, given):
        """The saved configuration, with the few options a resumed run may change."""
        given = {k: v for k, v in (given or {}).items() if v is not None}
        for key, value in given.items():
            if key in ("epochs", "device", "milestones"):
                continue
            if key not in saved or saved[key] != value:
                raise ValueError(f"--{key.replace('_', '-')} {value} differs from the run being resumed "
                                 f"({saved.get(key)}); a resumed run keeps its configuration "
                                 f"(only --epochs and --device may change)")
        if "milestones" in given and list(given["milestones"]) != saved["milestones"]:
            raise ValueError(f"--milestones {given['milestones']} differs from the run being resumed "
                             f"({saved['milestones']}); a resumed run keeps its schedule")
        config = dict(saved)
        config.update({k: given[k] for k in ("epochs", "device") if k in given})
        return make_config(**config)

    def _saved_data_dir(self):
        """The data directory recorded in config.json, if it can be read."""
        try:
            return json.loads(self.config_path.read_text()).get("data_dir")
        except (OSError, ValueError, AttributeError):
            return None

    # --- checkpoints --------------------------------------------------------------------
    def state(self, loader_state) -> dict:
        """Everything the run needs to continue, for :func:`tinydense.save`:

            format, config, epoch (completed), batch (done in the next epoch),
            best_acc, data {mean, std}, partial (the running sums of a
            half-done epoch), model, optimizer, scheduler,
            rng {cpu: tinydense's generator, loader: the loader's at the epoch's start}
        """
        return {"format": CHECKPOINT_FORMAT,
                "config": {k: v for k, v in self.config.items() if k != "data_dir"},
                "epoch": self.epoch, "batch": self.batch, "best_acc": self.best_acc,
                "data": {"mean": self.mean, "std": self.std},
                "partial": dict(self.partial),
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": {"cpu": backend.get_rng_state(), "loader": loader_state["generator"]}}

    def _restore(self, ck) -> None:
        """Continue from checkpoint ``ck`` (read by :func:`read_checkpoint`)."""
        try:
            self.model.load_state_dict(ck["model"])
            self.optimizer.load_state_dict(ck["optimizer"])
            self.scheduler.load_state_dict(ck["scheduler"])
            self.epoch, self.batch = int(ck["epoch"]), int(ck["batch"])
            self.best_acc = float(ck["best_acc"])
            self.partial = {k: ck["partial"][k] for k in ("loss_sum", "correct", "seen", "seconds")}
            self.train_loader.load_state_dict({"generator": ck["rng"]["loader"]})
            rng_state = ck["rng"]["cpu"]
            mean, std = ck["data"]["mean"], ck["data"]["std"]
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"{self.last_path} is incomplete or does not match its configuration: {e}") from e
        if not (np.allclose(mean, self.mean) and np.allclose(std, self.std)):
            raise ValueError(f"the training data in {self.data_dir} differ from those the run in {self.out} "
                             f"started with (other per-channel mean/std): resume with the same data")
        if self.epoch >= self.config["epochs"]:
            raise ValueError(f"the run in {self.out} has already completed {self.epoch} of "
                             f"{self.config['epochs']} epochs: pass --epochs N with N > {self.epoch} to train further")
        self.history = [row for row in self._read_metrics() if row["epoch"] <= self.epoch]
        self.saved_at = (self.epoch, self.batch)
        backend.set_rng_state(rng_state)

    def _read_metrics(self) -> list:
        if not self.metrics_path.is_file():
            return []
        with open(self.metrics_path, newline="") as f:
            return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()}
                    for row in csv.DictReader(f)]

    def _write_metrics(self) -> None:
        lines = [",".join(METRIC_COLUMNS)]
        lines += [",".join(str(row[c]) for c in METRIC_COLUMNS) for row in self.history]
        write_atomic(self.metrics_path, "\n".join(lines) + "\n")

    # --- the loop -----------------------------------------------------------------------
    def fit(self) -> str:
        """Train up to ``config["epochs"]``. Returns ``"finished"``, or
        ``"interrupted"`` after Ctrl-C (the state was saved first). Raises
        :class:`TrainingDiverged` on a NaN or infinite loss."""
        self.out.mkdir(parents=True, exist_ok=True)
        write_atomic(self.config_path, json.dumps(self.config, indent=2) + "\n")
        if self.resume:
            self.log(f"resuming {self.out} at epoch {self.epoch + 1} of {self.config['epochs']}"
                     + (f", batch {self.batch + 1}" if self.batch else "")
                     + f" (learning-rate milestones stay at {self.config['milestones']})")
        previous = self._install_sigint()
        try:
            while self.epoch < self.config["epochs"]:
                if not self.train_epoch():
                    return "interrupted"
                if self.stop_requested:
                    return "interrupted"
            return "finished"
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    def _install_sigint(self):
        """Ctrl-C sets a flag the loop checks after each batch; a second Ctrl-C stops at once."""
        if threading.current_thread() is not threading.main_thread():
            return None

        def on_sigint(signum, frame):
            if self.stop_requested:
                raise KeyboardInterrupt
            self.stop_requested = True
            print("\nCtrl-C: saving after this batch (press Ctrl-C again to stop at once without saving)",
                  file=sys.stderr, flush=True)
        return signal.signal(signal.SIGINT, on_sigint)

    def request_stop(self) -> None:
        """Stop after the current batch, saving the state (what Ctrl-C does)."""
        self.stop_requested = True

    def train_step(self, x, y):
        """One batch: forward, loss, backward, update. Returns (loss, number correct)."""
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        value = float(loss.item())
        if not math.isfinite(value):
            kept = (f"{self.last_path} keeps the last good state ({self._describe(*self.saved_at)})"
                    if self.saved_at else "no checkpoint had been written yet")
            raise TrainingDiverged(f"the loss is {value} at epoch {self.epoch + 1}, batch {self.batch + 1}: "
                                   f"training stopped; {kept}. Try a smaller --lr")
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        correct = int((logits.data.argmax(axis=1) == y.data).sum())
        return value, correct

    @staticmethod
    def _describe(epoch, batch) -> str:
        return f"epoch {epoch + 1}, batch {batch}" if batch else f"after epoch {epoch}"

    def _save_last(self, state) -> None:
        save_checkpoint_file(state, self.last_path)
        self.saved_at = (self.epoch, self.batch)

    def train_epoch(self) -> bool:
        """Train one epoch (or its rest, after a resume), evaluate, step the
        schedule, save. Returns False if stopped by Ctrl-C in the middle."""
        epochs, loader = self.config["epochs"], self.train_loader
        loader_state = loader.state_dict()          # the epoch is replayable from this state
        lr = self.optimizer.lr
        self.model.train()
        p = self.partial
        start = time.perf_counter() - p["seconds"]
        bar = tqdm(total=len(loader), initial=self.batch, desc=f"epoch {self.epoch + 1}/{epochs}",
                   unit="batch", disable=not self.progress, leave=False,
                   mininterval=0.1 if sys.stderr.isatty() else 10.0)
        try:
            for x, y in loader.iterate(start_batch=self.batch):
                loss, correct = self.train_step(x, y)
                self.batch += 1
                p["loss_sum"] += loss * len(y)
                p["correct"] += correct
                p["seen"] += len(y)
                elapsed = time.perf_counter() - start
                bar.update(1)
                bar.set_postfix({"loss": f"{p['loss_sum'] / p['seen']:.4f}",
                                 "acc": f"{100 * p['correct'] / p['seen']:.2f}%",
                                 "img/s": f"{p['seen'] / elapsed:.1f}"}, refresh=False)
                if self.stop_requested and self.batch < len(loader):
                    p["seconds"] = elapsed
                    self._save_last(self.state(loader_state))
                    self.log(f"interrupted: saved {self.last_path} at epoch {self.epoch + 1}, batch {self.batch} "
                             f"of {len(loader)}; continue with --resume")
                    return False
        finally:
            bar.close()
        seconds = time.perf_counter() - start
        test = evaluate(self.model, self.test_loader, self.num_classes, progress=self.progress)
        self.scheduler.step()
        self.epoch += 1
        row = {"epoch": self.epoch, "train_loss": p["loss_sum"] / p["seen"], "train_acc": p["correct"] / p["seen"],
               "test_loss": test["loss"], "test_acc": test["acc"], "lr": lr, "seconds": round(seconds, 3),
               "images_per_s": round(p["seen"] / seconds, 2)}
        improved = test["acc"] > self.best_acc
        self.best_acc = max(self.best_acc, test["acc"])
        self.batch, self.partial = 0, {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        state = self.state(loader.state_dict())
        if improved:      # best.npz first: a crash in between leaves last.npz one epoch behind, not best.npz
            save_checkpoint_file({k: state[k] for k in ("format", "config", "epoch", "batch", "best_acc", "data",
                                                        "model")}, self.best_path)
        self._save_last(state)
        self.history.append(row)
        self._write_metrics()
        self.log(f"epoch {self.epoch:>{len(str(epochs))}}/{epochs}  "
                 f"train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:6.2f}%  "
                 f"test loss {row['test_loss']:.4f} acc {100 * row['test_acc']:6.2f}%  "
                 f"lr {lr:.4g}  {seconds:.1f} s  {row['images_per_s']:.1f} img/s"
                 + ("  (best)" if improved else ""))
        if self.stop_requested and self.epoch < epochs:
            self.log(f"interrupted: saved {self.last_path} after epoch {self.epoch}; continue with --resume")
        return True
