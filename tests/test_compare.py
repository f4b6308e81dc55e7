"""tinydense.tools.compare and `tinydense compare`: the table's numbers against summary
and hand counts, the measurement (median after warm-up, images per second), the time
estimate, the complexity chart's files, and the refusals of bad input."""
import math

import numpy as np
import pytest

import tinydense as td
from tinydense import models, nn
from tinydense.tools import compare as cmp

from test_cli import in_process, one_error_line


def tiny_net():
    """conv 3->4 (3x3, pad 1), ReLU, global average pool, flatten, linear 4->2."""
    td.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 2))


def tiny_resnet():
    td.manual_seed(0)
    return models.ResNet("basic", [1, 1, 1, 1], num_classes=5, widths=(4, 4, 8, 8), stem="cifar")


# --- the counted columns -----------------------------------------------------------------------

def test_counts_of_a_tiny_network_by_hand():
    row, = cmp.compare_models([("tiny", tiny_net(), 8)], measure_speed=False).rows
    # params: 4*3*3*3 + 4 (conv) + 4*2 + 2 (linear)
    assert row["params"] == 122
    # MACs: conv 4*8*8 outputs x 3*3*3; global pool reads 4*8*8 values once; linear 4*2
    assert row["macs"] == 4 * 64 * 27 + 4 * 64 + 8
    # memory: float32 outputs of conv (4x8x8), ReLU (4x8x8), pool (4x1x1), flatten (4), linear (2)
    assert row["memory_bytes"] == 4 * (256 + 256 + 4 + 4 + 2)
    assert row["inference"] is None and row["training"] is None and row["accuracy"] is None


@pytest.mark.parametrize("name, size", [("alexnet", 64), ("googlenet", 32), ("densenet121", 32)])
def test_zoo_rows_are_the_summarys_numbers(name, size):
    row, = cmp.compare([name], image_size=size, measure_speed=False).rows
    s = td.summary(cmp.build(name), (3, size, size))
    assert (row["params"], row["macs"], row["memory_bytes"]) == (s.total_params, s.total_macs, s.total_memory_bytes)
    assert row["params"] == sum(p.size for p in cmp.build(name).parameters())
    assert row["image_size"] == size and row["accuracy"] is cmp.ACCURACY[name]


def test_each_model_at_its_native_size_unless_told():
    rows = cmp.compare(["resnet18", "cifar-resnet18"], measure_speed=False).rows
    assert [(r["name"], r["image_size"]) for r in rows] == [("resnet18", 224), ("cifar_resnet18", 32)]
    # torchvision's 1.814 G multiply-adds of the convs and the fc, plus the max pool
    # (64 x 56 x 56 outputs of 3x3 windows) and the global average pool (512 x 7 x 7 values)
    pools = 64 * 56 * 56 * 9 + 512 * 7 * 7
    assert rows[0]["params"] == 11_689_512 and round((rows[0]["macs"] - pools) / 1e9, 3) == 1.814
    assert rows[1]["params"] == 11_173_962


def test_names_and_groups():
    assert cmp.resolve(["resnet18", "RESNET-18", "vgg16-bn", "DenseNet-BC"]) == ["resnet18", "vgg16_bn", "densenet_bc"]
    assert cmp.resolve(["zoo"]) == list(cmp.ZOO) and cmp.resolve("cifar") == list(cmp.CIFAR)
    assert cmp.resolve(["densenet121", "zoo"])[0] == "densenet121" and len(cmp.resolve(["densenet121", "zoo"])) == 21
    for name in cmp.MODELS:                             # every listed name builds a classifier
        assert callable(getattr(models, name))
    assert set(cmp.ACCURACY) <= set(cmp.MODELS)
    for name in cmp.ZOO + ("densenet_bc",):
        a = cmp.ACCURACY[name]
        assert 50 < a.top1 < 100 and a.dataset in ("ImageNet", "CIFAR-10+") and len(a.source) > 40


