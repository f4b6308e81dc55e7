"""The course's measured claims agree with its own tables (issue 19, "the course tells the truth").

Lesson 10 and README compare DenseNet-BC-100 with ResNet-164 in a table with one column per
network and a last column of their ratio, one row per framework for the step time and for the
peak memory. The prose then states the ratios ("DenseNet-BC's step takes **0.53x** ResNet-164's
in tinydense") and the direction ("**slower** per step than ResNet-164 in PyTorch"). This test
recomputes every ratio from the table's own cells and checks every such sentence against them,
so an edited number or a conclusion copied from an older table fails here."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "lessons" / "source" / "10_memory.py", ROOT / "README.md"]
HEADER = "DenseNet-BC / ResNet-164"


def _number(cell):
    """The first number in a table cell ('2,745 MB', '2.15 s', '**0.53**') as a float."""
    match = re.search(r"[\d,]*\.?\d+", cell)
    return float(match[0].replace(",", "")) if match else None


def comparison_table(text):
    """{row label: (DenseNet-BC value, ResNet-164 value, stated ratio)} of the table whose last
    column is HEADER (markdown rows, possibly inside '# ' comment lines)."""
    lines = [re.sub(r"^\s*#?\s*", "", line) for line in text.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("|") and HEADER in line)
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = tuple(_number(c) for c in cells[1:4])
    return rows


def ratio_row(rows, what, framework):
    label = next(label for label in rows if label.startswith(what) and framework in label)
    return rows[label]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_every_ratio_is_its_rows_quotient(path):
    rows = comparison_table(path.read_text())
    checked = 0
    for label, (dense, res, stated) in rows.items():
        if stated is None or dense is None or res is None:
            continue
        # the cells are rounded: allow their rounding (half a unit of the last digit) and the ratio's
        assert abs(dense / res - stated) <= 0.006 + 0.01 * stated, (label, dense, res, stated)
        checked += 1
    assert checked >= 4, rows


def contradictions(text):
    """(claims checked, the claims of ``text`` that its comparison table does not bear out)."""
    rows = comparison_table(text)
    claims, wrong = 0, []
    for value, framework in re.findall(r"DenseNet-BC's step takes \*\*([\d.]+)x\*\* ResNet-164's in "
                                       r"(PyTorch|tinydense)", text):
        claims += 1
        if abs(float(value) - ratio_row(rows, "training step", framework)[2]) > 0.005:
            wrong.append(f"step ratio {value} in {framework}")
    for direction, framework in re.findall(r"\*\*(faster|slower)\*\* per step than ResNet-164 in "
                                           r"(PyTorch|tinydense)", text):
        claims += 1
        if (ratio_row(rows, "training step", framework)[2] < 1) != (direction == "faster"):
            wrong.append(f"{direction} in {framework}")
    for value, framework in re.findall(r"peak memory is \*\*([\d.]+)x\*\* ResNet-164's in (PyTorch|tinydense)",
                                       text):
        claims += 1
        if abs(float(value) - ratio_row(rows, "peak memory", framework)[2]) > 0.005:
            wrong.append(f"memory ratio {value} in {framework}")
    return claims, wrong


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_the_prose_states_what_the_table_measured(path):
    claims, wrong = contradictions(path.read_text())
    assert not wrong
    assert claims >= 5, f"{path.name}: the comparison's claims are no longer written in the checked form"


def test_a_contradicting_claim_fails():
    """The check itself: a table where DenseNet-BC is slower, with prose that calls it faster."""
    table = f"""
| | DenseNet-BC-100 | ResNet-164 | {HEADER} |
| --- | ---: | ---: | ---: |
| training step, PyTorch | 2.80 s | 1.25 s | 2.24 |
| peak memory of one step, PyTorch | 1,000 MB | 2,000 MB | 0.50 |
"""
    good = "DenseNet-BC's step takes **2.24x** ResNet-164's in PyTorch: **slower** per step than ResNet-164 in PyTorch."
    assert contradictions(table + good) == (2, [])
    bad = "DenseNet-BC's step takes **0.45x** ResNet-164's in PyTorch, **faster** per step than ResNet-164 in PyTorch; "
    assert contradictions(table + bad + "its peak memory is **2.00x** ResNet-164's in PyTorch")[1] == [
        "step ratio 0.45 in PyTorch", "faster in PyTorch", "memory ratio 2.00 in PyTorch"]
