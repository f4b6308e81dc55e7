"""The memory-efficient DenseNet (models/efficient_densenet.py: one fused op per dense block
and per transition) against the textbook modules, and the buffer pool it draws from.

The same numbers to 1e-10 in float64: loss, every parameter gradient, the input gradient,
running statistics and num_batches_tracked, for DenseNet, -B, -C, -BC and the ImageNet
stem, with dropout, in train and eval mode, at batch 1, and with two forwards before one
backward; in float32, errors within a small factor of the textbook path's own."""
import importlib
import inspect
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinydense as td
import tinydense.functional as F
from tinydense import memory, models
from tinydense.ops import bn_relu_fold, channel_major, dense_block, parallel
from tinydense.models import DenseBlock, DenseNet, EfficientDenseBlock, EfficientTransition, densenet

TOL = dict(rtol=1e-10, atol=1e-10)

KINDS = {   # name -> (builder(memory_efficient, drop_rate), image size)
    "DenseNet": (lambda e, p: densenet(10, 3, num_classes=5, drop_rate=p, memory_efficient=e), 8),
    "DenseNet-B": (lambda e, p: densenet(16, 3, bottleneck=True, num_classes=5, drop_rate=p, memory_efficient=e), 8),
    "DenseNet-C": (lambda e, p: densenet(10, 3, compression=0.5, num_classes=5, drop_rate=p, memory_efficient=e), 8),
    "DenseNet-BC": (lambda e, p: DenseNet(growth_rate=4, block_config=(3, 2), num_init_features=6, compression=0.5,
                                          num_classes=5, stem="cifar", drop_rate=p, memory_efficient=e), 8),
    "ImageNet stem": (lambda e, p: DenseNet(growth_rate=4, block_config=(2, 2), num_init_features=8, num_classes=5,
                                            drop_rate=p, memory_efficient=e), 16),
}


def build(kind, efficient, drop_rate=0.0, dtype=np.float64):
    td.manual_seed(3)
    return KINDS[kind][0](efficient, drop_rate).to(dtype=dtype)


def train_steps(model, training, size, batch=3, steps=2, dtype=np.float64, seed=0):
    """``steps`` forward/backward passes; returns the last loss, every gradient, the state and x.grad."""
    model.train(training)
    rng = np.random.default_rng(seed)
    for step in range(steps):
        td.manual_seed(10 + step)                      # the same dropout masks in both modes
        x = td.tensor(rng.standard_normal((batch, 3, size, size)).astype(dtype), requires_grad=True)
        y = rng.integers(0, 5, batch)
        model.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    return loss.item(), grads, model.state_dict(), x.grad


def assert_same_results(a, b):
    (loss0, grads0, state0, xgrad0), (loss1, grads1, state1, xgrad1) = a, b
    assert loss1 == pytest.approx(loss0, rel=1e-12)
    assert grads0.keys() == grads1.keys() and all(g is not None for g in grads1.values())
    for name in grads0:
        np.testing.assert_allclose(grads1[name], grads0[name], **TOL, err_msg=name)
    assert state0.keys() == state1.keys()
    for name in state0:      # running statistics and num_batches_tracked
        np.testing.assert_allclose(state1[name], state0[name], **TOL, err_msg=name)
    np.testing.assert_allclose(xgrad1, xgrad0, **TOL)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("batch", [3, 1])
@pytest.mark.parametrize("kind,drop_rate", [("DenseNet", 0.0), ("DenseNet-B", 0.0), ("DenseNet-C", 0.3),
                                            ("DenseNet-BC", 0.0), ("DenseNet-BC", 0.3), ("ImageNet stem", 0.0)])
def test_same_outputs_gradients_and_statistics(training, batch, kind, drop_rate):
    size = KINDS[kind][1]
    plain = train_steps(build(kind, False, drop_rate), training, size, batch)
    efficient = build(kind, True, drop_rate)
    assert any(isinstance(m, EfficientDenseBlock) for m in efficient.modules())
    assert any(isinstance(m, EfficientTransition) for m in efficient.modules())
    result = train_steps(efficient, training, size, batch)
    assert_same_results(plain, result)
    assert int(result[2]["features.denseblock1.denselayer1.norm1.num_batches_tracked"]) == (2 if training else 0)


