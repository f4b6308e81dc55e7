"""Checks of lesson 7, building DenseNet: the dense layer, the dense block, the transition."""
from __future__ import annotations

import numpy as np

import tinydense as td

from .common import Failure, rng, verdict


def _compare_modules(mine, reference, inputs, what, advice):
    """Same state_dict names and shapes; with the reference's weights, the same outputs
    in training and eval mode."""
    mine_state, ref_state = mine.state_dict(), reference.state_dict()
    missing = [k for k in ref_state if k not in mine_state]
    extra = [k for k in mine_state if k not in ref_state]
    if missing or extra:
        hint = ""
        if any(k.endswith(".bias") and k.split(".")[-2].startswith("conv") for k in extra):
            hint = " The convolutions have no bias (bias=False): the batch norm after them has one."
        raise Failure(f"{what}: the parameter names differ from tinydense's: missing {missing[:4]}, "
                      f"unexpected {extra[:4]}. Name the attributes as torchvision does.{hint}")
    for k in ref_state:
        if tuple(np.shape(mine_state[k])) != tuple(np.shape(ref_state[k])):
            raise Failure(f"{what}: {k} has shape {tuple(np.shape(mine_state[k]))} but should have "
                          f"{tuple(np.shape(ref_state[k]))}.")
    if list(mine_state) != list(ref_state):
        raise Failure(f"{what}: the names are right but in a different order; create the attributes in the "
                      f"order they are used (norm1, relu1, conv1, ...).")
    mine.load_state_dict(reference.state_dict())
    for mode in ("train", "eval"):
        getattr(mine, mode)()
        getattr(reference, mode)()
        with td.no_grad():
            a, b = mine(*inputs), reference(*inputs)
        if a.shape != b.shape:
            raise Failure(f"{what} ({mode} mode): the output has shape {a.shape} but should have {b.shape}.")
        if not np.allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5):
            raise Failure(f"{what} ({mode} mode): same weights, different outputs (largest difference "
                          f"{np.abs(a.numpy() - b.numpy()).max():.3g}): {advice}")


def _images(r, *shape):
    return td.tensor(r.standard_normal(shape).astype(np.float32))


def _check_module(title, cls, library, cases, seed, advice):
    """cases: [(constructor arguments, input shapes or a list of them, library keyword arguments)]."""
    def run():
        r = rng(seed)
        for args, shapes, options in cases:
            td.manual_seed(0)
            inputs = [[_images(r, *s) for s in shapes]] if isinstance(shapes, list) else [_images(r, *shapes)]
            where = f" on {len(shapes)} feature map{'s' if len(shapes) > 1 else ''}" if isinstance(shapes, list) else ""
            _compare_modules(cls(*args), library(*args, **options), inputs, f"{library.__name__}{args}{where}", advice)
        return f"same parameter names, shapes and outputs as tinydense's {library.__name__}."
    return verdict(title, getattr(cls, "__name__", library.__name__), run)


def check_dense_layer(cls, cases=(((8, 4), [(2, 8, 5, 5)], {"bottleneck": True}),
                                   ((10, 3), [(2, 4, 5, 5), (2, 3, 5, 5), (2, 3, 5, 5)], {"bottleneck": True})),
                      seed=23):
    """DenseLayer(in_channels, growth_rate): BN-ReLU-Conv1x1(4k)-BN-ReLU-Conv3x3(k) on a list of features.
    cases: as _check_module's."""
    from tinydense.models import DenseLayer
    return _check_module("dense layer", cls, DenseLayer, cases, seed=seed,
                  advice="check the order cat - BN - ReLU - Conv1x1 - BN - ReLU - Conv3x3 and the 3x3's padding 1.")


def check_dense_block(cls, cases=(((1, 4, 3), (2, 4, 4, 4), {"bottleneck": True}),
                                   ((3, 6, 4), (2, 6, 4, 4), {"bottleneck": True})), seed=24):
    """DenseBlock(num_layers, in_channels, growth_rate): output = [x, x_1, ..., x_L] along channels."""
    from tinydense.models import DenseBlock
    return _check_module("dense block", cls, DenseBlock, cases, seed=seed,
                  advice="each layer gets the list of ALL feature maps so far; the output is their "
                         "concatenation in order, [x, x_1, ..., x_L].")


def check_transition(cls, cases=(((8, 4), (2, 8, 6, 6), {}), ((5, 2), (2, 5, 4, 4), {})), seed=25):
    """Transition(in_channels, out_channels): BN-ReLU-Conv1x1-AvgPool 2x2/2."""
    from tinydense.models.densenet import Transition
    return _check_module("transition", cls, Transition, cases, seed=seed,
                  advice="check the order BN - ReLU - Conv1x1 - pooling, and that the pooling AVERAGES "
                         "2x2 windows with stride 2 (not max pooling).")


# the lesson's exercises: the name its stub cell defines -> its check (the grader reads this)
EXERCISES = {"DenseLayer": check_dense_layer, "DenseBlock": check_dense_block, "Transition": check_transition}
