"""The checkers of the lesson "From AlexNet to DenseNet" (lessons/checks/l03_architectures.py):
the reference solutions pass, unfinished stubs fail with "not implemented yet" and their
name, and realistic wrong answers fail with a message that names the mistake."""
import numpy as np
import pytest

from test_lessons import CHECKS, solutions as sol      # lessons/instructor/solutions.py

ex = CHECKS["l03_architectures"]


def verdict(check, answer, capsys):
    check(answer)
    out = capsys.readouterr().out
    assert out.count("\n") >= 1 and (out.startswith("PASS ") or out.startswith("FAIL ")), out
    return out


def fails(check, answer, capsys, *fragments):
    out = verdict(check, answer, capsys)
    assert out.startswith("FAIL "), out
    for fragment in fragments:
        assert fragment in out, out
    return out


@pytest.mark.parametrize("check, solution, title", [
    (ex.check_vgg_stage, sol.vgg_stage_cost, "VGG stage cost"),
    (ex.check_resnext_macs, sol.resnext_block_macs, "ResNeXt block cost"),
    (ex.check_grouped_conv, sol.GroupedConv2d, "grouped convolution"),
])
def test_reference_solutions_pass(check, solution, title, capsys):
    assert verdict(check, solution, capsys).startswith(f"PASS {title}:")


def test_pass_messages_give_the_lectures_numbers(capsys):
    out = verdict(ex.check_vgg_stage, sol.vgg_stage_cost, capsys)
    assert "1.94, 2.77, 4.62, 4.62, 1.39 G" in out and "1.850, 1.850, 1.850, 1.850 G" in out
    out = verdict(ex.check_resnext_macs, sol.resnext_block_macs, capsys)
    # (8*64*24 + 9*24^2)*56^2*4 and (8*64*4 + 9*4^2)*56^2*32, and ResNet's bottleneck
    assert "219.2 M" in out and "220.0 M" in out and "218.4 M" in out


def test_stubs_are_not_implemented_yet(capsys):
    def vgg_stage_cost(c_in, c, n_convs, size):
        raise NotImplementedError("compute the stage's parameters and multiply-adds")

    def resnext_block_macs(C, G, c, H, W):
        raise NotImplementedError("count the block's multiply-adds")

    class GroupedConv2d(sol.GroupedConv2d):
        def backward(self, g):
            raise NotImplementedError("write the backward pass")

    fails(ex.check_vgg_stage, vgg_stage_cost, capsys, "not implemented yet", "vgg_stage_cost")
    fails(ex.check_resnext_macs, resnext_block_macs, capsys, "not implemented yet", "resnext_block_macs")
    fails(ex.check_grouped_conv, GroupedConv2d, capsys, "not implemented yet", "GroupedConv2d")


# --- exercise 1: a VGG stage --------------------------------------------------------------------

def right(c_in, c, n, size):
    return sol.vgg_stage_cost(c_in, c, n, size)


