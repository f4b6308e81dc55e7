"""Training a model on CIFAR: the loop, metrics, checkpoints and exact resume.

One epoch is the textbook loop, batch after batch:

    logits = model(x)                      forward
    loss = cross_entropy(logits, y)
    optimizer.zero_grad(); loss.backward() backward
    optimizer.step()                       update

then an evaluation on the test set and one step of the learning-rate
schedule. Around it sits what makes a long run safe to leave alone:

* the run directory ``DIR`` holds one run: a new run needs a new or empty
  directory (``exist_ok=True``: one whose other files it leaves alone, never
  one holding files of its own names), ``resume=True`` needs its ``last.npz``;
  both are checked before anything is read or written. While a run writes,
  ``DIR/.tinydense.lock`` keeps a second one out (see :class:`RunLock`);
* ``DIR/last.npz`` after every epoch: the model, the optimizer's momentum
  buffers, the schedule, the epoch, the state of every random generator and
  the metrics of every epoch so far, so ``resume=True`` continues exactly
  where the run stopped. It is the one source of truth: ``DIR/metrics.csv``
  (one row per epoch) is rewritten from it after every epoch and on resume,
  and ``DIR/best.npz`` (the selected model, see below) is written after it
  and repaired from it on resume. Every file is written atomically (a crash
  mid-write leaves the previous file intact, and a kill between two writes
  loses nothing); ``DIR/config.json`` records the configuration;
* Ctrl-C or SIGTERM finishes the current batch, saves the state in the middle
  of the epoch (the data order of an epoch is determined by the loader's
  state at its start, so the epoch can be replayed from that batch) and stops;
* a NaN or infinite loss (training, validation or test) stops the run before
  the bad state is saved; a resume may then lower the learning rate.

Model selection: ``best.npz`` holds the epoch with the best test accuracy by
default (what the paper's code keeps; the paper reports the final epoch, and
an accuracy chosen on the test set is an optimistic estimate). With
``val_split=N`` the last N training images (after ``limit_train``) are held
out, never trained on or augmented, and ``best.npz`` is the epoch with the best
accuracy on them.

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
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import backend, models
from . import functional as F
from .autograd import Tensor, no_grad
from .checkpoint import load as load_checkpoint_file
from .checkpoint import save as save_checkpoint_file
from .data import DataLoader, ImageDataset, default_data_dir, load_cifar
from .optim import SGD, MultiStepLR

try:                      # POSIX; without it (Windows) a run directory is not locked
    import fcntl
except ImportError:       # pragma: no cover
    fcntl = None

MODELS = ("densenet-bc", "densenet", "resnet")
DATASETS = {"cifar10": 10, "cifar100": 100}
DEFAULT_DEPTH = {"densenet-bc": 100, "densenet": 40, "resnet": 110}
METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds", "images_per_s")
VAL_COLUMNS = ("val_loss", "val_acc")            # after METRIC_COLUMNS in a run with a validation split
CHECKPOINT_FORMAT = "tinydense-run-1"
RUN_FILES = ("config.json", "metrics.csv", "last.npz", "best.npz", "curves.png")   # what a run writes
LOCK_FILE = ".tinydense.lock"
ESTIMATE_AFTER = 5        # batches timed (after the first, which warms up) for the run-time estimate
READ_EVERY_S = 1.0        # seconds between reads of the batches' losses (a read waits for the GPU)

# The paper's recipe (Huang et al. 2017, Section 4.2), the defaults of every run.
PAPER_RECIPE = dict(model="densenet-bc", depth=100, growth_rate=12, compression=None, drop_rate=0.0,
                    dataset="cifar10", epochs=300, batch_size=64, lr=0.1, momentum=0.9, nesterov=True,
                    weight_decay=1e-4, milestones=None, gamma=0.1, augment=True,
                    limit_train=None, limit_test=None, val_split=None, seed=0, device="cpu")
DENSENET_ONLY = ("growth_rate", "compression", "drop_rate")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class RunLocked(ValueError):
    """Another process is writing to the run directory."""


def paper_milestones(epochs: int) -> list:
    """The epochs at which the learning rate drops: 50% and 75% of the run
    (150 and 225 of 300; 15 and 22 of 30)."""
    return sorted({m for m in (epochs // 2, epochs * 3 // 4) if m > 0})


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def make_config(**options) -> dict:
    """The full run configuration: the paper's recipe with ``options`` on top,
    checked (ValueError naming the option and value) and completed
    (default depth per model, compression, milestones).

    Besides the recipe's keys it holds ``lr_changes``, the learning rates set
    by resumed runs (see :class:`Trainer`), normally empty."""
    unknown = set(options) - set(PAPER_RECIPE) - {"lr_changes"}
    if unknown:
        raise ValueError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    c = dict(PAPER_RECIPE, lr_changes=[])
    c.update({k: v for k, v in options.items() if v is not None})
    if options.get("depth") is None and c["model"] in DEFAULT_DEPTH:
        c["depth"] = DEFAULT_DEPTH[c["model"]]
    if c["model"] not in MODELS:
        raise ValueError(f"unknown model {c['model']!r}: expected one of {', '.join(MODELS)}")
    if c["dataset"] not in DATASETS:
        raise ValueError(f"unknown dataset {c['dataset']!r}: expected one of {', '.join(DATASETS)}")
    given = [f"--{k.replace('_', '-')}" for k in DENSENET_ONLY if options.get(k) is not None]
    if c["model"] == "resnet" and given:
        raise ValueError(f"{', '.join(given)} apply to DenseNets only, not to --model resnet")
    for name in ("epochs", "batch_size", "depth", "growth_rate"):
        if not _is_int(c[name]) or c[name] <= 0:
            raise ValueError(f"{name.replace('_', '-')} must be a positive integer, got {c[name]!r}")
    for name in ("limit_train", "limit_test", "val_split"):
        if c[name] is not None and (not _is_int(c[name]) or c[name] <= 0):
            raise ValueError(f"{name.replace('_', '-')} must be a positive number of images, got {c[name]!r}")
    if c["val_split"] is not None and c["limit_train"] is not None and c["val_split"] >= c["limit_train"]:
        raise ValueError(f"val-split {c['val_split']} leaves no training images of the {c['limit_train']} "
                         f"of --limit-train (the validation images are the last of them)")
    if not _is_int(c["seed"]) or c["seed"] < 0:
        raise ValueError(f"seed must be a non-negative integer, got {c['seed']!r}")
    for name in ("lr", "momentum", "weight_decay", "gamma", "drop_rate"):
        if not _is_number(c[name]) or c[name] < 0:
            raise ValueError(f"{name.replace('_', '-')} must be a non-negative number, got {c[name]!r}")
    if c["lr"] == 0:
        raise ValueError("lr must be positive, got 0")
    if not c["momentum"] < 1:
        raise ValueError(f"momentum must be in [0, 1), got {c['momentum']}")
    if c["momentum"] == 0 and options.get("nesterov") is None:
        c["nesterov"] = False                   # Nesterov momentum without momentum is plain SGD
    if c["nesterov"] and c["momentum"] == 0:
        raise ValueError("nesterov needs a momentum in (0, 1), got momentum 0")
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
    c["lr_changes"] = [dict(change) for change in c["lr_changes"]]
    for change in c["lr_changes"]:
        if sorted(change) != ["batch", "epoch", "lr"] or not _is_int(change["epoch"]) or change["epoch"] < 1 \
                or not _is_int(change["batch"]) or change["batch"] < 0 or not _is_number(change["lr"]) \
                or change["lr"] <= 0:
            raise ValueError(f"lr_changes must list {{epoch, batch, lr}} entries, got {change!r}")
    c["device"] = backend.check_device(c["device"])
    if c["model"] == "resnet":            # options that do not apply to a ResNet
        c["growth_rate"], c["compression"], c["drop_rate"] = None, None, None
    else:
        for i, (width, incoming) in enumerate(transition_widths(c), 1):
            if width < 1:
                raise ValueError(f"compression {c['compression']} leaves {width} channels in transition {i} "
                                 f"({incoming} channels come out of dense block {i}): use a larger --compression "
                                 f"(at least {1 / incoming:.3g} here)")
    return c


def transition_widths(config) -> list:
    """(channels kept, channels coming in) of each transition of the CIFAR DenseNet
    ``config`` describes: the channel arithmetic of :func:`tinydense.models.densenet`
    (stem 2k for DenseNet-BC, else 16; each block adds n*k; a transition keeps
    floor(theta*m) of m). Empty when the depth does not fit (the model says why)."""
    bottleneck = config["model"] == "densenet-bc"
    per_layer = 6 if bottleneck else 3
    depth, k, theta = config["depth"], config["growth_rate"], config["compression"]
    if depth < per_layer + 4 or (depth - 4) % per_layer:
        return []
    n = (depth - 4) // per_layer
    channels, widths = (2 * k if bottleneck and theta < 1 else 16), []
    for _ in range(2):
        incoming = channels + n * k
        channels = int(math.floor(theta * incoming))
        widths.append((channels, incoming))
    return widths


def base_lr(config) -> float:
    """The learning rate before the schedule's drops: ``lr``, or the last of ``lr_changes``."""
    return config["lr_changes"][-1]["lr"] if config["lr_changes"] else config["lr"]


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
    losses, sizes, counts = [], [], 0      # kept on the device and read once, at the end: on a GPU
    with no_grad():                        # every read waits until all queued work is done
        for x, y in tqdm(loader, desc=desc, leave=False, disable=not progress, unit="batch"):
            logits = model(x)
            xp = backend.get_array_module(logits.data)
            losses.append(F.cross_entropy(logits, y).data)
            sizes.append(len(y))
            counts = counts + xp.bincount(y.data * num_classes + logits.data.argmax(axis=1),
                                          minlength=num_classes ** 2)
    loss_sum = 0.0
    for loss, size in zip(backend.to_numpy(xp.stack(losses)) if losses else (), sizes):
        loss_sum += float(loss) * size
    confusion = np.zeros((num_classes, num_classes), np.int64)
    if losses:
        confusion += backend.to_numpy(counts).reshape(num_classes, num_classes)
    n = int(confusion.sum())
    return {"loss": loss_sum / max(n, 1), "acc": float(np.trace(confusion)) / max(n, 1), "confusion": confusion}


