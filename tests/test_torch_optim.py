"""PyTorch's optimizer interface: param_groups, Adam/AdamW updates by hand, frozen parameters,
state_dict through tinydense.save, and the lr_scheduler schedules against their formulas."""
import math

import numpy as np
import pytest

import tinydense as td
from tinydense import Tensor, nn, optim
from tinydense.optim import lr_scheduler


def _param(values, grad=None):
    p = Tensor(np.array(values, np.float64), requires_grad=True)
    p.grad = None if grad is None else np.array(grad, np.float64)
    return p


def test_param_groups_are_dicts_the_step_reads():
    a, b = _param([1.0], [1.0]), _param([1.0], [1.0])
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.01}], lr=0.1, momentum=0.0)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01] and opt.param_groups[1]["momentum"] == 0.0
    opt.step()
    assert a.data[0] == pytest.approx(0.9) and b.data[0] == pytest.approx(0.99)
    opt.param_groups[0]["lr"] = 0.5                       # what a scheduler does
    opt.step()
    assert a.data[0] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="more than one group"):
        optim.SGD([{"params": [a]}, {"params": [a]}], lr=0.1)
    with pytest.raises(ValueError, match="unknown options \\['betas'\\]"):
        optim.SGD([{"params": [b], "betas": (0.9, 0.9)}], lr=0.1)
    with pytest.raises(ValueError, match="no learning rate"):
        optim.SGD([b])


def test_frozen_parameters_get_no_gradient_and_are_not_updated():
    td.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    model[0].requires_grad_(False)                       # fine-tuning: only the head learns
    frozen = model[0].weight.data.copy()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    x, y = td.randn(5, 3), td.tensor(np.array([0, 1, 0, 1, 1]))
    for _ in range(2):
        opt.zero_grad()
        nn.CrossEntropyLoss()(model(x), y).backward()
        opt.step()
    assert model[0].weight.grad is None
    np.testing.assert_array_equal(model[0].weight.data, frozen)
    assert model[0].weight not in opt.state and model[2].weight in opt.state
    opt.zero_grad(set_to_none=False)
    assert not model[2].weight.grad.any()


def test_adam_and_adamw_two_steps_by_hand():
    for cls, decoupled in ((optim.Adam, False), (optim.AdamW, True)):
        p = _param([1.0, -2.0])
        opt = cls([p], lr=0.1, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
        x, m, v = np.array([1.0, -2.0]), 0.0, 0.0
        for t, grad in enumerate(([0.5, 1.0], [-1.0, 2.0]), start=1):
            p.grad = np.array(grad)
            opt.step()
            g = np.array(grad)
            if decoupled:
                x = x - 0.1 * 0.1 * x
            else:
                g = g + 0.1 * x
            m = 0.9 * m + 0.1 * g
            v = 0.99 * v + 0.01 * g * g
            x = x - 0.1 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.99 ** t)) + 1e-8)
            np.testing.assert_allclose(p.data, x, rtol=1e-13)
        assert opt.state[p]["step"] == 2
    assert optim.AdamW([_param([1.0])]).param_groups[0]["weight_decay"] == 0.01
    with pytest.raises(ValueError, match="betas must be two numbers"):
        optim.Adam([_param([1.0])], betas=(0.9, 1.0))


def test_state_dict_survives_save_and_load_and_continues_identically(tmp_path):
    rng = np.random.default_rng(0)
    grads = rng.standard_normal((4, 3))
    a = _param(np.ones(3), grads[0])
    opt_a = optim.Adam([a], lr=0.01)
    opt_a.step()
    td.save({"optimizer": opt_a.state_dict()}, tmp_path / "opt.npz")
    b = _param(a.data.copy())
    opt_b = optim.Adam([b], lr=99.0)
    opt_b.load_state_dict(td.load(tmp_path / "opt.npz")["optimizer"])
    assert opt_b.param_groups[0]["lr"] == 0.01 and opt_b.param_groups[0]["betas"] == (0.9, 0.999)
    for g in grads[1:]:
        a.grad, b.grad = g.copy(), g.copy()
        opt_a.step()
        opt_b.step()
    np.testing.assert_array_equal(a.data, b.data)
    with pytest.raises(ValueError, match="groups have sizes \\[1\\], this optimizer's \\[2\\]"):
        optim.Adam([_param([1.0]), _param([2.0])]).load_state_dict(opt_a.state_dict())


