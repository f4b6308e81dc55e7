"""Checks of lesson 6, dense connectivity: channel widths and the parameter count, by hand."""
from __future__ import annotations

import numpy as np


from .common import Failure, verdict


_PARAM_CONFIGS = [(40, 12, False, 1.0), (100, 12, True, 0.5), (100, 24, False, 1.0), (52, 12, True, 1.0),
                  (40, 12, False, 0.5), (250, 24, True, 0.5)]


def _config_name(depth, k, bottleneck, compression):
    kind = "DenseNet" + ("-B" if bottleneck else "") + ("C" if compression < 1 and bottleneck else
                                                       ("-C" if compression < 1 else ""))
    return f"{kind} L={depth} k={k}"


def check_densenet_parameters(fn, configs=_PARAM_CONFIGS):
    """densenet_parameters(depth, growth_rate, bottleneck, compression) -> int, counted by hand.
    configs: [(depth, growth_rate, bottleneck, compression)]."""
    from tinydense.models import densenet

    def run():
        for depth, k, bottleneck, compression in configs:
            name = _config_name(depth, k, bottleneck, compression)
            got = fn(depth, k, bottleneck, compression)
            if isinstance(got, bool) or not isinstance(got, (int, np.integer)):
                raise Failure(f"{name}: return an integer, got {got!r}: channel counts are whole numbers "
                              f"(floor(theta * m) in the transitions).")
            model = densenet(depth, k, bottleneck=bottleneck, compression=compression)
            want = sum(p.size for p in model.parameters())
            if got == want:
                continue
            bn = sum(p.size for n, p in model.named_parameters() if "norm" in n)
            cls_bias = model.classifier.bias.size
            if got == want - bn:
                raise Failure(f"{name}: you get {got:,}, which is the right count without the batch-norm "
                              f"parameters: every BN has a weight and a bias per channel.")
            if got == want - cls_bias:
                raise Failure(f"{name}: you get {got:,}: the classifier's bias (10 numbers) is missing.")
            raise Failure(f"{name}: you get {got:,} but the network has {want:,} parameters "
                          f"({'more' if got > want else 'fewer'} by {abs(got - want):,}). Count the stem "
                          f"(16 channels, or 2k for DenseNet-BC), every layer, the transitions, norm5 and "
                          f"the classifier.")
        return f"the right count for all {len(configs)} configurations (DenseNet-40: 1,019,722)."
    return verdict("parameter count", getattr(fn, "__name__", "densenet_parameters"), run)


def check_channel_widths(fn, configs=_PARAM_CONFIGS):
    """channel_widths(depth, growth_rate, bottleneck, compression) -> [stem, after block 1, after
    transition 1, after block 2, after transition 2, after block 3]. configs: as check_densenet_parameters'."""
    from tinydense.models import densenet

    def run():
        for depth, k, bottleneck, compression in configs:
            name = _config_name(depth, k, bottleneck, compression)
            model = densenet(depth, k, bottleneck=bottleneck, compression=compression)
            f = dict(model.features.named_children())
            want = [f["conv0"].out_channels, f["denseblock1"].out_channels, f["transition1"].conv.out_channels,
                    f["denseblock2"].out_channels, f["transition2"].conv.out_channels,
                    f["denseblock3"].out_channels]
            got = list(fn(depth, k, bottleneck, compression))
            if any(not isinstance(v, (int, np.integer)) for v in got):
                raise Failure(f"{name}: got {got}: channel counts are integers; a transition keeps "
                              f"floor(theta * m) channels.")
            if got == want:
                continue
            if len(got) != 6:
                raise Failure(f"{name}: return 6 numbers (stem, block 1, transition 1, block 2, transition 2, "
                              f"block 3), got {len(got)}.")
            first = next(i for i in range(6) if got[i] != want[i])
            what = ["the stem (16, or 2k for DenseNet-BC)", "block 1 (input + n*k)", "transition 1 (floor(theta*m))",
                    "block 2", "transition 2", "block 3"][first]
            raise Failure(f"{name}: got {got}, the first wrong number is {what}: {got[first]} "
                          f"instead of {want[first]}.")
        return f"the right widths for all {len(configs)} configurations."
    return verdict("channel widths", getattr(fn, "__name__", "channel_widths"), run)


# the lesson's exercises: the name its stub cell defines -> its check (the grader reads this)
EXERCISES = {"channel_widths": check_channel_widths, "densenet_parameters": check_densenet_parameters}
