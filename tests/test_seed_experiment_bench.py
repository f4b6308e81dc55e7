"""benchmarks/seed_experiment.py without PyTorch: the one table of both frameworks and its
ratios (hand-made rows), the parameter check, bad options refused before any work, and the
whole command run in a Python where ``import torch`` fails (tinydense's side only, on a
small stand-in data set)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from test_cli import environment
from train_helpers import write_cifar

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "seed_experiment.py"
sys.path.insert(0, str(ROOT / "benchmarks"))

import seed_experiment as seed  # noqa: E402


def row(name, params, macs, seconds, peak_mb, test_acc):
    return dict(name=name, params=params, macs=macs, seconds=seconds, peak_mb=peak_mb, test_acc=test_acc)


OURS = [row("densenet201", 18_112_138, 87_600_000, 300.0, 600.0, 0.5),
        row("resnet50", 23_528_522, 83_500_000, 100.0, 1200.0, 0.4)]
THEIRS = [row("densenet201", 18_112_138, None, 90.0, 500.0, 0.52),
          row("resnet50", 23_528_522, None, 45.0, 250.0, 0.41)]


def cells(table, first):
    """The cells of the table's line whose first cell is ``first``."""
    for line in table.splitlines():
        parts = [c.strip() for c in line.strip("|").split("|")]
        if parts[0] == first:
            return parts
    raise AssertionError(f"no line {first!r} in\n{table}")


def test_one_table_with_both_frameworks_and_their_ratios():
    table = seed.table(OURS, THEIRS)
    header = cells(table, "model")
    assert header == ["model", "params (M)", "M MACs/image", "G MACs/128",
                      "tinydense s/epoch", "PyTorch s/epoch", "tinydense peak MB", "PyTorch peak MB",
                      "tinydense test acc %", "PyTorch test acc %"]
    assert cells(table, "densenet201") == ["densenet201", "18.11", "87.6", "11.21", "300.0", "90.0", "600", "500",
                                           "50.00", "52.00"]
    # 87.6e6 * 128 = 11.2128e9; 300 / 100 = 3, 90 / 45 = 2; 600 / 1200 = 0.5, 500 / 250 = 2
    ratio = cells(table, "**densenet201 / resnet50**")
    assert ratio[1:8] == ["0.77x", "1.05x", "", "**3.00x**", "**2.00x**", "**0.50x**", "**2.00x**"]
    assert len(ratio) == len(header) and table.splitlines()[1].count("---") == len(header)


def test_without_pytorch_the_table_has_tinydense_columns_only():
    table = seed.table(OURS)
    assert "PyTorch" not in table
    assert cells(table, "**densenet201 / resnet50**")[4:6] == ["**3.00x**", "**0.50x**"]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.01, 1e4), min_size=4, max_size=4))
def test_ratios_are_the_first_model_over_the_second(values):
    a, b = row("a", 1, 1, values[0], values[1], 0), row("b", 1, 1, values[2], values[3], 0)
    assert seed.ratios([a, b]) == pytest.approx({"seconds": values[0] / values[2], "peak_mb": values[1] / values[3]})
    assert cells(seed.table([a, b]), "**a / b**")[4] == f"**{values[0] / values[2]:.2f}x**"


def test_a_zero_or_missing_denominator_is_nan():
    assert math.isnan(seed.ratio(1.0, 0.0)) and math.isnan(seed.ratio(None, 2.0))


def test_the_parameter_counts_are_compared():
    assert seed.params_agree(OURS, THEIRS) == ["densenet201: 18,112,138 parameters in both frameworks",
                                               "resnet50: 23,528,522 parameters in both frameworks"]
    other = [dict(THEIRS[0], params=18_112_139)]
    assert seed.params_agree(OURS, other) == [
        "densenet201: PARAMETER COUNTS DIFFER: tinydense 18,112,138, PyTorch 18,112,139"]


def test_bad_options_are_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="batch-size must be a positive integer, got 0"):
        seed.main(["--batch-size", "0", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r.json")])
    assert not (tmp_path / "r.json").exists()


def without_torch(*args, cwd):
    """The script run with ``import torch`` failing (installed or not): ``sys.modules["torch"] = None``."""
    run = ("import runpy, sys; sys.modules['torch'] = None; "
           f"sys.argv = [{str(SCRIPT)!r}] + sys.argv[1:]; runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")
    return subprocess.run([sys.executable, "-c", run, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=environment())


def test_the_pytorch_child_answers_one_json_line_when_torch_is_missing(tmp_path):
    result = without_torch("--child", json.dumps({"name": "resnet50"}), cwd=tmp_path)
    assert result.returncode == 1
    assert json.loads(result.stdout) == {"error": "PyTorch: ModuleNotFoundError: import of torch halted; None in "
                                                  "sys.modules"}


def test_without_torch_it_says_so_and_runs_tinydense_only(tmp_path):
    write_cifar(tmp_path / "data", per_file=8, test_size=8, learnable=True)
    out = tmp_path / "r.json"
    result = without_torch("resnet18", "densenet121", "--limit-train", 8, "--limit-test", 8, "--batch-size", 8,
                           "--data-dir", tmp_path / "data", "--out", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "PyTorch's side is skipped (ModuleNotFoundError: import of torch halted" in result.stderr
    assert "PyTorch: training" not in result.stderr and "PyTorch: not measured" in result.stdout
    table = result.stdout.split("\n\n")[-1]
    assert "PyTorch" not in cells(table, "model") and cells(table, "resnet18")[1] == "11.18"  # 11,689,512 - 513 * 990
    record = json.loads(out.read_text())
    assert record["pytorch"] is None and record["pytorch_skipped"].startswith("ModuleNotFoundError")
    assert [r["name"] for r in record["tinydense"]] == ["resnet18", "densenet121"]
    assert record["ratios"]["tinydense"]["seconds"] == pytest.approx(
        record["tinydense"][0]["seconds"] / record["tinydense"][1]["seconds"])
    assert record["tinydense"][0]["train_images"] == 8 and record["settings"]["batch_size"] == 8
