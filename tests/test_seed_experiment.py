"""The seed notes' experiment as one command: ``tinydense compare A B --train cifar10``
(tools/train_compare.py), on a small stand-in data set."""
import re

import numpy as np
import pytest

import tinydense as td
from tinydense import models
from tinydense.tools import train_compare as tc

from test_cli import in_process, one_error_line, tinydense
from train_helpers import write_cifar

SMALL = ["--train", "cifar10", "--limit-train", 16, "--limit-test", 16, "--batch-size", 8]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar(root, per_file=16, test_size=16, learnable=True)
    return root


def table_rows(stdout):
    """{model: its cells} of the table (its rows come before the notes)."""
    rows = {}
    for line in stdout.splitlines():
        if line.split() and line.split()[0] in ("resnet18", "densenet121"):
            rows.setdefault(line.split()[0], line.split()[1:])
    return rows


def test_two_models_from_scratch_print_every_column(data, tmp_path):
    result = tinydense("compare", "resnet18", "densenet121", *SMALL, "--data-dir", data, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for column in ("params (M)", "M MACs/image", "G MACs/128", "s/epoch", "peak memory (MB)", "test acc %"):
        assert column in text
    rows = table_rows(text)
    # torchvision's counts with a 10-class classifier: 11,689,512 - 513 * 990 and 7,978,856 - 1025 * 990
    assert rows["resnet18"][:2] == ["scratch", "11.18"] and rows["densenet121"][:2] == ["scratch", "6.96"]
    for cells in rows.values():
        per_image, per_batch, seconds, peak, acc = map(float, cells[2:])
        assert per_batch == pytest.approx(128 * per_image / 1000, abs=0.012)       # both rounded
        assert seconds > 0 and peak >= 0 and 0 <= acc <= 100 and acc * 16 / 100 == pytest.approx(
            round(acc * 16 / 100), abs=0.01)                     # a whole number of the 16 test images
    assert "16 training images (the first 16: --limit-train), 16 test images" in text
    assert "from scratch" in text and 'thop\'s profile() calls the same count "FLOPs"' in text
    assert re.search(r"resnet18 / densenet121: 1\.61x the parameters, 0\.6\dx the multiply-adds", text), text
    assert "in a fresh process" in result.stderr


def test_pretrained_weights_from_a_file(data, tmp_path):
    td.manual_seed(3)
    imagenet = models.resnet18()
    td.save(imagenet.state_dict(), tmp_path / "r18.npz")
    model = tc.build("resnet18", 10, tmp_path / "r18.npz")                  # loaded, then a new classifier
    assert np.array_equal(model.conv1.weight.data, imagenet.conv1.weight.data)
    assert model.fc.weight.shape == (10, 512) and imagenet.fc.weight.shape == (1000, 512)
    result = tinydense("compare", "resnet18", *SMALL, "--limit-train", 8, "--weights", tmp_path / "r18.npz",
                       "--data-dir", data, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert table_rows(result.stdout)["resnet18"][0] == "pretrained"
    assert "from pretrained weights (resnet18: " in result.stdout and "r18.npz" in result.stdout


@pytest.mark.parametrize("args, fragments", [
    (["resnet18", *SMALL, "--epochs", 0], ["epochs must be a positive integer, got 0"]),
    (["resnet18", *SMALL, "--lr", -1], ["lr must be a positive number, got -1.0"]),
    (["resnet18", *SMALL, "--momentum", 1], ["momentum must be in [0, 1), got 1.0"]),
    (["resnet18", "densenet121", *SMALL, "--weights", "a.pth", "b.pth", "c.pth"],
     ["3 --weights for 2 models", "one file per model"]),
    (["resnet18", *SMALL, "--plot", "chart.png", "--batch", 4], ["--plot, --batch belong to the table without"]),
    (["resnet18", "--epochs", 2, "--lr", 0.1], ["--epochs, --lr, --data-dir need(s) --train DATASET"]),
    (["resnet19", *SMALL], ["unknown model 'resnet19'", "did you mean resnet18"]),
])
def test_bad_options_are_refused_before_any_work(tmp_path, data, capsys, args, fragments):
    one_error_line(in_process("compare", *args, "--data-dir", data, capsys=capsys), *fragments)


def test_missing_data_and_weights_a_model_cannot_take(tmp_path, data, capsys):
    one_error_line(in_process("compare", "resnet18", *SMALL, "--data-dir", tmp_path / "none", capsys=capsys),
                   "CIFAR-10 not found", str(tmp_path / "none"))
    result = in_process("compare", "resnet18", "cifar_resnet18", *SMALL, "--weights", "DEFAULT", "--data-dir", data,
                        capsys=capsys)
    one_error_line(result, "cifar_resnet18 has no pretrained weights")
    assert "training" not in result.stderr                        # refused before the first model trains


def test_an_error_in_the_training_process_is_one_line(tmp_path, data):
    """The child's error comes back as one line naming the model (here: weights that do not fit)."""
    td.save({"conv1.weight": np.zeros((1, 1), np.float32)}, tmp_path / "wrong.npz")
    result = tinydense("compare", "resnet18", *SMALL, "--weights", tmp_path / "wrong.npz", "--data-dir", data,
                       cwd=tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines()[-1].startswith("tinydense: error: compare --train: resnet18: "), result.stderr


def test_new_classifier_needs_a_linear_head():
    with pytest.raises(ValueError, match="no Linear fc or classifier"):
        tc.new_classifier(models.vgg11(), 10)                  # VGG's classifier is a Sequential
