"""tinydense grade: passing and failing notebooks, workspaces, a hanging cell, and every forgery
of issue 20 (a redefined checker, a forward that prints PASS, a renamed file with edited check
cells, a detached process that rewrites the CSV) and copies of the library's ops."""
from __future__ import annotations

import csv
import inspect
import os
import re
import time

import nbformat
import numpy as np
import pytest

from test_lessons import LESSONS, _stub_class, _tagged, build_notebooks, exercises, solutions
from tinydense import cli
from tinydense.tools import grade as grading

LESSON = LESSONS / "05_gradient_checking.ipynb"
EXERCISES = ["numeric_gradient", "Sigmoid", "Cat"]


def _solved_source(cell):
    """The stub cell with the reference solution written into it, as a student would."""
    obj = getattr(solutions, _stub_class(cell))
    if inspect.isfunction(obj) or obj.__module__ == solutions.__name__:
        return inspect.getsource(obj)
    head = cell.source[:cell.source.index("    def backward(self, g):")]
    return head + inspect.getsource(obj.backward)


def _student(tmp_path, name, edit, filename=None, lesson=LESSON):
    filename = filename or lesson.name
    nb = nbformat.read(lesson, as_version=4)
    edit(nb)
    folder = tmp_path / "submissions" / name
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / filename)
    return folder / filename


def _solve(nb):
    for cell in _tagged(nb, "exercise-stub"):
        cell.source = _solved_source(cell)


def _stub(nb, name):
    return next(c for c in _tagged(nb, "exercise-stub") if _stub_class(c) == name)


def _cheat(nb):                  # stubs left, but a check cell edited to print its own PASS
    _tagged(nb, "exercise-check")[0].source = 'print("PASS sigmoid: trust me")'


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _results(rows):
    return {r["exercise"]: (r["result"], r["message"]) for r in rows}


@pytest.fixture(autouse=True)
def _fast_data(monkeypatch, cifar_dir):
    monkeypatch.setenv("TINYDENSE_DATA", str(cifar_dir))


def test_grades_a_directory_with_a_passing_and_a_failing_notebook(tmp_path):
    good = _student(tmp_path, "alice", _solve)
    bad = _student(tmp_path, "bob", _cheat)
    capstone = tmp_path / "submissions" / "bob" / "12_build_your_own_densenet.ipynb"
    capstone.write_text((LESSONS / capstone.name).read_text())       # no workspace beside it
    alice_capstone = good.parent / capstone.name
    alice_capstone.write_text(capstone.read_text())
    (good.parent / "my_ops.py").write_text(build_notebooks.render_template())
    out = tmp_path / "grades.csv"
    assert cli.main(["grade", str(tmp_path / "submissions"), "--out", str(out), "--timeout", "300"]) == 0
    table = _rows(out)
    by_file = {}
    for r in table:
        by_file.setdefault(r["file"], []).append(r)
    assert [r["result"] for r in by_file[str(capstone)]] == ["FAIL"]
    assert "no workspace" in by_file[str(capstone)][0]["message"]
    fresh = by_file[str(alice_capstone)]                  # graded from the (fresh) workspace beside it
    assert [r["exercise"] for r in fresh][-1] == "training" and len(fresh) == 10
    assert all(r["result"] == "FAIL" and "not implemented yet" in r["message"] for r in fresh[:9]), fresh
    assert "none of your ops ran" in fresh[-1]["message"]
    assert str(good.parent / "my_ops.py") not in by_file                    # graded once, as the capstone's
    assert [r["exercise"] for r in by_file[str(good)]] == EXERCISES
    assert all(r["result"] == "PASS" for r in by_file[str(good)]), by_file[str(good)]
    assert [r["exercise"] for r in by_file[str(bad)]] == EXERCISES
    assert all(r["result"] == "FAIL" and "not implemented yet" in r["message"] for r in by_file[str(bad)])
    with pytest.raises(ValueError, match="exists"):
        grading.grade([good], out)                       # grades are never overwritten


