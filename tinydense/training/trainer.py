"""The :class:`Trainer`: a whole run, epoch after epoch, safe to leave alone (see
:mod:`tinydense.training` for what it writes and how it stops and resumes).

Setting up (``__init__``) checks everything and writes nothing: the configuration,
the run directory, the data. :meth:`Trainer.fit` takes the directory and runs the
epochs; :meth:`Trainer.train_epoch` is the textbook loop over the batches
(:func:`~tinydense.training.loop.train_step`), an evaluation
(:func:`~tinydense.training.loop.evaluate`), one step of the schedule and the saves.
(About 430 lines: a run's life cycle, from its checks to its last save, reads best in
one class; the jobs around it, the checkpoints' contents, the run directory, the files,
the estimate, the size guard and the signals, are the modules beside this one.)
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import backend
from ..data import DataLoader, ImageDataset, default_data_dir, load_cifar
from ..optim import SGD, MultiStepLR
from ..text import listing
from ..threads import blas_threads
from . import runfiles
from .checkpoints import nonfinite_entries, read_checkpoint, restore, run_state
from .config import base_lr, build_model, make_config, resumed_config
from .estimate import RunTimeEstimate
from .loop import evaluate, train_step
from .signals import restore_handlers, stop_on_signals
from .size import check_fits
from .rundir import RunLock, check_new_run_dir, check_writable, remove_stale_temp_files, stamp

READ_EVERY_S = 1.0        # seconds between reads of the batches' losses (a read waits for the GPU)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def _new_partial() -> dict:
    """The running sums of an epoch in progress."""
    return {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}


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
              download: fetch it when missing (an empty directory is never left behind):
              True, False, or ``"default"``: only into the default folder ``data/``.
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
        checkpoint = self._read_configuration(config)
        self.recorded = runfiles.read_record(self.out) if resume else {}      # config.json of the run resumed
        self.data_dir = default_data_dir(data_dir, recorded=self.recorded.get("data_dir"))
        # the model first (an impossible architecture is reported before the directory is judged
        # and the data are read), seeded
        check_fits(self.config)
        backend.manual_seed(self.config["seed"])
        self.model = build_model(self.config)
        if not resume:
            check_new_run_dir(self.out, self.config, exist_ok)
        check_writable(self.out)
        self._load_data(download)
        self._make_optimizer_and_loaders()
        self.epoch, self.batch, self.best_acc, self.best_epoch = 0, 0, -1.0, 0
        self.partial = _new_partial()
        self.read_every_s, self._unread, self._read_at = READ_EVERY_S, [], 0.0   # see read_batches
        self.history = []
        self.stop_requested, self.stop_signal = False, None    # stop_signal: the signal that asked for the stop
        self.saved_at = None                        # (epoch, batch) that last.npz holds
        self.estimate = RunTimeEstimate(self._say)
        if checkpoint is not None:
            restore(self, checkpoint)

    # --- setting up ----------------------------------------------------------------------
    def _read_configuration(self, given):
        """``self.config``: the options checked, or on resume the saved ones; returns the
        checkpoint to continue from (None for a new run)."""
        if not self.resume:
            self.config = make_config(**(given or {}))
            return None
        if not self.last_path.is_file():
            raise ValueError(f"nothing to resume: {self.last_path} does not exist "
                             f"(start the run without --resume, or give the run's --out directory)")
        self._last_stamp = stamp(self.last_path)
        checkpoint = read_checkpoint(self.last_path)
        self.config = resumed_config(checkpoint, given)
        return checkpoint

    def _load_data(self, download) -> None:
        """The first limit_train training images, of which the last val_split are held out;
        the test images; the normalisation statistics of the images trained on."""
        config = self.config
        if download == "default":
            download = self.data_dir == Path("data")
        train_set = load_cifar(config["dataset"], self.data_dir, train=True, download=download)
        test_set = load_cifar(config["dataset"], self.data_dir, train=False, download=download)
        for option, images in (("limit_train", train_set), ("limit_test", test_set)):
            if (config[option] or 0) > len(images):
                self.log(f"note: --{option.replace('_', '-')} {config[option]} is more than the {len(images)} "
                         f"{'training' if images is train_set else 'test'} images in {self.data_dir}: using all "
                         f"{len(images)}")
        used = train_set.head(config["limit_train"])
        n_val = config["val_split"] or 0
        if n_val >= len(used):
            raise ValueError(f"val-split {n_val} leaves no training images: {self.data_dir} has {len(used)}")
        self.train_set = used.head(len(used) - n_val)
        self.val_set = (ImageDataset(used.images[len(used) - n_val:], used.labels[len(used) - n_val:], used.classes)
                        if n_val else None)
        self.test_set = test_set.head(config["limit_test"])
        self.mean, self.std = self.train_set.channel_stats()
        if not (self.std > 0).all():
            channel = int(np.argmin(self.std))
            raise ValueError(f"colour channel {channel} of the {len(self.train_set)} training images in "
                             f"{self.data_dir} is constant (standard deviation 0): normalising would divide by "
                             f"0. Are the files damaged?")
        self.num_classes = self.train_set.num_classes
        self.select = "val_acc" if self.val_set is not None else "test_acc"     # what chooses best.npz

    def _make_optimizer_and_loaders(self) -> None:
        config = self.config
        self.optimizer = SGD(self.model.parameters(), lr=config["lr"], momentum=config["momentum"],
                             nesterov=config["nesterov"], weight_decay=config["weight_decay"])
        self.scheduler = MultiStepLR(self.optimizer, config["milestones"], gamma=config["gamma"])
        self.train_loader = DataLoader(self.train_set, config["batch_size"], shuffle=True,
                                       augment=config["augment"], mean=self.mean, std=self.std,
                                       device=config["device"], seed=[config["seed"], 1])
        eval_batch = config["eval_batch_size"] or config["batch_size"]
        self.test_loader = DataLoader(self.test_set, eval_batch, mean=self.mean, std=self.std,
                                      device=config["device"])
        self.val_loader = (DataLoader(self.val_set, eval_batch, mean=self.mean, std=self.std,
                                      device=config["device"]) if self.val_set is not None else None)

    # --- checkpoints --------------------------------------------------------------------
    def state(self, loader_state) -> dict:
        """Everything the run needs to continue (:func:`.checkpoints.run_state`)."""
        return run_state(self, loader_state)

    def _write_metrics(self) -> None:
        """metrics.csv from the history (the one in last.npz)."""
        runfiles.write_metrics(self.metrics_path, self.history, self.val_set is not None, self._intact())

    def _save_last(self, state) -> None:
        runfiles.save(state, self.last_path, self._intact())
        self.saved_at = (self.epoch, self.batch)

    def _save_best(self, state) -> None:
        runfiles.save({k: state[k] for k in ("format", "config", "epoch", "batch", "best_acc", "best_epoch",
                                             "data", "model")}, self.best_path, self._intact())

    def _intact(self) -> str:
        """What a failed write leaves, for its error message."""
        if self.saved_at is None:
            return "nothing of this run had been saved yet"
        return (f"{self.last_path} keeps the state {self._describe(*self.saved_at)}: free some space, then "
                f"continue with: tinydense train --out {self.out} --resume")

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

    # --- the run ------------------------------------------------------------------------
    def fit(self) -> str:
        """Train up to ``config["epochs"]``. Returns ``"finished"``, or
        ``"interrupted"`` after Ctrl-C or SIGTERM (the state was saved first;
        ``stop_signal`` says which). Raises :class:`TrainingDiverged` on a NaN or
        infinite loss, :class:`RunLocked` if another run holds the directory."""
        created = not self.out.exists()
        self._take_directory()
        handlers = stop_on_signals(self)
        wrote_config = False
        try:
            self._write_start_files()
            wrote_config = True
            if self.resume:
                self._start_resumed()
            while self.epoch < self.config["epochs"]:
                if not self.train_epoch() or self.stop_requested:
                    return "interrupted"
            return "finished"
        except BaseException:
            if self.saved_at is None and wrote_config:
                self._forget_unsaved_start(created)
            raise
        finally:
            restore_handlers(handlers)
            self.lock.release()

    def _write_start_files(self) -> None:
        """Remove what interrupted writes left, and write config.json."""
        removed = remove_stale_temp_files(self.out)
        if removed:
            self.log(f"removed {len(removed)} temporary file(s) left in {self.out} by interrupted writes")
        runfiles.write_config(self.config_path, self.config, self.data_dir, self._intact(),
                              threads=blas_threads())

    def _take_directory(self) -> None:
        """Make and lock the directory, and check that it is still as it was checked."""
        self.out.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        try:
            if not self.resume:
                check_new_run_dir(self.out, self.config, self.exist_ok)
            elif stamp(self.last_path) != self._last_stamp:
                raise ValueError(f"{self.last_path} changed after it was read (another run wrote to "
                                 f"{self.out}): start the command again")
        except BaseException:
            self.lock.release()
            raise

    def _start_resumed(self) -> None:
        """metrics.csv and best.npz from last.npz, and a line on where the run goes on."""
        self._write_metrics()
        self._repair_best()
        before, now = self.recorded.get("threads"), blas_threads()
        if self.config["device"] == "cpu" and before and now and before != now:
            self.log(f"note: the run so far used {before} BLAS threads, this part uses {now}: a sum split over "
                     f"other threads is added in another order, so the resumed run is not bit-exact with an "
                     f"uninterrupted one (resume with --threads {before} for that)")
        changes = self.config["lr_changes"]
        self.log(f"resuming {self.out} at epoch {self.epoch + 1} of {self.config['epochs']}"
                 + (f", batch {self.batch + 1}" if self.batch else "")
                 + f" (learning-rate milestones stay at {self.config['milestones']}"
                 + (f"; base learning rate {changes[-1]['lr']:g} since epoch {changes[-1]['epoch']}"
                    if changes else "") + ")")

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

    @staticmethod
    def _describe(epoch, batch) -> str:
        return f"epoch {epoch + 1}, batch {batch}" if batch else f"after epoch {epoch}"

    # --- batches ----------------------------------------------------------------------
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

    @property
    def estimate_s(self):
        """The estimated seconds of the whole run (None until told, :mod:`.estimate`)."""
        return self.estimate.seconds

    def _say(self, line) -> None:
        """Log a line, above the progress bar if one is drawn."""
        if self.progress:
            with tqdm.external_write_mode():
                self.log(line)
        else:
            self.log(line)

    # --- one epoch --------------------------------------------------------------------
    def train_epoch(self) -> bool:
        """Train one epoch (or its rest, after a resume), evaluate, step the
        schedule, save. Returns False if stopped by Ctrl-C in the middle."""
        lr = self.optimizer.lr
        seconds = self._train_batches()
        if seconds is None:
            return False
        evaluated = time.perf_counter()
        results = self._evaluate()
        eval_seconds = time.perf_counter() - evaluated
        row = self._epoch_row(results, lr, seconds)
        improved = row[self.select] > self.best_acc
        weights = dict(self.model.named_parameters()) | dict(self.model.named_buffers())
        if improved and nonfinite_entries(weights):       # never select a broken model
            raise TrainingDiverged(f"the model holds non-finite values ({listing(nonfinite_entries(weights), 3)}) "
                                   f"after epoch {self.epoch + 1}: training stopped; {self._kept_and_advice()}")
        self._end_epoch(row, improved)
        self._log_epoch(row, improved)
        epochs = self.config["epochs"]
        if self.estimate.seconds is None and self.epoch < epochs:
            self.estimate.report(self, seconds, eval_seconds, f"epoch {self.epoch}")
        if self.stop_requested and self.epoch < epochs:
            self.log(f"interrupted: saved {self.last_path} after epoch {self.epoch}; continue with --resume")
        return True

    def _train_batches(self):
        """The epoch's batches from ``self.batch`` on; returns the seconds they took, or
        None when a stop was requested in the middle (the state saved)."""
        loader, p = self.train_loader, self.partial
        loader_state = loader.state_dict()          # the epoch is replayable from this state
        self.model.train()
        start = time.perf_counter() - p["seconds"]
        bar = tqdm(total=len(loader), initial=self.batch, desc=f"epoch {self.epoch + 1}/{self.config['epochs']}",
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
                    self.estimate.after_batch(self)
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
                    return None
            self.read_batches()
        finally:
            bar.close()
            self._unread = []
        return time.perf_counter() - start

    def _evaluate(self) -> dict:
        """{"test": ..., "val": ...} of :func:`evaluate`; TrainingDiverged on a non-finite loss."""
        results = {"test": evaluate(self.model, self.test_loader, self.num_classes, progress=self.progress)}
        if self.val_loader is not None:
            results["val"] = evaluate(self.model, self.val_loader, self.num_classes, progress=self.progress,
                                      desc="validation")
        for split, result in results.items():
            if not math.isfinite(result["loss"]):
                raise TrainingDiverged(f"the {'validation' if split == 'val' else 'test'} loss is {result['loss']} "
                                       f"after epoch {self.epoch + 1}: training stopped; {self._kept_and_advice()}")
        return results

    def _epoch_row(self, results, lr, seconds) -> dict:
        """The epoch's row of metrics.csv."""
        p, test = self.partial, results["test"]
        row = {"epoch": self.epoch + 1, "train_loss": p["loss_sum"] / p["seen"], "train_acc": p["correct"] / p["seen"],
               "test_loss": test["loss"], "test_acc": test["acc"], "lr": float(f"{lr:.12g}"),
               "seconds": round(seconds, 3), "images_per_s": round(p["seen"] / seconds, 2)}
        if "val" in results:
            row.update(val_loss=results["val"]["loss"], val_acc=results["val"]["acc"])
        return row

    def _end_epoch(self, row, improved) -> None:
        """Step the schedule, record the row, save last.npz (then best.npz, metrics.csv)."""
        self.scheduler.step()
        self.epoch += 1
        self.history.append(row)
        if improved:
            self.best_acc, self.best_epoch = row[self.select], self.epoch
        self.batch, self.partial = 0, _new_partial()
        state = self.state(self.train_loader.state_dict())
        self._save_last(state)             # the source of truth first: a kill after it loses nothing
        if improved:
            self._save_best(state)
        self._write_metrics()

    def _log_epoch(self, row, improved) -> None:
        epochs = self.config["epochs"]
        self.log(f"epoch {self.epoch:>{len(str(epochs))}}/{epochs}  "
                 f"train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:6.2f}%  "
                 + (f"val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:6.2f}%  " if "val_acc" in row else "")
                 + f"test loss {row['test_loss']:.4f} acc {100 * row['test_acc']:6.2f}%  "
                 f"lr {row['lr']:.4g}  {row['seconds']:.1f} s  {row['images_per_s']:.1f} img/s"
                 + ("  (best)" if improved else ""))
