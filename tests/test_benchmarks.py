"""benchmarks/bench_densenet_vs_resnet.py at a tiny batch: its costs are the models' and its
memory readings are in the order the docstring explains (peak above what the model and batch
take before the step). A few seconds: each network runs one step in a fresh child process."""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_densenet_vs_resnet as bench  # noqa: E402


def test_the_equal_cost_table_and_the_accuracy_of_two_runs(tmp_path, capsys):
    runs = []
    for name, accs in (("dense", (0.25, 0.51)), ("res", (0.2, 0.4))):
        run = tmp_path / name
        run.mkdir()
        rows = "".join(f"{i + 1},1.0,0.5,1.0,{a},0.1,1.0,10\n" for i, a in enumerate(accs))
        (run / "metrics.csv").write_text("epoch,train_loss,train_acc,test_loss,test_acc,lr,seconds,images_per_s\n" + rows)
        runs.append(str(run))
    bench.main(["--batch", "2", "--repeats", "1", "--threads", "1", "--runs", *runs])
    out = capsys.readouterr().out
    dense = re.search(r"DenseNet-BC-100 \(k=12\)\s+769,162\s+288M\s+([\d.]+) s\s+(\d+)\s+(\d+)\s+(\d+)", out)
    res = re.search(r"ResNet-164 \(pre-activation\)\s+1,703,258\s+248M\s+([\d.]+) s\s+(\d+)\s+(\d+)\s+(\d+)", out)
    assert dense and res, out
    for m in (dense, res):
        step, before, peak, after = float(m[1]), int(m[2]), int(m[3]), int(m[4])
        assert step > 0 and peak > before and after <= peak
    assert "test accuracy per epoch" in out and "final 51.00%" in out and "final 40.00%" in out
