"""Grade students' lesson notebooks and workspaces: ``tinydense grade PATH... --out grades.csv``.

Threat model. A submission controls its cells and its workspace file: any
code, run as the grader's user. It must not be able to change its own
verdicts, anyone else's, or the output files. So:

- only the submission's stub cells (cells tagged ``exercise-stub``, found by
  cell id or tag, never by file name) and its workspace run; its check cells
  and everything else it edited are never run. The lesson is recognised by
  its stub cells' ids, so a renamed file (a learning platform's bulk
  download) is still graded as its lesson;
- each submission runs in a fresh process (``tools/grade_child.py``) in its
  own session and private temporary folder; at the end its whole process
  group is killed, and so is anything that left the group (a detached
  ``start_new_session`` process is caught because the grader is a child
  subreaper: orphans come back to it);
- the instructors' checks are loaded from the instructors' copy
  (``--course DIR``, default the repository's ``lessons/``) by file location,
  after the student's code ran, with tinydense's, NumPy's and builtins'
  functions put back as they were (a check during which they change FAILs);
- verdicts come back over a pipe only the grader reads, one JSON line per
  exercise, never parsed from what the submission prints;
- results are written only after every child process is gone, to a new file
  (never overwriting one).

Not covered: a submission that reads or rewrites the checking process's own
memory from inside the code being checked (frame inspection, ctypes, writing
to the pipe's descriptor); it shares that process with the checks. For high
stakes run the grader as an unprivileged user in a container (as
Gradescope's autograder does) and read the feedback of outliers.

Notebooks are read with nbformat (the ``dev`` or ``lessons`` extra). About 400 lines: the
threat model and the process handling that enforces it stay together in one file; the child's
side is ``grade_child.py``, the outputs ``grade_report.py``.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..data.cifar import missing_files
from . import grade_report as report

STUB_TAG = "exercise-stub"
WORKSPACE_TAG = "workspace"
PR_SET_CHILD_SUBREAPER = 36
_CHILDREN = threading.Lock()      # starting a child and sweeping for orphans never interleave


def default_lessons_dir():
    """The repository's lessons/ next to the installed package, or None."""
    path = Path(__file__).resolve().parents[2] / "lessons"
    return path if (path / "checks" / "__init__.py").is_file() else None


