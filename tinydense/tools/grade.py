"""Grade students' lesson notebooks and workspaces: ``tinydense grade PATH... --out grades.csv``.

A notebook is executed top to bottom (its own cells, in a fresh kernel in a
scratch folder) after every exercise check cell has been reset to the
instructors' version, so an edited check cannot print its own PASS. The
verdict each check prints becomes one CSV row: file, exercise, PASS/FAIL,
message. A workspace (``my_ops*.py``) is imported and every op in it checked
by the lessons' checkers. Each file runs in a child process with a time
limit: a file that hangs, crashes or kills its kernel gets FAIL rows, and the
grader goes on with the next one. The checks come from the instructors'
``checks/`` package (``--course DIR``, default the repository's ``lessons/``),
never from the student's folder. The checks are loaded from their file
locations (``load_checks``); neither the student's folder nor ``lessons/`` is
ever put on ``sys.path``.

Notebooks need nbclient and ipykernel (the ``dev`` or ``lessons`` extra).
"""
from __future__ import annotations

import csv
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
from pathlib import Path

CHECK_TAGS = ("exercise-check", "workspace-check")
STUB_TAG = "exercise-stub"
FIELDS = ("file", "exercise", "result", "message")


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
    private package name; returns {module name: module}: ``common`` and every lesson's (``l01_autograd``, ...).
    Nothing is put on sys.path, so a student's folder cannot shadow a checker."""
    folder = Path(course).resolve() / "checks"
    name = "_course_checks_" + hashlib.sha256(str(folder).encode()).hexdigest()[:12]
    if name not in sys.modules:
        _load_file(name, folder / "__init__.py", folder)
    return {p.stem: importlib.import_module(f"{name}.{p.stem}") for p in sorted(folder.glob("*.py"))
            if p.stem != "__init__"}


def require_nbclient():
    try:
        import nbclient  # noqa: F401
        import nbformat  # noqa: F401
    except ImportError:
        raise ValueError("grading notebooks needs nbclient, nbformat and ipykernel: "
                         "pip install -e '.[dev]' (or pip install nbclient nbformat ipykernel)") from None


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


def _stub_name(cell):
    match = re.search(r"^(?:class|def) (\w+)\(", cell.source, re.MULTILINE)
    return match.group(1) if match else cell.get("id", "?")


def _expected_checks(reference):
    """[(cell id, exercise name, check source, tags)] of a reference notebook."""
    checks, last_stub = [], None
    for cell in reference.cells:
        if STUB_TAG in _tags(cell):
            last_stub = _stub_name(cell)
        tags = [t for t in _tags(cell) if t in CHECK_TAGS]
        if tags:
            name = last_stub if tags[0] == "exercise-check" and last_stub else "workspace"
            checks.append((cell.get("id"), name, cell.source, tags[0]))
            last_stub = None
    return checks


def _text(cell):
    parts, errors = [], []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif out.get("output_type") in ("execute_result", "display_data"):
            parts.append(out.get("data", {}).get("text/plain", ""))
        elif out.get("output_type") == "error":
            errors.append(f"{out.get('ename')}: {out.get('evalue')}")
    return "".join(parts), errors


def _verdicts(text):
    """[(PASS/FAIL, title, message)] from the lines a checker printed."""
    found = []
    for block in re.split(r"\n(?=(?:PASS|FAIL) )", text):
        match = re.match(r"(PASS|FAIL) ([^:\n]+): (.*)", block.strip(), re.DOTALL)
        if match:
            found.append((match[1], match[2], " ".join(match[3].split())))
    return found


def _scratch(lessons, workspace):
    """A scratch folder for one kernel: the instructors' checkers (checks/), the
    workspace template, the fixtures lesson 7 reads; returns (folder, environment)."""
    folder = Path(tempfile.mkdtemp(prefix="tinydense-grade-"))
    shutil.copytree(lessons / "checks", folder / "checks", ignore=shutil.ignore_patterns("__pycache__"))
    template = lessons / "my_ops_template.py"
    if template.is_file():                      # a student release, or a built checkout
        shutil.copyfile(template, folder / template.name)
    elif (lessons / "build_notebooks.py").is_file():
        build = _load_file("_course_build_notebooks", lessons / "build_notebooks.py")
        (folder / template.name).write_text(build.render_template())
    for fixtures in (lessons.parent / "tests" / "fixtures", lessons / "fixtures"):
        if fixtures.is_dir():
            (folder / "fixtures").symlink_to(fixtures.resolve())
            break
    env = dict(os.environ, TINYDENSE_WORKSPACE=str(workspace or folder / "student" / "my_ops.py"),
               TINYDENSE_COURSE=str(lessons.resolve()))
    return folder, env


