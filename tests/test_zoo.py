"""The lecture's architectures (AlexNet, ZFNet, VGG, GoogLeNet, ResNet, ResNeXt,
Wide ResNet): torchvision's parameter counts and multiply-adds, its state_dict
names and shapes (fixtures made once by torchvision: tests/fixtures/make_zoo_fixture.py),
PyTorch's logits for weights loaded from a .pth, forward shapes, bad input,
whole-model gradient checks of narrow variants, and the lecture's cost tables."""
import hashlib
import json
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

import tinydense as td
from tinydense import models
from tinydense.nn import init

FIXTURES = Path(__file__).parent / "fixtures"
KEYS = json.loads((FIXTURES / "zoo_keys.json").read_text())

# torchvision's documentation (the weights' metadata): parameters, and GFLOPS = multiply-adds
# of the convolutions and linear layers for one 224x224 image, in billions
TORCHVISION = {
    "alexnet": (61_100_840, 0.714),
    "vgg11": (132_863_336, 7.609), "vgg11_bn": (132_868_840, 7.609),
    "vgg13": (133_047_848, 11.308), "vgg13_bn": (133_053_736, 11.308),
    "vgg16": (138_357_544, 15.47), "vgg16_bn": (138_365_992, 15.47),
    "vgg19": (143_667_240, 19.632), "vgg19_bn": (143_678_248, 19.632),
    "googlenet": (6_624_904, 1.498),
    "resnet18": (11_689_512, 1.814), "resnet34": (21_797_672, 3.664), "resnet50": (25_557_032, 4.089),
    "resnet101": (44_549_160, 7.801), "resnet152": (60_192_808, 11.514),
    "resnext50_32x4d": (25_028_904, 4.23), "resnext101_32x8d": (88_791_336, 16.414),
    "resnext101_64x4d": (83_455_272, 15.46),
    "wide_resnet50_2": (68_883_240, 11.398), "wide_resnet101_2": (126_886_696, 22.753),
}


def build(name, **kwargs):
    """A model with all-zero weights (no random draws: fast even for VGG-19)."""
    with init.skip_init():
        if name == "googlenet_aux":
            return models.googlenet(aux_logits=True, **kwargs)
        return getattr(models, name)(**kwargs)


def count(model):
    return sum(p.size for p in model.parameters())


def digest(model):
    """sha256 of the state_dict's "name:shape" lines (read in state_dict's order without
    copying every array, as state_dict() would)."""
    lines = [f"{key}:{','.join(str(s) for s in (m._parameters[a] if is_param else m._buffers[a]).shape)}"
             for key, m, a, is_param in model._state_entries()]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest(), len(lines)