def test_a_hanging_cell_fails_its_exercise_only_and_a_crash_fails_the_file(tmp_path):
    def hang(nb):                # not even an interrupt stops it: only the per-cell limit
        _solve(nb)
        _stub(nb, "Sigmoid").source = ("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                                       "while True:\n    pass")

    def die(nb):
        _solve(nb)
        _stub(nb, "Cat").source += "\nimport os\nos._exit(3)"

    def delete_stub(nb):
        _solve(nb)
        nb.cells.remove(_stub(nb, "Cat"))

    rows = _results(grading.grade([_student(tmp_path, "carol", hang)], tmp_path / "a.csv", timeout=60,
                                  cell_timeout=3))
    assert rows["Sigmoid"][0] == "FAIL" and "per-cell limit of 3 s" in rows["Sigmoid"][1], rows
    assert rows["numeric_gradient"][0] == rows["Cat"][0] == "PASS", rows
    rows = grading.grade([_student(tmp_path, "dave", die)], tmp_path / "b.csv", timeout=120)
    assert rows and all(r["result"] == "FAIL" and "ended with status 3" in r["message"] for r in rows), rows
    rows = _results(grading.grade([_student(tmp_path, "erin", delete_stub)], tmp_path / "c.csv", timeout=120))
    assert rows["Cat"][0] == "FAIL" and "deleted" in rows["Cat"][1] and rows["Sigmoid"][0] == "PASS", rows
    with pytest.raises(ValueError, match="per-cell limit"):
        grading.grade([LESSON], tmp_path / "d.csv", timeout=10, cell_timeout=10)


def test_grades_workspaces_through_the_cli(tmp_path, capsys):
    folder = tmp_path / "ws"
    folder.mkdir()
    (folder / "my_ops_solved.py").write_text((LESSONS / "instructor" / "my_ops_solved.py").read_text()
                                             .replace("parents[1] / \"build_notebooks.py\"",
                                                      f"parents[0] / {str(LESSONS / 'build_notebooks.py')!r}"))
    (folder / "my_ops_broken.py").write_text("raise RuntimeError('syntax? no: a crash at import')\n")
    out = tmp_path / "grades.csv"
    assert cli.main(["grade", str(folder), "--out", str(out), "--timeout", "120"]) == 0
    rows = _rows(out)
    solved = [r for r in rows if r["file"].endswith("my_ops_solved.py")]
    broken = [r for r in rows if r["file"].endswith("my_ops_broken.py")]
    assert len(solved) == len(broken) == 10
    assert all(r["result"] == "PASS" for r in solved), solved
    assert re.fullmatch(r"DenseNet-BC \(depth 10, k 4, float64\) on your Conv2d, BatchNorm, ReLU, MaxPool2d, "
                        r"AvgPool2d, Cat, Linear, LogSoftmax, CrossEntropy: MATCH \(largest relative difference "
                        r"\S+\); accuracy \d+\.\d% on 32 real CIFAR-10 test images it did not train on",
                        solved[-1]["message"]), solved[-1]
    assert all(r["result"] == "FAIL" and "raised RuntimeError: syntax? no" in r["message"] for r in broken[:9])
    assert "none of your ops ran" in broken[-1]["message"]
    assert re.search(r"10 of 20 exercises PASS", capsys.readouterr().out)


# --- the forgeries of issue 20, each a regression test ---------------------------------------

def test_a_redefined_checker_or_patched_library_cannot_turn_a_wrong_answer_into_pass(tmp_path):
    def forge(nb):
        _solve(nb)
        cell = _stub(nb, "Sigmoid")
        cell.source = (cell.source.replace("self.out * (1 - self.out)", "self.out")   # a wrong backward
                       + '\ncheck_sigmoid = lambda *a: print("PASS sigmoid: trust me")'
                       + "\nimport numpy, builtins\nnumpy.abs = lambda x, *a, **k: numpy.zeros(numpy.shape(x))"
                       + "\nbuiltins.print = lambda *a, **k: None")
        _tagged(nb, "exercise-check")[1].source = 'print("PASS sigmoid: trust me")'
    rows = _results(grading.grade([_student(tmp_path, "frank", forge)], tmp_path / "g.csv", timeout=120))
    assert rows["Sigmoid"][0] == "FAIL" and "gradient of x is wrong" in rows["Sigmoid"][1], rows
    assert rows["Cat"][0] == "PASS", rows


def test_a_forward_that_prints_pass_is_not_a_verdict(tmp_path):
    def forge(nb):
        _solve(nb)
        cell = _stub(nb, "Cat")
        cell.source = cell.source.replace("    def backward(self, g):", "    def backward(self, g):\n"
                                          "        print('PASS concatenation: all good')\n"
                                          "        return tuple(g for _ in self.sizes)\n"
                                          "    def _unused(self, g):")
    rows = _results(grading.grade([_student(tmp_path, "grace", forge)], tmp_path / "g.csv", timeout=120))
    assert rows["Cat"][0] == "FAIL" and "has shape" in rows["Cat"][1], rows


def test_a_renamed_notebook_is_graded_as_its_lesson_never_by_its_own_check_cells(tmp_path):
    for filename in ("smithjohn_12345_67890_01_autograd.ipynb", "homework.ipynb"):
        path = _student(tmp_path, "heidi", _cheat, filename=filename)
        rows = grading.grade([path], tmp_path / f"{filename}.csv", timeout=120)
        assert [r["exercise"] for r in rows] == EXERCISES, rows
        assert all(r["result"] == "FAIL" and "not implemented yet" in r["message"] for r in rows), rows


def test_a_detached_process_cannot_rewrite_the_results(tmp_path):
    out = tmp_path / "grades.csv"
    pid_file = tmp_path / "forger.pid"
    forger = (f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
              f"for _ in range(200):\n    time.sleep(0.05)\n"
              f"    open({str(out)!r}, 'w').write('file,exercise,result,message\\nx,Sigmoid,PASS,forged\\n')\n")

    def forge(nb):
        cell = _stub(nb, "Sigmoid")
        cell.source += ("\nimport subprocess, sys\nsubprocess.Popen([sys.executable, '-c', " + repr(forger)
                        + "], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)"
                        + "\nimport time\ntime.sleep(0.5)")
    rows = grading.grade([_student(tmp_path, "ivan", forge)], out, timeout=120)
    pid = int(pid_file.read_text())
    time.sleep(1.0)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)                                   # killed (and reaped) before the CSV was written
    table = _rows(out)
    assert [(r["exercise"], r["result"]) for r in table] == [(r["exercise"], r["result"]) for r in rows]
    assert all(r["result"] == "FAIL" for r in table) and "forged" not in out.read_text()