def test_gpu_arrays_never_fold(monkeypatch):
    """Deciding to fold would read a GPU array: a host-device synchronisation inside the step."""
    assert bn_relu_fold.can_fold(np.ones(3)) and not bn_relu_fold.can_fold(np.array([1.0, -1.0]))
    monkeypatch.setattr(bn_relu_fold.backend, "device_of", lambda array: "cuda")
    assert not bn_relu_fold.can_fold(np.ones(3))


@pytest.mark.parametrize("kind", ["DenseNet", "DenseNet-BC"])
def test_the_unfolded_form_a_gpu_takes_gives_the_same_numbers(kind, monkeypatch):
    """With folding off everywhere (as on a GPU), the fused path still gives the textbook numbers."""
    size = KINDS[kind][1]
    plain = train_steps(build(kind, False), True, size)
    calls = []

    def never(scale):
        calls.append(scale)
        return False
    monkeypatch.setattr(bn_relu_fold, "can_fold", never)
    monkeypatch.setattr(dense_block, "can_fold", never)
    assert_same_results(plain, train_steps(build(kind, True), True, size))
    assert calls


@settings(max_examples=12, deadline=None)
@given(layers=st.integers(1, 4), k0=st.integers(1, 5), k=st.integers(1, 3), bottleneck=st.booleans(),
       bn_size=st.integers(1, 3), drop_rate=st.sampled_from([0.0, 0.25]), training=st.booleans(),
       batch=st.integers(1, 3), height=st.integers(1, 5), width=st.integers(2, 5),
       odd=st.sampled_from(["none", "negative weight", "zero weight", "other eps"]), seed=st.integers(0, 2 ** 16),
       chunk=st.sampled_from([3, channel_major.CHUNK]))
def test_a_fused_block_is_the_textbook_block(layers, k0, k, bottleneck, bn_size, drop_rate, training, batch,
                                             height, width, odd, seed, chunk):
    """Random blocks, odd batch norm settings included: scales <= 0 take the op's unfolded path,
    another eps makes a layer's xhat a multiple of the shared one; the 1x1 kernels' columns
    in one chunk or in several (the last one partial)."""
    default_chunk, channel_major.CHUNK = channel_major.CHUNK, chunk
    try:
        results = _textbook_and_fused_block(layers, k0, k, bottleneck, bn_size, drop_rate, training, batch,
                                            height, width, odd, seed)
    finally:
        channel_major.CHUNK = default_chunk
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, **TOL)


def _textbook_and_fused_block(layers, k0, k, bottleneck, bn_size, drop_rate, training, batch, height, width,
                              odd, seed):
    results = []
    for cls in (DenseBlock, EfficientDenseBlock):
        td.manual_seed(seed)
        block = cls(layers, k0, k, bottleneck=bottleneck, bn_size=bn_size, drop_rate=drop_rate).double()
        norm = list(block.children())[-1].norm1
        if odd == "negative weight":
            norm.weight.data[0] = -0.7
        elif odd == "zero weight":
            norm.weight.data[-1] = 0.0
        elif odd == "other eps":
            norm.eps = 0.3
        block.train(training)
        rng = np.random.default_rng(seed)
        x = td.tensor(rng.standard_normal((batch, k0, height, width)) + 2.0, requires_grad=True)
        td.manual_seed(seed + 1)
        out = block(x)
        (out * td.tensor(rng.standard_normal(out.shape))).sum().backward()
        results.append([out.numpy(), x.grad] + [p.grad for p in block.parameters()] + list(block.state_dict().values()))
    return results


@pytest.mark.parametrize("threads", [1, 3])
def test_the_number_of_threads_changes_nothing_but_rounding(threads, monkeypatch):
    """The fused ops share each phase among ``parallel.threads()`` threads (ops/parallel.py):
    one thread, or three (more parts than images in a batch of 2, an odd split of channels)."""
    monkeypatch.setattr(parallel, "threads", lambda like=None: threads)
    for kind, drop_rate, training in (("DenseNet-BC", 0.3, True), ("DenseNet", 0.0, True), ("DenseNet-BC", 0.0, False)):
        plain = train_steps(build(kind, False, drop_rate), training, 8, batch=2)
        assert_same_results(plain, train_steps(build(kind, True, drop_rate), training, 8, batch=2))


def _a_fused_step():
    train_steps(build("DenseNet-BC", True), True, 8, steps=1)


