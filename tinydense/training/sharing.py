"""Sharing the machine: other tinydense runs, the load average, and the ``--threads`` advice.

NumPy's BLAS library starts one thread per core. Two runs at once on one machine
(or one beside any busy program) then fight over the cores and each slows down
many times over (2.4 to 12 times, measured), far more than the half each would
expect. A run cannot see that from inside, so before it starts it looks around:

* every run, while it holds its run directory's lock, also holds a lock on a file
  of its own in one folder per user (``RUNS_DIR``), so the others can count it;
* the 1-minute load average counts everything else that is running.

:func:`oversubscription` turns what it saw into a warning with the advice
``--threads CORES/RUNS``, or None when the cores are free.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

try:                      # POSIX; without it (Windows) runs are not counted
    import fcntl
except ImportError:       # pragma: no cover
    fcntl = None

RUNS_DIR = Path(tempfile.gettempdir()) / f"tinydense-runs-{os.getuid() if hasattr(os, 'getuid') else 'user'}"


def register():
    """Hold a lock on a new file in RUNS_DIR for as long as the returned (fd, path) is
    open (the kernel drops it when the process ends); None if that is not possible."""
    if fcntl is None:
        return None
    try:
        RUNS_DIR.mkdir(mode=0o700, exist_ok=True)
        fd, path = tempfile.mkstemp(dir=RUNS_DIR, prefix=f"{os.getpid()}-", suffix=".run")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return None
    return fd, path


def unregister(entry) -> None:
    if entry is not None:
        fd, path = entry
        Path(path).unlink(missing_ok=True)
        os.close(fd)


def other_runs(own=None) -> int:
    """How many other tinydense runs hold their lock now (``own``: this run's entry, not
    counted). Files left by runs that ended are removed."""
    if fcntl is None or not RUNS_DIR.is_dir():
        return 0
    count = 0
    for path in RUNS_DIR.glob("*.run"):
        if own is not None and str(path) == own[1]:
            continue
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            path.unlink(missing_ok=True)          # nobody holds it: its run has ended
        except BlockingIOError:
            count += 1
        finally:
            os.close(fd)
    return count


def oversubscription(threads, cpus, others, load):
    """A warning when this run's ``threads`` BLAS threads will not have ``cpus`` cores to
    themselves: ``others`` other tinydense runs hold their locks, or the load average
    ``load`` (of the processes already running) leaves fewer than ``threads`` cores free.
    None when the cores are free."""
    threads, cpus = threads or cpus, cpus or 1
    if others:
        what = f"{others} other tinydense run{'s' if others > 1 else ''} {'are' if others > 1 else 'is'} running"
        share = max(1, cpus // (others + 1))
    elif load is not None and load + threads > cpus + 0.5:
        what = f"the machine is busy (load average {load:.1f} on {cpus} cores)"
        share = max(1, int(cpus - load + 0.5))
    else:
        return None
    return (f"warning: {what}, and this run starts {threads} BLAS thread{'s' if threads > 1 else ''}: runs that "
            f"share cores slow each other down many times over. Give each run its share of the {cpus} cores, "
            f"e.g. --threads {share}")