def train_step(model, optimizer, x, y):
    """One batch: forward, loss, backward, update. Returns (loss, number correct) as
    0-d arrays on the batch's device, not read: reading a GPU array makes the CPU wait
    until the GPU has done all the work queued so far, so the loop reads them only
    once in a while (:meth:`Trainer.read_batches`), never in the middle of a step."""
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.data, (logits.data.argmax(axis=1) == y.data).sum()


def nonfinite_entries(state_dict) -> list:
    """The names of the floating-point arrays in ``state_dict`` that hold a NaN or an infinity."""
    bad = []
    for name, array in state_dict.items():
        array = array.data if isinstance(array, Tensor) else array
        if array.dtype.kind == "f" and not bool(backend.get_array_module(array).isfinite(array).all()):
            bad.append(name)
    return bad


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


def remove_stale_temp_files(directory) -> list:
    """Delete what interrupted atomic writes of the run's own files left in
    ``directory`` (``.last.npz.*.tmp``, ``.metrics.csv.*.tmp`` ... for each of
    :data:`RUN_FILES`) and nothing else; returns their names. Call it only while
    holding the run's lock: another run's writes in progress look the same."""
    removed = []
    for name in RUN_FILES:
        for path in Path(directory).glob(f".{name}.*.tmp"):
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return sorted(removed)


