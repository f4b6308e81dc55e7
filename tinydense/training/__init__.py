"""Training a model on CIFAR: the loop, metrics, checkpoints and exact resume.

One epoch is the textbook loop, batch after batch (:mod:`.loop`, a screen):

    logits = model(x)                      forward
    loss = cross_entropy(logits, y)
    optimizer.zero_grad(); loss.backward() backward
    optimizer.step()                       update

then an evaluation on the test set and one step of the learning-rate
schedule. Around it sits what makes a long run safe to leave alone
(:class:`Trainer`, :mod:`.trainer`):

* the run directory ``DIR`` holds one run: a new run needs a new or empty
  directory (``exist_ok=True``: one whose other files it leaves alone, never
  one holding files of its own names), ``resume=True`` needs its ``last.npz``;
  both are checked before anything is read or written. While a run writes,
  ``DIR/.tinydense.lock`` keeps a second one out (:mod:`.rundir`);
* ``DIR/last.npz`` after every epoch: the model, the optimizer's momentum
  buffers, the schedule, the epoch, the state of every random generator and
  the metrics of every epoch so far, so ``resume=True`` continues exactly
  where the run stopped. It is the one source of truth: ``DIR/metrics.csv``
  (one row per epoch) is rewritten from it after every epoch and on resume,
  and ``DIR/best.npz`` (the selected model, see below) is written after it
  and repaired from it on resume. Every file is written atomically (a crash
  mid-write leaves the previous file intact, and a kill between two writes
  loses nothing); ``DIR/config.json`` records the configuration (:mod:`.runfiles`);
* Ctrl-C or SIGTERM finishes the current batch, saves the state in the middle
  of the epoch (the data order of an epoch is determined by the loader's
  state at its start, so the epoch can be replayed from that batch) and stops
  (:mod:`.signals`);
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

The files: :mod:`.config` (the paper's recipe, the option checks, the model),
:mod:`.loop` (``train_step``, ``evaluate``), :mod:`.trainer`, :mod:`.estimate`
(the run-time estimate), :mod:`.checkpoints` (reading a run's checkpoints back),
:mod:`.rundir`, :mod:`.runfiles`, :mod:`.signals`.
"""
from ..text import format_duration, plural
from ..threads import blas_threads, set_blas_threads
from .checkpoints import CHECKPOINT_FORMAT, load_model, nonfinite_entries, read_checkpoint
from .config import (DATASETS, DEFAULT_DEPTH, MODELS, PAPER_RECIPE, base_lr, build_model, make_config,
                     paper_milestones, run_name, transition_widths)
from .loop import evaluate, train_step
from .rundir import RUN_FILES, RunLock, RunLocked, check_new_run_dir, remove_stale_temp_files
from .runfiles import METRIC_COLUMNS, VAL_COLUMNS, RunWriteError
from .trainer import Trainer, TrainingDiverged

__all__ = ["CHECKPOINT_FORMAT", "DATASETS", "DEFAULT_DEPTH", "METRIC_COLUMNS", "MODELS", "PAPER_RECIPE", "RUN_FILES",
           "RunLock", "RunLocked", "RunWriteError", "Trainer", "TrainingDiverged", "VAL_COLUMNS", "base_lr",
           "blas_threads", "build_model", "check_new_run_dir", "evaluate", "format_duration", "load_model",
           "make_config", "nonfinite_entries", "paper_milestones", "plural", "read_checkpoint",
           "remove_stale_temp_files", "run_name", "set_blas_threads", "train_step", "transition_widths"]