def test_a_forked_process_can_still_train(monkeypatch):
    """The fused ops' worker threads do not survive a fork; the child must make its own."""
    import multiprocessing
    monkeypatch.setattr(parallel, "threads", lambda like=None: 2)
    _a_fused_step()                                  # the parent's pool of worker threads exists now
    child = multiprocessing.get_context("fork").Process(target=_a_fused_step)
    child.start()
    child.join(timeout=60)
    if child.is_alive():                             # it hung waiting for threads it does not have
        child.kill()
        child.join()
    assert child.exitcode == 0


def test_blas_gets_its_threads_back():
    before = parallel.threads()
    train_steps(build("DenseNet-BC", True), True, 8, steps=1)
    assert parallel.threads() == before


def test_two_forwards_before_one_backward():
    """The pool must not hand the first graph's buffers to the second forward."""
    results = []
    for efficient in (False, True):
        m = build("DenseNet-BC", efficient, drop_rate=0.2).train()
        rng = np.random.default_rng(2)
        x1, x2 = (td.tensor(rng.standard_normal((3, 3, 8, 8))) for _ in range(2))
        td.manual_seed(5)
        loss = F.cross_entropy(m(x1), np.array([0, 1, 2])) + F.cross_entropy(m(x2), np.array([3, 4, 0]))
        loss.backward()
        results.append([p.grad for p in m.parameters()] + list(m.state_dict().values()))
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, **TOL)


def test_gradients_reach_every_use_of_the_block_input_and_output():
    """The fused block returns its input's gradient like any op (no buffer shared behind autograd's
    back): an input that feeds other ops too, an output used twice, and x.grad kept across steps."""
    results = []
    for cls in (DenseBlock, EfficientDenseBlock):
        td.manual_seed(0)
        block = cls(3, 4, 2).double()
        rng = np.random.default_rng(4)
        x = td.tensor(rng.standard_normal((2, 4, 5, 5)), requires_grad=True)
        out = block(x * 2.0)
        ((out * out).sum() + (out * 3.0).sum() + (x * x).sum()).backward()
        kept = x.grad.copy()
        for _ in range(2):                         # later steps must not overwrite x.grad
            other = td.tensor(rng.standard_normal((2, 4, 5, 5)), requires_grad=True)
            (block(other) ** 2).sum().backward()
        np.testing.assert_array_equal(x.grad, kept)
        results.append([kept] + [p.grad for p in block.parameters()])
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, **TOL)


def test_float32_errors_are_those_of_the_textbook_path():
    """float32 against the float64 textbook model, over several seeds: the memory-efficient
    model's relative errors (2-norm; a single rounding can flip a ReLU mask, so the
    distribution over seeds counts, not one draw) stay within 3x the textbook model's own."""
    ref_model = build("DenseNet-BC", False)
    errors = {False: [], True: []}
    for seed in range(4):
        ref = train_steps(ref_model, True, 8, batch=4, steps=1, seed=seed)[1]
        for efficient in (False, True):
            grads = train_steps(build("DenseNet-BC", efficient, dtype=np.float32), True, 8, batch=4, steps=1,
                                dtype=np.float32, seed=seed)[1]
            errors[efficient].append(max(np.linalg.norm(grads[n] - ref[n]) / np.linalg.norm(ref[n]) for n in ref))
    plain, fused = np.median(errors[False]), np.median(errors[True])
    assert plain < 1e-3 and fused <= 3 * plain, errors
    assert max(errors[True]) <= 10 * max(errors[False]), errors


# --- the seam: same modules, names, hooks and summary -----------------------------------------

def test_checkpoints_load_into_either():
    plain, efficient = build("DenseNet-BC", False), build("DenseNet-BC", True)
    assert list(plain.state_dict()) == list(efficient.state_dict())
    assert [n for n, _ in plain.named_modules()] == [n for n, _ in efficient.named_modules()]
    td.manual_seed(9)
    other = build("DenseNet-BC", False)
    for p in other.parameters():
        p.data = p.data + np.random.default_rng(0).standard_normal(p.shape) * 0.1
    other.train()
    other(td.tensor(np.random.default_rng(1).standard_normal((4, 3, 8, 8))))    # move its running stats
    efficient.load_state_dict(other.state_dict())
    x = td.tensor(np.random.default_rng(2).standard_normal((2, 3, 8, 8)))
    np.testing.assert_allclose(efficient.eval()(x).numpy(), other.eval()(x).numpy(), **TOL)


