"""Download a CIFAR archive, check it, and unpack it safely and atomically.

The steps, each guarding against one way things go wrong:

1. stream the archive over HTTPS into a hidden temporary file next to the
   target, with a progress bar, hashing it on the way (MD5, the checksum
   the CIFAR page publishes);
2. refuse it if the size or checksum is wrong (a truncated or tampered download);
3. unpack it into a hidden temporary directory, refusing any member that is
   not a plain file or directory or whose path would land outside it
   (``../`` tricks, absolute paths, links);
4. move the finished folder into place with one ``os.replace``.

Whatever fails, including Ctrl-C, the temporary files are removed, so a
later run never finds a half-written file that looks valid, and so are the
directories the download created for them.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from .specs import CIFAR_PAGE, cifar_spec


class DownloadError(RuntimeError):
    """The data set could not be fetched or checked; the message says how to get it by hand."""


def download_cifar(name="cifar10", root="data", url=None, md5=None, progress=True) -> Path:
    """Fetch ``name``'s official archive into ``root`` and unpack it there.

    Returns the unpacked folder (e.g. ``root/cifar-10-batches-py``). An
    existing folder is never touched. ``url`` and ``md5`` default to the
    official ones (tests pass a ``file://`` URL and its checksum)."""
    spec = cifar_spec(name)
    url, md5 = url or spec.url, md5 or spec.md5
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("https", "file"):
        raise ValueError(f"refusing to download over {scheme or 'no scheme'!r}: use an https:// URL, got {url!r}")
    root = Path(root)
    target = root / spec.folder
    if target.exists():
        return target
    by_hand = (f"Download {spec.archive} by hand from {CIFAR_PAGE} (\"python version\"), check that "
               f"its MD5 is {spec.md5} and extract it into {root.resolve()} so that "
               f"{target.resolve()} exists")
    created = [p for p in (root, *root.parents) if not p.exists()]     # deepest first
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"cannot create the data directory {root}: {e}") from e
    try:
        fd, archive = tempfile.mkstemp(dir=root, prefix=f".{spec.archive}.", suffix=".part")
    except BaseException:
        _remove_empty(created)
        raise
    unpacked, done = None, False
    try:
        with os.fdopen(fd, "wb") as f:
            digest = _fetch(url, f, progress, spec.archive)
        if digest != md5:
            raise DownloadError(f"checksum mismatch for {url}: MD5 {digest}, expected {md5} "
                                f"(a corrupt or incomplete download). {by_hand}")
        unpacked = tempfile.mkdtemp(dir=root, prefix=f".{spec.folder}.")
        safe_extract(archive, unpacked)
        folder = Path(unpacked) / spec.folder
        if not folder.is_dir():
            raise DownloadError(f"{url} does not contain a {spec.folder}/ folder. {by_hand}")
        os.replace(folder, target)
        done = True
        return target
    except DownloadError:
        raise
    except (urllib.error.URLError, OSError, tarfile.TarError, EOFError) as e:
        raise DownloadError(f"could not download {spec.title} from {url}: {e}. {by_hand}") from e
    finally:
        os.unlink(archive)
        if unpacked is not None:
            shutil.rmtree(unpacked, ignore_errors=True)
        if not done:
            _remove_empty(created)


def _remove_empty(directories) -> None:
    """Remove the directories a failed download created (deepest first), as long as they are empty."""
    for d in directories:
        try:
            d.rmdir()
        except OSError:
            break


def _fetch(url, f, progress, label) -> str:
    """Copy ``url`` into the open file ``f``; return the MD5 hex digest."""
    md5 = hashlib.md5()
    with urllib.request.urlopen(url, timeout=60) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length else None
        received = 0
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                  desc=f"downloading {label}", disable=not progress) as bar:
            while chunk := response.read(1 << 20):
                f.write(chunk)
                md5.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received != total:
        raise DownloadError(f"the download of {url} stopped after {received} of {total} bytes")
    return md5.hexdigest()


def safe_extract(archive, dest) -> None:
    """Unpack the tar archive ``archive`` into ``dest``, refusing (before
    anything is written) members that are links or devices, or whose path
    is absolute or climbs out of ``dest``."""
    dest = Path(dest).resolve()
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for m in members:
            if not (m.isfile() or m.isdir()):
                raise DownloadError(f"refused to unpack {archive}: member {m.name!r} is not a plain "
                                    f"file or directory")
            path = (dest / m.name).resolve()
            if os.path.isabs(m.name) or (path != dest and dest not in path.parents):
                raise DownloadError(f"refused to unpack {archive}: member {m.name!r} would be "
                                    f"written outside {dest}")
        if hasattr(tarfile, "data_filter"):     # Python >= 3.11.4: the library's own checks too
            tar.extractall(dest, members=members, filter="data")
        else:
            tar.extractall(dest, members=members)
