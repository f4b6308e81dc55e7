"""The grader's child process: one submission's code, then the instructors' checks.

``python -m tinydense.tools.grade_child JOB.json FD`` runs in a fresh process, in
its own session and private temporary folder (``tools/grade.py`` starts it and
kills its whole process group, and anything that escaped it, at the end):

1. import tinydense and NumPy and take a snapshot of their module attributes
   (and of ``builtins``): the private references the checks compare against;
2. run the instructors' setup code (a lesson's imports) and then the
   submission's code: its stub cells one at a time, or its workspace file,
   each under the per-cell time limit;
3. put back every attribute the submission changed in those modules (and
   say so), and only then load the instructors' checks, from the
   instructors' copy by file location;
4. run each exercise's check on what the submission defined (under the
   per-cell time limit, its printing captured as feedback), with the
   library's op (or lesson 7's module) for that exercise replaced by a tripwire
   while the student's class runs; a class that is, subclasses or borrows a
   method of the library's FAILs as copied before it runs; a check during which the submission changes those modules
   again FAILs;
5. write each verdict as one JSON line to the file descriptor FD, a pipe that
   only the grader reads (never stdout, which the submission writes too).

A workspace's CIFAR-10 images (for the capstone's accuracy) are read in step 1,
before the submission runs.
"""
from __future__ import annotations

import builtins
import contextlib
import importlib
import inspect
import io
import json
import os
import signal
import sys

import numpy as np

from ..ops.override import OPS


class CellTimeout(BaseException):
    """A cell or a check ran past the per-cell time limit (a BaseException: `except Exception` in
    student code does not swallow it)."""


def _alarm(signum, frame):
    raise CellTimeout()


@contextlib.contextmanager
def time_limit(seconds):
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _guarded_modules():
    """The modules whose attributes the checks rely on: builtins, NumPy, tinydense."""
    return {name: module for name, module in list(sys.modules.items())
            if module is not None and (name in ("builtins", "math") or name.split(".")[0] in ("numpy", "tinydense"))}


def _guarded_namespaces():
    """(label, object) for every module above and every class tinydense defines: their functions
    and classes are what a submission must not swap."""
    for name, module in _guarded_modules().items():
        yield name, module
        if name.split(".")[0] == "tinydense":
            for key, value in list(vars(module).items()):
                if isinstance(value, type) and value.__module__ == name:
                    yield f"{name}.{key}", value


def snapshot():
    """{label: (namespace, {attribute: value})} of every callable attribute (functions, classes)."""
    return {label: (owner, {k: v for k, v in vars(owner).items() if callable(v) or isinstance(v, (staticmethod, classmethod))})
            for label, owner in _guarded_namespaces()}


def restore(saved):
    """Put back every guarded attribute replaced or removed since ``saved``; returns their names."""
    changed = []
    for label, (owner, attributes) in saved.items():
        now = vars(owner)
        for key, value in attributes.items():
            if now.get(key, _MISSING) is not value:
                changed.append(f"{label}.{key}")
                setattr(owner, key, value)
    return changed


_MISSING = object()


def _run_code(source, filename, namespace, seconds):
    """Run one cell; returns None or what went wrong, in words."""
    try:
        code = compile(source, filename, "exec")
    except SyntaxError as e:
        return f"{filename} has a syntax error (line {e.lineno}): {e.msg}"
    try:
        with time_limit(seconds):
            exec(code, namespace)
    except CellTimeout:
        return f"{filename} did not finish within the per-cell limit of {seconds:g} s"
    except BaseException as e:      # SystemExit, KeyboardInterrupt: still just this cell's failure
        return f"{filename} raised {type(e).__name__}: {e}"
    return None


def _methods(cls):
    """The names of the plain functions ``cls`` itself defines (forward, backward, helpers), no dunders."""
    return [name for name, value in vars(cls).items()
            if callable(value) and not isinstance(value, type) and not (name.startswith("__") and name.endswith("__"))]


def _tripwire(library, student, hits):
    """Replace every method of the library's class ``library`` (a Function or a module) by a tripwire
    while ``student``'s methods run: a call to one from inside the student's class (a forward that
    delegates to the library's, ``forward = Library.forward``) is recorded in ``hits``."""
    inside = []

    def wrap_student(method):
        def wrapper(*args, **kwargs):
            inside.append(1)
            try:
                return method(*args, **kwargs)
            finally:
                inside.pop()
        return wrapper

    def wrap_library(method, what):
        def wrapper(*args, **kwargs):
            if inside:
                hits.add(what)
            return method(*args, **kwargs)
        return wrapper

    undo = []
    for cls, wrap in ((student, wrap_student), (library, None)):
        for name in _methods(cls):
            original = vars(cls)[name]
            if isinstance(original, (staticmethod, classmethod)):
                continue
            setattr(cls, name, wrap(original) if wrap else wrap_library(original, f"{library.__name__}.{name}"))
            undo.append((cls, name, original))
    return undo