def _run_child(args, env, cwd, timeout):
    """Run ``python -m tinydense.tools.grade args`` in its own process group; kill it (and
    what it started) after ``timeout`` seconds. Returns (status, stderr tail) or None on timeout."""
    proc = subprocess.Popen([sys.executable, "-m", "tinydense.tools.grade", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None
    return proc.returncode, err[-2000:]


def grade_notebook(path, lessons, timeout=600, fast=True, workspace=None):
    """Rows (file, exercise, result, message) for one notebook."""
    import nbformat
    path = Path(path)
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as e:
        return [(str(path), "notebook", "FAIL", f"cannot read the notebook: {type(e).__name__}: {e}")]
    reference_path = lessons / path.name
    reference = nbformat.read(reference_path, as_version=4) if reference_path.is_file() else nb
    expected = _expected_checks(reference)
    if not expected:
        return [(str(path), "notebook", "FAIL", "no exercise checks found (is this a lesson notebook?)")]
    by_id = {cell.get("id"): cell for cell in nb.cells}
    run = []                                  # (cell id or None when deleted, exercise name), in order
    for cell_id, name, source, tag in expected:
        cell = by_id.get(cell_id)
        if cell is None or cell.cell_type != "code":
            run.append((None, name))
            continue
        cell.source, cell.metadata["tags"] = source, [tag]       # the instructors' check, not an edited one
        run.append((cell_id, name))
    folder, env = _scratch(lessons, workspace)
    try:
        if fast:
            env["TINYDENSE_LESSONS_FAST"] = "1"
        else:
            env.pop("TINYDENSE_LESSONS_FAST", None)
        nbformat.write(nb, folder / "submitted.ipynb")
        # a cell that runs too long is interrupted and the rest goes on; the whole file is killed at `timeout`
        status = _run_child(["_run", "submitted.ipynb", "executed.ipynb", str(timeout)], env, folder, timeout)
        executed = folder / "executed.ipynb"
        done = {c.get("id"): c for c in nbformat.read(executed, as_version=4).cells} if executed.exists() else {}
        crash = (folder / "crash.txt").read_text().strip() if (folder / "crash.txt").exists() else ""
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if status is None:
        why = f"the notebook did not finish within {timeout:g} s (killed)"
    elif crash:
        why = f"the notebook crashed: {crash}"
    elif not done:
        why = f"the grader could not run the notebook: {' '.join(status[1].split())[-300:]}"
    else:
        why = "the check produced no verdict"
    rows = []
    for cell_id, name in run:
        if cell_id is None:
            rows.append((str(path), name, "FAIL", "the check cell was deleted from the notebook"))
            continue
        text, errors = _text(done.get(cell_id, {}))
        verdicts = _verdicts(text)
        if name == "workspace" and verdicts:
            rows += [(str(path), f"workspace: {title}", result, message) for result, title, message in verdicts]
        elif verdicts:
            result, _, message = verdicts[0]
            rows.append((str(path), name, result, message))
        elif errors:
            rows.append((str(path), name, "FAIL", f"the check cell raised {errors[0]}"))
        else:
            rows.append((str(path), name, "FAIL", why))
    return rows


def grade_workspace(path, lessons, timeout=600):
    """Rows (file, op, result, message) for one workspace file."""
    path = Path(path).resolve()
    folder, env = _scratch(lessons, path)
    try:
        status = _run_child(["_workspace", str(path), "rows.json"], env, folder, timeout)
        rows_file = folder / "rows.json"
        rows = json.loads(rows_file.read_text()) if rows_file.exists() else None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if rows is not None:
        return [(str(path), name, result, message) for name, result, message in rows]
    why = (f"the workspace did not finish within {timeout:g} s (killed)" if status is None
           else f"the workspace could not be imported or checked: {status[1].strip().splitlines()[-1:] or ['?']}")
    from ..ops.override import OPS
    return [(str(path), name, "FAIL", why) for name in OPS]


def grade(paths, out, lessons=None, timeout=600, fast=True, progress=print):
    """Grade every notebook and workspace under ``paths``; write the CSV ``out``; return the rows."""
    lessons = Path(lessons) if lessons else default_lessons_dir()
    if lessons is None or not (lessons / "checks" / "__init__.py").is_file():
        raise ValueError("grade needs the instructors' course folder (with checks/): pass --course DIR")
    if timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout}")
    files = collect(paths)
    if not files:
        raise ValueError(f"no notebooks or workspaces (my_ops*.py) in {', '.join(map(str, paths))}")
    if any(f.suffix == ".ipynb" for f in files):
        require_nbclient()
    out = Path(out)
    if out.exists():
        raise ValueError(f"{out} exists: choose another --out (grades are never overwritten)")
    rows = []
    for f in files:
        new = grade_workspace(f, lessons, timeout) if f.suffix == ".py" else grade_notebook(f, lessons, timeout, fast)
        passed = sum(r[2] == "PASS" for r in new)
        progress(f"{f}: {passed} of {len(new)} PASS")
        rows += new
    tmp = out.with_name(out.name + ".part")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(FIELDS)
        writer.writerows(rows)
    os.replace(tmp, out)
    return rows


# --- the child processes ---------------------------------------------------------------

def _child_run(notebook, executed, timeout):
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(nb, kernel_name="python3", timeout=int(float(timeout)), allow_errors=True,
                            interrupt_on_timeout=True, resources={"metadata": {"path": os.getcwd()}})
    try:
        client.execute()
    except Exception as e:           # a dead kernel: keep what ran, say why
        Path("crash.txt").write_text(f"{type(e).__name__}: {' '.join(str(e).split())[:300]}")
    nbformat.write(nb, executed)


def _child_workspace(path, rows_file):
    import contextlib
    import importlib.util
    import io
    checks = load_checks(os.environ["TINYDENSE_COURSE"])["l12_build_your_own_densenet"]
    spec = importlib.util.spec_from_file_location("my_ops", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = []
    for name, check in checks.WORKSPACE_CHECKS.items():
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            cls = getattr(module, name, None)
            if cls is None:
                print(f"FAIL {name}: the workspace has no class {name}")
            else:
                check(cls)
        verdicts = _verdicts(buffer.getvalue()) or [("FAIL", name, "the check printed no verdict")]
        rows.append((name, verdicts[0][0], verdicts[0][2]))
    Path(rows_file).write_text(json.dumps(rows))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"_run": _child_run, "_workspace": _child_workspace}[command](*args)
