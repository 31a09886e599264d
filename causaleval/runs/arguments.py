"""Typed checks of the Python API's arguments with the study settings' own rules (one validation layer).

The CLI parses text into typed settings and checks each against its :class:`~causaleval.runs.checks.Rule`
in :data:`causaleval.runs.rules.RULES`.  The API takes Python values, which must already have the right type
(no silent coercion: ``window=2.7``, ``layers="01"`` or ``seed="3"`` are errors, never 2, [0, 1] or 3) and
are then checked against the same rule as the setting they correspond to (:data:`API_RULES`), so the two
layers cannot drift.
"""

from __future__ import annotations

import math
import numbers
import os

from causaleval.errors import CausalEvalError
from causaleval.runs.checks import Rule
from causaleval.runs.rules import RULES


class ArgumentError(CausalEvalError):
    """An argument of the public API is not one of its allowed values."""


# API argument → the study setting whose rule it obeys
API_RULES = {"window": "trace_window", "layers": "trace_layers", "n_draws": "noise_draws", "seed": "seed",
             "layer": "edit_layers"}
NU = Rule(low=0, high=1e6, why="a noise scale in units of the embeddings")


def rule_for(name: str) -> Rule | None:
    return NU if name == "nu" else RULES.get(API_RULES.get(name, name))


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _say(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def as_int(name: str, value, rule: Rule | None = None) -> int:
    """``value`` as an int when it is one (a Python or NumPy integer) and obeys ``name``'s rule."""
    if not _is_int(value):
        raise ArgumentError(f"{name}={_say(value)} must be an integer, got {type(value).__name__}")
    value = int(value)
    found = (rule or rule_for(name) or Rule()).problem(value)
    if found:
        raise ArgumentError(f"{name}={_say(value)} {found}")
    return value


def as_float(name: str, value, rule: Rule | None = None) -> float:
    """``value`` as a finite float when it is a real number (not a string or bool) and obeys the rule."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentError(f"{name}={_say(value)} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ArgumentError(f"{name}={value!r} must be a finite number")
    found = (rule or rule_for(name) or Rule()).problem(value)
    if found:
        raise ArgumentError(f"{name}={_say(value)} {found}")
    return value


def as_int_list(name: str, value, rule: Rule | None = None) -> list[int]:
    """A list or tuple of distinct integers obeying ``name``'s rule (a string such as ``"01"`` is refused)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, range)):
        raise ArgumentError(f"{name}={_say(value)} must be a list of integers, got {type(value).__name__}")
    if len(value) > 100_000:
        raise ArgumentError(f"{name} lists {len(value):,} values; give at most 100,000")
    bad = [v for v in value if not _is_int(v)]
    if bad:
        raise ArgumentError(f"{name}={_say(value)} must hold integers only, got {_say(bad[0])}")
    items = [int(v) for v in value]
    found = (rule or rule_for(name) or Rule(nonempty=True, distinct=True)).problem(items)
    if found:
        raise ArgumentError(f"{name}={_say(value)}: {found}")
    return items


def as_instance(name: str, value, cls: type, what: str):
    if not isinstance(value, cls):
        raise ArgumentError(f"{name} must be {what}, got {type(value).__name__} ({_say(value)})")
    return value


def as_setting(key: str, value):
    """A study setting given from Python (``run_study``): of its field's type without parsing text
    (``seed="3"`` and ``max_facts=1.5`` are refused), then checked against its rule in ``RULES``."""
    import typing

    from experiments.config import _split, field_types

    base, _ = _split(field_types()[key])
    if value is None:
        return None
    origin = typing.get_origin(base)
    if base is int:
        return as_int(key, value, RULES.get(key))
    if base is float:
        return as_float(key, value, RULES.get(key))
    if base is str:
        if isinstance(value, os.PathLike):          # facts=Path(...), model=Path(...)
            value = os.fspath(value)
        if not isinstance(value, str) or not value.strip():
            raise ArgumentError(f"{key}={_say(value)} must be a non-empty string")
        if len(value) > 4096 or "\x00" in value:
            raise ArgumentError(f"{key}={_say(value)} is not a usable name or path (at most 4,096 characters, no NUL)")
        return value
    if origin is list:
        (item,) = typing.get_args(base)
        values = value if isinstance(value, (list, tuple)) else [value]
        if item is int:
            return as_int_list(key, values, RULES.get(key))
        out = [as_setting_item(key, v) for v in values]
        found = RULES[key].problem(out) if key in RULES else None
        if found:
            raise ArgumentError(f"{key}={_say(value)}: {found}")
        return out
    return value


def as_setting_item(key: str, value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ArgumentError(f"{key}: {_say(value)} must be a non-empty string")
    return value
