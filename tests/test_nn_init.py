"""tinydense.nn.init: each scheme's distribution (moments and bounds on large
draws, against the formulas written out here), seeding, skip_init, and the
new layer arguments (groups, dilation, ceil_mode, Identity)."""
import math

import numpy as np
import pytest

import tinydense as td
from tinydense import nn
from tinydense.nn import init


def param(*shape):
    return nn.Parameter(np.zeros(shape, dtype=np.float32))


def test_fans_are_pytorchs():
    assert init.fans(param(64, 3, 7, 7)) == (3 * 49, 64 * 49)
    assert init.fans(param(128, 4, 3, 3)) == (36, 128 * 9)          # grouped: weight.shape[1] = C_in/groups
    assert init.fans(param(10, 512)) == (512, 10)
    with pytest.raises(ValueError, match=r"at least 2 dimensions, got shape \(5,\)"):
        init.fans(param(5))


@pytest.mark.parametrize("mode, fan", [("fan_in", 32 * 9), ("fan_out", 256 * 9)])
def test_kaiming_normal_std(mode, fan):
    w = init.kaiming_normal_(param(256, 32, 3, 3), mode=mode, nonlinearity="relu").data
    assert abs(w.mean()) < 0.01 * math.sqrt(2 / fan) * 10
    assert abs(w.std() / math.sqrt(2 / fan) - 1) < 0.02                # 73,728 draws


def test_kaiming_uniform_with_a_sqrt5_is_pytorchs_default_bound():
    conv = nn.Conv2d(16, 64, 3)
    init.torch_default_(conv)
    bound = 1 / math.sqrt(16 * 9)
    w, b = conv.weight.data, conv.bias.data
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.98 * bound
    assert abs(w.std() / (bound / math.sqrt(3)) - 1) < 0.03           # U(-a, a) has std a / sqrt(3)
    assert np.abs(b).max() <= bound and np.abs(b).std() > 0


def test_normal_uniform_constant():
    w = init.normal_(param(200, 300), mean=1.5, std=0.01).data
    assert abs(w.mean() - 1.5) < 1e-3 and abs(w.std() / 0.01 - 1) < 0.02
    u = init.uniform_(param(200, 300), -0.5, 2.0).data
    assert u.min() >= -0.5 and u.max() < 2.0 and abs(u.mean() - 0.75) < 0.01
    assert (init.constant_(param(3), 0.25).data == 0.25).all()
    assert (init.ones_(param(3)).data == 1).all() and (init.zeros_(param(3)).data == 0).all()


def test_trunc_normal_redraws_outside_the_bounds():
    w = init.trunc_normal_(param(100, 1000), mean=0.0, std=1.0, a=-1.0, b=0.5).data
    assert w.min() >= -1.0 and w.max() <= 0.5
    # the mean of N(0, 1) cut to [-1, 0.5]: (phi(-1) - phi(0.5)) / (Phi(0.5) - Phi(-1))
    phi = lambda t: math.exp(-t * t / 2) / math.sqrt(2 * math.pi)          # noqa: E731
    Phi = lambda t: 0.5 * (1 + math.erf(t / math.sqrt(2)))                # noqa: E731
    assert abs(w.mean() - (phi(-1) - phi(0.5)) / (Phi(0.5) - Phi(-1))) < 0.01
    with pytest.raises(ValueError, match="a < b"):
        init.trunc_normal_(param(2), a=1.0, b=0.0)


def test_gains_and_bad_names():
    assert init.calculate_gain("relu") == math.sqrt(2)
    assert init.calculate_gain("leaky_relu", math.sqrt(5)) == pytest.approx(math.sqrt(1 / 3))
    assert init.calculate_gain("linear") == 1 and init.calculate_gain("tanh") == pytest.approx(5 / 3)
    with pytest.raises(ValueError, match="unknown nonlinearity 'gelu'"):
        init.calculate_gain("gelu")
    with pytest.raises(ValueError, match="mode must be 'fan_in' or 'fan_out', got 'fan'"):
        init.kaiming_normal_(param(2, 2), mode="fan")


def test_draws_follow_manual_seed_and_skip_init_draws_nothing():
    td.manual_seed(3)
    a = init.normal_(param(4, 4)).data.copy()
    td.manual_seed(3)
    np.testing.assert_array_equal(init.normal_(param(4, 4)).data, a)
    state = td.backend.get_rng_state()
    with init.skip_init():
        conv = nn.Conv2d(3, 8, 3)
        init.normal_(conv.bias, 1.0)
        lin = nn.Linear(5, 2)
    assert td.backend.get_rng_state() == state                        # no random number drawn
    assert not conv.weight.data.any() and not conv.bias.data.any() and not lin.weight.data.any()
    assert init.normal_(param(2)).data.any()                          # back to normal after the block


def test_default_conv_init_is_kaiming_normal_fan_in_over_the_group():
    conv = nn.Conv2d(64, 256, 3, groups=8)
    assert conv.weight.shape == (256, 8, 3, 3)
    assert abs(conv.weight.data.std() / math.sqrt(2 / (8 * 9)) - 1) < 0.03


def test_conv_and_pool_modules_pass_their_new_arguments():
    rng = np.random.default_rng(0)
    x = td.tensor(rng.standard_normal((2, 6, 9, 9)))
    conv = nn.Conv2d(6, 4, 3, stride=2, padding=2, dilation=2, groups=2).double()
    np.testing.assert_allclose(conv(x).numpy(), td.functional.conv2d(x, conv.weight, conv.bias, 2, 2, 2, 2).numpy())
    assert "dilation=(2, 2), groups=2" in repr(conv)
    with pytest.raises(ValueError, match="groups=4 must divide in_channels=6 and out_channels=4"):
        nn.Conv2d(6, 4, 3, groups=4)
    pool = nn.MaxPool2d(3, 2, ceil_mode=True)
    assert pool(x).shape == (2, 6, 4, 4) and "ceil_mode=True" in repr(pool)
    assert nn.MaxPool2d(3, 2)(x).shape == (2, 6, 4, 4) and nn.MaxPool2d(2, 2)(x).shape == (2, 6, 4, 4)
    assert nn.MaxPool2d(2, 2, ceil_mode=True)(x).shape == (2, 6, 5, 5)
    avg = nn.AvgPool2d(2, 2, padding=1, ceil_mode=True, count_include_pad=False)
    np.testing.assert_array_equal(avg(x).numpy(), td.functional.avg_pool2d(x, 2, 2, 1, True, False).numpy())
    assert "count_include_pad=False" in repr(avg)
    assert nn.AdaptiveMaxPool2d((2, 3))(x).shape == (2, 6, 2, 3)
    assert nn.Identity()(x) is x
