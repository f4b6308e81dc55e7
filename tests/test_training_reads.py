"""The training loop reads the batches' losses from the device only once in a while
(on a GPU a read waits for all queued work): the numbers it reports are those of
reading every batch, a NaN loss is still named by its batch, and nothing is read
in the middle of a step."""
import math

import numpy as np
import pytest

from tinydense import backend
from tinydense.training import Trainer, TrainingDiverged, read_checkpoint

from test_training import TINY as ONE_RUN
from test_training import fake_data  # noqa: F401  (the fixture)

TINY = dict(ONE_RUN, epochs=2, milestones=[1])


class Recording(Trainer):
    """Reads each batch's loss and correct count as it is trained (the reference), and
    counts the reads of the loop that carry batches."""

    def train_step(self, x, y):
        loss, correct = super().train_step(x, y)
        self.seen_batches = getattr(self, "seen_batches", [])
        self.seen_batches.append((self.epoch, float(backend.to_numpy(loss)), int(correct), len(y)))
        return loss, correct

    def read_batches(self):
        if self._unread:
            self.reads = getattr(self, "reads", 0) + 1
        super().read_batches()


def _run(tmp_path, fake_data, read_every_s, cls=Recording):
    lines = []
    trainer = cls(TINY, tmp_path / f"run-{read_every_s}", data_dir=fake_data, progress=False, log=lines.append)
    trainer.read_every_s = read_every_s
    status = trainer.fit()
    return trainer, status, lines


def test_the_numbers_are_those_of_reading_every_batch(tmp_path, fake_data):
    every, _, every_lines = _run(tmp_path, fake_data, 0.0)
    rarely, _, rarely_lines = _run(tmp_path, fake_data, math.inf)
    assert every.reads == 2 * 5 and rarely.reads <= 2 * 3       # 5 batches per epoch; estimate + epoch end
    for trainer in (every, rarely):
        for row in trainer.history:
            batches = [b for b in trainer.seen_batches if b[0] == row["epoch"] - 1]
            loss_sum = 0.0
            for _, loss, _, size in batches:             # summed in order, as the loop always did
                loss_sum += loss * size
            seen = sum(b[3] for b in batches)
            assert row["train_loss"] == loss_sum / seen and row["train_acc"] == sum(b[2] for b in batches) / seen
    keys = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr")
    assert [[row[k] for k in keys] for row in every.history] == [[row[k] for k in keys] for row in rarely.history]
    epoch_lines = [[line.split("  ")[:4] for line in lines if line.startswith("epoch")]
                   for lines in (every_lines, rarely_lines)]
    assert epoch_lines[0] == epoch_lines[1] and len(epoch_lines[0]) == 2


@pytest.mark.parametrize("read_every_s", [0.0, math.inf])
def test_a_nan_loss_is_named_by_its_batch_however_rarely_the_loop_reads(tmp_path, fake_data, read_every_s):
    class NaNWeight(Trainer):
        def train_step(self, x, y):
            if self.epoch == 1 and self.batch == 2:
                self.model.classifier.weight.data[0, 0] = np.nan
            return super().train_step(x, y)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at epoch 2, batch 3: .*last good state \(after epoch 1\)"):
        _run(tmp_path, fake_data, read_every_s, cls=NaNWeight)
    assert int(read_checkpoint(tmp_path / f"run-{read_every_s}" / "last.npz")["epoch"]) == 1


def test_evaluate_reads_once_and_gives_the_per_batch_numbers(tmp_path, fake_data, monkeypatch):
    from tinydense import functional as F
    from tinydense.autograd import no_grad
    from tinydense.training import evaluate
    trainer = Trainer(dict(TINY, epochs=1), tmp_path / "run", data_dir=fake_data, progress=False, log=lambda line: None)
    from tinydense.data import DataLoader
    loader = DataLoader(trainer.test_set, 16, mean=trainer.mean, std=trainer.std)    # 3 batches: 16, 16, 8
    model = trainer.model
    model.eval()
    loss_sum, confusion = 0.0, np.zeros((10, 10), np.int64)
    with no_grad():
        for x, y in loader:                     # the reference: every batch read as it comes
            logits = model(x)
            loss_sum += float(F.cross_entropy(logits, y).item()) * len(y)
            for t, p in zip(y.numpy(), logits.numpy().argmax(axis=1)):
                confusion[t, p] += 1
    reads = []
    real = backend.to_numpy
    monkeypatch.setattr(backend, "to_numpy", lambda a: reads.append(1) or real(a))
    result = evaluate(model, loader, 10)
    assert len(reads) == 2 and len(loader) == 3                  # the losses and the counts, once
    assert result["loss"] == loss_sum / 40 and (result["confusion"] == confusion).all()
    assert result["acc"] == np.trace(confusion) / 40
