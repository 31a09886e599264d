"""Planting a known answer into a model with an editor chosen by name (docs/groundtruth.md#planting).

A *planter* computes, for a group of facts (s, r, o → o_new) and a layer l, one edit per fact and applies
it inside a ``with`` block that restores the weights bitwise afterwards.  ROME (Meng et al. 2022) is the
only editor available now; another editor (FT-1, MEMIT, …) is added by one entry in :data:`PLANT_EDITORS`
and one branch in :func:`make_planter`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from causaleval.data.counterfact import Fact

PLANT_EDITORS: tuple[str, ...] = ("rome",)


@dataclass
class Planter:
    """``compute(facts, layer)`` → one edit per fact; ``apply(edit)`` → a context manager that writes it
    into the model and restores the original weights on exit."""

    name: str
    compute: Callable[[Sequence[Fact], int], list[Any]]
    apply: Callable[[Any], AbstractContextManager]


def make_planter(name: str, bundle, hp, stats, contexts: list[str]) -> Planter:
    """The planter of editor ``name`` (one of :data:`PLANT_EDITORS`) on ``bundle``.

    ROME: ``hp`` its hyperparameters, ``stats`` the key second moments, ``contexts`` the prefix texts."""
    if name == "rome":
        from causaleval.editing.rome import apply_edit, compute_edits, prepare_edits

        def compute(facts: Sequence[Fact], layer: int) -> list[Any]:
            return compute_edits(bundle, prepare_edits(bundle, list(facts), contexts, hp), int(layer), hp, stats)

        return Planter("rome", compute, lambda edit: apply_edit(bundle, edit))
    raise ValueError(f"plant editor {name!r} is not available; choose one of {', '.join(PLANT_EDITORS)}")


def planted_fact(fact: Fact) -> Fact:
    """The fact a planting makes true: answer o_new (what the estimators trace), new answer o."""
    return dataclasses.replace(fact, target_true=fact.target_new, target_new=fact.target_true)
