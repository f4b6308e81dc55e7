"""The lessons: notebooks are built from their sources, committed without
outputs, run top to bottom in fast mode, and their exercises are checked
both ways (the stub must fail with a helpful verdict, the reference
solution must pass). The checkers' wrong answers are in test_course.py."""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from tinydense.tools.grade import load_checks

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ROOT / "lessons"
NOTEBOOKS = sorted(LESSONS.glob("[0-9][0-9]_*.ipynb"))
SOURCES = sorted((LESSONS / "source").glob("[0-9][0-9]_*.py"))


def _load(name):
    """Import lessons/<name>.py under a private module name."""
    spec = importlib.util.spec_from_file_location(f"lessons_{name.replace('/', '_')}", LESSONS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


build_notebooks = _load("build_notebooks")
CHECKS = load_checks(LESSONS)     # {"common": module, "l01_autograd": module, ...}, loaded by file location
# every lesson's checkers (lesson 3's have their own tests) and passed(), under one name for the tests
exercises = SimpleNamespace(**{name: value for lesson, module in CHECKS.items()
                               if lesson not in ("common", "l03_architectures", "hidden_checks")
                               for name, value in vars(module).items()
                               if (name.startswith(("check_", "compare_", "load_"))
                                   and getattr(value, "__module__", None) == module.__name__)
                               or name == "WORKSPACE_CHECKS"},
                            passed=CHECKS["common"].passed)
solutions = _load("instructor/solutions")
SOLVED_WORKSPACE = LESSONS / "instructor" / "my_ops_solved.py"
CAPSTONE = LESSONS / "12_build_your_own_densenet.ipynb"


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


def _execute(nb, monkeypatch, cifar_dir, workspace):
    monkeypatch.setenv("TINYDENSE_LESSONS_FAST", "1")
    monkeypatch.setenv("TINYDENSE_DATA", str(cifar_dir))   # real or generated: never a download
    monkeypatch.setenv("TINYDENSE_WORKSPACE", str(workspace))   # never lessons/student/ of the checkout
    client = NotebookClient(nb, kernel_name="python3", timeout=300,
                            resources={"metadata": {"path": str(LESSONS)}})
    client.execute()   # raises CellExecutionError, with the cell and traceback, on any error
    return nb


def _stub_class(cell):
    """The name of the class or function an exercise stub defines."""
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
def test_notebook_runs_top_to_bottom(path, monkeypatch, cifar_dir, tmp_path):
    nb = _execute(nbformat.read(path, as_version=4), monkeypatch, cifar_dir, tmp_path / "my_ops.py")
    for cell in nb.cells:
        if cell.cell_type == "code" and "plt.show()" in cell.source:
            assert any("image/png" in out.get("data", {}) for out in cell.outputs), (
                f"{path.name}: a cell that shows a figure rendered none:\n{cell.source[:200]}")
    # with the stubs in place, every exercise check fails and says why
    for stub, check in zip(_tagged(nb, "exercise-stub"), _tagged(nb, "exercise-check")):
        verdict = _text(check)
        assert verdict.startswith("FAIL ") and "not implemented yet" in verdict, verdict
        assert _stub_class(stub) in verdict, verdict
    for cell in _tagged(nb, "workspace-check"):      # the capstone on a fresh workspace: all stubs
        lines = [l for l in _text(cell).splitlines() if l.startswith(("PASS", "FAIL"))]
        assert len(lines) == len(exercises.WORKSPACE_CHECKS)
        assert all(l.startswith("FAIL ") and "not implemented yet" in l for l in lines), lines
    if path == CAPSTONE:
        text = "".join(_text(c) for c in nb.cells)
        assert "MATCH: with none of your ops" in text, text
        assert (tmp_path / "my_ops.py").read_text() == build_notebooks.render_template()


EXERCISE_NOTEBOOKS = [p for p in NOTEBOOKS if _tagged(nbformat.read(p, as_version=4), "exercise-stub")]


def test_every_exercise_has_a_stub_a_check_and_a_solution():
    assert EXERCISE_NOTEBOOKS, "no notebook has exercises"
    names = []
    for path in EXERCISE_NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        stubs, checks = _tagged(nb, "exercise-stub"), _tagged(nb, "exercise-check")
        assert len(stubs) == len(checks)
        for stub, check in zip(stubs, checks):
            name = _stub_class(stub)
            names.append(name)
            assert nb.cells.index(check) == nb.cells.index(stub) + 1, f"{name}: check must follow its stub"
            assert re.fullmatch(rf"check_\w+\({name}\)", check.source.strip()), check.source
            assert "raise NotImplementedError" in stub.source
            assert hasattr(solutions, name), f"instructor/solutions.py has no {name}"
    assert len(names) == len(set(names)) >= 20, names          # the issue asks for 20 in 6 lessons
    assert len(EXERCISE_NOTEBOOKS) >= 6


def _use_solutions(nb):
    for stub in _tagged(nb, "exercise-stub"):
        stub.source = f"import sys\nsys.path.insert(0, 'instructor')\nfrom solutions import {_stub_class(stub)}"
    return nb


@pytest.mark.slow
@pytest.mark.parametrize("path", EXERCISE_NOTEBOOKS + [CAPSTONE], ids=lambda p: p.stem)
def test_exercises_pass_with_the_reference_solutions(path, monkeypatch, cifar_dir):
    nb = _execute(_use_solutions(nbformat.read(path, as_version=4)), monkeypatch, cifar_dir, SOLVED_WORKSPACE)
    for check in _tagged(nb, "exercise-check"):
        assert _text(check).startswith("PASS "), _text(check)
    for cell in _tagged(nb, "workspace-check"):
        lines = [l for l in _text(cell).splitlines() if l.startswith(("PASS", "FAIL"))]
        assert len(lines) == len(exercises.WORKSPACE_CHECKS) and all(l.startswith("PASS ") for l in lines), lines
    if path == CAPSTONE:
        text = "".join(_text(c) for c in nb.cells)
        assert "MATCH: with your Conv2d, BatchNorm, ReLU" in text, text




@pytest.mark.slow
def test_the_feature_reuse_lesson_draws_the_papers_network_from_its_checkpoint(monkeypatch, cifar_dir, tmp_path):
    """The one documented command makes the checkpoint; the lesson then loads it and says how long it
    was trained (here 1 epoch on 8 images: 'SHORTER run than the paper's'). Without it: a loud notice."""
    from tinydense import cli
    run = tmp_path / "densenet40"
    assert cli.main(["train", "--model", "densenet", "--depth", "40", "--growth-rate", "12", "--epochs", "1",
                     "--limit-train", "8", "--limit-test", "8", "--batch-size", "8", "--data-dir", str(cifar_dir), "--no-progress",
                     "--no-download", "--out", str(run)]) == 0
    monkeypatch.setenv("TINYDENSE_PAPER_RUN", str(run))
    path = LESSONS / "09_feature_reuse.ipynb"
    nb = _execute(nbformat.read(path, as_version=4), monkeypatch, cifar_dir, tmp_path / "my_ops.py")
    text = "".join(_text(c) for c in nb.cells)
    assert "loaded the paper's network (plain DenseNet L=40 k=12)" in text and "SHORTER run" in text, text
    assert "NOT THE PAPER'S RESULT" not in text
    monkeypatch.setenv("TINYDENSE_PAPER_RUN", str(tmp_path / "missing"))
    nb = _execute(nbformat.read(path, as_version=4), monkeypatch, cifar_dir, tmp_path / "my_ops.py")
    text = "".join(_text(c) for c in nb.cells)
    assert "NOT THE PAPER'S RESULT" in text and "tinydense train --model densenet --depth 40" in text
