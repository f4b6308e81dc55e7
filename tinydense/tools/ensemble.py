"""Model ensembles: several trained models answer together by averaging the class
probabilities they predict,

    p(y | x) = 1/M * sum_m softmax(f_m(x))_y          M models f_1 ... f_M

and the ensemble predicts the most probable class. The lecture's point (section 9:
ILSVRC 2016 was won by an ensemble of good models): models trained from different
random starts make partly different mistakes, so the average is right more often
than each one alone (typically a point or two of accuracy), at M times the cost.

Averaging probabilities is not averaging logits (a model that is very sure of itself
cannot outvote the others by an arbitrarily large logit) nor a majority vote (a
model that is nearly undecided counts for little): ``test_ensemble.py`` has examples
of all three disagreeing.

``evaluate_ensemble(models, loader, num_classes)`` runs every model on each batch
of one loader (one pass over the data) and reports each model's accuracy and loss
and the ensemble's; the loss of the ensemble is -log p(true class | x), averaged.
Checkpoints normalised with different statistics each get their own (mean, std):
the loader then gives images in [0, 1] (``DataLoader(..., mean=None, std=None)``).
"""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from .. import backend
from .. import functional as F
from ..autograd import Tensor, no_grad


def log_probabilities(logits):
    """(N, K) logits (an array) -> (N, K) log softmax, through the log_softmax op (ops/loss.py)."""
    with no_grad():
        return F.log_softmax(Tensor(logits), axis=1).data


def ensemble_probabilities(logits_list):
    """The ensemble's class probabilities (N, K): the mean of every model's softmax."""
    return _mean_probability([log_probabilities(z) for z in logits_list])


def _mean_probability(log_probabilities_list):
    xp = backend.get_array_module(log_probabilities_list[0])
    return sum(xp.exp(z) for z in log_probabilities_list) / len(log_probabilities_list)


def _confusion_counts(predictions, labels, num_classes):
    """Flat (K*K,) counts of (true, predicted) pairs, on the arrays' device."""
    xp = backend.get_array_module(labels)
    return xp.bincount(labels * num_classes + predictions, minlength=num_classes ** 2)


def ensemble_accuracies(logits_list, labels):
    """(each model's accuracy, the ensemble's accuracy) on one batch of logits: a list of
    (N, K) arrays, and labels (N,)."""
    labels = np.asarray(backend.to_numpy(labels))
    members = [float((backend.to_numpy(z).argmax(axis=1) == labels).mean()) for z in logits_list]
    ensemble = backend.to_numpy(ensemble_probabilities(logits_list)).argmax(axis=1)
    return members, float((ensemble == labels).mean())


def evaluate_ensemble(models, loader, num_classes, normalizations=None, progress=False):
    """Every model's and the ensemble's accuracy, loss and confusion matrix on ``loader``'s
    batches (images, labels), in one pass.

    normalizations: None (the loader's images go to every model as they are) or one
    (mean, std) per model, per channel in [0, 1] units, applied to each batch for that
    model (the loader then yields images in [0, 1]).
    Returns {"members": [result per model], "ensemble": result}, each result a dict with
    ``acc`` (fraction correct), ``loss`` (mean -log p(true class)) and ``confusion``
    ((K, K) counts, rows: true class, columns: predicted), as training.evaluate."""
    models = list(models)
    if not models:
        raise ValueError("evaluate_ensemble: give at least one model")
    if normalizations is not None and len(normalizations) != len(models):
        raise ValueError(f"evaluate_ensemble: {len(normalizations)} normalizations for {len(models)} models")
    for m in models:
        m.eval()
    counts = [0] * (len(models) + 1)             # confusion counts: each model, then the ensemble
    losses = [0.0] * (len(models) + 1)           # summed -log p(true class), read once at the end
    with no_grad():
        for x, y in tqdm(loader, desc="ensemble", leave=False, disable=not progress, unit="batch"):
            xp = backend.get_array_module(x.data)
            labels, rows = y.data, xp.arange(len(y.data))
            logs = []
            for i, model in enumerate(models):
                xi = x
                if normalizations is not None:
                    mean, std = (xp.asarray(v, dtype=x.data.dtype).reshape(1, -1, 1, 1) for v in normalizations[i])
                    xi = Tensor((x.data - mean) / std)
                logs.append(log_probabilities(model(xi).data))
            for i, z in enumerate(logs + [xp.log(_mean_probability(logs))]):
                counts[i] = counts[i] + _confusion_counts(z.argmax(axis=1), labels, num_classes)
                losses[i] = losses[i] - z[rows, labels].sum()
    results = []
    for c, loss in zip(counts, losses):
        confusion = np.zeros((num_classes, num_classes), np.int64)
        if not isinstance(c, int):
            confusion += backend.to_numpy(c).reshape(num_classes, num_classes)
        n = max(int(confusion.sum()), 1)
        results.append({"acc": float(np.trace(confusion)) / n, "loss": float(loss) / n, "confusion": confusion})
    return {"members": results[:-1], "ensemble": results[-1]}
