"""Model ensembles (tools/ensemble.py) on hand-made logits: the averaged softmax against
a hand computation, cases where it disagrees with averaging logits and with a majority
vote, and evaluate_ensemble's accuracies, losses and confusion matrices over batches."""
import numpy as np
import pytest

import tinydense as td
from tinydense.nn import Module
from tinydense.tools.ensemble import ensemble_accuracies, ensemble_probabilities, evaluate_ensemble

# three models, three images, three classes (true classes 1, 0, 2)
LOGITS = [np.array([[5.0, 0, 0], [0, 3, 0], [0, 0, 2]]),
          np.array([[0.0, 2, 0], [1, 0, 0], [0, 1, 0]]),
          np.array([[0.0, 2, 0], [1, 0, 0], [0, 0, 1]])]
LABELS = np.array([1, 0, 2])


def softmax_by_hand(z):
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def test_averaged_softmax_is_the_hand_computed_mean():
    expected = sum(softmax_by_hand(z) for z in LOGITS) / 3
    np.testing.assert_allclose(ensemble_probabilities(LOGITS), expected, rtol=1e-12)
    # image 0: the first model is sure of class 0 (p = 0.987), the others lean to class 1 (p = 0.787):
    # mean p = ((0.9867 + 2 * 0.1065) / 3, (0.0066 + 2 * 0.7870) / 3, ...) = (0.3999, 0.5269, 0.0732):
    # class 1, where the mean logits (1.67, 1.33, 0) say class 0
    np.testing.assert_allclose(expected[0], [0.3999, 0.5269, 0.0732], atol=5e-5)
    assert (sum(LOGITS) / 3)[0].argmax() == 0 and expected[0].argmax() == 1
    # image 1: two models vote class 0, but barely (p = 0.576); the third is sure of class 1 (p = 0.910):
    # mean p = ((0.0453 + 2 * 0.5761) / 3, (0.9094 + 2 * 0.2119) / 3, ...) = (0.3992, 0.4444, 0.1564):
    # class 1, where a majority vote says class 0
    np.testing.assert_allclose(expected[1], [0.3992, 0.4444, 0.1564], atol=5e-5)
    assert expected[1].argmax() == 1


def test_each_accuracy_and_the_ensembles():
    members, ensemble = ensemble_accuracies(LOGITS, LABELS)
    # predictions: model 0: 0, 1, 2 (1 of 3 right); model 1: 1, 0, 1 (2 of 3); model 2: 1, 0, 2 (3 of 3)
    # ensemble: 1, 1, 2 (2 of 3)
    assert members == [1 / 3, 2 / 3, 1.0] and ensemble == 2 / 3
    same = [np.array([[0.0, 1, 0], [2, 0, 0], [0, 0, 3]])] * 3         # identical models: the ensemble is each
    assert ensemble_accuracies(same, LABELS) == ([1.0] * 3, 1.0)


class Table(Module):
    """A stand-in model: the logits of image i are row i of ``logits`` (x[:, 0, 0, 0] holds i)."""

    def __init__(self, logits, expected_scale=None):
        super().__init__()
        self.logits, self.expected_scale = logits, expected_scale

    def forward(self, x):
        index = np.rint(x.data[:, 0, 0, 0] / (self.expected_scale or 1)).astype(int)
        return td.tensor(self.logits[index])


def batches(n, size, scale=1.0):
    """(images, labels) batches of n images, image i carrying i * scale in its first pixel."""
    out = []
    for start in range(0, n, size):
        idx = np.arange(start, min(n, start + size))
        x = np.zeros((len(idx), 1, 2, 2))
        x[:, 0, 0, 0] = idx * scale
        out.append((td.tensor(x), td.tensor(LABELS_6[idx])))
    return out


LABELS_6 = np.concatenate([LABELS, LABELS])
LOGITS_6 = [np.concatenate([z, z]) for z in LOGITS]


def test_evaluate_ensemble_over_batches():
    result = evaluate_ensemble([Table(z) for z in LOGITS_6], batches(6, 4), num_classes=3)
    assert [m["acc"] for m in result["members"]] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert result["ensemble"]["acc"] == pytest.approx(2 / 3)
    for m, z in zip(result["members"], LOGITS_6):           # loss: mean -log softmax(z)[true class]
        assert m["loss"] == pytest.approx(-np.log(softmax_by_hand(z)[np.arange(6), LABELS_6]).mean(), rel=1e-12)
    p = sum(softmax_by_hand(z) for z in LOGITS_6) / 3
    assert result["ensemble"]["loss"] == pytest.approx(-np.log(p[np.arange(6), LABELS_6]).mean(), rel=1e-12)
    # the ensemble predicts 1, 1, 2 for true classes 1, 0, 2 (twice over)
    np.testing.assert_array_equal(result["ensemble"]["confusion"], [[0, 2, 0], [0, 2, 0], [0, 0, 2]])
    np.testing.assert_array_equal(result["members"][0]["confusion"], [[0, 2, 0], [2, 0, 0], [0, 0, 2]])


def test_each_model_gets_its_own_normalisation():
    """Model m sees (x - mean_m) / std_m: a Table that expects image i as 2i only works with std 0.5."""
    models = [Table(LOGITS_6[0]), Table(LOGITS_6[1], expected_scale=2.0)]
    result = evaluate_ensemble(models, batches(6, 5), 3, normalizations=[((0.0,), (1.0,)), ((0.0,), (0.5,))])
    assert [m["acc"] for m in result["members"]] == pytest.approx([1 / 3, 2 / 3])
    with pytest.raises(ValueError, match="1 normalizations for 2 models"):
        evaluate_ensemble(models, batches(6, 5), 3, normalizations=[((0.0,), (1.0,))])
    with pytest.raises(ValueError, match="at least one model"):
        evaluate_ensemble([], batches(6, 5), 3)
