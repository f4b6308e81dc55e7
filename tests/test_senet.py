"""SENet: the squeeze-and-excitation block (against a NumPy loop and finite
differences), the broadcast multiply's backward, and the SE-ResNets: counts
worked out by hand from torchvision's ResNet counts, timm's state_dict names
and shapes, forward and backward shapes, a whole narrow model's gradients."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinydense as td
from tinydense import models
from tinydense.nn import init


def count(model):
    return sum(p.size for p in model.parameters())


def build(name, **kwargs):
    with init.skip_init():
        return getattr(models, name)(**kwargs)


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# --- counts, by arithmetic ------------------------------------------------------------------

# torchvision's documented parameter counts (the weights' metadata) of the plain networks
TORCHVISION = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808,
               "resnext50_32x4d": 25_028_904}
BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3),
          "resnext50_32x4d": (3, 4, 6, 3)}


def se_width(channels):
    """timm's rounding of channels/16, written out: the nearest multiple of 8, halves up, at least 8."""
    v = channels / 16
    nearest = int(np.floor(v / 8 + 0.5)) * 8
    return max(8, nearest)


def se_count(depth):
    """The SE blocks' parameters: per block fc1 (C x rd weights, rd biases) and fc2 (rd x C, C),
    with C the block's output channels: 64 ... 512 for basic blocks, 4x that for bottlenecks."""
    expansion = 1 if depth in (18, 34) else 4
    total = 0
    for planes, n in zip((64, 128, 256, 512), BLOCKS[depth]):
        c = planes * expansion
        rd = se_width(c)
        total += n * (c * rd + rd + rd * c + c)
    return total


