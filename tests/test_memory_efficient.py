"""The memory-efficient DenseNet (shared feature buffers, recomputed BN-ReLU) against
the plain one, and the buffer pool it draws from."""
import tracemalloc

import numpy as np
import pytest

import tinydense as td
import tinydense.functional as F
from tinydense import memory
from tinydense.models import DenseBlock, DenseNet, densenet

TOL = dict(rtol=1e-10, atol=1e-10)


def tiny(memory_efficient, kind="bc", drop_rate=0.0):
    td.manual_seed(3)
    if kind == "bc":     # bottleneck and compression, two blocks, an odd transition width
        m = DenseNet(growth_rate=4, block_config=(3, 2), num_init_features=6, compression=0.5, num_classes=5,
                     stem="cifar", drop_rate=drop_rate, memory_efficient=memory_efficient)
    elif kind == "basic":
        m = densenet(10, 3, num_classes=5, drop_rate=drop_rate, memory_efficient=memory_efficient)
    else:                # the ImageNet stem (conv, norm, relu, max pool) in front of the blocks
        m = DenseNet(growth_rate=4, block_config=(2, 2), num_init_features=8, num_classes=5,
                     memory_efficient=memory_efficient)
    return m.double()


def train_steps(model, training, steps=2, size=8):
    """Two forward/backward passes; returns the last loss, every gradient, the state and x.grad."""
    model.train(training)
    rng = np.random.default_rng(0)
    for step in range(steps):
        td.manual_seed(10 + step)                      # the same dropout masks in both modes
        x = td.tensor(rng.standard_normal((3, 3, size, size)), requires_grad=True)
        y = rng.integers(0, 5, 3)
        model.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    return loss.item(), grads, model.state_dict(), x.grad


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("kind,drop_rate,size", [("bc", 0.0, 8), ("basic", 0.0, 8), ("bc", 0.3, 8),
                                                 ("imagenet", 0.0, 16)])
def test_same_outputs_gradients_and_statistics(training, kind, drop_rate, size):
    loss0, grads0, state0, xgrad0 = train_steps(tiny(False, kind, drop_rate), training, size=size)
    loss1, grads1, state1, xgrad1 = train_steps(tiny(True, kind, drop_rate), training, size=size)
    assert loss1 == pytest.approx(loss0, rel=1e-12)
    assert grads0.keys() == grads1.keys() and all(g is not None for g in grads1.values())
    for name in grads0:
        np.testing.assert_allclose(grads1[name], grads0[name], **TOL, err_msg=name)
    for name in state0:      # running statistics (updated once per step) and num_batches_tracked too
        np.testing.assert_allclose(state1[name], state0[name], **TOL, err_msg=name)
    np.testing.assert_allclose(xgrad1, xgrad0, **TOL)
    assert int(state1["features.denseblock1.denselayer1.norm1.num_batches_tracked"]) == (2 if training else 0)


def test_memory_efficient_is_the_default_and_gradcheck_passes():
    m = tiny(True)
    assert all(b.memory_efficient for b in m.modules() if isinstance(b, DenseBlock))
    m.train()
    x = td.tensor(np.random.default_rng(1).standard_normal((2, 3, 8, 8)), requires_grad=True)
    assert td.gradcheck(lambda x, *ps: m(x), [x] + list(m.parameters()), mode="direction", n_directions=3)


def test_two_forwards_before_one_backward():
    """The pool must not hand the first graph's buffers to the second forward."""
    results = []
    for efficient in (False, True):
        m = tiny(efficient).train()
        rng = np.random.default_rng(2)
        x1, x2 = (td.tensor(rng.standard_normal((3, 3, 8, 8))) for _ in range(2))
        loss = F.cross_entropy(m(x1), np.array([0, 1, 2])) + F.cross_entropy(m(x2), np.array([3, 4, 0]))
        loss.backward()
        results.append({n: p.grad for n, p in m.named_parameters()})
    for name in results[0]:
        np.testing.assert_allclose(results[1][name], results[0][name], **TOL, err_msg=name)


def test_a_block_input_gradient_survives_later_steps():
    """x.grad of a block's input is a view of the pooled gradient buffer: later steps must not overwrite it."""
    td.manual_seed(0)
    block = DenseBlock(3, 4, 2, memory_efficient=True).double()
    rng = np.random.default_rng(4)
    x = td.tensor(rng.standard_normal((2, 4, 5, 5)), requires_grad=True)
    (block(x) ** 2).sum().backward()
    kept = x.grad.copy()
    for _ in range(2):
        other = td.tensor(rng.standard_normal((2, 4, 5, 5)), requires_grad=True)
        (block(other) ** 2).sum().backward()
    np.testing.assert_array_equal(x.grad, kept)


def _graph_bytes(blocks, efficient):
    """Bytes NumPy allocates for one forward pass of one dense block with the graph kept."""
    td.manual_seed(0)
    block = DenseBlock(blocks, 8, 4, memory_efficient=efficient)
    x = td.tensor(np.random.default_rng(0).standard_normal((4, 8, 16, 16), dtype=np.float32), requires_grad=True)
    memory.clear()
    tracemalloc.start()
    try:
        out = block(x)
        kept = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del out
    return kept


def test_memory_grows_linearly_not_quadratically():
    plain = _graph_bytes(24, False) / _graph_bytes(6, False)
    efficient = _graph_bytes(24, True) / _graph_bytes(6, True)
    assert plain > 6             # quadratic: every layer stores its own normalised concatenation
    assert efficient < 4.2       # linear: four times the layers, about four times the memory
    assert _graph_bytes(24, True) < 0.2 * _graph_bytes(24, False)


def test_steps_reuse_the_pooled_buffers():
    m = densenet(16, 4, bottleneck=True, compression=0.5, memory_efficient=True)
    x = td.tensor(np.random.default_rng(0).standard_normal((4, 3, 16, 16), dtype=np.float32))
    y = np.arange(4)
    memory.clear()
    sizes = []
    for _ in range(3):
        m.zero_grad()
        F.cross_entropy(m(x), y).backward()
        sizes.append(memory.pool_nbytes())
    assert sizes[0] > 0 and sizes[2] == sizes[1] == sizes[0]


class TestBufferPool:
    def test_reuses_an_array_only_when_nothing_refers_to_it(self):
        pool = memory.BufferPool()
        a = pool.empty((4, 5), np.float32)
        b = pool.empty((20,), np.float32)
        assert not np.shares_memory(a, b)          # a is still in use
        view = a[1:]
        del a
        c = pool.empty((2, 10), np.float32)
        assert not np.shares_memory(c, view)       # a view keeps its array in use
        del view, c
        d = pool.empty((5, 4), np.float32)
        assert pool.nbytes() == 3 * 80 and d.shape == (5, 4)
        assert pool.empty((20,), np.float64).dtype == np.float64

    def test_scratch_hands_out_the_smallest_free_array_that_fits(self):
        address = lambda a: a.__array_interface__["data"][0]       # noqa: E731
        pool = memory.BufferPool()
        small, large = pool.scratch((10,), np.float32), pool.scratch((30,), np.float32)
        small_at, large_at = address(small), address(large)
        del small, large
        assert address(pool.scratch((8,), np.float32)) == small_at
        assert address(pool.scratch((3, 4), np.float32)) == large_at     # 12 > 10
        grown = pool.scratch((40,), np.float32)     # nothing free fits: the largest free one is replaced
        assert pool.nbytes() == 4 * (10 + 40) and grown.size == 40
        pool.clear()
        assert pool.nbytes() == 0
