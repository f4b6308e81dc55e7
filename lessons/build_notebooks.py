"""Build the lesson notebooks from their sources.

Each lesson is written as a plain Python file in ``lessons/source/`` in the
"percent" format that VS Code, PyCharm and Spyder run cell by cell:

    # %% [markdown]
    # # A heading
    # Some text.
    #
    # %%
    x = 1                      (a code cell)

    # %% tags=["exercise-stub"]
    (a code cell with metadata tags)

This script turns ``source/NN_name.py`` into ``NN_name.ipynb`` without
outputs, so the notebooks in the repository are always clean and their
diffs readable in the sources. Edit the source, then run

    python lessons/build_notebooks.py          # rewrite every notebook
    python lessons/build_notebooks.py --check  # exit 1 if a notebook is stale
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import nbformat

LESSONS = Path(__file__).resolve().parent
SOURCES = LESSONS / "source"
HEADER = re.compile(r"^# %%(?P<markdown> \[markdown\])?(?: tags=(?P<tags>\[.*\]))?\s*$")


def parse_cells(text: str, name: str = "<source>"):
    """Split percent-format text into (kind, source, tags) triples."""
    cells, current = [], None
    for number, line in enumerate(text.splitlines(), start=1):
        header = HEADER.match(line)
        if header:
            tags = ast.literal_eval(header["tags"]) if header["tags"] else []
            current = ("markdown" if header["markdown"] else "code", [], tags)
            cells.append(current)
            continue
        if current is None:
            if line.strip():
                raise ValueError(f"{name}:{number}: text before the first '# %%' cell marker")
            continue
        kind, lines, _ = current
        if kind == "markdown":
            if line and not line.startswith("#"):
                raise ValueError(f"{name}:{number}: a markdown line must start with '#': {line!r}")
            line = line[2:] if line.startswith("# ") else line[1:]
        lines.append(line)
    return [(kind, "\n".join(lines).strip("\n"), tags) for kind, lines, tags in cells]


def build(source: Path) -> nbformat.NotebookNode:
    """The notebook for one source file (deterministic: fixed cell ids, no outputs)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for index, (kind, text, tags) in enumerate(parse_cells(source.read_text(), source.name)):
        metadata = {"tags": tags} if tags else {}
        if kind == "markdown":
            cell = nbformat.v4.new_markdown_cell(text, metadata=metadata)
        else:
            cell = nbformat.v4.new_code_cell(text, metadata=metadata)
        cell.id = f"{source.stem[:2]}-{index:03d}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def notebook_path(source: Path) -> Path:
    return LESSONS / f"{source.stem}.ipynb"


def render(source: Path) -> str:
    """The exact text written to the notebook file."""
    return nbformat.writes(build(source)) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    check = "--check" in argv
    stale = []
    for source in sorted(SOURCES.glob("[0-9][0-9]_*.py")):
        target, text = notebook_path(source), render(source)
        if target.exists() and target.read_text() == text:
            continue
        if check:
            stale.append(target.name)
        else:
            target.write_text(text)
            print(f"wrote {target.relative_to(LESSONS.parent)}")
    if stale:
        print("stale notebooks (run python lessons/build_notebooks.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
