"""ROME editing (docs/design.md#rome) and a per-case layer sweep scored with the edit scores of docs/design.md#edit-scores.

Public API::

    hp = hparams_for(bundle.family.name, bundle.n_layers, layer=12)
    result = rome_edit(bundle, fact, hparams=hp)            # compute ΔW (statistics/contexts cached)
    with apply_edit(bundle, result):                        # edited inside, restored bitwise after
        ...
    rows = sweep_case(bundle, fact, layers, hp, stats, contexts)   # one dict per layer
    rows = sweep_cases(bundle, facts, layers, hp, stats, contexts) # batched: one list per fact
"""

from __future__ import annotations

import time
from typing import Sequence

from causaleval.data.counterfact import Fact
from causaleval.editing.rome.compute import (AppliedEdit, EditResult, apply_edit, compute_edit, compute_edits,
                                             compute_v, prepare_edit, prepare_edits, rank_one_update)
from causaleval.editing.rome.corpus import context_texts, model_slug, rome_cache
from causaleval.editing.rome.hparams import HPARAMS, KEY_MODES, RomeHyperParams, hparams_for
from causaleval.editing.rome.stats import SecondMoments, SingularStatisticsWarning
from causaleval.editing.scores import edit_scores, prepare_probes, probs_after
from causaleval.model.loading import ModelBundle
from causaleval.model.sites import check_layer


def default_contexts(bundle: ModelBundle, hp: RomeHyperParams, seed: int = 0, use_cache: bool = True) -> list[str]:
    return context_texts(bundle, hp.context_lengths, seed=seed, top_k=hp.context_top_k, use_cache=use_cache)


def rome_edit(bundle: ModelBundle, fact: Fact, layer: int | None = None, hparams: RomeHyperParams | None = None,
              stats: SecondMoments | None = None, contexts: list[str] | None = None, seed: int = 0) -> EditResult:
    """Compute (not apply) the ROME edit of ``fact`` at ``layer`` (default: the family's layer)."""
    hp = hparams or hparams_for(bundle.family.name, bundle.n_layers)
    layer = hp.layer_for(bundle.n_layers) if layer is None else int(layer)
    check_layer(layer, bundle.n_layers)
    stats = stats or SecondMoments(bundle, hp, seed=seed)
    contexts = default_contexts(bundle, hp, seed) if contexts is None else contexts
    return compute_edit(bundle, prepare_edit(bundle, fact, contexts, hp), layer, hp, stats)


def sweep_cases(bundle: ModelBundle, facts: Sequence[Fact], layers: list[int], hp: RomeHyperParams,
                stats: SecondMoments, contexts: list[str], max_neighbours: int | None = None,
                seed: int = 0) -> list[list[dict]]:
    """Edit every fact of ``facts`` at each layer and score it (docs/design.md#edit-scores); one list of rows (a dict per
    layer) per fact.  At each layer the facts share their v* optimisation's forward/backward passes and
    the scoring forward (each with its own edit); the model's weights are never changed.

    ``seconds`` per row = an equal share of that layer's v* optimisation, update and scoring, plus an
    equal share of the group's two unedited forward passes (shared by all layers)."""

    for layer in layers:
        check_layer(int(layer), bundle.n_layers)
    n = len(facts)
    t0 = time.perf_counter()
    prep = prepare_edits(bundle, facts, contexts, hp)
    probes = prepare_probes(bundle, facts, max_neighbours=max_neighbours, seed=seed, layers=[int(l) for l in layers])
    shared = (time.perf_counter() - t0) / max(len(layers), 1) / n
    rows: list[list[dict]] = [[] for _ in facts]
    for layer in layers:
        t1 = time.perf_counter()
        res = compute_edits(bundle, prep, int(layer), hp, stats)
        after = probs_after(bundle, probes, int(layer), [r.delta_w for r in res])
        seconds = (time.perf_counter() - t1) / n + shared
        for c, (fact, r) in enumerate(zip(facts, res)):
            sc = edit_scores(probes.kind(c), probes.before[probes.prompts[c]], after[probes.prompts[c]])
            rows[c].append({"case_id": int(fact.case_id), "relation_id": str(fact.relation_id), "layer": int(layer),
                            **sc.to_dict(), "steps": int(r.steps), "final_loss": float(r.final_loss),
                            "seconds": float(seconds)})
    return rows


def sweep_case(bundle: ModelBundle, fact: Fact, layers: list[int], hp: RomeHyperParams, stats: SecondMoments,
               contexts: list[str], max_neighbours: int | None = None, seed: int = 0) -> list[dict]:
    """:func:`sweep_cases` of one fact (the one-at-a-time path)."""
    return sweep_cases(bundle, [fact], layers, hp, stats, contexts, max_neighbours, seed)[0]


__all__ = ["AppliedEdit", "EditResult", "HPARAMS", "KEY_MODES", "RomeHyperParams", "SecondMoments",
           "SingularStatisticsWarning", "apply_edit", "compute_edit", "compute_v", "context_texts",
           "default_contexts", "hparams_for", "model_slug", "prepare_edit", "rank_one_update", "rome_cache",
           "rome_edit", "sweep_case", "sweep_cases", "compute_edits", "prepare_edits"]
