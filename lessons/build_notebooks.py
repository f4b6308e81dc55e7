"""Build the lesson notebooks from their sources.

Each lesson is written as a plain Python file in ``lessons/source/`` in the
"percent" format that VS Code, PyCharm and Spyder run cell by cell:

    # %% [markdown]
    # # A heading
    # Some text.
    #
    # %%
    x = 1                      (a code cell)

    # %% tags=["exercise-stub"]
    (a code cell with metadata tags)

This script turns ``source/NN_name.py`` into ``NN_name.ipynb`` (jupytext reads it) without
outputs, so the notebooks in the repository are always clean and their
diffs readable in the sources. It also writes ``my_ops_template.py`` (generated,
not committed), the template of the student workspace: the exercise classes of the ops that ``td.ops.override``
can swap (cells tagged ``exercise-stub``), with the helpers they use (cells
tagged ``workspace``). Edit the source, then run

    python lessons/build_notebooks.py              # rewrite every notebook and the template
    python lessons/build_notebooks.py --check      # exit 1 if a notebook is stale
    python lessons/build_notebooks.py --workspace [FILE]
                                                   # your workspace (default lessons/student/my_ops.py),
                                                   # from the template; never overwrites a file
    python lessons/build_notebooks.py --student OUT [--nbgrader [--points POINTS.json]]
                                                   # the student release: notebooks without cells tagged
                                                   # solution or answer-key, the checkers (checks/), the template,
                                                   # the fixtures the DenseNet-building lesson reads; no instructor files
                                                   # (--nbgrader: with nbgrader's cell metadata; --points: each
                                                   # check's points, the JSON tinydense grade --points reads)
    python lessons/build_notebooks.py --autograder OUT.zip
                                                   # Gradescope's autograder: setup.sh, run_autograder,
                                                   # the package and the instructors' lessons
    python lessons/build_notebooks.py --time [--solved] [NN ...]
                                                   # run notebooks at student settings, one at a time,
                                                   # and print how long each took (--solved: with the
                                                   # reference solutions in place of the stubs)
"""
from __future__ import annotations

import ast
import os
import re
import shutil
import sys
import time
from pathlib import Path

import jupytext
import nbformat

LESSONS = Path(__file__).resolve().parent
SOURCES = LESSONS / "source"
TEMPLATE = LESSONS / "my_ops_template.py"
CHECKS = LESSONS / "checks"
WORKSPACE = LESSONS / "student" / "my_ops.py"
STRIPPED_TAGS = ("solution", "answer-key")      # cells the student release leaves out
FIXTURES = LESSONS.parent / "tests" / "fixtures"
RELEASE_FIXTURES = ("tiny_densenet.pth", "tiny_densenet_legacy.pth", "expected.npz")
TEMPLATE_HEADER = '''"""Your workspace: the ops of a DenseNet, written by you.

Every class below is an exercise of a lesson (named above it): its forward pass
is given, and its backward pass raises NotImplementedError until you write it
(paste your answer from the lesson, or write it here). Keep the class names and
the forward passes as they are.

    check one op:      from checks.l02_convolution import check_conv2d; check_conv2d(my_ops.Conv2d)
    check all of them: from checks.l12_build_your_own_densenet import check_workspace
                       check_workspace(my_ops)
    run tinydense on them (the capstone lesson):
                       with td.ops.override(my_ops): ...
    grade the file:    tinydense grade student/my_ops.py

Generated from the lessons by `python lessons/build_notebooks.py` (the template
my_ops_template.py is rewritten; your copy is never overwritten).
"""
from __future__ import annotations

import numpy as np

from tinydense import Function
from tinydense.backend import get_array_module
'''
def parse_cells(text: str, name: str = "<source>"):
    """Split percent-format text into (kind, source, tags) triples. jupytext reads the cells; the
    course's two rules are checked first (jupytext would take the stray text into a cell)."""
    markdown = None                                     # the current cell's kind; None before the first
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("# %%"):
            markdown = line.startswith("# %% [markdown]")
        elif markdown is None and line.strip():
            raise ValueError(f"{name}:{number}: text before the first '# %%' cell marker")
        elif markdown and line and not line.startswith("#"):
            raise ValueError(f"{name}:{number}: a markdown line must start with '#': {line!r}")
    return [(cell.cell_type, cell.source, list(cell.metadata.get("tags", [])))
            for cell in jupytext.reads(text, fmt="py:percent").cells]


