"""The estimated time of a whole run, told after its first few batches.

The first batch warms up (allocations, caches) and is not timed; the next
``ESTIMATE_AFTER`` are, and testing is guessed at a third of the training time per
image (no gradients, no update). A run too short for that is estimated after its
first epoch from what the epoch really took.
"""
from __future__ import annotations

import time

from ..text import format_duration, plural

ESTIMATE_AFTER = 5        # batches timed (after the first, which warms up) for the run-time estimate


class RunTimeEstimate:
    """Times a :class:`~tinydense.training.Trainer`'s first batches and tells the estimate
    once, through ``say``. ``seconds`` is the estimate (None until told)."""

    def __init__(self, say):
        self.say, self.seconds, self._timed = say, None, None    # _timed: (start, batches timed)

    def after_batch(self, trainer) -> None:
        """After each batch but an epoch's last: time ESTIMATE_AFTER batches, then report."""
        if self.seconds is not None:
            return
        if self._timed is None:
            trainer.read_batches()                    # the GPU's queue is empty when the clock starts
            self._timed = (time.perf_counter(), 0)
            return
        start, n = self._timed[0], self._timed[1] + 1
        self._timed = (start, n)
        if n == ESTIMATE_AFTER:
            trainer.read_batches()                    # ... and when it stops
            per_batch = (time.perf_counter() - start) / n
            per_image = per_batch / trainer.config["batch_size"]
            self.report(trainer, per_batch * len(trainer.train_loader), eval_images(trainer) * per_image / 3,
                        f"batches {trainer.batch - n + 1}-{trainer.batch} of this epoch; testing guessed "
                        f"at a third of the training time per image")

    def report(self, trainer, train_s, eval_s, measured_on) -> None:
        """Tell the estimated time of the whole run from the seconds one epoch trains and tests."""
        epochs, batches = trainer.config["epochs"], len(trainer.train_loader)
        self.seconds = (train_s + eval_s) * epochs
        line = (f"estimated time for the run: {format_duration(self.seconds)} ({plural(epochs, 'epoch')} x "
                f"{plural(batches, 'batch', 'batches')} at {train_s / batches:.3g} s each, "
                f"plus {format_duration(eval_s)} testing {eval_images(trainer):,} images per epoch; measured on "
                f"{measured_on})")
        if trainer.resume:
            done = trainer.epoch + trainer.batch / batches
            line += f"; {format_duration((train_s + eval_s) * (epochs - done))} of it still to go"
        self.say(line)


def eval_images(trainer) -> int:
    """The images a run tests after each epoch (test and validation)."""
    return len(trainer.test_set) + (len(trainer.val_set) if trainer.val_set is not None else 0)