def _copied(obj, name):
    """Why ``obj`` is tinydense's own op for exercise ``name`` (or a subclass of it), or None."""
    module = getattr(obj, "__module__", "") or ""
    if module.split(".")[0] == "tinydense":
        return f"{name} is tinydense's own {module}.{getattr(obj, '__qualname__', name)}, not yours"
    if isinstance(obj, type):
        for key, value in vars(obj).items():               # forward = tinydense's DenseLayer.forward
            where = getattr(value, "__module__", "") or ""
            if inspect.isfunction(value) and where.split(".")[0] == "tinydense":
                return (f"{name}.{key} is tinydense's own {where}.{getattr(value, '__qualname__', key)}: "
                        f"write it yourself")
        for base in obj.__mro__[1:]:
            base_module = getattr(base, "__module__", "") or ""
            if base_module.startswith(("tinydense.ops", "tinydense.models", "tinydense.functional")):
                return (f"{name} subclasses tinydense's own {base_module}.{base.__qualname__}: write the "
                        f"exercise yourself (subclass Function or nn.Module)")
    return None


# the exercises that rewrite one of tinydense's modules (lesson 7): name -> the module file holding it
MODULES = {"DenseLayer": "tinydense.models.densenet_blocks", "DenseBlock": "tinydense.models.densenet_blocks",
           "Transition": "tinydense.models.densenet_blocks"}


def _library_class(name):
    """The library's class (a Function of ``OPS`` or a module of ``MODULES``) that exercise ``name``
    rewrites, or None."""
    where = OPS.get(name) or MODULES.get(name)
    return getattr(importlib.import_module(where), name, None) if where else None


def run_checks(job, namespace, exercises, hidden, write):
    """Check every exercise (and, once it passes, its hidden tests); ``write`` sends each verdict
    (a dict) to the grader."""
    guarded = snapshot()
    for name, check in exercises.items():
        obj = namespace.get(name)
        record = {"exercise": name}
        if obj is None:
            why = job["missing"].get(name) or f"the submission defines no {name}"
            write(dict(record, result="FAIL", message=why, output=""))
            continue
        copied = _copied(obj, name)
        if copied:
            write(dict(record, result="FAIL", message=f"copied: {copied}.", output=""))
            continue
        library = _library_class(name) if isinstance(obj, type) else None
        hits, undo = set(), []
        if library is not None and library is not obj:
            undo = _tripwire(library, obj, hits)
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), time_limit(job["cell_timeout"]):
                ok, title, message = check(obj)
                if ok and name in hidden:                  # the instructors' extra cases
                    ok, _, more = hidden[name](obj)
                    message = message if ok else f"a hidden test failed: {more}"
        except CellTimeout:
            ok, message = False, f"the check did not finish within the per-cell limit of {job['cell_timeout']:g} s"
        except BaseException as e:
            ok, message = False, f"the check stopped: {type(e).__name__}: {e}"
        finally:
            for cls, attr, original in reversed(undo):
                if original is _MISSING:
                    delattr(cls, attr)
                else:
                    setattr(cls, attr, original)
        changed = restore(guarded)
        if changed:
            ok, message = False, (f"your code changed {', '.join(sorted(set(changed))[:5])} while it was checked; "
                                  f"a submission may not change the library, NumPy or builtins")
        elif hits:
            ok, message = False, (f"copied: your {name} calls tinydense's own {', '.join(sorted(hits))}; "
                                  f"write the computation yourself")
        printed = "".join(line for line in out.getvalue().splitlines(keepends=True)   # the checks' own verdicts
                          if not line.startswith(("PASS ", "FAIL ", "  hint: ", "  where to look: ")))
        write(dict(record, result="PASS" if ok else "FAIL", message=" ".join(str(message).split()),
                   output=printed[-4000:]))


