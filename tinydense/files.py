"""Writing a file so that it is always whole: the old version or the new one.

``write_atomic(path, data)`` writes to a temporary file in the same folder
(``.NAME.XXXX.tmp``: same file system, so the rename below is one step), forces
it to the disk (``fsync``), renames it over ``path`` (``os.replace``, atomic on
POSIX and Windows) and forces the folder's entry to the disk too. A crash, a kill
or a full disk at any moment leaves either the previous file or the new one under
``path``, never half of one; what is left is at most the temporary file, which
its writer removes on an error (and a run removes on its next start). Every file
tinydense writes for a user (checkpoints, metrics, configurations, images, grades)
goes through here.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path, data) -> Path:
    """Write ``data`` to ``path`` atomically (see above) and return the path.

    ``data``: a ``str`` (written as UTF-8 text, newlines as given), ``bytes``, or a
    function ``write(f)`` that writes to the binary file object ``f``. The new file
    gets the permissions a plain ``open()`` would give it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)           # mkstemp's 0600 -> what open() would give
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _sync_folder(path.parent)
    return path


def _sync_folder(folder) -> None:
    """Force the folder's entries (the rename) to the disk, where the system allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:                             # e.g. Windows: folders cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:                             # some file systems do not sync folders
        pass
    finally:
        os.close(fd)
