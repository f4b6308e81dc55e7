"""The lessons: notebooks are built from their sources, committed without
outputs, run top to bottom in fast mode, and their exercises are checked
both ways (the stub must fail with a helpful verdict, the reference
solution must pass)."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ROOT / "lessons"
NOTEBOOKS = sorted(LESSONS.glob("[0-9][0-9]_*.ipynb"))
SOURCES = sorted((LESSONS / "source").glob("[0-9][0-9]_*.py"))


def _load(name):
    """Import lessons/<name>.py under a private module name."""
    spec = importlib.util.spec_from_file_location(f"lessons_{name}", LESSONS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_notebooks = _load("build_notebooks")
exercises = _load("exercises")
solutions = _load("solutions")
SOLUTIONS = {"solutions": solutions, "solutions_architectures": _load("solutions_architectures")}


def _solution_module(name):
    """The lessons/ module that holds the reference solution ``name`` (None if none does)."""
    return next((module for module, m in SOLUTIONS.items() if hasattr(m, name)), None)


def _tagged(nb, tag):
    return [cell for cell in nb.cells if tag in cell.get("metadata", {}).get("tags", [])]


def _text(cell):
    """Everything a code cell printed or displayed as text."""
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            parts.append(out.data.get("text/plain", ""))
    return "".join(parts)


def _execute(nb, monkeypatch, cifar_dir):
    monkeypatch.setenv("TINYDENSE_LESSONS_FAST", "1")
    monkeypatch.setenv("TINYDENSE_DATA", str(cifar_dir))   # real or generated: never a download
    client = NotebookClient(nb, kernel_name="python3", timeout=300,
                            resources={"metadata": {"path": str(LESSONS)}})
    client.execute()   # raises CellExecutionError, with the cell and traceback, on any error
    return nb


def _stub_class(cell):
    return re.search(r"^(?:class|def) (\w+)\(", cell.source, re.MULTILINE).group(1)


# --- the committed notebooks ------------------------------------------------

def test_every_source_has_its_notebook_and_back():
    assert SOURCES, "no lesson sources found"
    assert [s.stem for s in SOURCES] == [n.stem for n in NOTEBOOKS]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_committed_notebook_is_built_from_its_source(source):
    committed = build_notebooks.notebook_path(source).read_text()
    assert committed == build_notebooks.render(source), (
        f"{source.stem}.ipynb is stale: run python lessons/build_notebooks.py")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean_and_framed(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has outputs"
    assert nb.cells[0].cell_type == "markdown" and "## What you will learn" in nb.cells[0].source
    assert nb.cells[-1].cell_type == "markdown" and "## Questions" in nb.cells[-1].source


def test_build_rejects_malformed_sources():
    with pytest.raises(ValueError, match="before the first"):
        build_notebooks.parse_cells("x = 1\n# %%\ny = 2\n")
    with pytest.raises(ValueError, match="must start with '#'"):
        build_notebooks.parse_cells("# %% [markdown]\n# fine\nnot a comment\n")
    cells = build_notebooks.parse_cells('# %% [markdown]\n# # Title\n#\n# text\n\n# %% tags=["a"]\nx = 1\n')
    assert cells == [("markdown", "# Title\n\ntext", []), ("code", "x = 1", ["a"])]


# --- running them -----------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, monkeypatch, cifar_dir):
    nb = _execute(nbformat.read(path, as_version=4), monkeypatch, cifar_dir)
    for cell in nb.cells:
        if cell.cell_type == "code" and "plt.show()" in cell.source:
            assert any("image/png" in out.get("data", {}) for out in cell.outputs), (
                f"{path.name}: a cell that shows a figure rendered none:\n{cell.source[:200]}")
    # with the stubs in place, every exercise check fails and says why
    for stub, check in zip(_tagged(nb, "exercise-stub"), _tagged(nb, "exercise-check")):
        verdict = _text(check)
        assert verdict.startswith("FAIL ") and "not implemented yet" in verdict, verdict
        assert _stub_class(stub) in verdict, verdict


EXERCISE_NOTEBOOKS = [p for p in NOTEBOOKS if _tagged(nbformat.read(p, as_version=4), "exercise-stub")]


def test_every_exercise_has_a_stub_a_check_and_a_solution():
    assert EXERCISE_NOTEBOOKS, "no notebook has exercises"
    for path in EXERCISE_NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        stubs, checks = _tagged(nb, "exercise-stub"), _tagged(nb, "exercise-check")
        assert len(stubs) == len(checks)
        for stub, check in zip(stubs, checks):
            name = _stub_class(stub)
            assert nb.cells.index(check) == nb.cells.index(stub) + 1, f"{name}: check must follow its stub"
            assert re.fullmatch(rf"check_\w+\({name}\)", check.source.strip()), check.source
            assert "raise NotImplementedError" in stub.source
            assert _solution_module(name), f"no solutions module has {name}"


@pytest.mark.slow
@pytest.mark.parametrize("path", EXERCISE_NOTEBOOKS, ids=lambda p: p.stem)
def test_exercises_pass_with_the_reference_solutions(path, monkeypatch, cifar_dir):
    nb = nbformat.read(path, as_version=4)
    for stub in _tagged(nb, "exercise-stub"):
        stub.source = f"from {_solution_module(_stub_class(stub))} import {_stub_class(stub)}"
    nb = _execute(nb, monkeypatch, cifar_dir)
    for check in _tagged(nb, "exercise-check"):
        assert _text(check).startswith("PASS "), _text(check)


# --- the exercise checker itself (no kernel) ---------------------------------

CHECKS = [(exercises.check_sigmoid, solutions.Sigmoid, "sigmoid"),
          (exercises.check_avg_pool, solutions.AvgPool2d, "average pooling"),
          (exercises.check_cat, solutions.Cat, "channel concatenation"),
          (exercises.check_batch_norm, solutions.BatchNorm, "batch norm")]


@pytest.mark.parametrize("check, solution, title", CHECKS, ids=[c[2] for c in CHECKS])
def test_check_passes_the_reference_solution(check, solution, title, capsys):
    check(solution)
    assert capsys.readouterr().out.startswith(f"PASS {title}:")


def _verdict(check, cls, capsys):
    check(cls)
    out = capsys.readouterr().out
    assert out.startswith("FAIL "), out
    return out


def test_check_names_the_wrong_gradient_index_and_size(capsys):
    class ForgetfulBatchNorm(solutions.BatchNorm):
        def backward(self, g):       # drops the xhat * sum(g * xhat) term
            M = g.size // g.shape[1]
            sum_g = g.sum(axis=(0, 2, 3), keepdims=True)
            dx = self.weight * self.invstd / M * (M * g - sum_g)
            return dx, (g * self.xhat).sum(axis=(0, 2, 3)), g.sum(axis=(0, 2, 3))

    out = _verdict(exercises.check_batch_norm, ForgetfulBatchNorm, capsys)
    line = next(l for l in out.splitlines() if "gradient of x " in l)
    match = re.search(r"index \((\d+), (\d+), (\d+), (\d+)\): numeric (\S+), analytic (\S+), "
                      r"relative error (\S+)", line)
    assert match, out
    numeric, analytic, rel = (float(v.rstrip(",")) for v in match.groups()[4:])
    assert abs(numeric - analytic) / max(abs(numeric), abs(analytic)) == pytest.approx(rel, rel=1e-3)
    assert rel > 1e-2
    assert "gradient of weight" not in out and "gradient of bias" not in out   # those are right


def test_check_recognises_a_constant_factor_and_zeros(capsys):
    class DoubledSigmoid(solutions.Sigmoid):
        def backward(self, g):
            return 2 * g * self.out * (1 - self.out)

    class ZeroSigmoid(solutions.Sigmoid):
        def backward(self, g):
            return np.zeros_like(g)

    assert "2 times the right one" in _verdict(exercises.check_sigmoid, DoubledSigmoid, capsys)
    assert "all zeros" in _verdict(exercises.check_sigmoid, ZeroSigmoid, capsys)


def test_check_catches_pooling_that_ignores_overlap(capsys):
    class RepeatPool(solutions.AvgPool2d):
        def backward(self, g):       # right only when the windows tile the input exactly
            k = self.k
            gx = np.zeros(self.x_shape)
            up = np.repeat(np.repeat(g, k, axis=2), k, axis=3) / (k * k)
            gx[:, :, :up.shape[2], :up.shape[3]] = up[:, :, :self.x_shape[2], :self.x_shape[3]]
            return gx

    out = _verdict(exercises.check_avg_pool, RepeatPool, capsys)
    assert "overlapping 3x3 windows" in out and "gradient of x" in out


def test_check_reports_missing_and_misshapen_gradients(capsys):
    class HalfCat(solutions.Cat):
        def backward(self, g):
            return (g[:, :self.channels[0]],)

    class WholeCat(solutions.Cat):
        def backward(self, g):
            return tuple(g for _ in self.channels)

    assert "no gradient for x1" in _verdict(exercises.check_cat, HalfCat, capsys)
    out = _verdict(exercises.check_cat, WholeCat, capsys)
    assert "the gradient of x0 has shape (2, 4, 2, 2) but x0 has shape (2, 3, 2, 2)" in out


def test_check_reports_exceptions_and_changed_forward_without_raising(capsys):
    class Crashing(solutions.Sigmoid):
        def backward(self, g):
            return g @ np.ones((7, 7))

    class ChangedForward(solutions.Sigmoid):
        def forward(self, x):
            self.out = np.tanh(x)
            return self.out

    assert "backward raised ValueError" in _verdict(exercises.check_sigmoid, Crashing, capsys)
    assert "forward gives a different result" in _verdict(exercises.check_sigmoid, ChangedForward, capsys)