# --- copies of the library's op -----------------------------------------------------------------

@pytest.mark.parametrize("copy, words", [
    ("from tinydense.ops.shape import Cat", "is tinydense's own"),
    ("from tinydense.ops.shape import Cat as _C\nclass Cat(_C):\n    pass", "subclasses tinydense's own"),
    ("import tinydense.functional as F\nfrom tinydense import Function\n"
     "class Cat(Function):\n    def forward(self, *xs, axis=1):\n        self.axis, self.sizes = axis, "
     "[x.shape[axis] for x in xs]\n        return np.concatenate(xs, axis=axis)\n"
     "    def backward(self, g):\n        import tinydense as td\n        from tinydense.ops.shape import Cat as L\n"
     "        ts = [td.Tensor(np.zeros(g.shape[:self.axis] + (n,) + g.shape[self.axis + 1:]), requires_grad=True)"
     " for n in self.sizes]\n        L.apply(*ts, axis=self.axis).backward(g)\n"
     "        return tuple(t.grad for t in ts)", "calls tinydense's own Cat"),
])
def test_a_copied_library_op_fails_and_says_so(tmp_path, copy, words):
    def forge(nb):
        _solve(nb)
        _stub(nb, "Cat").source = copy
    rows = _results(grading.grade([_student(tmp_path, "judy", forge)], tmp_path / "g.csv", timeout=120))
    assert rows["Cat"][0] == "FAIL" and "copied" in rows["Cat"][1] and words in rows["Cat"][1], rows
    assert rows["Sigmoid"][0] == "PASS", rows


MODULE_LESSON = LESSONS / "07_building_densenet.ipynb"


