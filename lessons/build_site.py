"""Build the course as a static website: the twelve lessons, executed, with README's course material.

    python lessons/build_site.py                   # every lesson, into build/site/
    python lessons/build_site.py --out DIR         # somewhere else (DIR/index.html is the entry)
    python lessons/build_site.py --only 01 08      # just these lessons (quicker, for editing)
    python lessons/build_site.py --full            # student settings instead of the fast ones

Maintained tools do the work: jupytext reads each percent-format source in
``lessons/source/`` into a notebook (``build_notebooks.student_notebook``), nbclient executes it in ``lessons/`` (as a student
would run it), and Sphinx with myst-nb and the sphinx-book-theme renders the pages, with a
sidebar, search, and math typeset by a copy of MathJax served from the site itself
(``lessons/site/conf.py``). What is the course's own is done here:

- the pages show the student notebooks (no cell tagged solution or answer-key), and no file of
  ``lessons/instructor/`` is copied into the site, even where a page links to one;
- exercise cells keep their tags, which become CSS classes that ``lessons/site/_static/course.css``
  draws as exercises and checks;
- each lesson links to its notebook without outputs and to its percent-format source;
- the notebooks run with ``TINYDENSE_LESSONS_FAST=1`` unless ``--full``, on ``$TINYDENSE_DATA``
  when it is set, else on a small generated stand-in of CIFAR-10 (the tests' writer), and with a
  scratch workspace, so that the build writes nothing into the checkout but its output.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat

LESSONS = Path(__file__).resolve().parent
ROOT = LESSONS.parent
INSTRUCTOR = LESSONS / "instructor"                        # never published
SOURCES = LESSONS / "source"
CONF = LESSONS / "site"
DEFAULT_OUT = ROOT / "build" / "site"
sys.path.insert(0, str(LESSONS))
from build_notebooks import student_notebook  # noqa: E402  (jupytext; no solution or answer-key cells)

LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")        # the target of a markdown link
NOTEBOOK_NAME = re.compile(r"`(\d\d_\w+)\.ipynb`")         # a lesson named in lessons/README.md


def lesson_sources(only=()) -> list[Path]:
    """The sources of the lessons to build: all, or those whose names start with one of ``only``."""
    sources = sorted(SOURCES.glob("[0-9][0-9]_*.py"))
    if only:
        sources = [s for s in sources if any(s.stem.startswith(o) for o in only)]
        if not sources:
            raise ValueError(f"no lesson matches {' '.join(only)}: the lessons are "
                             + ", ".join(s.stem for s in sorted(SOURCES.glob('[0-9][0-9]_*.py'))))
    return sources


def execution_env(scratch: Path, full: bool) -> dict:
    """The environment the lessons run in (set in os.environ, which the kernels inherit)."""
    env = {"MPLBACKEND": "Agg", "TINYDENSE_WORKSPACE": str(scratch / "my_ops.py"),
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    if not full:
        env["TINYDENSE_LESSONS_FAST"] = "1"
    if os.environ.get("TINYDENSE_DATA"):
        env["TINYDENSE_DATA"] = os.environ["TINYDENSE_DATA"]
    else:                                   # the tests' stand-in: learnable, no download
        sys.path.insert(0, str(ROOT / "tests"))
        from train_helpers import write_cifar
        write_cifar(scratch / "data", per_file=64, test_size=200, seed=0, learnable=True)
        env["TINYDENSE_DATA"] = str(scratch / "data")
    return env


def execute(nb: nbformat.NotebookNode, name: str, timeout: int = 1800) -> nbformat.NotebookNode:
    """Run the notebook top to bottom in lessons/; any error stops the build, naming the cell."""
    from nbclient import NotebookClient
    start = time.perf_counter()
    NotebookClient(nb, kernel_name="python3", timeout=timeout,
                   resources={"metadata": {"path": str(LESSONS)}}).execute()
    print(f"executed {name} in {time.perf_counter() - start:.0f} s", flush=True)
    return nb


def download_note(stem: str, fast: bool, data_note: str) -> nbformat.NotebookNode:
    """The box at the top of a lesson: its files, and the settings its outputs were made with."""
    settings = ("the fast settings (`TINYDENSE_LESSONS_FAST=1`, the tests' small sizes)" if fast
                else "the student settings")
    return nbformat.v4.new_markdown_cell(
        ":::{admonition} Run this lesson yourself\n:class: tip\n"
        f"Download {{download}}`the notebook <downloads/{stem}.ipynb>` (without outputs) or its "
        f"percent-format {{download}}`source <downloads/{stem}.py>`, put it in `lessons/` of a "
        "tinydense checkout and run it there (`pip install -e \".[lessons]\"`, then `jupyter lab`). "
        f"The outputs below were made with {settings} on {data_note}: your numbers will differ.\n:::",
        metadata={"tags": ["site-download"]})


def copy_page(source: Path, target: Path, srcdir: Path, text: str | None = None) -> list[str]:
    """Copy a markdown page and the repository files it links to (mirrored under ``srcdir``, so
    its relative links still hold). Returns the docnames of the linked markdown pages."""
    text = source.read_text() if text is None else text
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    pages = []
    for link in LINK.findall(text):
        if "://" in link or link.startswith("mailto:"):
            continue
        linked = (source.parent / link).resolve()
        if not linked.is_file() or ROOT not in linked.parents or INSTRUCTOR in linked.parents:
            continue
        relative = linked.relative_to(ROOT)
        if (srcdir / relative).exists():
            continue
        if linked.suffix == ".md":
            pages.append(str(relative.with_suffix("")))
            pages += copy_page(linked, srcdir / relative, srcdir)
        else:
            (srcdir / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(linked, srcdir / relative)
    return pages


def write_sources(srcdir: Path, sources: list[Path], full: bool, data_note: str) -> None:
    """Lay out Sphinx's source folder: the two READMEs, the executed lessons, their downloads."""
    built = [s.stem for s in sources]
    index = NOTEBOOK_NAME.sub(lambda m: f"[`{m[1]}.ipynb`]({m[1]}.ipynb)" if m[1] in built else m[0],
                              (LESSONS / "README.md").read_text())
    extra = copy_page(LESSONS / "README.md", srcdir / "lessons" / "README.md", srcdir, index)
    toctree = ["", "```{toctree}", ":hidden:", ":caption: The course", "", "lessons/README"]
    toctree += [f"lessons/{stem}" for stem in built]
    home = (ROOT / "README.md").read_text()
    more = [p for p in copy_page(ROOT / "README.md", srcdir / "README.md", srcdir) + extra
            if p not in ("README", "lessons/README")]
    toctree += ["```", ""]
    if more:
        toctree += ["```{toctree}", ":hidden:", ":caption: More", ""] + more + ["```", ""]
    (srcdir / "README.md").write_text(home + "\n".join(toctree))
    downloads = srcdir / "lessons" / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    for source in sources:
        nb = student_notebook(source)
        nbformat.write(nb, downloads / f"{source.stem}.ipynb")
        shutil.copyfile(source, downloads / source.name)
        nb = execute(nb, source.stem)
        nb.cells.insert(1, download_note(source.stem, not full, data_note))
        nbformat.write(nb, srcdir / "lessons" / f"{source.stem}.ipynb")


