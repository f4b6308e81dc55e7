"""benchmarks/bench_distributed.py at a tiny size (not a measurement: the machine is shared):
one process and two ranks run the step, the ranks allreduce the gradients' bytes (and batch
norm's statistics) every step, one process none, and the paper table follows."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_distributed as bench  # noqa: E402

from tinydense.models import densenet_bc  # noqa: E402


@pytest.mark.slow
def test_two_ranks_and_one_process_report_their_step(capsys):
    result = bench.main(["--depth", "10", "--batch", "4", "--steps", "1"])
    out = capsys.readouterr().out
    one, two = result["one_process"], result["two_ranks"]
    gradients = sum(p.size for p in densenet_bc(10).parameters())
    params = len(list(densenet_bc(10).parameters()))
    assert two["ranks"] == 2 and one["ranks"] == 1 and one["bytes_per_step"] == 0
    assert two["gradient_bytes"] == 4 * (gradients + params)          # float32 values and a flag per parameter
    assert two["bytes_per_step"] > two["gradient_bytes"]              # plus batch norm's float64 statistics
    assert one["step_s"] > 0 and two["step_s"] > 0 and 0 <= two["comm_s_per_step"] <= two["step_s"]
    assert "2 ranks x 1 thread" in out and "| ResNet-50 (102.2 MB) | 10 Gbit/s |" in out
