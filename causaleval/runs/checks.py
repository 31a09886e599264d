"""Declarative value checks: a :class:`Rule` per setting says its range, finiteness and distinctness.

A rule applies to a number, or to each item of a list (then also: not empty, distinct when asked).
:meth:`Rule.problem` returns what is wrong as a short phrase ("must be at least 1"), or None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    """``low``/``high``: bounds, inclusive unless ``low_open``/``high_open``; ``finite``: no NaN or ±inf;
    ``distinct`` and ``nonempty``: for lists.  ``why``: a short reason appended to a bound's message."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    finite: bool = True
    distinct: bool = False
    nonempty: bool = False
    why: str = ""

    def problem(self, value) -> str | None:
        """What is wrong with ``value`` (None and strings are not checked), or None."""
        if isinstance(value, (list, tuple)):
            if self.nonempty and not value:
                return "give at least one value"
            if self.distinct and len({repr(v) for v in value}) != len(value):
                dup = next(v for i, v in enumerate(value) if v in value[:i])
                return f"lists {dup!r} more than once; give distinct values"
            for v in value:
                found = self.problem(v)
                if found:
                    return f"{v!r} {found}" if isinstance(v, (int, float)) else found
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if isinstance(value, float) and self.finite and not math.isfinite(value):
            return "must be a finite number"
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return self._say("must be greater than" if self.low_open else "must be at least", self.low)
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return self._say("must be less than" if self.high_open else "must be at most", self.high)
        return None

    def _say(self, what: str, bound: float) -> str:
        return f"{what} {_num(bound)}" + (f" ({self.why})" if self.why else "")


def _num(x) -> str:
    if x is None:
        return ""
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        x = int(x)
    return f"{x:,}" if isinstance(x, int) and abs(x) >= 10_000 else str(x)


def link_problem(path) -> str | None:
    """Why ``path`` cannot be followed — it, or a folder above it, is a symbolic link that dangles or loops —
    or None."""
    import errno
    import os
    from pathlib import Path

    p = Path(path)
    for q in reversed((p, *p.parents)):
        if not q.is_symlink() or q.exists():
            continue
        try:
            q.resolve(strict=True)
        except (RuntimeError, OSError) as err:     # RuntimeError: a loop (Python < 3.13)
            if isinstance(err, RuntimeError) or err.errno == errno.ELOOP:
                return f"{q} is a symbolic link in a loop"
        return f"{q} is a symbolic link to {os.readlink(q)}, which does not exist"
    return None