@pytest.mark.parametrize("name, copy, words", [
    ("DenseLayer", "from tinydense.models import DenseLayer", "is tinydense's own"),
    ("DenseLayer", "import tinydense.models.densenet_blocks as B\nclass DenseLayer(B.DenseLayer):\n"
                   "    def __init__(self, in_channels, growth_rate):\n        super().__init__(in_channels, growth_rate)",
     "subclasses tinydense's own"),
    ("DenseBlock", "class DenseBlock(nn.Module):\n    def __init__(self, num_layers, in_channels, growth_rate):\n"
                   "        super().__init__()\n        library = LibraryDenseBlock(num_layers, in_channels, growth_rate)\n"
                   "        for key, child in library.named_children():\n            self.add_module(key, child)\n"
                   "    def forward(self, x):\n        return LibraryDenseBlock.forward(self, x)",
     "calls tinydense's own DenseBlock.forward"),
    ("Transition", None, "Transition.forward is tinydense's own"),
])
def test_a_copied_library_module_fails_and_says_so(tmp_path, name, copy, words):
    """Lesson 7's exercises take module classes: one that is, subclasses or delegates to the
    library's DenseLayer, DenseBlock or Transition fails as a copy; the other exercises still pass."""
    def forge(nb):
        _solve(nb)
        cell = _stub(nb, name)
        # a class attribute: the solution's __init__, and forward taken from the library's class
        cell.source = copy or (cell.source.replace("    def forward(self, x):", "    forward = LibraryTransition.forward\n"
                                                   "    def _unused(self, x):")
                               .replace("super().__init__()", "super().__init__()\n        self.drop_rate = 0.0"))
    rows = _results(grading.grade([_student(tmp_path, "judy", forge, lesson=MODULE_LESSON)], tmp_path / "g.csv",
                                  timeout=120))
    assert rows[name][0] == "FAIL" and "copied" in rows[name][1] and words in rows[name][1], rows
    assert all(result == "PASS" for other, (result, _) in rows.items() if other != name), rows


def test_a_solved_module_lesson_passes_with_the_tripwires_in_place(tmp_path):
    rows = _results(grading.grade([_student(tmp_path, "ann", _solve, lesson=MODULE_LESSON)], tmp_path / "g.csv",
                                  timeout=120))
    assert rows == {k: ("PASS", rows[k][1]) for k in ("DenseLayer", "DenseBlock", "Transition")}, rows


def test_a_workspace_of_import_lines_fails_every_op_as_copied(tmp_path, monkeypatch):
    """Issue 20: a my_ops.py of eight import lines got 9 of 9 PASS; every op is now a copy, and the
    training comparison says that none of the student's ops ran (and, without CIFAR-10, that its
    accuracy is on synthetic images)."""
    monkeypatch.delenv("TINYDENSE_DATA")
    folder = tmp_path / "ws"
    folder.mkdir()
    (folder / "my_ops.py").write_text(
        "import numpy as np\n"
        "from tinydense.ops.conv import Conv2d\n"
        "from tinydense.ops.norm import BatchNorm\n"
        "from tinydense.ops.activation import ReLU\n"
        "from tinydense.ops.pool import MaxPool2d, AvgPool2d\n"
        "from tinydense.ops.shape import Cat\n"
        "from tinydense.ops.linear import Linear\n"
        "from tinydense.ops.loss import LogSoftmax, CrossEntropy\n")
    rows = grading.grade([folder / "my_ops.py"], tmp_path / "g.csv", timeout=120)
    ops = [r for r in rows if r["exercise"] != "training"]
    assert [r["exercise"] for r in ops] == ["Conv2d", "BatchNorm", "ReLU", "MaxPool2d", "AvgPool2d", "Cat",
                                            "Linear", "LogSoftmax", "CrossEntropy"]
    assert all(r["result"] == "FAIL" and r["message"].startswith("copied: ") and "is tinydense's own" in r["message"]
               for r in ops), ops
    training = next(r for r in rows if r["exercise"] == "training")
    assert training["result"] == "FAIL" and "none of your ops ran" in training["message"], training
    assert "on its training batches, synthetic random images (give the grader --data-dir" in training["message"]
    with pytest.raises(ValueError, match="--data-dir .* holds no CIFAR-10"):
        grading.grade([folder / "my_ops.py"], tmp_path / "g2.csv", data_dir=tmp_path)


def test_bad_input_and_a_missing_nbformat_give_clear_errors(tmp_path, monkeypatch, capsys):
    assert cli.main(["grade", str(tmp_path / "nothing.txt"), "--out", str(tmp_path / "g.csv")]) == 1
    assert "not a notebook" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["grade", str(empty), "--out", str(tmp_path / "g.csv")]) == 1
    assert "no notebooks or workspaces" in capsys.readouterr().err
    import builtins
    real_import = builtins.__import__

    def no_nbformat(name, *args, **kwargs):
        if name == "nbformat":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_nbformat)
    assert cli.main(["grade", str(LESSON), "--out", str(tmp_path / "g.csv")]) == 1
    assert "needs nbformat" in capsys.readouterr().err
    assert not (tmp_path / "g.csv").exists()