def build(out=DEFAULT_OUT, only=(), full=False) -> Path:
    """Build the site into ``out`` (replaced); returns the path of its entry page."""
    from sphinx.cmd.build import build_main
    out = Path(out).resolve()
    sources = lesson_sources(only)
    with tempfile.TemporaryDirectory(prefix="tinydense-site-") as scratch:
        scratch = Path(scratch)
        srcdir = scratch / "src"
        saved = dict(os.environ)
        try:
            os.environ.update(execution_env(scratch, full))
            data_note = ("the data in `$TINYDENSE_DATA`" if saved.get("TINYDENSE_DATA")
                         else "a small generated stand-in of CIFAR-10 (images with their class drawn in)")
            write_sources(srcdir, sources, full, data_note)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        if out.exists():
            shutil.rmtree(out)
        status = build_main(["-b", "html", "-q", "-E", "-W", "--keep-going", "-c", str(CONF), "-d", str(scratch / "doctrees"),
                             str(srcdir), str(out)])
        if status:
            raise RuntimeError(f"sphinx-build failed (exit {status}): a warning above (a broken link, "
                               "a missing file) or an error")
    (out / "index.html").write_text(          # GitHub Pages and http.server open index.html
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        '<meta http-equiv="refresh" content="0; url=README.html"><title>tinydense course</title></head>'
        '<body><a href="README.html">The tinydense course</a></body></html>\n')
    (out / ".nojekyll").write_text("")        # GitHub Pages: serve _static/ as it is
    return out / "index.html"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (replaced; default build/site)")
    parser.add_argument("--only", nargs="+", default=(), metavar="NN", help="build only these lessons")
    parser.add_argument("--full", action="store_true", help="run the lessons at student settings")
    args = parser.parse_args(argv)
    try:
        entry = build(args.out, args.only, args.full)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote the site: {entry} (serve it with: python -m http.server -d {entry.parent})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
