"""tinydense.summary against numbers derived by hand (the CNN-architecture
lecture's AlexNet arithmetic, and DenseNet-121 layer by layer)."""
import numpy as np
import pytest

import tinydense as td
from tinydense import models, nn


def test_alexnet_conv1_and_pool_as_in_the_lecture():
    alexnet_start = nn.Sequential(nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2))
    s = td.summary(alexnet_start, (3, 227, 227))
    conv, relu, pool = s.rows
    # (227 - 11 + 2*2) / 4 + 1 = 56;  64*3*11*11 + 64;  (64*56*56) * (3*11*11);  64*56*56*4 bytes
    assert conv == {"name": "0", "type": "Conv2d", "output_shape": (64, 56, 56), "params": 23_296,
                    "macs": 72_855_552, "memory_bytes": 784 * 1024}
    assert relu["macs"] == 0 and relu["memory_bytes"] == 784 * 1024
    # floor((56 - 3) / 2) + 1 = 27; 64*27*27 outputs of 3*3 comparisons each; 182.25 KB
    assert pool == {"name": "2", "type": "MaxPool2d", "output_shape": (64, 27, 27), "params": 0,
                    "macs": 64 * 27 * 27 * 9, "memory_bytes": int(182.25 * 1024)}
    assert s.total_params == 23_296 and s.total_macs == 72_855_552 + 419_904
    text = str(s)
    assert "Conv2d" in text and "64x56x56" in text and "23,296" in text and "72,855,552" in text
    assert "784.00" in text and "182.25" in text and "Total parameters:   23,296" in text


def test_alexnet_fully_connected_layer():
    fc = nn.Sequential(nn.Flatten(), nn.Linear(256 * 6 * 6, 4096))
    s = td.summary(fc, (256, 6, 6))
    assert s.rows[0]["output_shape"] == (9216,) and s.rows[0]["macs"] == 0
    assert s.rows[1]["params"] == 9216 * 4096 + 4096 == 37_752_832
    assert s.rows[1]["macs"] == 9216 * 4096 == 37_748_736


def densenet121_macs():
    """Multiply-adds of DenseNet-121 on a 224x224 image, from the architecture table."""
    k, total = 32, 0
    total += 64 * 112 * 112 * 3 * 7 * 7            # conv0
    total += 64 * 56 * 56 * 3 * 3                  # pool0
    channels, size = 64, 56
    for b, layers in enumerate((6, 12, 24, 16)):
        for l in range(layers):
            c_in = channels + l * k
            total += 4 * k * size * size * c_in                # 1x1 bottleneck conv
            total += k * size * size * 4 * k * 9               # 3x3 conv
        channels += layers * k
        if b < 3:
            total += channels // 2 * size * size * channels    # transition 1x1 conv
            size //= 2
            channels //= 2
            total += channels * size * size * 4                # 2x2 average pool
    total += channels * size * size                            # global average pool (7x7)
    return total + channels * 1000                             # classifier


def test_densenet121_totals_and_rows():
    model = models.densenet121()
    before = model.state_dict()
    s = td.summary(model, (3, 224, 224))
    assert s.total_params == 7_978_856
    assert s.total_macs == densenet121_macs()
    # torchvision's 2.83 GFLOPS counts the convolutions and the classifier; pooling adds 0.1%
    weighted = sum(r["macs"] for r in s.rows if r["type"] in ("Conv2d", "Linear"))
    assert round(weighted / 1e9, 2) == 2.83 and 2.83e9 < s.total_macs < 2.84e9
    # every leaf call: stem 4, 58 dense layers x 6, 3 transitions x 4, norm5, relu, pool, flatten, classifier
    assert len(s.rows) == 4 + 58 * 6 + 3 * 4 + 5
    assert s.rows[0]["name"] == "features.conv0" and s.rows[0]["output_shape"] == (64, 112, 112)
    assert s.rows[0]["macs"] == 118_013_952 and s.rows[0]["params"] == 9408
    norm1 = next(r for r in s.rows if r["name"] == "features.denseblock3.denselayer24.norm1")
    assert norm1["output_shape"] == (256 + 23 * 32, 14, 14)       # the concatenated input
    assert s.rows[-1] == {"name": "classifier", "type": "Linear", "output_shape": (1000,),
                          "params": 1_025_000, "macs": 1_024_000, "memory_bytes": 4000}
    for r in s.rows:
        assert r["memory_bytes"] == 4 * int(np.prod(r["output_shape"]))
    assert sum(r["params"] for r in s.rows) == s.total_params
    assert sum(r["macs"] for r in s.rows) == s.total_macs
    assert s.total_memory_bytes == sum(r["memory_bytes"] for r in s.rows)
    # the model is left as it was: training mode, no hooks, statistics untouched
    assert model.training and all(not m._forward_hooks for m in model.modules())
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_depth_groups_rows_by_module():
    s = td.summary(models.densenet_bc(100, 12), (3, 32, 32), depth=2)
    assert [r["name"] for r in s.rows] == [
        "features.conv0", "features.denseblock1", "features.transition1", "features.denseblock2",
        "features.transition2", "features.denseblock3", "features.norm5", "relu", "pool", "flatten",
        "classifier"]
    block1 = s.rows[1]
    assert block1["type"] == "EfficientDenseBlock" and block1["output_shape"] == (24 + 16 * 12, 32, 32)
    # 16 bottleneck layers: 1x1 conv to 48 channels, then 3x3 conv to 12, on 32x32
    expected = sum(48 * 32 * 32 * (24 + l * 12) + 12 * 32 * 32 * 48 * 9 for l in range(16))
    assert block1["macs"] == expected
    assert sum(r["params"] for r in s.rows) == s.total_params == 769_162
    full = td.summary(models.densenet_bc(100, 12), (3, 32, 32))
    assert sum(r["macs"] for r in s.rows) == s.total_macs == full.total_macs
    assert td.summary(models.densenet_bc(10, 4), (3, 8, 8), depth=1).rows[0]["name"] == "features"
    with pytest.raises(ValueError, match="depth must be a positive integer"):
        td.summary(models.densenet_bc(10, 4), (3, 8, 8), depth=0)


