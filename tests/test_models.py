"""DenseNet family and the ResNet baseline: parameter counts (the paper's and
torchvision's), torchvision's names, the dense connectivity itself, bad
input, and whole-model gradient checks."""
import numpy as np
import pytest

import tinydense as td
import tinydense.functional as F
from tinydense import models


def count(model):
    return sum(p.size for p in model.parameters())


def rand(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# --- parameter counts ------------------------------------------------------------------

@pytest.mark.parametrize("builder, expected", [
    (models.densenet121, 7_978_856),
    (models.densenet169, 14_149_480),
    (models.densenet201, 20_013_928),
    (models.densenet161, 28_681_000),
    (models.densenet264, 33_337_704),
])
def test_imagenet_parameter_counts(builder, expected):
    assert count(builder()) == expected


@pytest.mark.parametrize("depth, k, expected, paper", [
    (40, 12, 1_019_722, 1.0), (100, 12, 6_979_642, 7.0), (100, 24, 27_249_082, 27.2)])
def test_cifar_densenet_parameter_counts(depth, k, expected, paper):
    n = count(models.densenet(depth, k))
    assert n == expected and round(n / 1e6, 1) == paper          # the paper's Table 2


@pytest.mark.parametrize("depth, k, expected, paper", [
    (100, 12, 769_162, 0.8), (250, 24, 15_324_406, 15.3), (190, 40, 25_624_430, 25.6)])
def test_cifar_densenet_bc_parameter_counts(depth, k, expected, paper):
    n = count(models.densenet_bc(depth, k))
    assert n == expected and round(n / 1e6, 1) == paper


def preact_resnet_count(n, bottleneck, classes=10):
    """Closed-form count: 2C per BN, Cin*Cout*k*k per conv, a 1x1 projection where the
    shape changes, final BN and the classifier."""
    bn = lambda c: 2 * c                                    # noqa: E731
    conv = lambda cin, cout, k: cin * cout * k * k          # noqa: E731
    total, c = conv(3, 16, 3), 16
    for width in (16, 32, 64):
        out = 4 * width if bottleneck else width
        for i in range(n):
            if bottleneck:
                total += bn(c) + conv(c, width, 1) + bn(width) + conv(width, width, 3) + bn(width) + conv(width, out, 1)
            else:
                total += bn(c) + conv(c, width, 3) + bn(width) + conv(width, out, 3)
            if c != out or (i == 0 and width != 16):
                total += conv(c, out, 1)
            c = out
    return total + bn(c) + c * classes + classes


def test_resnet_parameter_counts():
    assert count(models.resnet(20)) == 272_282          # 0.27M, He et al. 2016a
    assert count(models.resnet(56)) == preact_resnet_count(9, False)
    r110, r164 = models.resnet(110), models.resnet(164)
    assert count(r110) == preact_resnet_count(18, False) and round(count(r110) / 1e6, 1) == 1.7
    assert count(r164) == preact_resnet_count(18, True) and round(count(r164) / 1e6, 1) == 1.7
    assert count(models.resnet(11)) == preact_resnet_count(1, True)
    assert not hasattr(r110.layer1[0], "conv3") and hasattr(r164.layer1[0], "conv3")
    assert not hasattr(models.resnet(56).layer1[0], "conv3")


# --- names and shapes -------------------------------------------------------------------

def test_densenet121_state_dict_names_are_torchvision_s():
    sd = models.densenet121().state_dict()
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert list(sd)[:6] == ["features.conv0.weight"] + [f"features.norm0.{b}" for b in bn]
    layer = "features.denseblock1.denselayer1."
    assert list(sd)[6:18] == ([f"{layer}norm1.{b}" for b in bn] + [f"{layer}conv1.weight"]
                              + [f"{layer}norm2.{b}" for b in bn] + [f"{layer}conv2.weight"])
    assert list(sd)[-7:] == [f"features.norm5.{b}" for b in bn] + ["classifier.weight", "classifier.bias"]
    for key in ("features.transition3.norm.running_var", "features.transition3.conv.weight",
                "features.denseblock4.denselayer16.conv2.weight", "features.denseblock3.denselayer24.norm1.bias"):
        assert key in sd
    assert "features.denseblock4.denselayer17.conv1.weight" not in sd
    # 58 dense layers of 2 BN (5 entries) + 2 convs, 3 transitions, stem conv + BN, norm5, classifier
    assert len(sd) == 58 * 12 + 3 * 6 + 1 + 5 + 5 + 2
    assert sd["features.conv0.weight"].shape == (64, 3, 7, 7)
    assert sd["features.denseblock1.denselayer2.conv1.weight"].shape == (128, 96, 1, 1)
    assert sd["features.denseblock1.denselayer2.conv2.weight"].shape == (32, 128, 3, 3)
    assert sd["features.transition1.conv.weight"].shape == (128, 256, 1, 1)
    assert sd["classifier.weight"].shape == (1000, 1024)
    assert models.densenet161().state_dict()["classifier.weight"].shape == (1000, 2208)


def test_imagenet_stem_and_feature_shapes():
    m = models.densenet121().eval()
    f = m.features
    assert (f.conv0.kernel_size, f.conv0.stride, f.conv0.padding) == ((7, 7), (2, 2), (3, 3))
    assert (f.pool0.kernel_size, f.pool0.stride, f.pool0.padding) == ((3, 3), (2, 2), (1, 1))
    assert isinstance(f.pool0, td.nn.MaxPool2d) and isinstance(f.transition1.pool, td.nn.AvgPool2d)
    x = td.tensor(rand(1, 3, 64, 64))
    shapes = {}
    f.register_forward_hook(lambda module, inputs, out: shapes.setdefault("features", out.shape))
    with td.no_grad():
        assert m(x).shape == (1, 1000)
    assert shapes["features"] == (1, 1024, 2, 2)          # 64 -> 32 -> 16 -> 8 -> 4 -> 2


def test_cifar_models_layout():
    basic = models.densenet(40, 12)
    sd = basic.state_dict()
    assert "features.norm0.weight" not in sd and not hasattr(basic.features, "pool0")
    assert basic.features.conv0.weight.shape == (16, 3, 3, 3)
    assert "features.denseblock3.denselayer12.conv1.weight" in sd
    assert not any(".norm2." in k or ".conv2." in k for k in sd)     # basic layers: norm1/conv1 only
    assert sd["features.denseblock1.denselayer1.conv1.weight"].shape == (12, 16, 3, 3)
    # compression 1: transitions keep every channel: 16 + 12*12 = 160, 304, 448
    assert sd["features.transition1.conv.weight"].shape == (160, 160, 1, 1)
    assert sd["classifier.weight"].shape == (10, 448)

    bc = models.densenet_bc(100, 12)
    blocks = [bc.features.denseblock1, bc.features.denseblock2, bc.features.denseblock3]
    assert bc.features.conv0.weight.shape == (24, 3, 3, 3)          # 2k stem channels
    k0s = [24, 108, 150]                                           # 216 -> 108, 300 -> 150
    for block, k0 in zip(blocks, k0s):
        layers = list(block.children())
        assert len(layers) == 16
        for l, layer in enumerate(layers, start=1):                 # layer l sees k0 + (l-1)k channels
            assert layer.norm1.num_features == k0 + (l - 1) * 12
            assert layer.conv1.weight.shape == (48, k0 + (l - 1) * 12, 1, 1)
            assert layer.conv2.weight.shape == (12, 48, 3, 3)
    assert bc.classifier.weight.shape == (10, 342)
    assert bc(td.tensor(rand(2, 3, 32, 32))).shape == (2, 10)


def test_transition_keeps_floor_theta_m_channels():
    m = models.DenseNet(4, (2, 2), 6, compression=0.3, stem="cifar", num_classes=3)
    assert m.features.transition1.conv.weight.shape == (4, 14, 1, 1)   # floor(0.3 * (6 + 2*4)) = 4
    assert m.classifier.weight.shape == (3, 12)
    t = m.features.transition1.eval()
    x = rand(2, 14, 4, 6)
    w = t.conv.weight.data[:, :, 0, 0]
    y = np.einsum("oc,nchw->nohw", w, np.maximum(x / np.sqrt(1 + 1e-5), 0))
    expected = y.reshape(2, 4, 2, 2, 3, 2).mean(axis=(3, 5))
    np.testing.assert_allclose(t(td.tensor(x)).data, expected, rtol=1e-5, atol=1e-6)


# --- the dense connectivity ---------------------------------------------------------------------

def conv_same(x, w):
    """Stride-1 convolution with 'same' zero padding, by loops over the taps."""
    k = w.shape[-1]
    p = k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    H, W = x.shape[2:]
    return sum(np.einsum("oc,nchw->nohw", w[:, :, a, b], xp[:, :, a:a + H, b:b + W])
               for a in range(k) for b in range(k))


def test_bottleneck_layer_is_bn_relu_conv1x1_bn_relu_conv3x3():
    layer = models.DenseLayer(10, growth_rate=3, bn_size=2).eval()    # fresh BN: x / sqrt(1 + eps)
    x = rand(2, 10, 5, 5)
    s = 1 / np.sqrt(1 + 1e-5)
    h = conv_same(np.maximum(x * s, 0), layer.conv1.weight.data)
    expected = conv_same(np.maximum(h * s, 0), layer.conv2.weight.data)
    assert layer.conv1.weight.shape == (6, 10, 1, 1)
    np.testing.assert_allclose(layer(td.tensor(x)).data, expected, rtol=1e-4, atol=1e-5)
    basic = models.DenseLayer(10, growth_rate=3, bottleneck=False).eval()
    np.testing.assert_allclose(basic(td.tensor(x)).data, conv_same(np.maximum(x * s, 0), basic.conv1.weight.data),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bottleneck", [True, False])
def test_each_layer_sees_the_concatenation_of_all_earlier_features(bottleneck):
    k0, k = 5, 3
    block = models.DenseBlock(4, k0, k, bottleneck=bottleneck, bn_size=2)
    x = rand(2, k0, 6, 6)
    block(td.tensor(rand(3, k0, 6, 6, seed=1)))                 # move the BN statistics, then freeze them
    block.eval()
    out = block(td.tensor(x)).data
    assert out.shape == (2, k0 + 4 * k, 6, 6) and block.out_channels == k0 + 4 * k
    np.testing.assert_array_equal(out[:, :k0], x)                  # the block input passes through untouched
    for l, layer in enumerate(block.children(), start=1):
        earlier = out[:, :k0 + (l - 1) * k]                        # x_0, x_1, ..., x_{l-1}
        pieces = [td.tensor(earlier[:, :k0])] + [td.tensor(earlier[:, k0 + i * k:k0 + (i + 1) * k])
                                                 for i in range(l - 1)]
        np.testing.assert_allclose(layer(pieces).data, out[:, k0 + (l - 1) * k:k0 + l * k], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(layer(td.tensor(earlier)).data, out[:, k0 + (l - 1) * k:k0 + l * k],
                                   rtol=1e-5, atol=1e-6)


def test_dropout_after_every_convolution_but_the_stem(monkeypatch):
    calls = []
    real = F.dropout

    def counting(x, p, training):
        calls.append((p, training))
        return real(x, p, training)

    monkeypatch.setattr(F, "dropout", counting)
    # the textbook modules (the fused blocks draw the same masks: tests/test_memory_efficient.py)
    m = models.densenet_bc(10, 4, drop_rate=0.2, memory_efficient=False)
    x = td.tensor(rand(2, 3, 8, 8))
    a, b = m(x).data, m(x).data
    assert calls[:8] == [(0.2, True)] * 8       # 3 layers x 2 convs + 2 transitions
    assert len(calls) == 16 and not np.allclose(a, b)
    m.eval()
    np.testing.assert_array_equal(m(x).data, m(x).data)
    calls.clear()
    models.densenet_bc(10, 4, memory_efficient=False)(x)
    assert calls == []                           # drop_rate 0: no dropout at all


def test_eval_output_of_an_image_does_not_depend_on_the_batch():
    m = models.densenet_bc(10, 4).eval()
    x = rand(3, 3, 8, 8)
    together = m(td.tensor(x)).data
    alone = np.concatenate([m(td.tensor(x[i:i + 1])).data for i in range(3)])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)


# --- configuration errors and bad input ----------------------------------------------------

def test_depths_that_do_not_fit_the_formula_raise():
    with pytest.raises(ValueError, match=r"depth 41 does not fit DenseNet: L = 3n \+ 4.*40, 43"):
        models.densenet(41, 12)
    with pytest.raises(ValueError, match=r"depth 99 does not fit .*6n \+ 4.*94, 100"):
        models.densenet_bc(99, 12)
    with pytest.raises(ValueError, match="depth 4 does not fit"):
        models.densenet(4, 12)
    with pytest.raises(ValueError, match="depth must be an integer"):
        models.densenet(40.0, 12)
    with pytest.raises(ValueError, match="fits neither basic .* nor bottleneck"):
        models.resnet(21)
    with pytest.raises(ValueError, match=r"depth 26 does not fit bottleneck blocks: depth = 9n \+ 2"):
        models.resnet(26, bottleneck=True)
    with pytest.raises(ValueError, match=r"compression \(theta\) must be in \(0, 1\]"):
        models.densenet(40, 12, compression=0)
    with pytest.raises(ValueError, match="growth_rate must be a positive integer"):
        models.DenseNet(growth_rate=0)
    with pytest.raises(ValueError, match="stem must be"):
        models.DenseNet(stem="mnist")


def test_wrong_channel_count_names_the_layer_and_changes_nothing():
    m = models.densenet_bc(10, 4)
    before = m.state_dict()
    with pytest.raises(ValueError, match=r"features.conv0 \(Conv2d\) expects 3 input channels, "
                                         r"got input of shape \(2, 1, 32, 32\)"):
        m(td.tensor(rand(2, 1, 32, 32)))
    with pytest.raises(ValueError, match=r"shape \(N, 3, H, W\), got shape \(3, 32, 32\)"):
        m(td.tensor(rand(3, 32, 32)))
    for key, value in m.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
    with pytest.raises(ValueError, match=r"ResNet: conv1 \(Conv2d\) expects 3 input channels"):
        models.resnet(8)(td.tensor(rand(2, 4, 8, 8)))


def test_too_small_image_names_the_layer_and_changes_nothing():
    m = models.densenet121()
    before = m.state_dict()
    with pytest.raises(ValueError) as info:
        m(td.tensor(rand(2, 3, 16, 16)))
    msg = str(info.value)
    assert "input of shape (2, 3, 16, 16) is too small" in msg
    assert "1x1 when it reaches features.transition3.pool (AvgPool2d" in msg
    assert "at least 29x29" in msg
    for key, value in m.state_dict().items():                 # no BN statistics were updated
        np.testing.assert_array_equal(value, before[key])
    with pytest.raises(ValueError, match=r"features.transition1.pool .* at least 4x4"):
        models.densenet_bc(10, 4)(td.tensor(rand(2, 3, 1, 1)))
    with pytest.raises(ValueError, match="single value per channel .* model.eval()"):
        models.densenet_bc(10, 4)(td.tensor(rand(1, 3, 4, 4)))
    assert models.densenet_bc(10, 4).eval()(td.tensor(rand(1, 3, 4, 4))).shape == (1, 10)


# --- whole-model gradient checks ----------------------------------------------------------

def test_gradcheck_tiny_densenet_bc_in_train_mode():
    td.manual_seed(0)
    m = models.densenet_bc(10, 4).double().train()
    x = td.tensor(rand(2, 3, 8, 8, dtype=np.float64), requires_grad=True)
    params = list(m.parameters())
    assert all(p.dtype == np.float64 for p in params)
    assert td.gradcheck(lambda x, *ps: m(x), [x] + params, mode="direction", n_directions=4)


@pytest.mark.parametrize("depth", [8, 11])        # basic blocks; bottleneck blocks
def test_gradcheck_tiny_resnet_in_train_mode(depth):
    td.manual_seed(0)
    m = models.resnet(depth).double().train()
    x = td.tensor(rand(2, 3, 8, 8, dtype=np.float64), requires_grad=True)
    assert td.gradcheck(lambda x, *ps: m(x), [x] + list(m.parameters()), mode="direction", n_directions=3)


def test_gradcheck_catches_a_broken_model():
    """The whole-model check is not vacuous: a wrong gradient in one layer fails it."""
    td.manual_seed(0)
    m = models.densenet_bc(10, 4, memory_efficient=False).double().train()   # relu2 runs as a module
    x = td.tensor(rand(2, 3, 8, 8, dtype=np.float64), requires_grad=True)

    class WrongReLU(td.Function):            # forward ReLU, backward as if it were the identity
        def forward(self, a):
            return np.maximum(a, 0)

        def backward(self, g):
            return g

    m.features.denseblock2.denselayer1.relu2.forward = lambda t: WrongReLU.apply(t)
    assert not td.gradcheck(lambda x, *ps: m(x), [x] + list(m.parameters()), mode="direction",
                            n_directions=4, raise_exception=False)