def test_unknown_model_lists_the_valid_ones():
    with pytest.raises(ValueError) as error:
        cmp.resolve(["resnet18", "resnet19"])
    text = str(error.value)
    assert "unknown model 'resnet19' (did you mean resnet18?)" in text
    for name in ("alexnet", "zfnet", "vgg19_bn", "googlenet", "resnext50_32x4d", "densenet_bc", "cifar_vgg16_bn",
                 "densenet264", "zoo", "cifar"):
        assert name in text
    with pytest.raises(ValueError, match="give at least one model"):
        cmp.resolve([])
    with pytest.raises(ValueError, match="batch must be a positive integer, got 0"):
        cmp.compare(["resnet18"], batch=0)
    with pytest.raises(ValueError, match="image_size must be a positive integer"):
        cmp.compare(["resnet18"], image_size=-3)


def test_too_small_an_image_names_the_model():
    with pytest.raises(ValueError, match=r"compare: alexnet at 32x32: .*at least 63x63"):
        cmp.compare(["alexnet"], image_size=32, measure_speed=False)


# --- the measured columns ----------------------------------------------------------------------

def test_median_after_warmup():
    ticks = iter([0, 100, 100, 101, 200, 203, 300, 302])   # four timed calls: 100, 1, 3, 2 s
    calls = []
    seconds = cmp.median_seconds(lambda: calls.append(1), repeats=4, warmup=2, clock=lambda: next(ticks))
    assert len(calls) == 6 and seconds == 2.5               # the warm-up calls are not timed


def test_measure_a_tiny_model():
    model = tiny_resnet()
    before = model.conv1.weight.data.copy()
    model.eval()
    inference, training = cmp.measure(model, 8, batch=2, repeats=2)
    assert 0 < training and 0 < inference and math.isfinite(inference)
    assert not model.training                                      # its mode is restored
    assert not np.array_equal(model.conv1.weight.data, before)     # the SGD steps ran


def test_measured_comparison_and_its_table():
    messages = []
    c = cmp.compare_models([("tiny", tiny_net(), 8), ("tiny_resnet", tiny_resnet(), 8)], batch=3, repeats=2,
                           log=messages.append)
    assert all(r["inference"] > 0 and r["training"] > 0 for r in c.rows)
    assert messages[0].startswith("counting") and "measuring throughput (batch 3, median of 2" in messages[1]
    assert "about" in messages[1] and messages[2].startswith("  tiny:")
    text = str(c)
    assert "infer img/s" in text and "batch 3, the median of 2 runs after 1 warm-up" in " ".join(text.split())
    assert all(r["load"] is not None for r in c.rows) and "load average during the measurements: " in " ".join(
        text.split())
    line = next(l for l in text.splitlines() if l.startswith("tiny "))
    assert line.split()[:3] == ["tiny", "8", "0.00"] and line.split()[-1] == "-"     # no accuracy


def test_estimate_from_multiply_adds_parameters_and_layers():
    rows = [{"macs": 2e9, "params": 1e6, "layers": 10}, {"macs": 1e9, "params": 5e7, "layers": 300}]
    rate, bandwidth = 2 * cmp.REFERENCE_RATE, 1e9
    e, p, l = cmp.MAC_EFFICIENCY, cmp.PARAM_PASSES, cmp.LAYER_SECONDS
    expected = sum((1 + 3) * (2 * r["macs"] * (1 / (rate * e["inference"]) + 1 / (rate * e["training"]))
                              + r["params"] * 4 * (p["inference"] + p["training"]) / bandwidth
                              + r["layers"] * (l["inference"] + l["training"]) / 2) for r in rows)
    assert cmp.estimate_seconds(rows, batch=2, repeats=3, warmup=1, speed=(rate, bandwidth)) == pytest.approx(expected)
    assert cmp.estimate_seconds(rows, 2, 7, 1, (rate, bandwidth)) == pytest.approx(2 * expected)
    rate, bandwidth = cmp.probe_speed()
    assert rate > 1e8 and bandwidth > 1e8