def test_resnet_summary_counts_the_addition_model_too():
    s = td.summary(models.resnet(20), (3, 32, 32))
    assert s.total_params == 272_282
    convs = [r for r in s.rows if r["type"] == "Conv2d"]
    assert len(convs) == 1 + 18 + 2                              # stem, 9 blocks x 2, 2 projections
    assert s.rows[-1]["output_shape"] == (10,)


def test_summary_of_a_bad_input_shape_names_the_layer():
    with pytest.raises(ValueError, match=r"features.conv0 \(Conv2d\) expects 3 input channels"):
        td.summary(models.densenet_bc(10, 4), (1, 32, 32))


def test_a_batch_shape_is_accepted_as_torchinfo_does():
    """(N, C, H, W) reports the batch: N times the MACs and memory of one image
    (regression: it used to fail with a 5-D convolution error)."""
    model = models.densenet_bc(10, 4)
    one = td.summary(model, (3, 16, 16))
    four = td.summary(model, (4, 3, 16, 16))
    assert four.batch_size == 4 and one.batch_size == 1 and four.input_shape == (4, 3, 16, 16)
    assert [r["output_shape"] for r in four.rows] == [r["output_shape"] for r in one.rows]   # per image
    assert [r["macs"] for r in four.rows] == [4 * r["macs"] for r in one.rows]
    assert [r["memory_bytes"] for r in four.rows] == [4 * r["memory_bytes"] for r in one.rows]
    assert four.total_macs == 4 * one.total_macs and four.total_params == one.total_params
    assert "input 4x3x16x16 (batch 4: output shapes per image" in str(four)
    assert td.summary(model, (1, 3, 16, 16)).rows == one.rows
    for bad in [(3, 16), (2, 1, 3, 16, 16), (0, 3, 16, 16)]:
        with pytest.raises(ValueError, match=r"input_shape must be \(C, H, W\) or \(N, C, H, W\)"):
            td.summary(model, bad)


def test_a_huge_input_is_refused_with_an_estimate_before_anything_is_allocated():
    """Regression: a huge image died in a raw allocation error (or ran the machine out
    of memory). The estimate is the layer outputs of a 32x32 image, scaled by area."""
    from tinydense import memory as summary_module       # where summary asks for the available memory
    model = models.densenet_bc(10, 4)
    small = td.summary(model, (3, 32, 32)).total_memory_bytes
    with pytest.raises(ValueError) as info:
        td.summary(model, (3, 100_000, 100_000))
    expected_gb = small * (100_000 / 32) ** 2 / 2 ** 30
    assert f"about {expected_gb:,.1f} GB for the layer outputs" in str(info.value)
    assert "use a smaller image" in str(info.value)
    # the same arithmetic decides a size just under and just over the limit
    limit = 2 * small * (300 / 32) ** 2                   # a 300x300 image would need half of this
    original = summary_module.available_memory
    try:
        summary_module.available_memory = lambda: limit * 1.01
        td.summary(model, (3, 300, 300))
        summary_module.available_memory = lambda: limit * 0.99
        with pytest.raises(ValueError, match="more than half"):
            td.summary(model, (3, 300, 300))
    finally:
        summary_module.available_memory = original


def test_the_count_is_called_multiply_adds_everywhere():
    """One name for the arithmetic: multiply-adds (MACs). The old key "flops" and
    total_flops still answer (the lessons use them) with the same numbers."""
    s = td.summary(nn.Sequential(nn.Conv2d(3, 8, 3)), (3, 5, 5))
    assert s.rows[0]["macs"] == 8 * 3 * 3 * 3 * 3 * 3 == s.rows[0]["flops"] == s.total_macs == s.total_flops
    assert "flops" not in s.rows[0] and "Total multiply-adds (MACs)" in str(s)
    import tinydense.tools.summary as module
    from tinydense import cli
    assert "multiply-adds (MACs)" in module.__doc__ and "FLOP" not in module.summary.__doc__
    help_text = cli.build_parser()._subparsers._group_actions[0].choices["summary"].format_help()
    assert "multiply-adds (MACs)" in " ".join(help_text.split()) and "FLOP" not in help_text
