"""tinydense grade: a directory with a passing and a failing student notebook, workspaces,
a notebook that hangs, an edited check cell, and the CLI."""
from __future__ import annotations

import csv
import inspect
import re

import nbformat
import pytest

from test_lessons import LESSONS, _stub_class, _tagged, solutions
from tinydense import cli
from tinydense.tools import grade as grading

LESSON = LESSONS / "05_gradient_checking.ipynb"


def _solved_source(cell):
    """The stub cell with the reference solution written into it, as a student would."""
    obj = getattr(solutions, _stub_class(cell))
    if inspect.isfunction(obj) or obj.__module__ == solutions.__name__:
        return inspect.getsource(obj)
    head = cell.source[:cell.source.index("    def backward(self, g):")]
    return head + inspect.getsource(obj.backward)


def _student(tmp_path, name, edit):
    nb = nbformat.read(LESSON, as_version=4)
    edit(nb)
    folder = tmp_path / "submissions" / name
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / LESSON.name)
    return folder / LESSON.name


def _solve(nb):
    for cell in _tagged(nb, "exercise-stub"):
        cell.source = _solved_source(cell)


def _cheat(nb):                  # stubs left, but a check cell edited to print its own PASS
    check = _tagged(nb, "exercise-check")[0]
    check.source = 'print("PASS sigmoid: trust me")'


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(autouse=True)
def _fast_data(monkeypatch, cifar_dir):
    monkeypatch.setenv("TINYDENSE_DATA", str(cifar_dir))


@pytest.mark.slow
def test_grades_a_directory_with_a_passing_and_a_failing_notebook(tmp_path):
    good = _student(tmp_path, "alice", _solve)
    bad = _student(tmp_path, "bob", _cheat)
    capstone = tmp_path / "submissions" / "bob" / "12_build_your_own_densenet.ipynb"
    capstone.write_text((LESSONS / capstone.name).read_text())       # a fresh workspace: all stubs
    out = tmp_path / "grades.csv"
    assert cli.main(["grade", str(tmp_path / "submissions"), "--out", str(out), "--timeout", "300"]) == 0
    table = _rows(out)
    ops = [r for r in table if r["file"] == str(capstone)]
    assert len(ops) == 9 and all(r["exercise"].startswith("workspace: ") and r["result"] == "FAIL"
                                 and "not implemented yet" in r["message"] for r in ops), ops
    exercises = [_stub_class(c) for c in _tagged(nbformat.read(LESSON, as_version=4), "exercise-stub")]
    by_file = {}
    for r in table:
        if r["file"] != str(capstone):
            by_file.setdefault(r["file"], []).append(r)
    assert [r["exercise"] for r in by_file[str(good)]] == exercises
    assert all(r["result"] == "PASS" for r in by_file[str(good)]), by_file[str(good)]
    assert [r["exercise"] for r in by_file[str(bad)]] == exercises
    assert all(r["result"] == "FAIL" and "not implemented yet" in r["message"] for r in by_file[str(bad)])
    with pytest.raises(ValueError, match="exists"):
        grading.grade([good], out)                       # grades are never overwritten


@pytest.mark.slow
def test_a_hanging_or_crashing_notebook_gets_fail_rows_not_a_crashed_grader(tmp_path):
    def hang(nb):                # not even an interrupt stops it: only the time limit
        nb.cells.insert(1, nbformat.v4.new_code_cell(
            "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"))

    def die(nb):
        nb.cells.insert(1, nbformat.v4.new_code_cell("import os\nos._exit(3)"))

    def delete_check(nb):
        nb.cells.remove(_tagged(nb, "exercise-check")[-1])

    rows = grading.grade([_student(tmp_path, "carol", hang)], tmp_path / "a.csv", timeout=5)
    assert rows and all(r[2] == "FAIL" and "did not finish within 5" in r[3] for r in rows), rows
    rows = grading.grade([_student(tmp_path, "dave", die)], tmp_path / "b.csv", timeout=120)
    assert rows and all(r[2] == "FAIL" and "crashed" in r[3] for r in rows), rows
    rows = grading.grade([_student(tmp_path, "erin", delete_check)], tmp_path / "c.csv", timeout=120)
    assert rows[-1][2] == "FAIL" and "deleted" in rows[-1][3]


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
    assert len(solved) == len(broken) == 9
    assert all(r["result"] == "PASS" for r in solved), solved
    assert all(r["result"] == "FAIL" and "could not be imported" in r["message"] for r in broken), broken
    assert re.search(r"9 of 18 exercises PASS", capsys.readouterr().out)


def test_bad_input_and_a_missing_nbclient_give_clear_errors(tmp_path, monkeypatch, capsys):
    assert cli.main(["grade", str(tmp_path / "nothing.txt"), "--out", str(tmp_path / "g.csv")]) == 1
    assert "not a notebook" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["grade", str(empty), "--out", str(tmp_path / "g.csv")]) == 1
    assert "no notebooks or workspaces" in capsys.readouterr().err
    import builtins
    real_import = builtins.__import__

    def no_nbclient(name, *args, **kwargs):
        if name == "nbclient":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_nbclient)
    assert cli.main(["grade", str(LESSON), "--out", str(tmp_path / "g.csv")]) == 1
    assert "needs nbclient" in capsys.readouterr().err
    assert not (tmp_path / "g.csv").exists()