def _own_entry(name) -> bool:
    """A file name in a run directory that tinydense wrote and may replace: the lock or a temporary file."""
    return name == LOCK_FILE or any(name.startswith(f".{f}.") and name.endswith(".tmp") for f in RUN_FILES)


def _listing(names, limit=5) -> str:
    shown = ", ".join(sorted(names)[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_new_run_dir(out, config, exist_ok=False) -> None:
    """Raise ValueError unless a new run with ``config`` may write into ``out``:
    a directory that does not exist yet or is empty; one that holds only the
    ``config.json`` of a run with the same configuration that saved no epoch (it
    was stopped in its first epoch); with ``exist_ok``, also one with unrelated
    files, which the run leaves alone. A file of one of :data:`RUN_FILES` names
    is never overwritten by a new run, ``exist_ok`` or not."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a directory")
    if not out.is_dir():
        return
    entries = [p.name for p in out.iterdir() if not _own_entry(p.name)]
    ours = [n for n in RUN_FILES if n in entries]
    if "last.npz" in ours or "metrics.csv" in ours:
        raise ValueError(f"{out} already holds a run ({', '.join(ours)}): pass --resume to continue it, "
                         f"or choose another --out directory")
    if "config.json" in ours:
        difference = _config_difference(out / "config.json", config)
        if difference:
            raise ValueError(f"{out / 'config.json'} is not this run's configuration ({difference}) and a new "
                             f"run would overwrite it: choose another --out directory")
        ours.remove("config.json")
    if ours:
        raise ValueError(f"{out} holds {', '.join(ours)}, which a new run would overwrite, but no run to "
                         f"resume (no last.npz): choose another --out directory")
    others = [n for n in entries if n not in RUN_FILES]
    if others and not exist_ok:
        raise ValueError(f"--out {out} is not empty and not a tinydense run (it holds {_listing(others)}): "
                         f"choose a new or empty directory, or pass --out-exists-ok to write the run's files "
                         f"({', '.join(RUN_FILES)}) beside these, which are left alone")


def _config_difference(path, config) -> str:
    """'' if ``path`` holds ``config`` (as a run writes it to config.json), else what differs."""
    try:
        saved = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        return f"not a tinydense configuration: {type(e).__name__}"
    if not isinstance(saved, dict) or "model" not in saved:
        return "not a tinydense configuration"
    saved.pop("data_dir", None)
    wanted = json.loads(json.dumps(config))
    keys = sorted(set(saved) | set(wanted))
    differing = [f"{k} {saved.get(k)!r} there, {wanted.get(k)!r} here" for k in keys if saved.get(k) != wanted.get(k)]
    return "; ".join(differing[:3])


class RunLock:
    """An exclusive lock on a run directory for as long as a run writes to it.

    ``fcntl.flock`` on ``DIR/.tinydense.lock``, which records the holder's pid,
    host and start time so that a second run can say who has it. The kernel
    releases the lock when its process ends, however it ends (even SIGKILL), so
    a lock file left behind by a killed run is simply taken over. ``release()``
    deletes the file. Without ``fcntl`` (Windows) nothing is locked."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self.fd = None

    def holder(self) -> str:
        """Who holds the lock, as recorded in the lock file."""
        try:
            info = json.loads(self.path.read_text())
            return f"pid {info['pid']} on {info['host']}, since {info['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "a process that has not yet recorded its pid"

    def _refuse(self):
        raise RunLocked(f"{self.directory} is in use by another tinydense run ({self.holder()}): wait for it to "
                        f"finish or stop it, or choose another --out directory")

    def check(self) -> None:
        """Raise :class:`RunLocked` if another process holds the lock (changes nothing)."""
        if fcntl is None or not self.path.is_file():
            return
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            self._refuse()
        finally:
            os.close(fd)                         # closing also drops the shared lock

    def acquire(self) -> "RunLock":
        """Take the lock (the directory must exist), or raise :class:`RunLocked`."""
        if fcntl is None:
            return self
        for attempt in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if attempt < 2:                  # perhaps only another run's check(), a moment long
                    time.sleep(0.05)
                    continue
                self._refuse()
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:            # released (and deleted) by its holder meanwhile
                same = False
            if not same:
                os.close(fd)
                continue
            info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "command": " ".join(sys.argv)}
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(info) + "\n").encode())
            self.fd = fd
            return self
        self._refuse()

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)    # while still holding it: a waiting process re-checks the inode
            os.close(self.fd)
            self.fd = None


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