def _load_file(name, path, package_dir=None):
    """Import the file ``path`` as the module ``name`` (a package when package_dir is given)."""
    spec = importlib.util.spec_from_file_location(
        name, path, submodule_search_locations=None if package_dir is None else [str(package_dir)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module             # dataclasses and relative imports look the module up there
    spec.loader.exec_module(module)
    return module


def load_checks(course):
    """The instructors' checks, ``course/checks/``, imported from their file locations under a
    private package name; returns {module name: module}: ``common``, every lesson's (``l01_autograd``, ...)
    and, in the instructors' copy, ``hidden_checks`` (instructor/hidden_checks.py: the hidden tests).
    Nothing is put on sys.path, so a student's folder cannot shadow a checker."""
    folder = Path(course).resolve() / "checks"
    name = "_course_checks_" + hashlib.sha256(str(folder).encode()).hexdigest()[:12]
    if name not in sys.modules:
        _load_file(name, folder / "__init__.py", folder)
    modules = {p.stem: importlib.import_module(f"{name}.{p.stem}") for p in sorted(folder.glob("*.py"))
               if p.stem != "__init__"}
    hidden = folder.parent / "instructor" / "hidden_checks.py"      # instructors only: not in the release
    if hidden.is_file():
        modules["hidden_checks"] = sys.modules.get(f"{name}.hidden_checks") or _load_file(f"{name}.hidden_checks",
                                                                                           hidden)
    return modules


def require_nbformat():
    try:
        import nbformat  # noqa: F401
    except ImportError:
        raise ValueError("grading notebooks needs nbformat: pip install -e '.[dev]' (or pip install nbformat)") from None


def collect(paths):
    """The files to grade: notebooks (*.ipynb) and workspaces (my_ops*.py), directories searched."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            found = [f for f in sorted(p.rglob("*")) if ".ipynb_checkpoints" not in f.parts
                     and (f.suffix == ".ipynb" or (f.suffix == ".py" and f.name.startswith("my_ops")))]
            files += found
        elif p.is_file() and p.suffix in (".ipynb", ".py"):
            files.append(p)
        else:
            raise ValueError(f"{p}: not a notebook, a workspace (.py) or a directory")
    return files


def _tags(cell):
    return cell.get("metadata", {}).get("tags", [])


def _defined(source):
    """The classes and functions a cell defines at its top level (by their ``class``/``def`` lines)."""
    return re.findall(r"^(?:class|def) (\w+)\(", source, re.MULTILINE)


def lessons_of(course):
    """[(lesson stem, reference notebook)] of the instructors' copy."""
    import nbformat
    return [(path.stem, nbformat.read(path, as_version=4)) for path in sorted(Path(course).glob("[0-9][0-9]_*.ipynb"))]


def match_lesson(nb, references):
    """The lesson a submission is: the reference whose stub cells' ids (else whose stubs' names) the
    submission's cells carry most of; (stem, reference) or None. The file name is never used."""
    ids = {cell.get("id") for cell in nb.cells}
    names = {name for cell in nb.cells if STUB_TAG in _tags(cell) for name in _defined(cell.source)}
    best, score = None, (0, 0)
    for stem, reference in references:
        stubs = [c for c in reference.cells if STUB_TAG in _tags(c) or "workspace-check" in _tags(c)]
        here = (sum(c.get("id") in ids for c in stubs),
                sum(n in names for c in stubs for n in _defined(c.source)))
        if here > score:
            best, score = (stem, reference), here
    return best


def notebook_job(nb, stem, reference):
    """What the child runs for a notebook: the lesson's imports, then the submission's stub cells."""
    imports = [line for cell in reference.cells if cell.cell_type == "code" for line in cell.source.splitlines()
               if re.match(r"(import|from) \w", line) and not line.startswith("from checks")]
    setup = [("\n".join(dict.fromkeys(imports)), f"{stem} (the lesson's imports)")]
    setup += [(c.source, f"{stem} helper cell {c.get('id')}") for c in reference.cells if WORKSPACE_TAG in _tags(c)]
    by_id = {cell.get("id"): cell for cell in nb.cells}
    tagged = {n: c for c in nb.cells if STUB_TAG in _tags(c) for n in _defined(c.source)}
    code, defines = [], {}
    for stub in (c for c in reference.cells if STUB_TAG in _tags(c)):
        name = _defined(stub.source)[0]
        cell = by_id.get(stub.get("id"))
        if cell is None or cell.cell_type != "code" or STUB_TAG not in _tags(cell):
            cell = tagged.get(name)                  # moved or re-created: found by its tag and name
        if cell is None:
            continue
        code.append((name, cell.source, f"the cell of {name} ({cell.get('id')})"))
        defines[name] = [name]
    return {"kind": "notebook", "setup": setup, "code": code, "defines": defines}


def _children_of(pid):
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                found.append(int(entry))
    return found


def _become_subreaper():
    """Make orphans of our children (a detached process) our children, so they can be found and ended."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _kill_orphans(known):
    """SIGKILL and reap every child of ours that we did not start (orphans handed to us as subreaper),
    until none is left."""
    with _CHILDREN:
        _sweep(known)


def _sweep(known):
    for _ in range(100):
        strays = [pid for pid in _children_of(os.getpid()) if pid not in known]
        if not strays:
            return
        for pid in strays:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def run_child(job, course, timeout, cell_timeout, fast, known, data_dir=None):
    """Run one job in a fresh process (own session, private temporary folder, verdicts over a pipe);
    kill its process group at the end. Returns (records, why it stopped or None). The child's
    TINYDENSE_DATA is ``data_dir``, else ours."""
    folder = Path(tempfile.mkdtemp(prefix="tinydense-grade-"))
    job = dict(job, course=str(Path(course).resolve()), cell_timeout=cell_timeout)
    (folder / "job.json").write_text(json.dumps(job))
    read_end, write_end = os.pipe()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINYDENSE_")}
    env.update(TMPDIR=str(folder), HOME=str(folder),
               TINYDENSE_DATA=str(Path(data_dir).resolve()) if data_dir else os.environ.get("TINYDENSE_DATA", ""),
               **({"TINYDENSE_LESSONS_FAST": "1"} if fast else {}))
    records, lines = [], []
    try:
        with open(folder / "output.txt", "wb") as log, _CHILDREN:
            proc = subprocess.Popen([sys.executable, "-m", "tinydense.tools.grade_child", "job.json", str(write_end)],
                                    cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    pass_fds=(write_end,), start_new_session=True)
            known.add(proc.pid)
        os.close(write_end)
        write_end = None
        reader = threading.Thread(target=lambda: lines.extend(os.fdopen(read_end, errors="replace")), daemon=True)
        reader.start()
        try:
            proc.wait(timeout=timeout)
            why = None if proc.returncode == 0 else f"the grading process ended with status {proc.returncode}"
        except subprocess.TimeoutExpired:
            why = f"the submission did not finish within {timeout:g} s (killed)"
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)            # the whole group, finished or not
        proc.wait()
        with _CHILDREN:
            known.discard(proc.pid)
            _sweep(known)
        reader.join(5)
        if why and proc.returncode not in (0, None):
            tail = (folder / "output.txt").read_text(errors="replace").strip().splitlines()[-1:]
            why += f": {tail[0][:300]}" if tail and "did not finish" not in why else ""
    finally:
        if write_end is not None:
            os.close(write_end)
        shutil.rmtree(folder, ignore_errors=True)
    for line in lines:
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and {"exercise", "result", "message"} <= set(record):
                records.append(record)
    return records, why


def _verdicts(records, why, expected):
    """Rows (exercise, result, message, output) for the exercises ``expected``, from the child's records.
    A record twice for one exercise means the channel was written by someone else: all FAIL."""
    seen = {}
    for record in records:
        if record["exercise"] in seen and record["result"] in ("PASS", "FAIL"):
            return [(name, "FAIL", "the verdict channel was written to by the submission", "") for name in expected]
        seen[record["exercise"]] = record
    if "" not in seen and why is None:
        why = "the grading process stopped before it finished"
    rows = []
    for name in expected:
        record = seen.get(name)
        if record is None or record["result"] not in ("PASS", "FAIL"):
            rows.append((name, "FAIL", why or "no verdict", ""))
        else:
            rows.append((name, record["result"], record["message"], record.get("output", "")))
    return rows


def _workspace_beside(path):
    """The workspace a capstone notebook is graded from: my_ops.py or student/my_ops.py beside it, or None."""
    return next((p for p in (path.parent / "my_ops.py", path.parent / "student" / "my_ops.py") if p.is_file()), None)


def grade_notebook(path, course, references, timeout, cell_timeout, fast, known, data_dir=None):
    """Rows (exercise, result, message, output) for one notebook."""
    import nbformat
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as e:
        return [("notebook", "FAIL", f"cannot read the notebook: {type(e).__name__}: {e}", "")]
    found = match_lesson(nb, references)
    if found is None:
        return [("notebook", "FAIL", "no exercise stub of any lesson found (is this a lesson notebook?)", "")]
    stem, reference = found
    checks = load_checks(course)
    module = next((m for m in checks if m[1:3] == stem[:2]), None)
    if module is None:
        return [("notebook", "FAIL", f"the course has no checks for lesson {stem}", "")]
    if not hasattr(checks[module], "EXERCISES"):          # the capstone: graded from the workspace
        workspace = _workspace_beside(path)
        if workspace is None:
            return [("workspace", "FAIL", "no workspace (my_ops.py or student/my_ops.py) beside the notebook", "")]
        return grade_workspace(workspace, course, timeout, cell_timeout, fast, known, data_dir)
    job = dict(notebook_job(nb, stem, reference), module=module)
    expected = list(checks[module].EXERCISES)
    job["missing"] = {name: "the stub cell was deleted from the notebook" for name in expected
                      if name not in job["defines"]}
    return _verdicts(*run_child(job, course, timeout, cell_timeout, fast, known), expected)


def grade_workspace(path, course, timeout, cell_timeout, fast, known, data_dir=None):
    """Rows (op, result, message, output) for one workspace file (the training row's accuracy on
    CIFAR-10 from ``data_dir`` or $TINYDENSE_DATA when there, else on synthetic images)."""
    path = Path(path)
    checks = load_checks(course)["l12_build_your_own_densenet"]
    expected = list(checks.WORKSPACE_CHECKS) + ["training"]         # the capstone's MATCH, with accuracy
    try:
        source = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        return [(name, "FAIL", f"cannot read the workspace: {e}", "") for name in expected]
    job = {"kind": "workspace", "module": "l12_build_your_own_densenet", "setup": [], "file": str(path.resolve()),
           "code": [("workspace", source, str(path.name))], "defines": {"workspace": expected}}
    return _verdicts(*run_child(job, course, timeout, cell_timeout, fast, known, data_dir), expected)


def _capstone_workspace(path, references):
    """The workspace ``path`` is graded from if it is a capstone notebook, else None."""
    import nbformat
    try:
        found = match_lesson(nbformat.read(path, as_version=4), references)
    except Exception:
        return None
    return _workspace_beside(path) if found is not None and found[0].startswith("12") else None


def grade(paths, out, lessons=None, timeout=600, fast=True, progress=print, cell_timeout=None, jobs=1,
          pattern=None, roster=None, points=None, feedback=None, gradescope=None, data_dir=None):
    """Grade every notebook and workspace under ``paths`` (``jobs`` at a time); write the CSV ``out`` (and,
    if asked, a feedback file per student into ``feedback`` and Gradescope's results.json ``gradescope``)
    once every child process is gone; return the rows (dicts with the keys of report.FIELDS and output).
    The student of a file comes from ``pattern`` (a regular expression with a group ``student``, or
    ``key`` looked up in the ``roster`` CSV), else from the first folder below the path given. The
    capstone's accuracy is measured on CIFAR-10 from ``data_dir`` (else $TINYDENSE_DATA) when it is there,
    else on synthetic images, and its row says which."""
    start = time.perf_counter()
    course = Path(lessons) if lessons else default_lessons_dir()
    if course is None or not (course / "checks" / "__init__.py").is_file():
        raise ValueError("grade needs the instructors' course folder (with checks/): pass --course DIR")
    if timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout}")
    cell_timeout = min(120.0, timeout / 2) if cell_timeout is None else float(cell_timeout)
    if not 0 < cell_timeout < timeout:
        raise ValueError(f"the per-cell limit ({cell_timeout:g} s) must be positive and below the per-file "
                         f"limit ({timeout:g} s)")
    if int(jobs) != jobs or jobs < 1:
        raise ValueError(f"jobs must be a whole number >= 1, got {jobs}")
    if data_dir is not None and missing_files("cifar10", data_dir):
        raise ValueError(f"--data-dir {data_dir} holds no CIFAR-10 (missing {missing_files('cifar10', data_dir)[0]})")
    if pattern is not None:
        report.check_pattern(pattern)
    roster = report.read_roster(roster) if roster else None
    points = report.read_points(points) if points else None
    files = collect(paths)
    if not files:
        raise ValueError(f"no notebooks or workspaces (my_ops*.py) in {', '.join(map(str, paths))}")
    if any(f.suffix == ".ipynb" for f in files):
        require_nbformat()
    outputs = [Path(out)] + ([Path(gradescope)] if gradescope else [])
    for path in outputs:
        if path.exists():
            raise ValueError(f"{path} exists: choose another file (grades are never overwritten)")
    students = {f: report.identify(f, paths, pattern, roster) for f in files}
    for f, student in students.items():
        if student is None:
            progress(f"warning: {f}: no student found by --pattern{' and --roster' if roster else ''}")
    references = lessons_of(course) if any(f.suffix == ".ipynb" for f in files) else []
    load_checks(course)                      # imported once, here, before the threads of --jobs read it
    graded = {w.resolve() for f in files if f.suffix == ".ipynb"
              for w in [_capstone_workspace(f, references)] if w is not None}
    files = [f for f in files if not (f.suffix == ".py" and f.resolve() in graded)]   # graded with its capstone
    _become_subreaper()
    before = set(_children_of(os.getpid()))
    known = set(before)

    def one(f):
        if f.suffix == ".py":
            new = grade_workspace(f, course, timeout, cell_timeout, fast, known, data_dir)
        else:
            new = grade_notebook(f, course, references, timeout, cell_timeout, fast, known, data_dir)
        progress(f"{f}: {sum(r[1] == 'PASS' for r in new)} of {len(new)} PASS")
        return [dict(student=students[f] or f"unknown ({f.name})", file=str(f), exercise=exercise, result=result,
                     message=message, output=output) for exercise, result, message, output in new]

    with ThreadPoolExecutor(max_workers=int(jobs)) as pool:
        rows = [row for new in pool.map(one, files) for row in new]
    _kill_orphans(before)                    # nothing a submission started outlives the grading
    report.score(rows, points)
    report.write_csv(Path(out), rows)
    if feedback:
        report.write_feedback(feedback, rows)
    if gradescope:
        report.write_json(gradescope, report.gradescope_results(rows, time.perf_counter() - start))
    return rows


if __name__ == "__main__":
    sys.exit("run tinydense grade (this module starts tools/grade_child.py for each submission)")
