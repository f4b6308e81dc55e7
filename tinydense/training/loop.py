"""The textbook loop: one training step, and an evaluation.

    logits = model(x)                      forward
    loss = cross_entropy(logits, y)
    optimizer.zero_grad(); loss.backward() backward
    optimizer.step()                       update

Everything around it (epochs, checkpoints, resume, progress) is the
:class:`~tinydense.training.Trainer`'s; these two functions are all a step is.
"""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from .. import backend
from .. import functional as F
from ..autograd import no_grad


def train_step(model, optimizer, x, y):
    """One batch: forward, loss, backward, update. Returns (loss, number correct) as
    0-d arrays on the batch's device, not read: reading a GPU array makes the CPU wait
    until the GPU has done all the work queued so far, so the loop reads them only
    once in a while (:meth:`Trainer.read_batches`), never in the middle of a step.
    A model that returns a tuple in training (GoogLeNet with its auxiliary
    classifiers) is scored on its first output, the main classifier's."""
    logits = model(x)
    logits = logits[0] if isinstance(logits, tuple) else logits
    loss = F.cross_entropy(logits, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.data, (logits.data.argmax(axis=1) == y.data).sum()


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