def format_duration(seconds) -> str:
    """A duration for people: '0.4 s', '45 s', '12 min 5 s', '3 h 20 min', '18 d 23 h'."""
    if seconds < 9.95:
        return f"{seconds:.1f} s"
    s = int(round(seconds))
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "min", 60), ("min", 60, "s", 1)):
        if s >= size:
            return f"{s // size} {unit} {s % size // sub_size} {sub}"
    return f"{s} s"


def plural(n, word, words=None) -> str:
    """'1 epoch', '3 epochs' ('1 batch', '3 batches' with words="batches")."""
    return f"{n} {word}" if n == 1 else f"{n} {words or word + 's'}"


def _stamp(path):
    """What identifies one version of a file: inode, size and modification time."""
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


class Trainer:
    """Set up a run (checking everything, writing nothing), then :meth:`fit` it.

    config:   options for :func:`make_config`. On resume the saved configuration is
              used; only ``epochs``, ``device`` and ``lr`` may differ, and any other
              option given must match it. A different ``lr`` becomes the base learning
              rate from the resumed batch on, with the schedule's drops still applied
              to it (lr(epoch) = lr * gamma ** (number of milestones <= epoch), epochs
              from 0); it is recorded in ``config["lr_changes"]`` (and config.json) as
              {"epoch": the epoch (from 1) it took effect in, "batch": the batches of that
              epoch already trained at the old rate, "lr": the new base rate}.
    out_dir:  the run directory: new, empty, or as :func:`check_new_run_dir` allows
              (``exist_ok``: beside unrelated files); ``resume=True`` needs its ``last.npz``.
    data_dir: where the data set lives: ``data_dir``, else ``$TINYDENSE_DATA``, else
              (on resume) the directory the run used, else ``data/``;
              download: fetch it when missing (an empty directory is never left behind).
    """

    def __init__(self, config, out_dir, resume=False, data_dir=None, download=False,
                 progress=True, log=print, exist_ok=False):
        self.out = Path(out_dir)
        self.last_path, self.best_path = self.out / "last.npz", self.out / "best.npz"
        self.metrics_path, self.config_path = self.out / "metrics.csv", self.out / "config.json"
        self.progress, self.log = progress, log
        self.resume, self.exist_ok = resume, exist_ok
        self.lock = RunLock(self.out)
        self.lock.check()
        checkpoint = None
        if resume:
            if not self.last_path.is_file():
                raise ValueError(f"nothing to resume: {self.last_path} does not exist "
                                 f"(start the run without --resume, or give the run's --out directory)")
            self._last_stamp = _stamp(self.last_path)
            checkpoint = read_checkpoint(self.last_path)
            config = self._resumed_config(checkpoint, config)
        else:
            config = make_config(**config)
        self.config = config
        self.data_dir = default_data_dir(data_dir, recorded=self._saved_data_dir() if resume else None)

        # the model first (an impossible architecture is reported before the directory is judged
        # and the data are read), seeded
        backend.manual_seed(config["seed"])
        self.model = build_model(config)
        if not resume:
            check_new_run_dir(self.out, config, exist_ok)

        # data: the first limit_train images, of which the last val_split are held out;
        # normalisation statistics from the images trained on
        train_set = load_cifar(config["dataset"], self.data_dir, train=True, download=download)
        test_set = load_cifar(config["dataset"], self.data_dir, train=False, download=download)
        used = train_set.head(config["limit_train"])
        n_val = config["val_split"] or 0
        if n_val >= len(used):
            raise ValueError(f"val-split {n_val} leaves no training images: {self.data_dir} has {len(used)}")
        self.train_set = used.head(len(used) - n_val)
        self.val_set = (ImageDataset(used.images[len(used) - n_val:], used.labels[len(used) - n_val:], used.classes)
                        if n_val else None)
        self.test_set = test_set.head(config["limit_test"])
        self.mean, self.std = self.train_set.channel_stats()
        self.num_classes = self.train_set.num_classes
        self.select = "val_acc" if self.val_set is not None else "test_acc"     # what chooses best.npz

        # optimizer, schedule, loaders
        self.optimizer = SGD(self.model.parameters(), lr=config["lr"], momentum=config["momentum"],
                             nesterov=config["nesterov"], weight_decay=config["weight_decay"])
        self.scheduler = MultiStepLR(self.optimizer, config["milestones"], gamma=config["gamma"])
        self.train_loader = DataLoader(self.train_set, config["batch_size"], shuffle=True,
                                       augment=config["augment"], mean=self.mean, std=self.std,
                                       device=config["device"], seed=[config["seed"], 1])
        eval_batch = max(config["batch_size"], 128)
        self.test_loader = DataLoader(self.test_set, eval_batch, mean=self.mean, std=self.std,
                                      device=config["device"])
        self.val_loader = (DataLoader(self.val_set, eval_batch, mean=self.mean, std=self.std,
                                      device=config["device"]) if self.val_set is not None else None)
        self.epoch, self.batch, self.best_acc, self.best_epoch = 0, 0, -1.0, 0
        self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        self.read_every_s, self._unread, self._read_at = READ_EVERY_S, [], 0.0   # see read_batches
        self.history = []
        self.stop_requested, self.stop_signal = False, None    # stop_signal: the signal that asked for the stop
        self.saved_at = None                        # (epoch, batch) that last.npz holds
        self.estimate_s, self._timed = None, None   # the run-time estimate; (start, batches) of its timing
        if checkpoint is not None:
            self._restore(checkpoint)

    # --- configuration on resume -------------------------------------------------------
    @staticmethod
    def _resumed_config(checkpoint, given):
        """The saved configuration, with the few options a resumed run may change."""
        saved = checkpoint["config"]
        given = {k: v for k, v in (given or {}).items() if v is not None}
        for key, value in given.items():
            if key in ("epochs", "device", "milestones", "lr"):
                continue
            if key not in saved or saved[key] != value:
                raise ValueError(f"--{key.replace('_', '-')} {value} differs from the run being resumed "
                                 f"({saved.get(key)}); a resumed run keeps its configuration "
                                 f"(only --epochs, --device and --lr may change)")
        if "milestones" in given and list(given["milestones"]) != saved["milestones"]:
            raise ValueError(f"--milestones {given['milestones']} differs from the run being resumed "
                             f"({saved['milestones']}); a resumed run keeps its schedule")
        config = dict(saved)
        config.update({k: given[k] for k in ("epochs", "device") if k in given})
        if "lr" in given and given["lr"] != base_lr(saved):
            change = {"epoch": int(checkpoint["epoch"]) + 1, "batch": int(checkpoint["batch"]), "lr": given["lr"]}
            config["lr_changes"] = saved["lr_changes"] + [change]
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
            best_acc and best_epoch (of the selected model, see ``select``),
            history (one dict per completed epoch: the rows of metrics.csv),
            data {mean, std}, partial (the running sums of a half-done epoch),
            model, optimizer, scheduler,
            rng {cpu: tinydense's generator, loader: the loader's at the epoch's start}
        """
        return {"format": CHECKPOINT_FORMAT, "config": dict(self.config),
                "epoch": self.epoch, "batch": self.batch, "best_acc": self.best_acc,
                "best_epoch": self.best_epoch, "history": [dict(row) for row in self.history],
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
            history = ck.get("history")
            if history is None:                    # written before last.npz held the history
                history = [row for row in self._read_metrics() if row["epoch"] <= self.epoch]
            self.history = [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in history]
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"{self.last_path} is incomplete or does not match its configuration: {e}") from e
        if not (np.allclose(mean, self.mean) and np.allclose(std, self.std)):
            raise ValueError(f"the training data in {self.data_dir} differ from those the run in {self.out} "
                             f"started with (other per-channel mean/std): resume with the same data")
        if self.epoch >= self.config["epochs"]:
            raise ValueError(f"the run in {self.out} has already completed {self.epoch} of "
                             f"{self.config['epochs']} epochs: pass --epochs N with N > {self.epoch} to train further")
        scores = [row[self.select] for row in self.history]
        self.best_epoch = int(ck.get("best_epoch", self.history[scores.index(max(scores))]["epoch"] if scores else 0))
        self.scheduler.base_lr = base_lr(self.config)          # a resume may have set a new one
        self.optimizer.lr = self.scheduler.lr_at(self.scheduler.last_epoch)
        self.saved_at = (self.epoch, self.batch)
        backend.set_rng_state(rng_state)

    def _read_metrics(self) -> list:
        if not self.metrics_path.is_file():
            return []
        with open(self.metrics_path, newline="") as f:
            return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()}
                    for row in csv.DictReader(f)]

    def _write_metrics(self) -> None:
        """metrics.csv from the history (the one in last.npz)."""
        columns = METRIC_COLUMNS + (VAL_COLUMNS if self.val_set is not None else ())
        lines = [",".join(columns)]
        lines += [",".join(str(row[c]) for c in columns) for row in self.history]
        write_atomic(self.metrics_path, "\n".join(lines) + "\n")

    def _save_last(self, state) -> None:
        save_checkpoint_file(state, self.last_path)
        self.saved_at = (self.epoch, self.batch)

    def _save_best(self, state) -> None:
        save_checkpoint_file({k: state[k] for k in ("format", "config", "epoch", "batch", "best_acc", "best_epoch",
                                                    "data", "model")}, self.best_path)

    def _repair_best(self) -> None:
        """If last.npz holds the selected epoch but best.npz does not (a kill between
        the two writes), write best.npz from it."""
        if self.batch or not self.best_epoch or self.best_epoch != self.epoch:
            return
        try:
            if int(read_checkpoint(self.best_path)["epoch"]) == self.epoch:
                return
        except ValueError:                          # missing or unreadable
            pass
        self._save_best(self.state(self.train_loader.state_dict()))
        self.log(f"wrote {self.best_path} (epoch {self.epoch}) from {self.last_path}: the run had stopped "
                 f"between the two")

    def _check_unchanged(self) -> None:
        """Now that the lock is held: is the directory still as it was checked?"""
        if self.resume:
            if _stamp(self.last_path) != self._last_stamp:
                raise ValueError(f"{self.last_path} changed after it was read (another run wrote to "
                                 f"{self.out}): start the command again")
        else:
            check_new_run_dir(self.out, self.config, self.exist_ok)

    def _forget_unsaved_start(self, created) -> None:
        """A new run that stops before saving anything takes its config.json (and
        the directory, if it made it and it is empty) away again."""
        self.config_path.unlink(missing_ok=True)
        self.lock.release()
        if created:
            try:
                self.out.rmdir()
            except OSError:
                pass

    # --- the loop -----------------------------------------------------------------------
    def fit(self) -> str:
        """Train up to ``config["epochs"]``. Returns ``"finished"``, or
        ``"interrupted"`` after Ctrl-C or SIGTERM (the state was saved first;
        ``stop_signal`` says which). Raises :class:`TrainingDiverged` on a NaN or
        infinite loss, :class:`RunLocked` if another run holds the directory."""
        created = not self.out.exists()
        self.out.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        try:
            self._check_unchanged()
        except BaseException:
            self.lock.release()
            raise
        handlers = self._install_signal_handlers()
        wrote_config = False
        try:
            removed = remove_stale_temp_files(self.out)
            if removed:
                self.log(f"removed {len(removed)} temporary file(s) left in {self.out} by interrupted writes")
            write_atomic(self.config_path, json.dumps(dict(self.config, data_dir=str(self.data_dir)), indent=2) + "\n")
            wrote_config = True
            if self.resume:
                self._write_metrics()
                self._repair_best()
                changes = self.config["lr_changes"]
                self.log(f"resuming {self.out} at epoch {self.epoch + 1} of {self.config['epochs']}"
                         + (f", batch {self.batch + 1}" if self.batch else "")
                         + f" (learning-rate milestones stay at {self.config['milestones']}"
                         + (f"; base learning rate {changes[-1]['lr']:g} since epoch {changes[-1]['epoch']}"
                            if changes else "") + ")")
            while self.epoch < self.config["epochs"]:
                if not self.train_epoch() or self.stop_requested:
                    return "interrupted"
            return "finished"
        except BaseException:
            if self.saved_at is None and wrote_config:
                self._forget_unsaved_start(created)
            raise
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            self.lock.release()

    def _install_signal_handlers(self) -> dict:
        """Ctrl-C (SIGINT) and SIGTERM set a flag the loop checks after each batch;
        a second one stops at once, without saving."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def on_signal(signum, frame):
            if self.stop_requested:
                if signum == signal.SIGINT:
                    raise KeyboardInterrupt
                raise SystemExit(128 + signum)
            self.stop_requested, self.stop_signal = True, signum
            if signum == signal.SIGINT:
                print("\nCtrl-C: saving after this batch (press Ctrl-C again to stop at once without saving)",
                      file=sys.stderr, flush=True)
            else:
                print(f"\n{signal.Signals(signum).name}: saving after this batch (send it again to stop at once "
                      f"without saving)", file=sys.stderr, flush=True)
        return {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    def request_stop(self) -> None:
        """Stop after the current batch, saving the state (what Ctrl-C does)."""
        self.stop_requested = True

    def _kept_and_advice(self) -> str:
        """What a stopped run kept, and how to go on with a smaller learning rate."""
        smaller = float(f"{base_lr(self.config) / 10:.12g}")
        if self.saved_at is None:
            return f"nothing had been saved. Start again with a smaller learning rate, e.g. --lr {smaller:g}"
        return (f"{self.last_path} keeps the last good state ({self._describe(*self.saved_at)}). Continue with a "
                f"smaller learning rate: tinydense train --out {self.out} --resume --lr {smaller:g}")

    def train_step(self, x, y):
        """One batch (:func:`train_step`). Returns (loss, number correct), unread."""
        return train_step(self.model, self.optimizer, x, y)

    def read_batches(self) -> None:
        """Add the losses and correct counts of the batches trained since the last read
        to the epoch's running sums. On a GPU each read waits for the queued work, so the
        loop reads about every ``read_every_s`` seconds, at the run-time estimate, before
        saving and at the end of the epoch (one transfer for all the batches), and the
        numbers are those of reading every batch. A NaN or infinite loss raises
        :class:`TrainingDiverged` naming its batch; nothing has been saved since it (the
        model in memory may have taken further steps; last.npz holds the last good state)."""
        unread, self._unread = self._unread, []
        self._read_at = time.perf_counter()
        if not unread:
            return
        xp = backend.get_array_module(unread[0][2])
        losses = backend.to_numpy(xp.stack([loss for _, _, loss, _ in unread]))
        corrects = backend.to_numpy(xp.stack([correct for *_, correct in unread]))
        p = self.partial
        for (batch, size, _, _), loss, correct in zip(unread, losses, corrects):
            loss = float(loss)
            if not math.isfinite(loss):
                raise TrainingDiverged(f"the loss is {loss} at epoch {self.epoch + 1}, batch {batch}: "
                                       f"training stopped; {self._kept_and_advice()}")
            p["loss_sum"] += loss * size
            p["correct"] += int(correct)
            p["seen"] += size

    @staticmethod
    def _describe(epoch, batch) -> str:
        return f"epoch {epoch + 1}, batch {batch}" if batch else f"after epoch {epoch}"

    # --- the run-time estimate ------------------------------------------------------------
    def _eval_images(self) -> int:
        return len(self.test_set) + (len(self.val_set) if self.val_set is not None else 0)

    def _time_batch(self) -> None:
        """After each batch: once ESTIMATE_AFTER batches (after the first) are timed, report the estimate."""
        if self.estimate_s is not None:
            return
        if self._timed is None:
            self.read_batches()                       # the GPU's queue is empty when the clock starts
            self._timed = (time.perf_counter(), 0)
            return
        start, n = self._timed[0], self._timed[1] + 1
        self._timed = (start, n)
        if n == ESTIMATE_AFTER:
            self.read_batches()                       # ... and when it stops
            now = time.perf_counter()
            per_image = (now - start) / n / self.config["batch_size"]
            self._report_estimate((now - start) / n * len(self.train_loader), self._eval_images() * per_image / 3,
                                  f"batches {self.batch - n + 1}-{self.batch} of this epoch; testing guessed "
                                  f"at a third of the training time per image")

    def _report_estimate(self, train_s, eval_s, measured_on) -> None:
        """Log the estimated time of the whole run from the seconds one epoch trains and tests."""
        epochs, batches = self.config["epochs"], len(self.train_loader)
        self.estimate_s = (train_s + eval_s) * epochs
        line = (f"estimated time for the run: {format_duration(self.estimate_s)} ({plural(epochs, 'epoch')} x "
                f"{plural(batches, 'batch', 'batches')} at {train_s / batches:.3g} s each, "
                f"plus {format_duration(eval_s)} testing {self._eval_images():,} images per epoch; measured on "
                f"{measured_on})")
        if self.resume:
            done = self.epoch + self.batch / batches
            line += f"; {format_duration((train_s + eval_s) * (epochs - done))} of it still to go"
        if self.progress:
            with tqdm.external_write_mode():
                self.log(line)
        else:
            self.log(line)

    # --- one epoch --------------------------------------------------------------------
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
        self._read_at = time.perf_counter()
        try:
            for x, y in loader.iterate(start_batch=self.batch):
                loss, correct = self.train_step(x, y)
                self.batch += 1
                self._unread.append((self.batch, len(y), loss, correct))
                bar.update(1)
                if self.batch < len(loader):
                    self._time_batch()
                if self.stop_requested or time.perf_counter() - self._read_at >= self.read_every_s:
                    self.read_batches()
                    elapsed = time.perf_counter() - start
                    if p["seen"]:
                        bar.set_postfix({"loss": f"{p['loss_sum'] / p['seen']:.4f}",
                                         "acc": f"{100 * p['correct'] / p['seen']:.2f}%",
                                         "img/s": f"{p['seen'] / elapsed:.1f}"}, refresh=False)
                if self.stop_requested and self.batch < len(loader):
                    p["seconds"] = elapsed
                    self._save_last(self.state(loader_state))
                    self.log(f"interrupted: saved {self.last_path} at epoch {self.epoch + 1}, batch {self.batch} "
                             f"of {len(loader)}; continue with --resume")
                    return False
            self.read_batches()
        finally:
            bar.close()
            self._unread = []
        seconds = time.perf_counter() - start
        evaluated = time.perf_counter()
        results = {"test": evaluate(self.model, self.test_loader, self.num_classes, progress=self.progress)}
        if self.val_loader is not None:
            results["val"] = evaluate(self.model, self.val_loader, self.num_classes, progress=self.progress,
                                      desc="validation")
        eval_seconds = time.perf_counter() - evaluated
        for split, result in results.items():
            if not math.isfinite(result["loss"]):
                raise TrainingDiverged(f"the {'validation' if split == 'val' else 'test'} loss is {result['loss']} "
                                       f"after epoch {self.epoch + 1}: training stopped; {self._kept_and_advice()}")
        test = results["test"]
        row = {"epoch": self.epoch + 1, "train_loss": p["loss_sum"] / p["seen"], "train_acc": p["correct"] / p["seen"],
               "test_loss": test["loss"], "test_acc": test["acc"], "lr": float(f"{lr:.12g}"),
               "seconds": round(seconds, 3), "images_per_s": round(p["seen"] / seconds, 2)}
        if "val" in results:
            row.update(val_loss=results["val"]["loss"], val_acc=results["val"]["acc"])
        improved = row[self.select] > self.best_acc
        weights = dict(self.model.named_parameters()) | dict(self.model.named_buffers())
        if improved and nonfinite_entries(weights):       # never select a broken model
            raise TrainingDiverged(f"the model holds non-finite values ({_listing(nonfinite_entries(weights), 3)}) "
                                   f"after epoch {self.epoch + 1}: training stopped; {self._kept_and_advice()}")
        self.scheduler.step()
        self.epoch += 1
        self.history.append(row)
        if improved:
            self.best_acc, self.best_epoch = row[self.select], self.epoch
        self.batch, self.partial = 0, {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        state = self.state(loader.state_dict())
        self._save_last(state)             # the source of truth first: a kill after it loses nothing
        if improved:
            self._save_best(state)
        self._write_metrics()
        self.log(f"epoch {self.epoch:>{len(str(epochs))}}/{epochs}  "
                 f"train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:6.2f}%  "
                 + (f"val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:6.2f}%  " if "val" in results else "")
                 + f"test loss {row['test_loss']:.4f} acc {100 * row['test_acc']:6.2f}%  "
                 f"lr {lr:.4g}  {seconds:.1f} s  {row['images_per_s']:.1f} img/s"
                 + ("  (best)" if improved else ""))
        if self.estimate_s is None and self.epoch < epochs:
            self._report_estimate(seconds, eval_seconds, f"epoch {self.epoch}")
        if self.stop_requested and self.epoch < epochs:
            self.log(f"interrupted: saved {self.last_path} after epoch {self.epoch}; continue with --resume")
        return True


# --- BLAS threads -------------------------------------------------------------------------
# NumPy's matrix products run in a BLAS library (OpenBLAS in NumPy's wheels, or MKL) that
# starts one thread per core. The environment variables that set this (OPENBLAS_NUM_THREADS,
# OMP_NUM_THREADS, MKL_NUM_THREADS) are read once, when NumPy loads the library, so by the time
# tinydense runs, only the library's own function can change it.
_BLAS_CALLS = (("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),   # NumPy's wheels
               ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
               ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
               ("openblas_set_num_threads", "openblas_get_num_threads"),
               ("MKL_Set_Num_Threads", "MKL_Get_Max_Threads"))


def _blas_functions():
    """(set, get) ctypes functions of every BLAS library loaded in this process."""
    import ctypes
    import glob
    paths = set()
    try:
        with open("/proc/self/maps") as f:      # Linux: every shared library mapped into the process
            paths.update(line.split(None, 5)[-1].strip() for line in f if "blas" in line.lower() or "mkl" in line)
    except OSError:                             # elsewhere: the libraries NumPy's wheel brings along
        pass
    for folder in (Path(np.__file__).parent / ".dylibs", Path(np.__file__).parent.with_name("numpy.libs")):
        paths.update(glob.glob(str(folder / "*blas*")))
    found = []
    for path in sorted(p for p in paths if os.path.isfile(p)):
        try:
            lib = ctypes.CDLL(path)              # already loaded: the same library, not a second copy
        except OSError:
            continue
        for set_name, get_name in _BLAS_CALLS:
            if hasattr(lib, set_name) and hasattr(lib, get_name):
                found.append((getattr(lib, set_name), getattr(lib, get_name)))
                break
    return found


def blas_threads():
    """The number of threads the loaded BLAS library uses (None if it cannot be asked)."""
    functions = _blas_functions()
    return int(functions[0][1]()) if functions else None


def set_blas_threads(n: int) -> int:
    """Let the BLAS library behind NumPy's matrix products use ``n`` threads, from
    now on, in this process (and, through the environment variables, in processes it
    starts). Returns the number the library reports afterwards; ValueError if it
    cannot be set or the library does not take it (e.g. more than its maximum)."""
    if not _is_int(n) or n <= 0:
        raise ValueError(f"threads must be a positive integer, got {n!r}")
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(n)
    functions = _blas_functions()
    if not functions:
        raise ValueError(f"--threads {n}: found no OpenBLAS or MKL library in this process to set; start the "
                         f"command with OPENBLAS_NUM_THREADS={n} OMP_NUM_THREADS={n} MKL_NUM_THREADS={n} instead")
    for set_threads, get_threads in functions:
        before = int(get_threads())
        set_threads(int(n))
        got = int(get_threads())
        if got != n:
            set_threads(before)
            raise ValueError(f"--threads {n}: the BLAS library uses {got} threads after being asked for {n} "
                             f"(its maximum?)")
    return n
