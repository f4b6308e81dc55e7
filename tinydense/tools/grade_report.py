"""What ``tinydense grade`` writes: whose each file is, points, the CSV, a feedback file per
student, and Gradescope's ``results.json``.

Rows are dicts with the keys of FIELDS plus ``output`` (what the submission printed while it was
checked: it goes into the feedback, never into a verdict).
"""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from ..files import write_atomic

FIELDS = ("student", "file", "exercise", "result", "points", "max_points", "message")
# Gradescope's autograder specification (gradescope-autograders.readthedocs.io/en/latest/specs/)
VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")


def read_roster(path):
    """{key: student} from a CSV with the columns ``key`` and ``student`` (e.g. a learning platform's
    submission id and the student's name or login)."""
    with open(path, newline="") as fh:
        table = list(csv.DictReader(fh))
    if not table or not {"key", "student"} <= set(table[0]):
        raise ValueError(f"{path}: a roster needs a header with the columns key and student")
    return {row["key"].strip(): row["student"].strip() for row in table}


def read_points(path):
    """{exercise: points} from a JSON object of non-negative numbers (``"default"`` for the rest)."""
    try:
        points = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the points: {e}") from None
    if not isinstance(points, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
                                               for v in points.values()):
        raise ValueError(f"{path}: points must be a JSON object of exercise -> a number >= 0, got {points!r:.200}")
    return points


def identify(path, roots, pattern=None, roster=None):
    """The student a file is from: ``pattern``'s group ``student`` (or ``key``, looked up in ``roster``)
    searched in the path relative to the folder it was found in; without a pattern, that key is the
    first folder below the folder given (one folder per student), else the file name's stem."""
    path = Path(path)
    relative = next((path.relative_to(root) for root in map(Path, roots)
                     if root.is_dir() and root in path.parents), Path(path.name))
    if pattern is not None:
        match = re.search(pattern, relative.as_posix())
        key = match and (match.groupdict().get("student") or match.groupdict().get("key"))
        if not key:
            return None
    else:
        key = relative.parts[0] if len(relative.parts) > 1 else relative.stem
    if roster is not None:
        return roster.get(key)
    return key


def check_pattern(pattern):
    try:
        groups = re.compile(pattern).groupindex
    except re.error as e:
        raise ValueError(f"--pattern {pattern!r} is not a regular expression: {e}") from None
    if not {"student", "key"} & set(groups):
        raise ValueError(f"--pattern {pattern!r} needs a named group (?P<student>...) or (?P<key>...)")


def score(rows, points):
    """Fill in points and max_points of every row (1 point an exercise unless ``points`` says)."""
    points = points or {}
    for row in rows:
        worth = float(points.get(row["exercise"], points.get("default", 1)))
        row["max_points"] = worth
        row["points"] = worth if row["result"] == "PASS" else 0.0
    return rows


def write_csv(out, rows):
    """The CSV, written atomically (files.write_atomic: a temporary file beside ``out``, fsync, rename)."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(FIELDS)
    writer.writerows([[row[f] for f in FIELDS] for row in rows])
    write_atomic(out, text.getvalue())


def _safe_name(student):
    return re.sub(r"[^\w.@-]+", "_", student).strip("._") or "unknown"


def write_feedback(folder, rows):
    """One text file per student in ``folder``: every exercise, its verdict and points, what to fix,
    and what the submission printed while it was checked. Returns the files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    by_student = {}
    for row in rows:
        by_student.setdefault(row["student"], []).append(row)
    written = []
    for student, mine in by_student.items():
        got, total = sum(r["points"] for r in mine), sum(r["max_points"] for r in mine)
        lines = [f"Feedback for {student}: {got:g} of {total:g} points", ""]
        for row in mine:
            lines.append(f"{row['result']}  {row['exercise']} ({row['points']:g}/{row['max_points']:g})"
                         f"  [{Path(row['file']).name}]")
            lines.append(f"    {row['message']}")
            if row.get("output", "").strip():
                lines.append("    what your code printed while it was checked (last lines):")
                lines += [f"      {line}" for line in row["output"].strip().splitlines()[-8:]]
            lines.append("")
        path = folder / f"{_safe_name(student)}.txt"
        write_atomic(path, "\n".join(lines) + "\n")
        written.append(path)
    return written


def gradescope_results(rows, seconds):
    """Gradescope's results.json for one submission: the total score, and one test per exercise with its
    score, max_score, status, name, output and visibility."""
    tests = [{"name": f"{row['exercise']} ({Path(row['file']).name})", "score": row["points"],
              "max_score": row["max_points"], "status": "passed" if row["result"] == "PASS" else "failed",
              "output": row["message"] + (f"\n\nWhat your code printed:\n{row['output'].strip()[-2000:]}"
                                          if row.get("output", "").strip() else ""),
              "visibility": "visible"} for row in rows]
    return {"score": sum(t["score"] for t in tests), "execution_time": round(seconds, 3),
            "output": f"{sum(r['result'] == 'PASS' for r in rows)} of {len(rows)} exercises PASS",
            "visibility": "visible", "stdout_visibility": "hidden", "tests": tests}


def write_json(path, obj):
    write_atomic(path, json.dumps(obj, indent=1))