def rand(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# --- counts and names: torchvision's -------------------------------------------------------

@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_parameter_count_is_torchvisions(name):
    model = build(name)
    assert count(model) == TORCHVISION[name][0] == KEYS[name]["params"]


@pytest.mark.parametrize("name", sorted(KEYS))
def test_state_dict_names_and_shapes_are_torchvisions(name):
    """The ordered "name:shape" list of every entry (parameters and buffers) hashes to
    what torchvision's model gives, so its weight files load with strict=True."""
    assert digest(build(name)) == (KEYS[name]["sha256"], KEYS[name]["entries"])


def test_googlenet_aux_heads_add_torchvisions_count():
    assert count(build("googlenet_aux")) == KEYS["googlenet_aux"]["params"] == 13_004_888
    sd = build("googlenet_aux").state_dict()
    assert list(sd)[-2:] == ["fc.weight", "fc.bias"] and "aux1.fc1.weight" in sd and "aux2.conv.bn.running_var" in sd
    assert sd["aux1.fc1.weight"].shape == (1024, 2048) and sd["aux2.conv.conv.weight"].shape == (128, 528, 1, 1)


def zfnet_count(classes=1000):
    """Zeiler and Fergus's Figure 3 with layers 3-5 at 512, 1024, 512: conv weights and
    biases, then fc6 on 512 x 6 x 6, fc7, fc8."""
    convs = [(3, 96, 7), (96, 256, 5), (256, 512, 3), (512, 1024, 3), (1024, 512, 3)]
    fcs = [(512 * 6 * 6, 4096), (4096, 4096), (4096, classes)]
    return sum(i * o * k * k + o for i, o, k in convs) + sum(i * o + o for i, o in fcs)


def test_zfnet_as_the_lecture_describes_it():
    m = build("zfnet")
    assert count(m) == zfnet_count() == 107_627_624
    assert (m.features[0].kernel_size, m.features[0].stride) == ((7, 7), (2, 2))
    assert [c.out_channels for c in m.features if isinstance(c, td.nn.Conv2d)] == [96, 256, 512, 1024, 512]
    sizes, x = [], td.tensor(np.zeros((1, 3, 224, 224), np.float32))
    with td.no_grad():
        for layer in m.features:
            x = layer(x)
            if isinstance(layer, (td.nn.Conv2d, td.nn.MaxPool2d)):
                sizes.append(x.shape[2])
    assert sizes == [110, 55, 26, 13, 13, 13, 13, 6]            # the paper's Figure 3
    assert count(build("zfnet", num_classes=10)) == zfnet_count(10)


def test_alexnet_2012_is_the_two_gpu_network_as_groups():
    """Krizhevsky et al.'s conv2, conv4 and conv5 saw only their own GPU's half of the
    channels: 2 groups. Counted by hand: conv weights (C_in/groups * K*K per filter) and
    biases, fc6 on 256 x 6 x 6, fc7, fc8."""
    m = build("alexnet_2012")
    convs = [(3, 96, 11, 1), (96, 256, 5, 2), (256, 384, 3, 1), (384, 384, 3, 2), (384, 256, 3, 2)]
    fcs = [(256 * 6 * 6, 4096), (4096, 4096), (4096, 1000)]
    by_hand = sum(i // g * o * k * k + o for i, o, k, g in convs) + sum(i * o + o for i, o in fcs)
    assert count(m) == by_hand == 60_965_224
    assert [c.groups for c in m.features if isinstance(c, td.nn.Conv2d)] == [1, 2, 1, 2, 2]
    s = td.summary(m, (3, 227, 227))
    assert [r["output_shape"][1] for r in s.rows if r["type"] in ("Conv2d", "MaxPool2d")] == [55, 27, 27, 13, 13, 13,
                                                                                              13, 6]


def test_cifar_variants():
    r = build("cifar_resnet18")
    assert r.conv1.weight.shape == (64, 3, 3, 3) and r.conv1.stride == (1, 1)
    assert isinstance(r.maxpool, td.nn.Identity)
    assert count(r) == TORCHVISION["resnet18"][0] - 64 * 3 * (49 - 9) - 513 * 990    # 3x3 stem, 10 classes
    names = lambda m: [key for key, *_ in m._state_entries()]                         # noqa: E731
    assert names(r) == names(build("resnet18"))                                       # the same names
    v = build("cifar_vgg16_bn")
    assert v.classifier.weight.shape == (10, 512) and count(v) == 14_728_266
    with td.no_grad():
        assert r.eval()(td.tensor(np.zeros((2, 3, 32, 32), np.float32))).shape == (2, 10)
        assert v.eval()(td.tensor(np.zeros((2, 3, 32, 32), np.float32))).shape == (2, 10)
        assert build("cifar_resnext50_32x4d").eval()(td.tensor(np.zeros((1, 3, 8, 8), np.float32))).shape == (1, 10)


# --- weights written by PyTorch ----------------------------------------------------------------

NARROW = {   # the torchvision ResNet classes make_zoo_fixture.py built, at narrow widths
    "narrow_resnet": lambda: models.ResNet("basic", [1, 1, 1, 1], num_classes=10, widths=(4, 8, 16, 32)),
    "narrow_resnext": lambda: models.ResNet("bottleneck", [1, 1, 1, 1], num_classes=10, widths=(8, 16, 32, 64),
                                            groups=4, width_per_group=8,
                                            replace_stride_with_dilation=(False, True, True)),
}


@pytest.mark.parametrize("name", sorted(NARROW))
def test_logits_of_weights_from_a_pytorch_file_match_pytorchs(name):
    expected = np.load(FIXTURES / "zoo_logits.npz")
    model = NARROW[name]()
    model.load_state_dict(td.load_pth(FIXTURES / f"{name}.pth"))           # strict: every name matches
    model.eval()
    with td.no_grad():
        logits = model(td.tensor(expected["input"])).numpy()
    np.testing.assert_allclose(logits, expected[name], rtol=1e-4, atol=1e-4)


# --- forward shapes -------------------------------------------------------------------------

def smallest_input(model):
    """The smallest square image the model accepts, from its own error message."""
    try:
        with td.no_grad():
            model(td.tensor(np.zeros((1, 3, 1, 1), np.float32)))
        return 1
    except ValueError as error:
        return int(re.search(r"at least (\d+)x\1", str(error)).group(1))


@pytest.mark.parametrize("name, smallest", [
    ("alexnet", 63), ("zfnet", 47), ("vgg11_bn", 32), ("googlenet", 15), ("googlenet_aux", 15),
    ("resnet18", 1), ("resnext50_32x4d", 1)])
def test_forward_at_the_smallest_valid_size(name, smallest):
    model = build(name, num_classes=7).eval()
    assert smallest_input(model) == smallest
    with td.no_grad():
        assert model(td.tensor(np.zeros((2, 3, smallest, smallest + 1), np.float32))).shape == (2, 7)
    if smallest > 1:
        with pytest.raises(ValueError, match=f"this model needs images of at least {smallest}x{smallest}"):
            model(td.tensor(np.zeros((1, 3, smallest - 1, smallest), np.float32)))


def multiply_adds(s):
    """The convolutions' and linear layers' multiply-adds in a summary (what torchvision counts)."""
    return sum(r["flops"] for r in s.rows if r["type"] in ("Conv2d", "Linear"))


@pytest.mark.parametrize("name", ["alexnet", "googlenet", "resnet50", "resnext50_32x4d"])
def test_224x224_forward_and_torchvisions_multiply_adds(name):
    """One 224x224 image through each family (the summary runs the forward pass); its
    convolution and linear multiply-adds are torchvision's documented GFLOPS. ResNeXt's
    4.23 counts the grouped convolutions as C_out*H'*W'*(C_in/groups)*kH*kW. (VGG-16 at
    224x224: test_vgg16_per_stage_costs_as_the_lecture_gives_them.)"""
    s = td.summary(build(name), (3, 224, 224))
    assert s.rows[-1]["output_shape"] == (1000,)
    assert round(multiply_adds(s) / 1e9, 3) == TORCHVISION[name][1]


def test_googlenet_outputs_and_transform_input():
    td.manual_seed(0)
    m = models.GoogLeNet(num_classes=5, aux_logits=True, dropout=0.0, dropout_aux=0.0, config=NARROW_GOOGLENET,
                         stem=(4, 4, 6), aux_widths=(3, 5))
    x = td.tensor(rand(2, 3, 32, 32))
    with td.no_grad():
        out = m(x)
        assert isinstance(out, models.GoogLeNetOutputs) and out._fields == ("logits", "aux_logits2", "aux_logits1")
        assert all(t.shape == (2, 5) for t in out)
        m.eval()
        assert isinstance(m(x), td.Tensor) and m(x).shape == (2, 5)
        no_aux = models.GoogLeNet(num_classes=5, config=NARROW_GOOGLENET, stem=(4, 4, 6))
        assert isinstance(no_aux(x), td.Tensor) and no_aux.training          # no aux heads: a tensor in training
        # transform_input: channel c becomes x * std_c / 0.5 + (mean_c - 0.5) / 0.5
        m.transform_input = True
        mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
        moved = (x.numpy() * (std / 0.5)[None, :, None, None] + ((mean - 0.5) / 0.5)[None, :, None, None])
        y = m(x).numpy()
        m.transform_input = False
        np.testing.assert_allclose(y, m(td.tensor(moved.astype(np.float32))).numpy(), rtol=1e-4, atol=1e-5)


# --- bad input --------------------------------------------------------------------------------

def test_bad_input_names_the_layer_and_changes_nothing():
    m = models.googlenet(aux_logits=True, num_classes=3)
    before = {k: v.copy() for k, v in m.state_dict().items()}
    with pytest.raises(ValueError, match=r"GoogLeNet: conv1.conv \(Conv2d\) expects 3 input channels, "
                                         r"got input of shape \(2, 1, 32, 32\)"):
        m(td.tensor(rand(2, 1, 32, 32)))
    with pytest.raises(ValueError, match=r"input of shape \(2, 3, 14, 14\) is too small: the image is 1x1 when "
                                         r"it reaches maxpool3 .* at least 15x15"):
        m(td.tensor(rand(2, 3, 14, 14)))
    with pytest.raises(ValueError, match=r"single value per channel \(1x1 after maxpool4, batch of 1\)"):
        m(td.tensor(rand(1, 3, 15, 15)))
    for key, value in m.state_dict().items():               # no batch-norm statistics moved
        np.testing.assert_array_equal(value, before[key])
    with pytest.raises(ValueError, match=r"ResNet: conv1 \(Conv2d\) expects 3 input channels"):
        build("resnet18")(td.tensor(rand(1, 4, 8, 8)))
    with pytest.raises(ValueError, match=r"VGG: .* too small: the image is 1x1 when it reaches features.20 \(MaxPool2d"):
        build("vgg11")(td.tensor(rand(1, 3, 31, 31)))
    # no batch norm in AlexNet: one image of the smallest size trains
    assert build("alexnet", num_classes=2).train()(td.tensor(rand(1, 3, 63, 63))).shape == (1, 2)
    # VGG-BN's last batch norm sees 2x2 (before the last pool) at 32x32: batch 1 trains
    assert build("vgg11_bn", num_classes=2).train()(td.tensor(rand(1, 3, 32, 32))).shape == (1, 2)


def test_configuration_errors():
    with pytest.raises(ValueError, match="BasicBlock supports only groups=1 and base_width=64, got groups=32"):
        models.ResNet("basic", [1, 1, 1, 1], groups=32)
    with pytest.raises(ValueError, match="BasicBlock does not support dilation > 1"):
        models.ResNet("basic", [1, 1, 1, 2], replace_stride_with_dilation=(False, False, True))
    with pytest.raises(ValueError, match=r"layers must be four positive block counts, got \(2, 2, 2\)"):
        models.ResNet("basic", [2, 2, 2])
    with pytest.raises(ValueError, match="stem must be 'imagenet' or 'cifar', got 'mnist'"):
        models.ResNet("basic", [1, 1, 1, 1], stem="mnist")
    with pytest.raises(ValueError, match="classifier must be 'imagenet' or 'cifar'"):
        models.VGG("A", classifier="tiny")


# --- initialisation: torchvision's scheme per model ------------------------------------------

def test_each_model_initialises_as_torchvision_does():
    td.manual_seed(0)
    r = models.ResNet("bottleneck", [1, 1, 1, 1], widths=(16, 32, 64, 128), num_classes=10)
    w = r.layer3[0].conv2.weight                                 # (64, 64, 3, 3): fan_out = 64 * 9
    assert abs(w.data.std() / np.sqrt(2 / (64 * 9)) - 1) < 0.05
    assert (r.layer1[0].bn3.weight.data == 1).all() and (r.bn1.bias.data == 0).all()
    bound = 1 / np.sqrt(512)
    assert np.abs(r.fc.weight.data).max() <= bound and np.abs(r.fc.bias.data).max() <= bound
    assert np.abs(r.fc.bias.data).max() > 0                     # PyTorch's default: the bias is drawn too
    z = models.ResNet("bottleneck", [1, 1, 1, 1], widths=(16, 32, 64, 128), zero_init_residual=True)
    assert (z.layer2[0].bn3.weight.data == 0).all() and (z.layer2[0].bn2.weight.data == 1).all()

    v = models.VGG((8, "M", 16, "M"), batch_norm=True, hidden=64, num_classes=10)
    assert abs(v.features[4].weight.data.std() / np.sqrt(2 / (16 * 9)) - 1) < 0.1
    assert (v.features[0].bias.data == 0).all() and (v.classifier[0].bias.data == 0).all()
    assert abs(v.classifier[0].weight.data.std() / 0.01 - 1) < 0.05

    a = models.AlexNet(num_classes=10, hidden=64, convs=((16, 11, 4, 2, True), (32, 5, 1, 2, True),
                                                         (32, 3, 1, 1, False), (32, 3, 1, 1, False),
                                                         (16, 3, 1, 1, True)))
    c, bound = a.features[3], 1 / np.sqrt(16 * 25)
    assert np.abs(c.weight.data).max() <= bound and abs(c.weight.data.std() / (bound / np.sqrt(3)) - 1) < 0.05
    assert 0 < np.abs(c.bias.data).max() <= bound

    g = models.GoogLeNet(num_classes=10, config=NARROW_GOOGLENET, stem=(8, 8, 16), aux_widths=(8, 16))
    assert abs(g.conv3.conv.weight.data.std() / 0.01 - 1) < 0.05 and g.conv3.bn.eps == 0.001
    assert abs(g.fc.weight.data.std() / 0.01 - 1) < 0.3 and np.abs(g.fc.bias.data).max() > 0


# --- whole-model gradient checks of narrow variants (float64) ----------------------------------

NARROW_GOOGLENET = OrderedDict([
    ("inception3a", (4, 3, 4, 2, 2, 2)), ("inception3b", (4, 4, 6, 2, 3, 2)), ("maxpool3", 3),
    ("inception4a", (6, 3, 6, 2, 2, 2)), ("inception4b", (5, 3, 4, 2, 2, 2)), ("inception4c", (4, 4, 4, 2, 2, 2)),
    ("inception4d", (4, 4, 5, 2, 2, 2)), ("inception4e", (6, 4, 6, 2, 3, 3)), ("maxpool4", 2),
    ("inception5a", (6, 4, 6, 2, 3, 3)), ("inception5b", (8, 4, 8, 2, 3, 3)),
])
SMALL_CONVS = ((4, 11, 4, 2, True), (6, 5, 1, 2, True), (8, 3, 1, 1, False), (6, 3, 1, 1, False), (6, 3, 1, 1, True))
ZF_CONVS = ((4, 7, 2, 1, True), (6, 5, 2, 0, True), (8, 3, 1, 1, False), (8, 3, 1, 1, False), (6, 3, 1, 1, True))

FAMILIES = {   # name -> (a narrow model, input size)
    "alexnet": (lambda: models.AlexNet(num_classes=3, convs=SMALL_CONVS, hidden=8), 63),
    "zfnet": (lambda: models.ZFNet(num_classes=3, convs=ZF_CONVS, hidden=8), 47),
    "vgg": (lambda: models.VGG((4, "M", 6, 6, "M", 8, "M"), num_classes=3, hidden=8), 8),
    "vgg_bn": (lambda: models.VGG((4, "M", 6, 6, "M", 8, "M"), batch_norm=True, num_classes=3, hidden=8), 8),
    "googlenet_aux": (lambda: models.GoogLeNet(num_classes=3, aux_logits=True, config=NARROW_GOOGLENET,
                                               stem=(4, 4, 6), aux_widths=(3, 5)), 32),
    "resnet": (lambda: models.ResNet("basic", [1, 2, 1, 1], num_classes=3, widths=(4, 4, 6, 8)), 16),
    "resnext": (lambda: models.ResNet("bottleneck", [1, 1, 1, 1], num_classes=3, widths=(4, 4, 8, 8),
                                      groups=2, width_per_group=16, replace_stride_with_dilation=(False, False, True)),
                16),
    "cifar_resnet": (lambda: models.ResNet("basic", [1, 1, 1, 1], num_classes=3, widths=(4, 4, 6, 8), stem="cifar"), 8),
}


def scores(out):
    """A GoogLeNet's outputs in training combined as its training loss weights them."""
    if isinstance(out, models.GoogLeNetOutputs):
        return out.logits + 0.3 * (out.aux_logits1 + out.aux_logits2)
    return out


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_gradcheck_narrow_model(family, mode):
    """The gradient of the input goes back through every layer; the parameters checked are
    a spread of at most a dozen (GoogLeNet has 180: six evaluations each would take long).
    Weights are redrawn at Kaiming's scale with small random biases, so that activations stay
    O(1), away from ReLU's kink by far more than eps (GoogLeNet's std-0.01 weights in eval
    mode leave them ~1e-8). In eval mode the batch-norm statistics are one batch's."""
    td.manual_seed(0)
    make, size = FAMILIES[family]
    model = make().double()
    for m in model.modules():
        if isinstance(m, (td.nn.Conv2d, td.nn.Linear)):
            init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                init.normal_(m.bias, 0.0, 0.1)
    x = td.tensor(rand(2, 3, size, size, seed=1, dtype=np.float64), requires_grad=True)
    if mode == "eval":
        for m in model.modules():
            if isinstance(m, td.nn.BatchNorm2d):
                m.momentum = 1.0                   # running statistics := this batch's
        with td.no_grad():
            model.train()(x)
        model.eval()
    params = list(model.parameters())
    params = params[::max(1, len(params) // 12)]

    def f(x, *ps):
        td.manual_seed(1)              # the same dropout masks in every evaluation
        return scores(model(x))

    assert td.gradcheck(f, [x] + params, mode="direction", n_directions=3)


# --- the lecture's cost tables ------------------------------------------------------------------

def test_alexnet_per_layer_costs_as_the_lecture_gives_them():
    """The lecture's AlexNet table (torchvision's AlexNet on a 227x227 image): every conv,
    pool and fc layer's output size, memory (KB, float32), parameters and multiply-adds,
    with the lecture's formulas (memory = C*H'*W'*4/1024, params = C_out*C_in*K*K + C_out,
    MACs = C_out*H'*W' * C_in*K*K, pool MACs = C*H'*W'*K*K)."""
    s = td.summary(build("alexnet"), (3, 227, 227))
    rows = {r["name"]: r for r in s.rows}
    # the lecture's table: name -> (C_in, filters, kernel, output size); fc: (in, out)
    convs = {"features.0": (3, 64, 11, 56), "features.3": (64, 192, 5, 27), "features.6": (192, 384, 3, 13),
             "features.8": (384, 256, 3, 13), "features.10": (256, 256, 3, 13)}
    pools = {"features.2": (64, 27), "features.5": (192, 13), "features.12": (256, 6)}
    fcs = {"classifier.1": (9216, 4096), "classifier.4": (4096, 4096), "classifier.6": (4096, 1000)}
    for name, (cin, cout, k, out) in convs.items():
        r = rows[name]
        assert r["output_shape"] == (cout, out, out)
        assert r["memory_bytes"] == cout * out * out * 4
        assert r["params"] == cout * cin * k * k + cout
        assert r["flops"] == cout * out * out * cin * k * k
    for name, (c, out) in pools.items():
        assert rows[name]["output_shape"] == (c, out, out) and rows[name]["params"] == 0
        assert rows[name]["flops"] == c * out * out * 9
    assert rows["flatten"]["output_shape"] == (9216,)                   # 256 * 6 * 6
    for name, (i, o) in fcs.items():
        assert rows[name]["params"] == i * o + o and rows[name]["flops"] == i * o
    # the numbers the lecture notes print (seeds/004): conv1 56x56, 784 KB, 23k params, 73 MFLOPs;
    # pool1 27x27, 182 KB, 0 params, 0.4 MFLOPs; flatten 9216; fc6 37,748,736 FLOPs and
    # 9216 * 4096 + 4096 = 37,752,832 parameters (the notes misprint it as 37,725,832)
    conv1, pool1, fc6 = rows["features.0"], rows["features.2"], rows["classifier.1"]
    assert (conv1["output_shape"][1], conv1["memory_bytes"] / 1024, round(conv1["params"] / 1e3)) == (56, 784, 23)
    assert conv1["params"] == 23_296 and conv1["flops"] == 72_855_552 and round(conv1["flops"] / 1e6) == 73
    assert (pool1["output_shape"][1], pool1["memory_bytes"] / 1024, pool1["params"]) == (27, 182.25, 0)
    assert round(pool1["flops"] / 1e6, 1) == 0.4
    assert fc6["params"] == 37_752_832 and fc6["flops"] == 37_748_736
    # the lecture's observations: memory in the early layers, parameters in the fc layers,
    # multiply-adds in the convs
    conv_rows = [rows[n] for n in convs]
    assert sum(rows[n]["params"] for n in fcs) / s.total_params > 0.95        # 58.6M of 61.1M
    assert sum(r["flops"] for r in conv_rows) / s.total_flops > 0.9
    assert max(s.rows, key=lambda r: r["memory_bytes"])["name"] in ("features.0", "features.1")


def test_vgg16_per_stage_costs_as_the_lecture_gives_them():
    """VGG's design rule in numbers: stage s has C = 64 * 2^(s-1) channels (at most 512) at
    224 / 2^(s-1) pixels; a C -> C 3x3 conv costs memory 4*H*W*C bytes, 9*C^2 + C
    parameters and 9*H*W*C^2 multiply-adds. Halving the image and doubling the channels
    keeps the multiply-adds of stages 1-4 equal (1.85 G each), halves the memory and
    quadruples the parameters."""
    s = td.summary(build("vgg16"), (3, 224, 224))
    stages, current = [], []
    for r in s.rows:
        if r["name"].startswith("features."):
            current.append(r)
            if r["type"] == "MaxPool2d":
                stages.append(current)
                current = []
    assert len(stages) == 5 and [sum(r["type"] == "Conv2d" for r in st) for st in stages] == [2, 2, 3, 3, 3]
    for i, stage in enumerate(stages):
        C, H = min(64 * 2 ** i, 512), 224 // 2 ** i
        same = [r for r in stage if r["type"] == "Conv2d"][1:]          # the C -> C convs of the stage
        for r in same:
            assert r["output_shape"] == (C, H, H)
            assert (r["memory_bytes"], r["params"], r["flops"]) == (4 * H * H * C, 9 * C * C + C, 9 * H * H * C * C)
        if i < 4:
            assert same[0]["flops"] == 9 * 224 * 224 * 64 * 64 == 1_849_688_064
    stage_macs = [sum(r["flops"] for r in st if r["type"] == "Conv2d") for st in stages]
    assert [round(m / 1e9, 2) for m in stage_macs] == [1.94, 2.77, 4.62, 4.62, 1.39]
    assert s.total_params == 138_357_544 and round(multiply_adds(s) / 1e9, 2) == 15.47


def test_resnext_block_multiply_adds_follow_the_lecture_formula():
    """The lecture's ResNeXt block (4C channels in and out, G paths of 1x1 4C -> c, 3x3 c -> c,
    1x1 c -> 4C) costs (8*C*c + 9*c^2) * H*W*G multiply-adds: with C = 64, G = 4, c = 24
    and with G = 32, c = 4 nearly the same. torchvision's Bottleneck is that block with
    planes = C, groups = G and base_width = c."""
    C, H = 64, 14
    for G, c in ((4, 24), (32, 4)):
        block = models.Bottleneck(4 * C, C, groups=G, base_width=c)
        assert block.conv2.weight.shape == (G * c, c, 3, 3)
        s = td.summary(block, (4 * C, H, H))
        assert multiply_adds(s) == (8 * C * c + 9 * c * c) * H * H * G
