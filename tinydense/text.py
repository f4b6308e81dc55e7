"""Numbers for people, in one style for every message: durations, counts, short lists."""
from __future__ import annotations


def format_duration(seconds) -> str:
    """A duration for people: '0.4 s', '45 s', '12 min 5 s', '3 h 20 min', '18 d 23 h'."""
    if seconds < 9.95:
        return f"{seconds:.1f} s"
    s = int(round(seconds))
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "min", 60), ("min", 60, "s", 1)):
        if s >= size:
            return f"{s // size} {unit} {s % size // sub_size} {sub}"
    return f"{s} s"


def plural(n, word, words=None) -> str:
    """'1 epoch', '3 epochs' ('1 batch', '3 batches' with words="batches")."""
    return f"{n} {word}" if n == 1 else f"{n} {words or word + 's'}"


def listing(names, limit=5) -> str:
    """The first ``limit`` of ``names``, sorted, then how many more: 'a, b, c and 4 more'."""
    shown = ", ".join(sorted(names)[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
