"""tinydense.optim: SGD and MultiStepLR against updates computed by hand."""
import numpy as np
import pytest

from tinydense import Tensor
from tinydense.optim import SGD, MultiStepLR


def _param(values, grad):
    p = Tensor(np.array(values, np.float64), requires_grad=True)
    p.grad = np.array(grad, np.float64)
    return p


def test_plain_sgd_step():
    p = _param([1.0, -2.0], [0.5, 0.25])
    SGD([p], lr=0.1).step()
    np.testing.assert_allclose(p.data, [1.0 - 0.05, -2.0 - 0.025])


def test_weight_decay_is_added_to_the_gradient():
    p = _param([2.0], [0.5])
    SGD([p], lr=0.1, weight_decay=0.01).step()
    np.testing.assert_allclose(p.data, [2.0 - 0.1 * (0.5 + 0.02)])


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_over_three_steps_by_hand(nesterov):
    # gradients 1, 2, 3 on a parameter starting at 0; lr 0.1, momentum 0.9, weight decay 0.5
    p = _param([0.0], [1.0])
    opt = SGD([p], lr=0.1, momentum=0.9, nesterov=nesterov, weight_decay=0.5)
    x, b = 0.0, None
    expected = []
    for grad in (1.0, 2.0, 3.0):
        p.grad = np.array([grad])
        opt.step()
        g = grad + 0.5 * x
        b = g if b is None else 0.9 * b + g
        x -= 0.1 * (g + 0.9 * b if nesterov else b)
        expected.append(x)
        assert p.data[0] == pytest.approx(x, rel=1e-12)
    # the first values written out: step 1 (x=0): g=1, b=1
    assert expected[0] == pytest.approx(-0.19 if nesterov else -0.1)
    # step 2 (x=-0.1 without Nesterov): g = 2 - 0.05 = 1.95, b = 0.9 + 1.95 = 2.85, x = -0.1 - 0.285
    if not nesterov:
        assert expected[1] == pytest.approx(-0.385)


def test_float32_stays_float32_and_untouched_params_are_skipped():
    p = Tensor(np.ones(3, np.float32), requires_grad=True)
    p.grad = np.full(3, 2.0, np.float32)
    q = Tensor(np.ones(2, np.float32), requires_grad=True)       # no gradient this step
    opt = SGD([p, q], lr=0.5, momentum=0.9, nesterov=True, weight_decay=1e-4)
    opt.step()
    assert p.data.dtype == np.float32 and opt.buffers[0].dtype == np.float32
    np.testing.assert_array_equal(q.data, np.ones(2, np.float32))
    assert opt.buffers[1] is None
    opt.zero_grad()
    assert p.grad is None and q.grad is None


def test_state_dict_round_trip_continues_identically():
    rng = np.random.default_rng(0)
    grads = rng.standard_normal((4, 5))
    a = _param(np.ones(5), grads[0])
    opt_a = SGD([a], lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    opt_a.step()
    b = _param(a.data.copy(), grads[0])
    opt_b = SGD([b], lr=99.0)
    opt_b.load_state_dict(opt_a.state_dict())
    assert opt_b.nesterov and opt_b.lr == 0.1
    for g in grads[1:]:
        a.grad, b.grad = g.copy(), g.copy()
        opt_a.step()
        opt_b.step()
    np.testing.assert_array_equal(a.data, b.data)


def test_load_state_dict_rejects_mismatched_buffers():
    p = _param(np.ones(3), np.ones(3))
    opt = SGD([p], lr=0.1, momentum=0.9)
    state = opt.state_dict()
    state["state"]["0"] = {"momentum_buffer": np.ones(4)}
    with pytest.raises(ValueError, match=r"0.momentum_buffer has shape \(4,\) but the parameter has shape \(3,\)"):
        opt.load_state_dict(state)
    assert opt.buffers == [None]


@pytest.mark.parametrize("kwargs, message", [
    (dict(lr=-0.1), "lr must be a non-negative number"),
    (dict(lr=float("nan")), "lr must be a non-negative number"),
    (dict(lr=0.1, nesterov=True), "Nesterov momentum needs momentum > 0"),
    (dict(lr=0.1, weight_decay=-1), "weight_decay"),
])
def test_sgd_rejects_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SGD([_param([1.0], [1.0])], **kwargs)
    with pytest.raises(ValueError, match="empty parameter list"):
        SGD([], lr=0.1)


def test_multistep_schedule_by_hand():
    opt = SGD([_param([1.0], [1.0])], lr=0.1)
    sched = MultiStepLR(opt, milestones=[2, 4], gamma=0.1)
    lrs = []
    for _ in range(6):
        lrs.append(opt.lr)
        sched.step()
    np.testing.assert_allclose(lrs, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_paper_schedule_for_300_and_30_epochs():
    opt = SGD([_param([1.0], [1.0])], lr=0.1)
    sched = MultiStepLR(opt, [150, 225])
    assert [sched.lr_at(e) for e in (0, 149, 150, 224, 225, 299)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_scheduler_state_round_trip_sets_the_optimizer_rate():
    opt = SGD([_param([1.0], [1.0])], lr=0.1)
    sched = MultiStepLR(opt, [1, 3], gamma=0.5)
    sched.step()
    sched.step()
    opt2 = SGD([_param([1.0], [1.0])], lr=0.1)
    sched2 = MultiStepLR(opt2, [7])
    sched2.load_state_dict(sched.state_dict())
    assert opt2.lr == pytest.approx(0.05) and sched2.last_epoch == 2
    sched2.step()
    assert opt2.lr == pytest.approx(0.025)


@pytest.mark.parametrize("milestones", [[3, 2], [0, 5], [1.5]])
def test_scheduler_rejects_bad_milestones(milestones):
    with pytest.raises(ValueError, match="increasing positive integers"):
        MultiStepLR(SGD([_param([1.0], [1.0])], lr=0.1), milestones)