def test_load_note_warns_when_other_processes_compete():
    assert cmp.load_note([None], 2) == ""
    quiet = cmp.load_note([1.9, 2.4], threads=2, cpus=2)
    assert quiet == "1-minute load average during the measurements: 1.9 to 2.4 on 2 CPUs."
    busy = cmp.load_note([2.2, 5.3], threads=2, cpus=2)
    assert busy.startswith("1-minute load average during the measurements: 2.2 to 5.3 on 2 CPUs; other processes "
                           "were competing for the CPUs")
    assert cmp.load_note([3.5], threads=1, cpus=2).startswith("1-minute load average during the measurements: 3.5 "
                                                              "on 2 CPUs; other")


def test_refuses_a_measurement_that_would_not_fit(monkeypatch):
    monkeypatch.setattr(cmp.memory, "available_memory", lambda: 1000)
    with pytest.raises(ValueError, match=r"training tiny at 8x8 with batch 2 would need about .* GB, more than"):
        cmp.compare_models([("tiny", tiny_net(), 8)], batch=2)


# --- the chart -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chart_rows():
    """Rows of three ImageNet models (at 64x64), DenseNet-BC (32x32) and a CIFAR ResNet-18
    (8x8, no published accuracy), counted once."""
    entries = [("alexnet", None, 64), ("resnet18", None, 64), ("densenet121", None, 64), ("densenet_bc", None, 32),
               ("cifar_resnet18", None, 8)]
    return cmp.compare_models(entries, measure_speed=False).rows


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG\r\n\x1a\n"), (".pdf", b"%PDF"), (".svg", b"<?xml")])
def test_plot_writes_the_format_of_the_suffix(tmp_path, suffix, magic, chart_rows):
    path = cmp.plot_complexity(chart_rows, tmp_path / f"chart{suffix}")
    data = path.read_bytes()
    assert data.startswith(magic) and (suffix != ".svg" or b"<svg" in data)
    assert [p.name for p in tmp_path.iterdir()] == [f"chart{suffix}"]        # no temporary file left


def test_bubbles_are_placed_and_sized_by_the_numbers(chart_rows):
    r = chart_rows
    fig = cmp.complexity_figure(r)
    axes = [ax for ax in fig.axes if ax.get_xlabel()]
    assert [ax.get_ylabel() for ax in axes] == ["top-1 accuracy on ImageNet (%)", "top-1 accuracy on CIFAR-10+ (%)"]
    bubbles = [c for c in axes[0].collections if len(c.get_offsets())]
    assert [tuple(b.get_offsets()[0]) for b in bubbles] == [(x["macs"] / 1e9, x["accuracy"].top1) for x in r[:3]]
    sizes = [cmp.BUBBLE_AREA * x["params"] / 1e6 for x in r[:3]]
    assert [float(b.get_sizes()[0]) for b in bubbles] == pytest.approx(sizes)
    cifar = [c for c in axes[1].collections if len(c.get_offsets())]
    assert len(cifar) == 1 and tuple(cifar[0].get_offsets()[0]) == (r[3]["macs"] / 1e9, 95.49)
    assert "32x32" in axes[1].get_xlabel() and "64x64" in axes[0].get_xlabel()
    assert "not drawn (no published accuracy): cifar_resnet18" in fig.texts[0].get_text()


def test_plot_refuses_models_without_accuracy(tmp_path, chart_rows):
    with pytest.raises(ValueError, match="none of these models has a published accuracy"):
        cmp.plot_complexity(chart_rows[-1:], tmp_path / "c.png")
    with pytest.raises(ValueError, match="the file name must end in one of"):
        cmp.plot_complexity(chart_rows, tmp_path / "c.nope")
    assert list(tmp_path.iterdir()) == []


# --- the command ---------------------------------------------------------------------------------