def build(source: Path) -> nbformat.NotebookNode:
    """The notebook for one source file (deterministic: fixed cell ids, no outputs)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for index, (kind, text, tags) in enumerate(parse_cells(source.read_text(), source.name)):
        metadata = {"tags": tags} if tags else {}
        if kind == "markdown":
            cell = nbformat.v4.new_markdown_cell(text, metadata=metadata)
        else:
            cell = nbformat.v4.new_code_cell(text, metadata=metadata)
        cell.id = f"{source.stem[:2]}-{index:03d}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def notebook_path(source: Path) -> Path:
    return LESSONS / f"{source.stem}.ipynb"


def render(source: Path) -> str:
    """The exact text written to the notebook file."""
    return nbformat.writes(build(source)) + "\n"


def _top_level_functions(text):
    """name -> source of every top-level function in a cell."""
    tree = ast.parse(text)
    return {node.name: ast.get_source_segment(text, node) for node in tree.body
            if isinstance(node, ast.FunctionDef)}


def render_template() -> str:
    """The text of my_ops_template.py: the helpers (cells tagged "workspace", each function
    once) and the exercise class of every op that td.ops.override swaps, in OPS's order."""
    from tinydense.ops.override import OPS
    helpers, classes = {}, {}
    for source in sorted(SOURCES.glob("[0-9][0-9]_*.py")):
        for kind, text, tags in parse_cells(source.read_text(), source.name):
            if "workspace" in tags:
                for name, code in _top_level_functions(text).items():
                    helpers.setdefault(name, code)
            if "exercise-stub" in tags:
                match = re.match(r"class (\w+)\(", text)
                if match and match[1] in OPS:
                    classes[match[1]] = (source.stem, text)
    missing = [name for name in OPS if name not in classes]
    if missing:
        raise ValueError(f"no lesson has an exercise-stub class for {', '.join(missing)}")
    parts = [TEMPLATE_HEADER] + [f"\n\n{code}\n" for code in helpers.values()]
    parts += [f"\n\n# --- from lesson {classes[name][0]} ---\n{classes[name][1]}\n" for name in OPS]
    return "".join(parts)


def make_workspace(path=WORKSPACE) -> Path:
    """Copy the template to ``path`` unless a file is there already (yours is never overwritten)."""
    path = Path(path)
    if path.exists():
        print(f"{path} exists; left as it is")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_template())
    print(f"wrote your workspace {path} (from the lessons' exercises)")
    return path


def _add_nbgrader_metadata(nb, points=None):
    """nbgrader's cell metadata: each exercise stub a solution cell the student writes, each check an
    autograded test cell (locked, with its points: ``points[name]``, else ``points["default"]``, else 1,
    as ``tinydense grade --points`` counts them) that raises when its verdict is FAIL."""
    points = points or {}
    name = None
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "exercise-stub" in tags:
            name = re.search(r"^(?:class|def) (\w+)\(", cell.source, re.MULTILINE).group(1)
            cell.metadata["nbgrader"] = {"grade": False, "solution": True, "locked": False, "grade_id": name,
                                         "schema_version": 3}
        elif "exercise-check" in tags:
            cell.source = f"passed_check, _, _ = {cell.source.strip()}\nassert passed_check, 'FAIL: see the line above'"
            worth = points.get(name, points.get("default", 1))
            cell.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True, "points": worth,
                                         "grade_id": f"check_{name}", "schema_version": 3}
    return nb


def student_notebook(source: Path, nbgrader=False, points=None) -> nbformat.NotebookNode:
    """The notebook as students get it: without the cells tagged solution or answer-key (with nbgrader's
    cell metadata when ``nbgrader``, ``points`` per exercise)."""
    nb = build(source)
    nb.cells = [c for c in nb.cells if not set(c.get("metadata", {}).get("tags", [])) & set(STRIPPED_TAGS)]
    return _add_nbgrader_metadata(nb, points) if nbgrader else nb


def write_autograder_zip(out) -> Path:
    """Gradescope's autograder zip: setup.sh (installs tinydense from the copy inside), run_autograder
    (grades /autograder/submission with the instructors' course, writes /autograder/results/results.json)
    and source/: the package and the instructors' lessons (checks, hidden tests, reference notebooks)."""
    import zipfile
    out = Path(out)
    if out.exists():
        raise ValueError(f"{out} exists: choose another file")
    root = LESSONS.parent
    skip = lambda p: "__pycache__" in p.parts or ".ipynb_checkpoints" in p.parts  # noqa: E731
    setup = ("#!/usr/bin/env bash\nset -euo pipefail\n"
             "apt-get install -y python3 python3-pip\n"
             "pip3 install /autograder/source/package nbformat\n")
    run = ("#!/usr/bin/env bash\n"
           "# one submission: its notebooks and my_ops*.py are in /autograder/submission\n"
           "cd /autograder/source\n"
           "python3 -m tinydense grade /autograder/submission --course /autograder/source/course \\\n"
           "    --out /tmp/grades.csv --gradescope /autograder/results/results.json --jobs 2\n")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in (("setup.sh", setup), ("run_autograder", run)):
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o755 << 16              # executable
            zf.writestr(info, text)
        for path in sorted((root / "tinydense").rglob("*")):
            if path.is_file() and not skip(path):
                zf.write(path, f"package/{path.relative_to(root)}")
        for name in ("pyproject.toml", "README.md"):
            zf.write(root / name, f"package/{name}")
        for path in sorted(LESSONS.rglob("*")):
            if path.is_file() and not skip(path) and "student" not in path.relative_to(LESSONS).parts:
                zf.write(path, f"course/{path.relative_to(LESSONS)}")
    return out


