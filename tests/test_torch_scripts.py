"""PyTorch scripts run on tinydense unedited: the runners of tinydense/tools/as_torch.py,
benchmarks/pytorch_cifar.py and benchmarks/d2l_densenet.py on PyTorch-style code of our own
(tests/fixtures/torch_style/, the idioms of kuangliu's main.py, torchvision's densenet.py and
d2l's chapter). Scripts run in a subprocess: the aliases put tinydense in sys.modules['torch']."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from train_helpers import write_cifar

ROOT = Path(__file__).resolve().parents[1]
STYLE = ROOT / "tests" / "fixtures" / "torch_style"


def run(args, cwd, timeout=600):
    done = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_a_pytorch_training_script_runs_through_the_cifar_runner(tmp_path):
    data = tmp_path / "data"
    write_cifar(data, per_file=8, test_size=50, seed=0, learnable=True)
    out = run([ROOT / "benchmarks" / "pytorch_cifar.py", "--source", STYLE / "cifar_project", "--data-dir", data,
               "--epochs", "2", "--work-dir", tmp_path / "work"], cwd=tmp_path)
    assert "edit: net = OtherNet()  ->  net = densenet_cifar()" in out
    assert "range(start_epoch, start_epoch + 2)" in out and "root='./data' (2x)" in out
    assert out.count("2 batches | Loss:") == 2 and out.count("1 batches | Loss:") == 2     # 40 / 32, 50 / 50
    assert "checkpoint/ckpt.pth: epoch 1" in out and "arrays in 'net'" in out
    import tinydense
    saved = tinydense.load(tmp_path / "work" / "checkpoint" / "ckpt.pth")
    assert set(saved) == {"net", "acc", "epoch"} and "dense.0.conv1.weight" in saved["net"]


def test_the_cifar_runner_refuses_a_main_py_it_does_not_know(tmp_path):
    source = tmp_path / "project"
    (source / "models").mkdir(parents=True)
    (source / "models" / "densenet.py").write_text("def densenet_cifar():\n    return None\n")
    (source / "main.py").write_text("net = A()\nnet = B()\n")
    done = subprocess.run([sys.executable, ROOT / "benchmarks" / "pytorch_cifar.py", "--source", source,
                           "--work-dir", tmp_path], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode != 0 and "found 2" in done.stderr + done.stdout


def test_as_torch_runs_a_script_with_pytorch_imports(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        "import sys\n"
        "import torch\n"
        "import torch.nn as nn\n"
        "import torch.backends.cudnn as cudnn\n"
        "import torch.utils.checkpoint as cp\n"
        "from torch.utils.data import DataLoader, TensorDataset\n"
        "cudnn.benchmark = True\n"
        "x = torch.randn(8, 3)\n"
        "y = cp.checkpoint(nn.Linear(3, 2), x)\n"
        "loader = DataLoader(TensorDataset(x, torch.arange(8)), batch_size=4)\n"
        "print(type(torch).__name__, torch.__name__, y.shape, len(loader), sys.argv[1:])\n")
    out = run(["-m", "tinydense.tools.as_torch", script, "--flag", "1"], cwd=tmp_path)
    assert out.strip() == "module tinydense (8, 2) 2 ['--flag', '1']"
    helper = run(["-c", "import sys, tinydense.tools.as_torch as a; a.main([]); print('torch' in sys.modules)"],
                 cwd=tmp_path)
    assert "python -m tinydense.tools.as_torch script.py" in helper and helper.strip().endswith("False")


def test_torchvision_style_classes_run_through_load_definitions(tmp_path):
    code = (
        "import numpy as np, tinydense as td\n"
        "from tinydense.tools.as_torch import load_definitions\n"
        f"ns = load_definitions({str(STYLE / 'dense_layers.py')!r}, ['_concat_then', '_Layer', '_Block', '_Down'])\n"
        "assert 'URLS' not in ns and 'download_weights' not in ns and 'pretrained' not in ns\n"
        "td.manual_seed(0)\n"
        "block = ns['_Block'](3, 6, 2, 4, 0.0, memory_efficient=True)\n"
        "x = td.randn(2, 6, 8, 8, requires_grad=True)\n"
        "y = ns['_Down'](18, 9)(block(x))\n"
        "y.sum().backward()\n"
        "names = [n for n, _ in block.named_children()]\n"
        "print(y.shape, x.grad.shape, names, list(block.layer1._modules))\n")
    out = run(["-c", code], cwd=tmp_path)
    assert out.strip() == ("(2, 9, 4, 4) (2, 6, 8, 8) ['layer1', 'layer2', 'layer3'] "
                           "['norm1', 'relu1', 'conv1', 'norm2', 'relu2', 'conv2']")
    bad = subprocess.run([sys.executable, "-c", "from tinydense.tools.as_torch import load_definitions as l; "
                          f"l({str(STYLE / 'dense_layers.py')!r}, ['Nope'])"], capture_output=True, text=True)
    assert bad.returncode != 0 and "defines no top-level ['Nope']" in bad.stderr


def test_the_d2l_runner_takes_the_pytorch_cells_of_a_chapter(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import d2l_densenet
    finally:
        sys.path.pop(0)
    cells = d2l_densenet.pytorch_cells((STYLE / "chapter.md").read_text())
    assert len(cells) == 6                                 # not mxnet's, not the setup magic, not the training
    assert not any("this_is_mxnet" in c or "interact_select" in c or "Trainer" in c for c in cells)
    out = run([ROOT / "benchmarks" / "d2l_densenet.py", "--chapter", STYLE / "chapter.md"], cwd=tmp_path)
    assert "[cell 3] Block(2, 5)(X).shape -> (2, 13, 8, 8)" in out
    losses = [float(v) for v in out.split("losses on one batch: ")[1].split(", ")]
    assert len(losses) == 4 and losses[-1] < losses[0] and np.isfinite(losses).all()
