"""tinydense.tools.plots: the file format follows the suffix, and the curves of a
short or a long run are readable (regressions of issue 14)."""
import numpy as np
import pytest

from tinydense.tools.plots import check_image_path, curves_figure, plot_confusion, plot_curves
from tinydense.training import paper_milestones

MAGIC = {".png": b"\x89PNG\r\n\x1a\n", ".svg": b"<?xml", ".pdf": b"%PDF", ".jpg": b"\xff\xd8\xff",
         ".jpeg": b"\xff\xd8\xff", ".eps": b"%!PS"}


def write_metrics(path, epochs, val=False):
    """A metrics.csv as a run writes it, with rising accuracies and the paper's schedule."""
    columns = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds", "images_per_s"]
    columns += ["val_loss", "val_acc"] if val else []
    lines = [",".join(columns)]
    for e in range(1, epochs + 1):
        acc = 0.9 - 0.8 * np.exp(-e / max(epochs / 5, 1))
        lr = 0.1 * 0.1 ** sum(e - 1 >= m for m in paper_milestones(epochs))
        row = [e, 2.3 * (1 - acc), acc + 0.05, 2.3 * (1 - acc) + 0.1, acc, float(f"{lr:.12g}"), 10.0, 100.0]
        row += [2.3 * (1 - acc) + 0.2, acc - 0.01 * (e % 3)] if val else []
        lines.append(",".join(str(v) for v in row))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("suffix", sorted(MAGIC))
def test_the_suffix_chooses_the_format(tmp_path, suffix):
    """Regression: curves.svg and conf.jpg used to hold PNG bytes."""
    metrics = write_metrics(tmp_path / "metrics.csv", 3)
    out = plot_curves(metrics, tmp_path / f"curves{suffix}", title="a run")
    assert out.read_bytes().startswith(MAGIC[suffix])
    conf = plot_confusion(np.eye(3, dtype=int) * 5, ["a", "b", "c"], tmp_path / f"conf{suffix.upper()}")
    assert conf.read_bytes().startswith(MAGIC[suffix])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["metrics.csv", f"curves{suffix}",
                                                                 f"conf{suffix.upper()}"])   # no temporaries


def test_unknown_suffixes_and_missing_directories_are_refused_before_drawing(tmp_path):
    for name in ("curves", "curves.txt", "curves.png.bak"):
        with pytest.raises(ValueError, match=r"must end in one of .*\.pdf.*\.png.*\.svg"):
            check_image_path(tmp_path / name)
    with pytest.raises(ValueError, match="there is no directory"):
        check_image_path(tmp_path / "missing" / "c.png")
    assert check_image_path(tmp_path / "C.SVG") == "svg"
    with pytest.raises(ValueError, match="must end in one of"):
        plot_curves(tmp_path / "no-metrics-needed.csv", tmp_path / "curves.txt")   # before reading the metrics


def test_a_one_epoch_run_has_a_learning_rate_line_and_an_epoch_axis_from_0_to_1(tmp_path):
    """Regression: one epoch gave an empty learning-rate panel and an axis of 0.945-1.050."""
    from tinydense.tools.plots import read_metrics
    fig = curves_figure(read_metrics(write_metrics(tmp_path / "metrics.csv", 1)))
    ax_loss, ax_acc, ax_lr = fig.axes[:3]
    for ax in (ax_loss, ax_acc, ax_lr):
        low, high = ax.get_xlim()
        assert low <= 0 and high >= 1 and high - low < 1.2
        assert [t for t in ax.get_xticks() if low <= t <= high] == [0, 1]
    (stairs,) = ax_lr.patches
    values, edges, _ = stairs.get_data()
    np.testing.assert_array_equal(edges, [0, 1])
    np.testing.assert_array_equal(values, [0.1])


def test_long_runs_keep_the_legends_off_the_curves(tmp_path):
    """Regression: the accuracy legend sat over the curves of a long run."""
    from tinydense.tools.plots import read_metrics
    for val in (False, True):
        fig = curves_figure(read_metrics(write_metrics(tmp_path / "metrics.csv", 300, val=val)), title="long")
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes[:2]:
            legend, panel = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
            assert legend.y1 < panel.y0 or not legend.overlaps(panel)
            assert fig.bbox.contains(legend.x0, legend.y0) and fig.bbox.contains(legend.x1, legend.y1)
        labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
        best = "validation (best" if val else "best"
        assert any(best in label for label in labels), labels