@pytest.mark.parametrize("wrong, mistake", [
    (lambda a, c, n, s: (right(a, c, n, s)[0] - n * c, right(a, c, n, s)[1]), "leave out the biases"),
    (lambda a, c, n, s: (right(a, c, n, s)[0], 2 * right(a, c, n, s)[1]), "twice the right number"),
    (lambda a, c, n, s: (right(a, c, n, s)[0], right(a, c, n, s)[1] // (s * s)), "do not depend on the image size"),
    (lambda a, c, n, s: right(a, c, n, s)[::-1], "you returned (multiply-adds, parameters)"),
    (lambda a, c, n, s: right(c, c, n, s), "treat the first conv as c -> c"),
    (lambda a, c, n, s: ((a * c + c) + (n - 1) * (c * c + c), right(a, c, n, s)[1]), "miss the factor 9"),
    (lambda a, c, n, s: (right(a, c, n, s)[0], right(a, c, n, s)[1] + n * c * s * s), "for the bias"),
])
def test_vgg_stage_mistakes_are_named(wrong, mistake, capsys):
    out = fails(ex.check_vgg_stage, wrong, capsys, "\n  mistake: ", mistake, "the right answer is parameters")
    assert out.count("mistake:") == 1 + ("first conv" in mistake), out      # the c -> c slip shows in both


def test_vgg_stage_other_answers(capsys):
    fails(ex.check_vgg_stage, lambda a, c, n, s: right(a, c, n, s)[0], capsys,
          "returned", "return (parameters, multiply-adds), numbers")
    fails(ex.check_vgg_stage, lambda a, c, n, s: (right(a, c, n, s)[0] + 1, right(a, c, n, s)[1]), capsys,
          "hint: compare your formula with summary's rows")
    fails(ex.check_vgg_stage, lambda a, c, n, s: 1 / 0, capsys, "raised ZeroDivisionError")


# --- exercise 2: the ResNeXt formula ------------------------------------------------------------------

@pytest.mark.parametrize("wrong, mistake", [
    (lambda C, G, c, H, W: 2 * sol.resnext_block_macs(C, G, c, H, W), "counted each multiplication and addition"),
    (lambda C, G, c, H, W: sol.resnext_block_macs(C, 1, c, H, W), "that is one path"),
    (lambda C, G, c, H, W: (8 * C * c * G + 9 * (G * c) ** 2) * H * W, "an ordinary one on all G*c channels"),
    (lambda C, G, c, H, W: (4 * C * c + 9 * c * c) * H * W * G, "one 1x1 conv per path"),
    (lambda C, G, c, H, W: (8 * C * c + c * c) * H * W * G, "the factor 9 is missing"),
    (lambda C, G, c, H, W: sol.resnext_block_macs(C, G, c, 1, 1), "does not depend on the image size"),
])
def test_resnext_mistakes_are_named(wrong, mistake, capsys):
    out = fails(ex.check_resnext_macs, wrong, capsys, "\n  mistake: ", mistake)
    assert out.count("mistake:") == 1, out


# --- exercise 3: grouped convolution backward -----------------------------------------------------

class SwappedGradients(sol.GroupedConv2d):
    def backward(self, g):
        dx, dw = super().backward(g)
        return dw, dx


class IgnoresUpstream(sol.GroupedConv2d):
    def backward(self, g):                          # as if g were all ones
        return super().backward(np.ones_like(g))


class FlippedKernel(sol.GroupedConv2d):
    def backward(self, g):                          # dx through w[..., k-1-a, k-1-b] (a full-convolution slip)
        right_wg = self.wg
        self.wg = self.wg[..., ::-1, ::-1]
        dx, _ = super().backward(g)
        self.wg = right_wg
        return dx, super().backward(g)[1]


class AveragedOverBatch(sol.GroupedConv2d):
    def backward(self, g):
        dx, dw = super().backward(g)
        return dx, dw / g.shape[0]


class FirstGroupsWeights(sol.GroupedConv2d):
    def backward(self, g):                          # every group's dx through group 0's weights
        right_wg = self.wg
        self.wg = np.broadcast_to(right_wg[:1], right_wg.shape)
        dx, _ = super().backward(g)
        self.wg = right_wg
        return dx, super().backward(g)[1]


class HalfDx(sol.GroupedConv2d):
    def backward(self, g):
        dx, dw = super().backward(g)
        return 0.5 * dx, dw


class Crashing(sol.GroupedConv2d):
    def backward(self, g):
        return g @ np.ones((7, 7)), None


@pytest.mark.parametrize("wrong, fragments", [
    (SwappedGradients, ["the gradient of x has shape (4, 3, 3, 3) but x has shape (2, 3, 5, 6)",
                        "mistake: your first gradient has w's shape and your second x's: return (dx, dw)"]),
    (IgnoresUpstream, ["[groups=1: x (2, 3, 5, 6), w (4, 3, 3, 3)]",
                       "mistake: your gradients are the same for two different upstream gradients g"]),
    (FlippedKernel, ["gradient of x", "mistake: your dx is what the kernel flipped in space gives"]),
    (AveragedOverBatch, ["gradient of w", "mistake: your dw is the right one divided by the batch size 2"]),
    (FirstGroupsWeights, ["[groups=2: x (3, 4, 6, 5), w (6, 2, 3, 3)]",
                          "mistake: your backward is right with groups=1 but not with groups=2"]),
    (HalfDx, ["hint: your gradient of x is 0.5 times the right one everywhere (a factor 2 missing)"]),
    (Crashing, ["backward raised ValueError"]),
])
def test_grouped_conv_mistakes_are_named(wrong, fragments, capsys):
    out = fails(ex.check_grouped_conv, wrong, capsys, *fragments)
    assert out.count("mistake:") <= 1, out