def write_student_release(out, nbgrader=False, points=None) -> list:
    """Write the student release into the new (or empty) directory ``out``; returns the files.
    With ``nbgrader``, the notebooks carry nbgrader's cell metadata; ``points``, a JSON file of
    points per exercise (``tinydense grade --points``'s), gives each check cell's points."""
    if points is not None:
        if not nbgrader:
            raise ValueError("points go into nbgrader's cell metadata: give them with nbgrader=True (--nbgrader)")
        from tinydense.tools.grade_report import read_points
        points = read_points(points)         # the grader's reader: the same file, the same errors
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty: the student release goes into a new or empty directory")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sorted(SOURCES.glob("[0-9][0-9]_*.py")):
        target = out / f"{source.stem}.ipynb"
        target.write_text(nbformat.writes(student_notebook(source, nbgrader, points)) + "\n")
        written.append(target)
    (out / CHECKS.name).mkdir()
    for checks in sorted(CHECKS.glob("*.py")):                          # the checkers, one module a lesson
        shutil.copyfile(checks, out / CHECKS.name / checks.name)
        written.append(out / CHECKS.name / checks.name)
    shutil.copyfile(LESSONS / "README.md", out / "README.md")
    written.append(out / "README.md")
    (out / TEMPLATE.name).write_text(render_template())
    written.append(out / TEMPLATE.name)
    (out / "fixtures").mkdir()
    for name in RELEASE_FIXTURES:
        shutil.copyfile(FIXTURES / name, out / "fixtures" / name)
        written.append(out / "fixtures" / name)
    return written


def time_notebooks(names, solved=False, timeout=3600) -> dict:
    """Run the notebooks whose names start with one of ``names`` (all when empty) at student
    settings (TINYDENSE_LESSONS_FAST unset), one at a time; returns {name: seconds}. With
    ``solved``, every exercise stub is replaced by its reference solution and the capstone
    uses the solved workspace: the runtime of a student who has done the exercises. Prints
    the lines that report accuracies."""
    from nbclient import NotebookClient
    os.environ.pop("TINYDENSE_LESSONS_FAST", None)
    if solved:
        os.environ["TINYDENSE_WORKSPACE"] = str(LESSONS / "instructor" / "my_ops_solved.py")
    seconds = {}
    for path in sorted(LESSONS.glob("[0-9][0-9]_*.ipynb")):
        if names and not any(path.stem.startswith(n) for n in names):
            continue
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if solved and "exercise-stub" in cell.get("metadata", {}).get("tags", []):
                name = re.search(r"^(?:class|def) (\w+)\(", cell.source, re.MULTILINE).group(1)
                cell.source = f"import sys\nsys.path.insert(0, 'instructor')\nfrom solutions import {name}"
        start = time.perf_counter()
        NotebookClient(nb, kernel_name="python3", timeout=timeout,
                       resources={"metadata": {"path": str(LESSONS)}}).execute()
        seconds[path.stem] = time.perf_counter() - start
        print(f"{path.stem}: {seconds[path.stem]:.0f} s", flush=True)
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                for line in out.get("text", "").splitlines():
                    if "accuracy" in line or "MATCH" in line or "DIVERGED" in line or "epoch" in line:
                        print("    " + line, flush=True)
    return seconds


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--workspace"]:
        make_workspace(argv[1] if len(argv) > 1 else WORKSPACE)
        return 0
    if argv[:1] == ["--student"]:
        nbgrader = "--nbgrader" in argv
        rest = [a for a in argv[1:] if a != "--nbgrader"]
        points = None
        if "--points" in rest and rest.index("--points") + 1 < len(rest):
            at = rest.index("--points")
            points, rest = rest[at + 1], rest[:at] + rest[at + 2:]
        if len(rest) != 1 or "--points" in rest:
            print("usage: python lessons/build_notebooks.py --student OUT [--nbgrader [--points POINTS.json]]")
            return 2
        try:
            files = write_student_release(rest[0], nbgrader, points)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"wrote the student release to {rest[0]}: {len(files)} files")
        return 0
    if argv[:1] == ["--autograder"]:
        if len(argv) != 2:
            print("usage: python lessons/build_notebooks.py --autograder OUT.zip")
            return 2
        print(f"wrote Gradescope's autograder {write_autograder_zip(argv[1])}")
        return 0
    if argv[:1] == ["--time"]:
        time_notebooks([a for a in argv[1:] if a != "--solved"], solved="--solved" in argv)
        return 0
    check = "--check" in argv
    stale = []
    targets = [(notebook_path(source), render(source)) for source in sorted(SOURCES.glob("[0-9][0-9]_*.py"))]
    if not check:                   # the template is generated, never committed (.gitignore)
        targets.append((TEMPLATE, render_template()))
    for target, text in targets:
        if target.exists() and target.read_text() == text:
            continue
        if check:
            stale.append(target.name)
        else:
            target.write_text(text)
            print(f"wrote {target.relative_to(LESSONS.parent)}")
    if stale:
        print("stale files (run python lessons/build_notebooks.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