def test_hidden_tests_run_only_in_the_grader_and_catch_an_answer_fit_to_the_visible_cases(tmp_path, capsys):
    def fit(nb):                 # right for the visible shapes (2-D and 3-D), wrong for any other
        _solve(nb)
        cell = _stub(nb, "Sigmoid")
        cell.source = cell.source.replace("    def backward(self, g):",
                                          "    def backward(self, g):\n        if g.ndim not in (2, 3):\n"
                                          "            return g\n        return self._right(g)\n"
                                          "    def _right(self, g):")
    path = _student(tmp_path, "kim", fit)
    namespace = {}
    exec("import numpy as np\nfrom tinydense import Function\nfrom tinydense.backend import get_array_module\n"
         + _stub(nbformat.read(path, as_version=4), "Sigmoid").source, namespace)
    assert exercises.check_sigmoid(namespace["Sigmoid"])[0], capsys.readouterr().out    # the visible check: PASS
    rows = _results(grading.grade([path], tmp_path / "g.csv", timeout=120))
    assert rows["Sigmoid"][0] == "FAIL" and "a hidden test failed" in rows["Sigmoid"][1], rows
    assert rows["Cat"][0] == "PASS", rows


def _hidden():
    return grading.load_checks(LESSONS)["hidden_checks"].HIDDEN


def test_every_exercise_has_hidden_tests_and_the_solutions_pass_them(capsys):
    from test_lessons import _load
    modules = grading.load_checks(LESSONS)
    named = {name for module in modules.values()
             for name in {**getattr(module, "EXERCISES", {}), **getattr(module, "WORKSPACE_CHECKS", {})}}
    hidden = _hidden()
    assert named == set(hidden), named ^ set(hidden)
    data_parallel = _load("instructor/solutions_data_parallel")
    verdicts = {name: check(getattr(solutions, name, None) or getattr(data_parallel, name))
                for name, check in hidden.items()}
    assert all(v[0] for v in verdicts.values()), {k: v for k, v in verdicts.items() if not v[0]}


def _loops_2d(f, x, g, eps=1e-6):          # right for the visible (3, 4) inputs only
    grad = np.zeros_like(x)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            old = x[i, j]
            x[i, j] = old + eps
            plus = (f(x) * g).sum()
            x[i, j] = old - eps
            minus = (f(x) * g).sum()
            x[i, j] = old
            grad[i, j] = (plus - minus) / (2 * eps)
    return grad


def _cat_two_axes(self, g):                 # right for axes 0 and 1, the visible ones
    bounds = np.cumsum([0] + list(self.sizes))
    return tuple(g[a:b] if self.axis == 0 else g[:, a:b] for a, b in zip(bounds[:-1], bounds[1:]))


def _four_channels(counts, sums, squares):  # a loop over the visible 4 channels
    n = counts.sum()
    mean = np.array([sums[:, c].sum() / n for c in range(4)])
    return mean, np.array([squares[:, c].sum() / n for c in range(4)]) - mean ** 2


