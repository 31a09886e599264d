"""Planting a known answer into a model with an editor chosen by name (docs/groundtruth.md#planting).

A *planter* computes, for a group of facts (s, r, o → o_new) and a layer l, one edit per fact and applies
it inside a ``with`` block that restores the weights bitwise afterwards.  Editors: ROME (Meng et al. 2022),
which writes a rank-one change into one MLP at the subject's last token; FT-1, constrained fine-tuning of
one MLP output projection on every prompt token (Zhu et al. 2020, as used by Hase et al. 2023); MEMIT,
spread over the five layers centred on l (Meng et al. 2023).  With FT-1 and MEMIT the planted association
is not, by construction, at one MLP output and one token (docs/groundtruth.md#planting).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from causaleval.data.counterfact import Fact

PLANT_EDITORS: tuple[str, ...] = ("rome", "ft1", "memit")


@dataclass
class Planter:
    """``compute(facts, layer)`` → one edit per fact; ``apply(edit)`` → a context manager that writes it
    into the model and restores the original weights on exit."""

    name: str
    compute: Callable[[Sequence[Fact], int], list[Any]]
    apply: Callable[[Any], AbstractContextManager]


def make_planter(name: str, bundle, hp, stats, contexts: list[str], overrides: dict | None = None) -> Planter:
    """The planter of editor ``name`` (one of :data:`PLANT_EDITORS`) on ``bundle``.

    ``hp`` ROME's hyperparameters, ``stats`` the key second moments (ROME, MEMIT), ``contexts`` the prefix
    texts (ROME, MEMIT); ``overrides`` the editor's hyperparameter overrides (FT-1, MEMIT: the study's
    ``editor_hparams.<name>``)."""
    if name == "rome":
        from causaleval.editing.rome import apply_edit, compute_edits, prepare_edits

        def compute(facts: Sequence[Fact], layer: int) -> list[Any]:
            return compute_edits(bundle, prepare_edits(bundle, list(facts), contexts, hp), int(layer), hp, stats)

        return Planter("rome", compute, lambda edit: apply_edit(bundle, edit))
    if name == "ft1":
        from causaleval.editing.ft import FT_PRESETS, FTEditor

        editor: Any = FTEditor("ft1", FT_PRESETS["ft1"].updated(**(overrides or {})))
    elif name == "memit":
        from causaleval.editing.memit import MemitEditor, memit_hparams_of

        editor = MemitEditor(memit_hparams_of(bundle, **(overrides or {})), hp, stats, contexts)
    else:
        raise ValueError(f"plant editor {name!r} is not available; choose one of {', '.join(PLANT_EDITORS)}")

    def compute_with(facts: Sequence[Fact], layer: int) -> list[Any]:
        if stats is not None and name == "memit":
            stats.ensure(editor.touched(int(layer), bundle.n_layers))
        return editor.compute(bundle, editor.prepare(bundle, list(facts)), int(layer))

    return Planter(name, compute_with, lambda edit: edit.applied(bundle))


def planted_fact(fact: Fact) -> Fact:
    """The fact a planting makes true: answer o_new (what the estimators trace), new answer o."""
    return dataclasses.replace(fact, target_true=fact.target_new, target_new=fact.target_true)