def test_repr_and_summary_are_those_of_the_textbook_model():
    plain, efficient = build("DenseNet-BC", False), build("DenseNet-BC", True)
    as_textbook = repr(efficient).replace("EfficientDenseBlock", "DenseBlock").replace("EfficientTransition",
                                                                                         "Transition")
    assert as_textbook == repr(plain) and "EfficientDenseBlock(" in repr(efficient)
    rows = [td.summary(m, (3, 8, 8)).rows for m in (plain, efficient)]
    for r in rows[1]:
        r["type"] = r["type"].replace("Efficient", "")
    assert rows[0] == rows[1]
    assert any(r["name"].endswith("denselayer2.relu2") for r in rows[1])        # every layer is seen
    assert all(isinstance(m, (EfficientDenseBlock, EfficientTransition)) or not hasattr(m, "memory_efficient")
               for m in efficient.modules() if m is not efficient)               # no mode flag to flip


def test_a_hook_inside_a_block_fires_and_changes_no_number():
    without = train_steps(build("DenseNet-BC", True), True, 8)
    model = build("DenseNet-BC", True)
    seen = []
    model.features.denseblock2.denselayer1.norm1.register_forward_hook(lambda m, i, out: seen.append(out.shape))
    model.features.transition1.relu.register_forward_hook(lambda m, i, out: seen.append(out.shape))
    assert_same_results(without, train_steps(model, True, 8))
    assert seen == [(3, 18, 8, 8), (3, 9, 4, 4)] * 2


def test_a_layer_in_another_mode_is_respected():
    """A batch norm left in eval mode inside a training model (frozen statistics) normalises with its
    running statistics, as in the textbook model."""
    results = []
    for efficient in (False, True):
        model = build("DenseNet-BC", efficient).train()
        model.features.denseblock1.denselayer2.norm1.eval()
        model.features.transition1.norm.eval()
        results.append(train_steps(model, True, 8))
        model.train()
    assert_same_results(*results)


def test_one_default_for_memory_efficient():
    default = importlib.import_module("tinydense.models.densenet").MEMORY_EFFICIENT
    assert default is True
    for builder in (models.DenseNet, models.densenet, models.densenet_bc, models.densenet121, models.densenet161,
                    models.densenet169, models.densenet201, models.densenet264):
        assert inspect.signature(builder).parameters["memory_efficient"].default is default, builder
    assert "memory_efficient" not in inspect.signature(DenseBlock).parameters
    assert all(isinstance(m, EfficientDenseBlock) for m in models.densenet_bc(16).modules() if isinstance(m, DenseBlock))


def test_bad_input_changes_nothing():
    model = build("DenseNet-BC", True).train()
    block = model.features.denseblock1
    before = block.state_dict()
    with pytest.raises(ValueError, match=r"layer 1 norm1: input has 5 channels .* running_mean has shape \(6,\)"):
        block(td.tensor(np.ones((2, 5, 4, 4))))
    with pytest.raises(TypeError, match="input dtype float32 differs from layer 1's parameter dtype float64"):
        block(td.tensor(np.ones((2, 6, 4, 4), np.float32)))
    with pytest.raises(ValueError, match="more than one value per channel"):
        block(td.tensor(np.ones((1, 6, 1, 1))))
    for key, value in block.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


# --- memory ----------------------------------------------------------------------------------

def _graph_bytes(layers, cls):
    """Bytes NumPy allocates for one forward pass of one dense block with the graph kept."""
    td.manual_seed(0)
    block = cls(layers, 8, 4)
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
    plain = _graph_bytes(24, DenseBlock) / _graph_bytes(6, DenseBlock)
    efficient = _graph_bytes(24, EfficientDenseBlock) / _graph_bytes(6, EfficientDenseBlock)
    assert plain > 6             # quadratic: every layer stores its own normalised concatenation
    assert efficient < 4.2       # linear: four times the layers, about four times the memory
    assert _graph_bytes(24, EfficientDenseBlock) < 0.25 * _graph_bytes(24, DenseBlock)


def test_evaluation_keeps_nothing():
    memory.clear()       # what earlier tests left in the pool (ops/conv.py draws from it too)
    td.manual_seed(0)
    block = EfficientDenseBlock(6, 8, 4).eval()
    x = td.tensor(np.random.default_rng(0).standard_normal((4, 8, 16, 16), dtype=np.float32))
    with td.no_grad():
        out = block(x)
    assert out._creator is None
    assert memory.pool_nbytes() < 6 * out.data.nbytes         # the output, a few layers' scratch


def test_steps_reuse_the_pooled_buffers():
    m = densenet(16, 4, bottleneck=True, compression=0.5)
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
