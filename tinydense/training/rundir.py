"""The run directory: who may write into it, and what is left of interrupted writes.

A run directory ``DIR`` holds one run: a new run needs a new or empty directory
(``exist_ok=True``: one whose other files it leaves alone, never one holding files
of its own names), ``resume=True`` needs its ``last.npz``; both are checked before
anything is read or written. While a run writes, ``DIR/.tinydense.lock`` keeps a
second one out (:class:`RunLock`). Every file of a run is written atomically
(:mod:`tinydense.files`); an interrupted write leaves only a temporary file, which
the next run in the directory removes (:func:`remove_stale_temp_files`).
"""
from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

from ..text import listing
from . import sharing

try:                      # POSIX; without it (Windows) a run directory is not locked
    import fcntl
except ImportError:       # pragma: no cover
    fcntl = None

RUN_FILES = ("config.json", "metrics.csv", "last.npz", "best.npz", "curves.png")   # what a run writes
LOCK_FILE = ".tinydense.lock"


class RunLocked(ValueError):
    """Another process is writing to the run directory."""


def remove_stale_temp_files(directory) -> list:
    """Delete what interrupted atomic writes of the run's own files left in
    ``directory`` (``.last.npz.*.tmp``, ``.metrics.csv.*.tmp`` ... for each of
    :data:`RUN_FILES`) and nothing else; returns their names. Call it only while
    holding the run's lock: another run's writes in progress look the same."""
    removed = []
    for name in RUN_FILES:
        for path in Path(directory).glob(f".{name}.*.tmp"):
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return sorted(removed)


def own_entry(name) -> bool:
    """A file name in a run directory that tinydense wrote and may replace: the lock or a temporary file."""
    return name == LOCK_FILE or any(name.startswith(f".{f}.") and name.endswith(".tmp") for f in RUN_FILES)


def check_new_run_dir(out, config, exist_ok=False) -> None:
    """Raise ValueError unless a new run with ``config`` may write into ``out``:
    a directory that does not exist yet or is empty; one that holds only the
    ``config.json`` of a run with the same configuration that saved no epoch (it
    was stopped in its first epoch); with ``exist_ok``, also one with unrelated
    files, which the run leaves alone. A file of one of :data:`RUN_FILES` names
    is never overwritten by a new run, ``exist_ok`` or not."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a directory")
    if not out.is_dir():
        return
    entries = [p.name for p in out.iterdir() if not own_entry(p.name)]
    ours = [n for n in RUN_FILES if n in entries]
    if "last.npz" in ours or "metrics.csv" in ours:
        raise ValueError(f"{out} already holds a run ({', '.join(ours)}): pass --resume to continue it, "
                         f"or choose another --out directory")
    if "config.json" in ours:
        difference = config_difference(out / "config.json", config)
        if difference:
            raise ValueError(f"{out / 'config.json'} is not this run's configuration ({difference}) and a new "
                             f"run would overwrite it: choose another --out directory")
        ours.remove("config.json")
    if ours:
        raise ValueError(f"{out} holds {', '.join(ours)}, which a new run would overwrite, but no run to "
                         f"resume (no last.npz): choose another --out directory")
    others = [n for n in entries if n not in RUN_FILES]
    if others and not exist_ok:
        raise ValueError(f"--out {out} is not empty and not a tinydense run (it holds {listing(others)}): "
                         f"choose a new or empty directory, or pass --out-exists-ok to write the run's files "
                         f"({', '.join(RUN_FILES)}) beside these, which are left alone")


def check_writable(out) -> None:
    """Raise ValueError naming ``--out`` unless a file can be created in ``out`` (or, if it
    does not exist yet, in the nearest folder above it that does): checked before any
    data are read, so that a read-only place is found at once. Creates nothing that stays."""
    out = Path(out)
    folder = out
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return                                    # check_new_run_dir names a file where a folder should be
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ValueError(f"--out {out}: cannot write in {folder} ({e.strerror or e}): choose a folder you can "
                         f"write to") from None


def config_difference(path, config) -> str:
    """'' if ``path`` holds ``config`` (as a run writes it to config.json), else what differs."""
    try:
        saved = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        return f"not a tinydense configuration: {type(e).__name__}"
    if not isinstance(saved, dict) or "model" not in saved:
        return "not a tinydense configuration"
    saved.pop("data_dir", None)
    saved.pop("threads", None)
    wanted = json.loads(json.dumps(config))
    keys = sorted(set(saved) | set(wanted))
    differing = [f"{k} {saved.get(k)!r} there, {wanted.get(k)!r} here" for k in keys if saved.get(k) != wanted.get(k)]
    return "; ".join(differing[:3])


def stamp(path):
    """What identifies one version of a file: inode, size and modification time."""
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


class RunLock:
    """An exclusive lock on a run directory for as long as a run writes to it.

    ``fcntl.flock`` on ``DIR/.tinydense.lock``, which records the holder's pid,
    host and start time so that a second run can say who has it. The kernel
    releases the lock when its process ends, however it ends (even SIGKILL), so
    a lock file left behind by a killed run is simply taken over. ``release()``
    deletes the file. While locked, the run is also counted in :mod:`.sharing`.
    Without ``fcntl`` (Windows) nothing is locked."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self.fd = None
        self.entry = None                         # this run's entry in sharing.RUNS_DIR, while locked

    def holder(self) -> str:
        """Who holds the lock, as recorded in the lock file."""
        try:
            info = json.loads(self.path.read_text())
            return f"pid {info['pid']} on {info['host']}, since {info['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "a process that has not yet recorded its pid"

    def _refuse(self):
        raise RunLocked(f"{self.directory} is in use by another tinydense run ({self.holder()}): wait for it to "
                        f"finish or stop it, or choose another --out directory")

    def held_elsewhere(self) -> bool:
        """Whether another process holds the lock now (changes nothing)."""
        if fcntl is None or not self.path.is_file():
            return False
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)                         # closing also drops the shared lock
        return False

    def check(self) -> None:
        """Raise :class:`RunLocked` if another process holds the lock (changes nothing)."""
        if self.held_elsewhere():
            self._refuse()

    def acquire(self) -> "RunLock":
        """Take the lock (the directory must exist), or raise :class:`RunLocked`."""
        if fcntl is None:
            return self
        for attempt in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if attempt < 2:                  # perhaps only another run's check(), a moment long
                    time.sleep(0.05)
                    continue
                self._refuse()
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:            # released (and deleted) by its holder meanwhile
                same = False
            if not same:
                os.close(fd)
                continue
            info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "command": " ".join(sys.argv)}
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(info) + "\n").encode())
            self.fd = fd
            self.entry = sharing.register()       # other runs count this one
            return self
        self._refuse()

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)    # while still holding it: a waiting process re-checks the inode
            os.close(self.fd)
            self.fd = None
            sharing.unregister(self.entry)
            self.entry = None
