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
                    "flops": 72_855_552, "memory_bytes": 784 * 1024}
    assert relu["flops"] == 0 and relu["memory_bytes"] == 784 * 1024
    # floor((56 - 3) / 2) + 1 = 27; 64*27*27 outputs of 3*3 comparisons each; 182.25 KB
    assert pool == {"name": "2", "type": "MaxPool2d", "output_shape": (64, 27, 27), "params": 0,
                    "flops": 64 * 27 * 27 * 9, "memory_bytes": int(182.25 * 1024)}
    assert s.total_params == 23_296 and s.total_flops == 72_855_552 + 419_904
    text = str(s)
    assert "Conv2d" in text and "64x56x56" in text and "23,296" in text and "72,855,552" in text
    assert "784.00" in text and "182.25" in text and "Total parameters:   23,296" in text


def test_alexnet_fully_connected_layer():
    fc = nn.Sequential(nn.Flatten(), nn.Linear(256 * 6 * 6, 4096))
    s = td.summary(fc, (256, 6, 6))
    assert s.rows[0]["output_shape"] == (9216,) and s.rows[0]["flops"] == 0
    assert s.rows[1]["params"] == 9216 * 4096 + 4096 == 37_752_832
    assert s.rows[1]["flops"] == 9216 * 4096 == 37_748_736


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
    assert s.total_flops == densenet121_macs()
    # torchvision's 2.83 GFLOPS counts the convolutions and the classifier; pooling adds 0.1%
    weighted = sum(r["flops"] for r in s.rows if r["type"] in ("Conv2d", "Linear"))
    assert round(weighted / 1e9, 2) == 2.83 and 2.83e9 < s.total_flops < 2.84e9
    # every leaf call: stem 4, 58 dense layers x 6, 3 transitions x 4, norm5, relu, pool, flatten, classifier
    assert len(s.rows) == 4 + 58 * 6 + 3 * 4 + 5
    assert s.rows[0]["name"] == "features.conv0" and s.rows[0]["output_shape"] == (64, 112, 112)
    assert s.rows[0]["flops"] == 118_013_952 and s.rows[0]["params"] == 9408
    norm1 = next(r for r in s.rows if r["name"] == "features.denseblock3.denselayer24.norm1")
    assert norm1["output_shape"] == (256 + 23 * 32, 14, 14)       # the concatenated input
    assert s.rows[-1] == {"name": "classifier", "type": "Linear", "output_shape": (1000,),
                          "params": 1_025_000, "flops": 1_024_000, "memory_bytes": 4000}
    for r in s.rows:
        assert r["memory_bytes"] == 4 * int(np.prod(r["output_shape"]))
    assert sum(r["params"] for r in s.rows) == s.total_params
    assert sum(r["flops"] for r in s.rows) == s.total_flops
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
    assert block1["flops"] == expected
    assert sum(r["params"] for r in s.rows) == s.total_params == 769_162
    full = td.summary(models.densenet_bc(100, 12), (3, 32, 32))
    assert sum(r["flops"] for r in s.rows) == s.total_flops == full.total_flops
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