def test_sgd_reads_the_old_flat_state_format():
    p = _param([1.0, 2.0])
    opt = optim.SGD([p], lr=1.0, momentum=0.5)
    opt.load_state_dict({"lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0,
                         "buffer.0": np.array([1.0, 1.0])})
    assert opt.lr == 0.1 and opt.momentum == 0.9 and opt.buffers[0].tolist() == [1.0, 1.0]


def _lrs(make_scheduler, steps, lr=0.1):
    opt = optim.SGD([_param([1.0])], lr=lr, momentum=0.9)
    scheduler = make_scheduler(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        assert scheduler.get_last_lr() == [lrs[-1]]
        scheduler.step()
    return lrs


def test_schedules_against_their_formulas():
    np.testing.assert_allclose(_lrs(lambda o: lr_scheduler.StepLR(o, step_size=2, gamma=0.5), 5, 1.0),
                               [1.0, 1.0, 0.5, 0.5, 0.25])
    np.testing.assert_allclose(_lrs(lambda o: lr_scheduler.MultiStepLR(o, [1, 3], gamma=0.1), 4, 1.0),
                               [1.0, 0.1, 0.1, 0.01])
    np.testing.assert_allclose(_lrs(lambda o: lr_scheduler.ExponentialLR(o, gamma=0.5), 3, 1.0), [1.0, 0.5, 0.25])
    # cosine, T_max = 4: 0.1 * (1 + cos(pi t / 4)) / 2 = 0.1, 0.085355, 0.05, 0.014645, 0
    np.testing.assert_allclose(_lrs(lambda o: optim.lr_scheduler.CosineAnnealingLR(o, T_max=4), 5),
                               [0.1, 0.1 * (2 + math.sqrt(2)) / 4, 0.05, 0.1 * (2 - math.sqrt(2)) / 4, 0.0],
                               atol=1e-15)
    np.testing.assert_allclose(_lrs(lambda o: lr_scheduler.LambdaLR(o, lambda e: 1 / (e + 1)), 3, 1.0),
                               [1.0, 0.5, 1 / 3])


def test_one_cycle_rises_to_max_lr_then_falls_and_cycles_momentum():
    opt = optim.SGD([_param([1.0])], lr=0.1, momentum=0.9)
    sched = lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=10)      # pct_start 0.3: the peak at step 2
    lrs, moms = [], []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        moms.append(opt.param_groups[0]["momentum"])
        if len(lrs) < 10:
            sched.step()
    assert lrs[0] == pytest.approx(1.0 / 25) and lrs[1] == pytest.approx(0.52) and lrs[2] == pytest.approx(1.0)
    assert lrs[9] == pytest.approx(1.0 / 25 / 1e4)
    assert all(x >= y for x, y in zip(lrs[2:], lrs[3:]))
    assert moms[0] == pytest.approx(0.95) and moms[2] == pytest.approx(0.85) and moms[9] == pytest.approx(0.95)
    with pytest.raises(ValueError, match="tried to step 11 times; the schedule has 10 steps"):
        sched.step()
    adam = optim.Adam([_param([1.0])], lr=0.1)
    lr_scheduler.OneCycleLR(adam, max_lr=0.5, epochs=2, steps_per_epoch=5)
    assert adam.param_groups[0]["betas"][0] == pytest.approx(0.95)


def test_scheduler_state_dict_round_trip_sets_the_rates():
    opt = optim.SGD([{"params": [_param([1.0])]}, {"params": [_param([1.0])], "lr": 0.01}], lr=0.1)
    sched = lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    for _ in range(3):
        sched.step()
    opt2 = optim.SGD([{"params": [_param([1.0])]}, {"params": [_param([1.0])], "lr": 0.01}], lr=0.1)
    sched2 = lr_scheduler.CosineAnnealingLR(opt2, T_max=99)
    sched2.load_state_dict(sched.state_dict())
    assert sched2.last_epoch == 3 and sched2.get_last_lr() == pytest.approx(sched.get_last_lr())
    assert [g["lr"] for g in opt2.param_groups] == pytest.approx([g["lr"] for g in opt.param_groups])
    assert opt.param_groups[1]["lr"] == pytest.approx(0.01 * (1 + math.cos(math.pi * 3 / 10)) / 2)
    with pytest.raises(ValueError, match="T_max must be a positive integer"):
        lr_scheduler.CosineAnnealingLR(opt, T_max=0)