def _schedule_without_floor(epochs, base_lr=0.1):    # no "never before epoch 1": right for 3 epochs and up
    return [base_lr * 0.1 ** ((e >= epochs // 2) + (e >= 3 * epochs // 4)) for e in range(epochs)]


@pytest.mark.parametrize("name, answer", [
    ("numeric_gradient", lambda: _loops_2d),
    ("Cat", lambda: type("Cat", (solutions.Cat,), {"backward": _cat_two_axes})),
    ("combine_statistics", lambda: _four_channels),
    ("paper_schedule", lambda: _schedule_without_floor),
])
def test_an_answer_fit_to_the_visible_cases_fails_a_hidden_test(name, answer, capsys):
    checks = {n: c for m in grading.load_checks(LESSONS).values() for n, c in getattr(m, "EXERCISES", {}).items()}
    fit = answer()
    assert checks[name](fit)[0], capsys.readouterr().out              # the visible check: PASS
    ok, _, message = _hidden()[name](fit)
    assert not ok and "FAIL" in capsys.readouterr().out, message


# --- what the grader writes: identity, points, feedback, Gradescope ------------------------------

VISIBILITY = {"enum": ["hidden", "after_due_date", "after_published", "visible"]}
FORMAT = {"enum": ["text", "html", "simple_format", "md", "ansi"]}
# results.json as Gradescope's autograder specification describes it
# (https://gradescope-autograders.readthedocs.io/en/latest/specs/#output-format)
GRADESCOPE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "score": {"type": "number"}, "execution_time": {"type": "number"}, "output": {"type": "string"},
        "output_format": FORMAT, "test_output_format": FORMAT, "test_name_format": FORMAT,
        "visibility": VISIBILITY, "stdout_visibility": VISIBILITY, "extra_data": {"type": "object"},
        "tests": {"type": "array", "items": {
            "type": "object", "additionalProperties": False,
            "properties": {"score": {"type": "number"}, "max_score": {"type": "number"},
                           "status": {"enum": ["passed", "failed"]}, "name": {"type": "string"},
                           "name_format": FORMAT, "number": {"type": "string"}, "output": {"type": "string"},
                           "output_format": FORMAT, "tags": {"type": "array", "items": {"type": "string"}},
                           "visibility": VISIBILITY, "extra_data": {"type": "object"}}}},
        "leaderboard": {"type": "array", "items": {
            "type": "object", "required": ["name", "value"],
            "properties": {"name": {"type": "string"}, "value": {"type": ["number", "string"]},
                           "order": {"enum": ["asc", "desc"]}}}},
    },
    # "score: optional, but required if not on each test case"
    "anyOf": [{"required": ["score"]},
              {"required": ["tests"], "properties": {"tests": {"items": {"required": ["score"]}}}}],
}


def test_identity_points_feedback_parallel_jobs_and_gradescope(tmp_path):
    import json

    import jsonschema
    folder = tmp_path / "download"
    _student(tmp_path, "x", _solve, filename="smithalice_1001_05_gradient_checking.ipynb")
    _student(tmp_path, "x", _cheat, filename="jonesbob_1002_05_gradient_checking.ipynb")
    (tmp_path / "submissions" / "x").rename(folder)
    roster = tmp_path / "roster.csv"
    roster.write_text("key,student\n1001,Alice Smith\n1002,Bob Jones\n")
    points = tmp_path / "points.json"
    points.write_text('{"default": 1, "Sigmoid": 3}')
    results = tmp_path / "results.json"
    out = tmp_path / "grades.csv"
    assert cli.main(["grade", str(folder), "--out", str(out), "--jobs", "2", "--pattern", r"_(?P<key>\d+)_",
                     "--roster", str(roster), "--points", str(points), "--feedback", str(tmp_path / "feedback"),
                     "--gradescope", str(results), "--timeout", "120"]) == 0
    table = _rows(out)
    assert {r["student"] for r in table} == {"Alice Smith", "Bob Jones"}
    alice = [r for r in table if r["student"] == "Alice Smith"]
    assert [(r["exercise"], float(r["points"]), float(r["max_points"])) for r in alice] == [
        ("numeric_gradient", 1, 1), ("Sigmoid", 3, 3), ("Cat", 1, 1)]
    assert all(float(r["points"]) == 0 for r in table if r["student"] == "Bob Jones")
    text = (tmp_path / "feedback" / "Bob_Jones.txt").read_text()
    assert text.startswith("Feedback for Bob Jones: 0 of 5 points") and "not implemented yet" in text
    assert "5 of 5 points" in (tmp_path / "feedback" / "Alice_Smith.txt").read_text()
    report = json.loads(results.read_text())
    jsonschema.validate(report, GRADESCOPE_SCHEMA)
    assert report["score"] == 5 and len(report["tests"]) == 6
    assert {t["status"] for t in report["tests"]} == {"passed", "failed"}
    with pytest.raises(jsonschema.ValidationError):                       # the schema can fail
        jsonschema.validate(dict(report, tests=[{"name": "x", "visibility": "always"}]), GRADESCOPE_SCHEMA)
    with pytest.raises(ValueError, match="named group"):
        grading.grade([folder], tmp_path / "g.csv", pattern=r"\d+")


def test_a_verdict_written_into_the_grader_s_pipe_fails_the_whole_submission(tmp_path):
    def forge(nb):               # the descriptor is in the child's argv: write a PASS into it
        T_record = '{"exercise": "Sigmoid", "result": "PASS", "message": "forged"}\\n'
        cell = _stub(nb, "Sigmoid")
        cell.source += f"\nimport os, sys\nos.write(int(sys.argv[2]), b'{T_record}')"
    rows = grading.grade([_student(tmp_path, "mallory", forge)], tmp_path / "g.csv", timeout=120)
    assert all(r["result"] == "FAIL" and "verdict channel was written to" in r["message"] for r in rows), rows