def test_cli_table_without_measuring(tmp_path, capsys):
    chart = tmp_path / "zoo.svg"
    r = in_process("compare", "alexnet", "googlenet", "densenet-121", "--image-size", "64", "--no-measure",
                   "--plot", chart, capsys=capsys)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[1].split()[:2] == ["model", "image"]
    alexnet = next(l for l in lines if l.startswith("alexnet"))
    s = td.summary(cmp.build("alexnet"), (3, 64, 64))
    assert alexnet.split()[:5] == ["alexnet", "64", "61.10", f"{s.total_macs / 1e9:.3f}",
                                   f"{s.total_memory_bytes / 2 ** 20:.1f}"]
    assert alexnet.split()[5:] == ["-", "-", "56.52", "ImageNet", "[1]"]
    assert "img/s: not measured" in r.stdout and "[1] torchvision 0.29.1: acc@1" in r.stdout
    assert f"complexity chart drawn to {chart}" in r.stdout and chart.read_bytes().startswith(b"<?xml")
    assert r.stderr == ""


@pytest.fixture
def threads_restored(monkeypatch):
    """--threads sets the BLAS library's threads and their environment variables for the
    whole process: put both back afterwards."""
    from tinydense.training import blas_threads, set_blas_threads
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)          # restored at teardown, whatever the test sets
    before = blas_threads()
    yield
    if before:
        set_blas_threads(before)


def test_cli_measures_and_says_how_long_first(capsys, threads_restored):
    r = in_process("compare", "cifar_resnet18", "--image-size", "4", "--repeats", "1", "--threads", "1",
                   capsys=capsys)
    assert r.returncode == 0, r.stderr
    err = r.stderr.splitlines()
    assert err[0].startswith("counting") and "measuring throughput (batch 2, median of 1 after 1 warm-up, " \
                                             "1 BLAS threads): about" in err[1]
    row = next(l for l in r.stdout.splitlines() if l.startswith("cifar_resnet18")).split()
    assert float(row[5]) > float(row[6]) > 0                      # inference and training images/s
    assert "measured on this machine (CPU, float32, 1 BLAS threads), batch 2, the median of 1" in " ".join(
        r.stdout.split())


@pytest.mark.parametrize("args, fragments", [
    (["resnet19"], ["unknown model 'resnet19' (did you mean resnet18?)", "alexnet", "densenet_bc", "zoo"]),
    (["resnet18", "--batch", "0"], ["batch must be a positive integer, got 0"]),
    (["resnet18", "--image-size", "0"], ["image-size must be a positive integer, got 0"]),
    (["resnet18", "--plot", "chart.bmpx"], ["cannot draw to chart.bmpx"]),
    (["cifar_resnet18", "--plot", "chart.png"], ["none of these models has a published accuracy"]),
])
def test_cli_refuses_bad_input_before_any_work(args, fragments, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cmp, "compare", lambda *a, **k: pytest.fail("compare ran"))
    one_error_line(in_process("compare", *args, capsys=capsys), *fragments)
    assert list(tmp_path.iterdir()) == []


def test_the_senets_are_listed_counted_and_coloured_without_an_accuracy():
    from tinydense.tools.complexity_chart import COLOURS, family
    se = ["se_resnet18", "se_resnet34", "se_resnet50", "se_resnet101", "se_resnet152", "se_resnext50_32x4d"]
    assert cmp.resolve(["SE-ResNet-50", "se_resnext50_32x4d"]) == ["se_resnet50", "se_resnext50_32x4d"]
    assert set(se) <= set(cmp.OTHERS) and "cifar_se_resnet50" in cmp.resolve(["cifar"])
    assert not set(cmp.ACCURACY) & {n for n in cmp.MODELS if "se_res" in n}        # no accuracy we cannot verify
    assert {family(n) for n in se + ["cifar_se_resnet18", "cifar_se_resnext50_32x4d"]} == {"SENet"}
    assert family("resnet50") == "ResNet" and family("cifar_resnet18") == "ResNet" and COLOURS["SENet"] not in (
        COLOURS[f] for f in COLOURS if f != "SENet")
    row, = cmp.compare(["se_resnet50"], image_size=32, measure_speed=False).rows
    # torchvision ResNet-50's 25,557,032 + the SE 1x1 convolutions' 2,514,944 weights and 16,048 biases (issue 23)
    assert row["params"] == 25_557_032 + 2_514_944 + 16_048 == 28_088_024