def capstone_images():
    """(training batches, held-out (images, labels) or None, what the accuracy is measured on): 16 images of
    CIFAR-10's test split to train on and the next 32 to score, when $TINYDENSE_DATA holds CIFAR-10 (the
    grader sets it from --data-dir); else two batches of random 8x8 images, scored on themselves."""
    from ..data.cifar import load_cifar, missing_files
    root = os.environ.get("TINYDENSE_DATA")
    if root and not missing_files("cifar10", root):
        data = load_cifar("cifar10", root, train=False)
        mean, std = data.channel_stats()
        x = (data.images[:48] / 255.0 - mean[:, None, None]) / std[:, None, None]
        y = data.labels[:48]
        if len(y) == 48:
            return ([(x[:8], y[:8]), (x[8:16], y[8:16])], (x[16:], y[16:]),
                    "32 real CIFAR-10 test images it did not train on")
    r = np.random.default_rng(0)
    return ([(r.standard_normal((4, 3, 8, 8)), r.integers(0, 10, 4)) for _ in range(2)], None,
            "its training batches, synthetic random images (give the grader --data-dir for CIFAR-10)")


def compare(job, namespace, checks, images):
    """The capstone's verdict: a DenseNet trained on the workspace's ops against the library's, step for
    step (MATCH or DIVERGED), with the ops that were the student's and the network's accuracy on
    ``images`` (capstone_images(), read before the submission ran)."""
    guarded = snapshot()
    batches, held_out, scored_on = images
    ops = {name: namespace[name] for name in OPS if isinstance(namespace.get(name), type)
           and not _copied(namespace[name], name)}
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), time_limit(job["cell_timeout"]):
            result = checks.compare_training(ops, batches, depth=10, growth_rate=4, held_out=held_out)
    except CellTimeout:
        result = None
        why = f"the training comparison did not finish within the per-cell limit of {job['cell_timeout']:g} s"
    except BaseException as e:
        result, why = None, f"the training comparison stopped: {type(e).__name__}: {e}"
    changed = restore(guarded)
    record = {"exercise": "training", "output": out.getvalue()[-4000:]}
    if changed or result is None:
        return dict(record, result="FAIL", message=why if result is None else
                    f"your code changed {', '.join(sorted(set(changed))[:5])} while it trained")
    facts = (f"DenseNet-BC (depth 10, k 4, float64) on your {', '.join(result.yours) or 'none of your ops'}: "
             f"{'MATCH' if result.match else f'DIVERGED at step {result.step}'} (largest relative difference "
             f"{result.difference:.1e}); accuracy {result.accuracy:.1%} on {scored_on}")
    if not result.yours:
        return dict(record, result="FAIL", message=facts + "; none of your ops ran (all stubs or copies), so the "
                                                           "MATCH says nothing")
    return dict(record, result="PASS" if result.match else "FAIL", message=facts,
                match=bool(result.match), accuracy=result.accuracy, difference=result.difference)


def main(job_file, fd):
    with open(job_file) as fh:
        job = json.load(fh)
    channel = os.fdopen(int(fd), "w", buffering=1)

    def write(record):
        channel.write(json.dumps(record) + "\n")
        channel.flush()

    for name in ("tinydense.functional", "tinydense.nn", "tinydense.models", "tinydense.optim", "numpy.testing"):
        importlib.import_module(name)           # before the submission runs: the snapshot holds the real ones
    from . import grade
    images = capstone_images() if job["kind"] == "workspace" else None    # before the submission runs
    guarded = snapshot()
    namespace = {"__name__": "__main__", "__builtins__": builtins, "__file__": job.get("file", "")}
    for source, filename in job["setup"]:                    # the instructors' imports
        problem = _run_code(source, filename, namespace, job["cell_timeout"])
        if problem:
            raise RuntimeError(f"the instructors' setup failed: {problem}")
    job.setdefault("missing", {})
    log = io.StringIO()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        for name, source, filename in job["code"]:           # the submission
            problem = _run_code(source, filename, namespace, job["cell_timeout"])
            if problem:
                for exercise in (job["defines"].get(name) or [name]):
                    job["missing"][exercise] = problem
    changed = restore(guarded)
    if changed:
        write({"exercise": "*", "result": "NOTE",
               "message": f"the submission changed {', '.join(sorted(set(changed))[:5])}: put back before checking",
               "output": ""})
    modules = grade.load_checks(job["course"])          # the instructors' copy, after the student's code
    checks = modules[job["module"]]
    exercises = checks.EXERCISES if job["kind"] == "notebook" else checks.WORKSPACE_CHECKS
    hidden = getattr(modules.get("hidden_checks"), "HIDDEN", {})
    run_checks(job, namespace, exercises, hidden, write)
    if job["kind"] == "workspace":
        write(compare(job, namespace, checks, images))
    write({"exercise": "", "result": "DONE", "message": "", "output": log.getvalue()[-4000:]})


if __name__ == "__main__":
    main(*sys.argv[1:3])