def test_se_resnet50_count_is_resnet50_plus_the_se_weights_and_biases():
    assert count(build("se_resnet50")) == 28_088_024 == 25_557_032 + 2_514_944 + 16_048
    # weights: 2 * C * C/16 per block; biases C/16 + C
    weights = sum(n * 2 * c * c // 16 for c, n in zip((256, 512, 1024, 2048), (3, 4, 6, 3)))
    biases = sum(n * (c // 16 + c) for c, n in zip((256, 512, 1024, 2048), (3, 4, 6, 3)))
    assert (weights, biases) == (2_514_944, 16_048)
    assert se_count(50) == weights + biases


@pytest.mark.parametrize("name, depth", [("se_resnet18", 18), ("se_resnet34", 34), ("se_resnet50", 50),
                                         ("se_resnet101", 101), ("se_resnet152", 152),
                                         ("se_resnext50_32x4d", "resnext50_32x4d")])
def test_every_count_is_torchvisions_plus_the_se_blocks(name, depth):
    """ResNeXt's SE blocks see the same output widths as ResNet-50's (256 ... 2048)."""
    se = se_count(50 if depth == "resnext50_32x4d" else depth)
    assert count(build(name)) == TORCHVISION[depth] + se


def test_basic_blocks_round_the_se_width_up_to_8():
    """64 / 16 = 4, which timm rounds to 8 (and 128/16 = 8, 256/16 = 16, 512/16 = 32 stay)."""
    assert [se_width(c) for c in (64, 128, 256, 512)] == [8, 8, 16, 32]
    assert [models.senet.make_divisible(c / 16) for c in (64, 128, 256, 512, 1024, 2048)] == [8, 8, 16, 32, 64, 128]
    m = build("se_resnet18")
    assert m.layer1[0].se.fc1.weight.shape == (8, 64, 1, 1) and m.layer4[1].se.fc1.weight.shape == (32, 512, 1, 1)
    assert se_count(18) == 2 * (2 * 64 * 8 + 8 + 64) + 2 * (2 * 128 * 8 + 8 + 128) + 2 * (2 * 256 * 16 + 16 + 256) \
        + 2 * (2 * 512 * 32 + 32 + 512) == 90_112


@pytest.mark.parametrize("name, depth, fc_in", [("cifar_se_resnet18", 18, 512), ("cifar_se_resnet50", 50, 2048),
                                                ("cifar_se_resnext50_32x4d", "resnext50_32x4d", 2048)])
def test_cifar_variants_count(name, depth, fc_in):
    """The 3x3 stem has 64 * 3 * (49 - 9) fewer weights than the 7x7 one, and 10 classes
    (fc_in + 1) * 990 fewer in the classifier."""
    se = se_count(50 if depth == "resnext50_32x4d" else depth)
    m = build(name)
    assert count(m) == TORCHVISION[depth] + se - 64 * 3 * (49 - 9) - (fc_in + 1) * 990
    assert m.conv1.weight.shape == (64, 3, 3, 3) and isinstance(m.maxpool, td.nn.Identity)
    assert count(build("cifar_se_resnet34")) == TORCHVISION[34] + se_count(34) - 64 * 3 * 40 - 513 * 990


# --- names: timm's ----------------------------------------------------------------------------

def test_state_dict_of_one_block_is_timms():
    """timm's seresnet50 layer2.0 in its order: the convs and BNs, then se.fc1/fc2 (1x1 convs
    with bias), then the downsample shortcut; everything else keeps ResNet's names."""
    sd = build("se_resnet50").state_dict()
    block = [(k[len("layer2.0."):], tuple(v.shape)) for k, v in sd.items()
             if k.startswith("layer2.0.") and not k.endswith("num_batches_tracked")]
    bn = lambda name, c: [(f"{name}.{p}", (c,)) for p in ("weight", "bias", "running_mean", "running_var")]  # noqa
    assert block == ([("conv1.weight", (128, 256, 1, 1))] + bn("bn1", 128)
                     + [("conv2.weight", (128, 128, 3, 3))] + bn("bn2", 128)
                     + [("conv3.weight", (512, 128, 1, 1))] + bn("bn3", 512)
                     + [("se.fc1.weight", (32, 512, 1, 1)), ("se.fc1.bias", (32,)),
                        ("se.fc2.weight", (512, 32, 1, 1)), ("se.fc2.bias", (512,)),
                        ("downsample.0.weight", (512, 256, 1, 1))] + bn("downsample.1", 512))
    plain = build("resnet50").state_dict()
    assert [k for k in sd if ".se." not in k] == list(plain)          # the rest: ResNet-50's names, in order
    assert sum(".se." in k for k in sd) == 16 * 4
    x = build("se_resnext50_32x4d").state_dict()
    assert x["layer4.2.se.fc1.weight"].shape == (128, 2048, 1, 1) and x["layer1.0.conv2.weight"].shape == (128, 4, 3, 3)


def test_the_plain_resnets_are_unchanged():
    """No attention: no se entry, the same count as before."""
    m = build("resnet18")
    assert m.layer1[0].se is None and not any(".se." in k for k in m.state_dict())


# --- the SE block ---------------------------------------------------------------------------

def naive_se(x, w1, b1, w2, b2):
    """The block with explicit loops over images and channels."""
    n, c = x.shape[:2]
    out = np.empty_like(x)
    for i in range(n):
        z = np.array([x[i, k].mean() for k in range(c)])
        h = np.maximum(w1[:, :, 0, 0] @ z + b1, 0)
        s = 1 / (1 + np.exp(-(w2[:, :, 0, 0] @ h + b2)))
        for k in range(c):
            out[i, k] = x[i, k] * s[k]
    return out


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 9), rd=st.integers(1, 4), h=st.integers(1, 5), w=st.integers(1, 5),
       seed=st.integers(0, 2 ** 16))
def test_se_block_forward_matches_a_loop(n, c, rd, h, w, seed):
    td.manual_seed(seed)
    se = models.SqueezeExcite(c, rd_channels=rd).double()
    init.normal_(se.fc1.bias, 0.0, 0.5)
    init.normal_(se.fc2.bias, 0.0, 0.5)
    x = rand(n, c, h, w, seed=seed)
    with td.no_grad():
        y = se(td.tensor(x)).numpy()
    expected = naive_se(x, se.fc1.weight.numpy(), se.fc1.bias.numpy(), se.fc2.weight.numpy(), se.fc2.bias.numpy())
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_broadcast_multiply_backward_sums_over_height_and_width():
    """(N, C, H, W) * (N, C, 1, 1): d/ds = sum over h, w of g * r (a loop), d/dr = g * s."""
    r = td.tensor(rand(2, 3, 4, 5, seed=1), requires_grad=True)
    s = td.tensor(rand(2, 3, 1, 1, seed=2), requires_grad=True)
    g = rand(2, 3, 4, 5, seed=3)
    (r * s).backward(g)
    expected_s = np.zeros((2, 3, 1, 1))
    for n in range(2):
        for c in range(3):
            for i in range(4):
                for j in range(5):
                    expected_s[n, c, 0, 0] += g[n, c, i, j] * r.data[n, c, i, j]
    np.testing.assert_allclose(s.grad, expected_s, rtol=1e-12)
    np.testing.assert_allclose(r.grad, g * s.data, rtol=1e-12)
    assert td.gradcheck(lambda r, s: r * s, [r, s])
    assert td.gradcheck(lambda r, s: s * r, [r, s])                 # the broadcast operand on the left


def test_gradcheck_se_block_float64():
    td.manual_seed(0)
    se = models.SqueezeExcite(6, rd_channels=3).double()
    init.normal_(se.fc1.bias, 0.0, 0.3)
    init.normal_(se.fc2.bias, 0.0, 0.3)
    x = td.tensor(rand(2, 6, 3, 4, seed=5), requires_grad=True)
    assert td.gradcheck(lambda x, *ps: se(x), [x] + list(se.parameters()))


# --- models: forward and backward ----------------------------------------------------------------

def narrow(block="bottleneck", **kwargs):
    from functools import partial
    return models.ResNet(block, [1, 1, 1, 1], num_classes=5, widths=(4, 4, 8, 8),
                         attention=partial(models.SqueezeExcite, reduction=2, divisor=2), **kwargs)


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_forward_and_backward_shapes(block):
    td.manual_seed(0)
    m = narrow(block)
    x = td.tensor(rand(2, 3, 16, 16).astype(np.float32), requires_grad=True)
    out = m(x)
    assert out.shape == (2, 5) and out.dtype == np.float32
    td.functional.cross_entropy(out, np.array([1, 4])).backward()
    assert x.grad.shape == x.shape
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape, name
    assert m.layer1[0].se.fc1.weight.grad.any() and m.layer4[0].se.fc2.bias.grad.any()
    with td.no_grad():
        assert build("cifar_se_resnet18").eval()(td.tensor(np.zeros((1, 3, 8, 8), np.float32))).shape == (1, 10)
    # bad input is named after the main path's layers, not the SE block's 1x1 convs
    with pytest.raises(ValueError, match=r"single value per channel \(1x1 after layer4.1.conv2, batch of 1\)"):
        build("cifar_se_resnet18").train()(td.tensor(np.zeros((1, 3, 8, 8), np.float32)))


def test_gradcheck_narrow_se_resnet_in_train_mode():
    td.manual_seed(0)
    m = narrow(stem="cifar").double()
    for mod in m.modules():
        if isinstance(mod, (td.nn.Conv2d, td.nn.Linear)):
            init.kaiming_normal_(mod.weight, nonlinearity="relu")
            if mod.bias is not None:
                init.normal_(mod.bias, 0.0, 0.1)
    x = td.tensor(rand(2, 3, 8, 8, seed=1), requires_grad=True)
    params = [p for name, p in m.named_parameters() if ".se." in name]
    assert td.gradcheck(lambda x, *ps: m(x), [x] + params, mode="direction", n_directions=3)


def test_the_se_blocks_cost_in_summary():
    """At 64x64 the stages run at 16, 8, 4 and 2 pixels: each SE block adds its global pool
    (C*H*W multiply-adds, every input once) and fc1, fc2 on a 1x1 image (2 * C * C/16)."""
    plain, se = td.summary(build("resnet50"), (3, 64, 64)), td.summary(build("se_resnet50"), (3, 64, 64))
    extra = sum(n * (c * s * s + 2 * c * c // 16)
                for c, n, s in zip((256, 512, 1024, 2048), (3, 4, 6, 3), (16, 8, 4, 2)))
    assert se.total_macs - plain.total_macs == extra
    assert se.total_params - plain.total_params == 2_514_944 + 16_048
