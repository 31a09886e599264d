"""One interface for every editor (ROME, constrained fine-tuning FT-1/FT-5, MEMIT): compute an edit of
each fact at a layer, apply it in a context that restores every touched weight bitwise, score it.

An :class:`Edit` is a set of additive changes ΔW (out × in) to the MLP down-projections of one or more
layers.  An editor has a ``name``, ``touched(layer, n_layers)`` (the layers its edit at ``layer``
changes), ``prepare(bundle, facts)`` (work shared by every layer, e.g. one unedited forward) and
``compute(bundle, prepared, layer)`` (one :class:`Edit` per fact, the facts optimised together).
:func:`sweep` edits every fact at every layer and scores it with the edit scores of
:mod:`causaleval.editing.scores`; the model's weights are never changed while sweeping (each case's
ΔW is added to its own rows' down-projection outputs).

Editors: ``rome`` (Meng et al. 2022; :mod:`causaleval.editing.rome`), ``ft1`` / ``ft5`` (Zhu et al. 2020 as
used by Hase et al. 2023; :mod:`causaleval.editing.ft`), ``memit`` (Meng et al. 2023; :mod:`causaleval.editing.memit`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np
import torch

from causaleval.data.counterfact import Fact
from causaleval.editing.applied import AppliedWeights
from causaleval.editing.scores import PreparedProbes, edit_scores, prepare_probes, probs_from_hidden
from causaleval.editing.suffix import run_from
from causaleval.errors import ConfigError
from causaleval.model.loading import ModelBundle
from causaleval.model.sites import check_layer, get_module

EDITORS: tuple[str, ...] = ("rome", "ft1", "ft5", "memit")


@dataclass
class Edit:
    """A computed (not applied) edit of one case at nominal ``layer``: ΔW (out × in) per touched layer."""

    case_id: int
    layer: int
    deltas: dict[int, torch.Tensor]
    steps: int
    final_loss: float
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    extra: dict = field(default_factory=dict)       # editor-specific diagnostics (keys, targets, ...)

    def applied(self, bundle: ModelBundle) -> AppliedWeights:
        """``with edit.applied(bundle):`` runs code on the edited model, restored bitwise after."""
        return AppliedWeights(bundle, self.deltas)


class Editor(Protocol):
    name: str

    def touched(self, layer: int, n_layers: int) -> list[int]: ...

    def prepare(self, bundle: ModelBundle, facts: Sequence[Fact], problem: Any = None) -> Any: ...

    def compute(self, bundle: ModelBundle, prepared: Any, layer: int) -> list[Edit]: ...


def centred_window(layer: int, size: int, n_layers: int) -> list[int]:
    """``size`` consecutive layers centred on ``layer`` (the extra one below for an even size), clipped at
    the model's first and last layer (so fewer near the edges), as Hase et al. (2023) place FT-5 / MEMIT."""
    lo = layer - (size - 1) // 2 - (1 - size % 2)
    return [l for l in range(lo, lo + size) if 0 <= l < n_layers]


@torch.no_grad()
def probs_after_edits(bundle: ModelBundle, prepared: PreparedProbes,
                      deltas: Sequence[dict[int, torch.Tensor]]) -> np.ndarray:
    """[p(new), p(true)] of every probe prompt with case c's ΔW (``deltas[c]``: layer → out × in) added to the
    down-projection output of its rows only, running blocks from the lowest touched layer (whose cached
    input ``prepared`` must hold)."""
    if len(deltas) != len(prepared.rows):
        raise ValueError(f"{len(deltas)} edits for {len(prepared.rows)} cases")
    layers = sorted({l for d in deltas for l in d})
    if not layers:
        raise ValueError("no edit touches any layer")

    def hook_for(layer: int):
        def hook(_m, inp, out):
            for rows, d in zip(prepared.rows, deltas):
                if layer in d:
                    out.index_add_(0, rows, inp[0][rows] @ d[layer].to(out.dtype).T)
            return out
        return hook

    handles = [get_module(bundle.model, bundle.family.module_path("down_proj", l)).register_forward_hook(hook_for(l))
               for l in layers]
    try:
        return probs_from_hidden(bundle, prepared.probes, run_from(bundle, prepared.blocks, layers[0]))
    finally:
        for h in handles:
            h.remove()


def sweep(bundle: ModelBundle, editor: Editor, facts: Sequence[Fact], layers: Sequence[int],
          max_neighbours: int | None = None, seed: int = 0, problem=None, prepared=None) -> list[list[dict]]:
    """Edit every fact at each layer with ``editor`` and score it; one list of rows (a dict per layer) per
    fact.  ``seconds`` per row = an equal share of that layer's edit computation and scoring plus an equal
    share of the group's unedited passes (shared by all layers), as in ROME's sweep.

    ``problem`` (an :class:`~causaleval.editing.problems.EditProblem`; None = error injection as always):
    ``facts`` are then the problem's requests (:func:`causaleval.editing.problems.request`), the editor
    optimises the problem's objective, and a noised problem is scored on ``score_draws`` fresh draws (the
    probabilities before and after averaged over them).  ``prepared``: ``editor.prepare(bundle, facts)``
    done before (shared by sweeps of editors that differ only in a setting the preparation does not use)."""
    if problem is not None:
        if prepared is not None:
            raise ValueError("sweep: a problem's sweep prepares its own requests; pass prepared=None")
        return _problem_sweep(bundle, editor, facts, layers, max_neighbours, seed, problem)
    layers = [int(l) for l in layers]
    for layer in layers:
        check_layer(layer, bundle.n_layers)
    n = len(facts)
    t0 = time.perf_counter()
    prep = editor.prepare(bundle, facts) if prepared is None else prepared
    starts = sorted({min(editor.touched(l, bundle.n_layers)) for l in layers})
    probes = prepare_probes(bundle, facts, max_neighbours=max_neighbours, seed=seed, layers=starts)
    shared = (time.perf_counter() - t0) / max(len(layers), 1) / n
    rows: list[list[dict]] = [[] for _ in facts]
    for layer in layers:
        t1 = time.perf_counter()
        edits = editor.compute(bundle, prep, layer)
        after = probs_after_edits(bundle, probes, [e.deltas for e in edits])
        seconds = (time.perf_counter() - t1) / n + shared
        for c, (fact, e) in enumerate(zip(facts, edits)):
            sc = edit_scores(probes.kind(c), probes.before[probes.prompts[c]], after[probes.prompts[c]])
            rows[c].append({"case_id": int(fact.case_id), "relation_id": str(fact.relation_id), "layer": layer,
                            **sc.to_dict(), "steps": int(e.steps), "final_loss": float(e.final_loss),
                            "seconds": float(seconds)})
    return rows


def _problem_sweep(bundle: ModelBundle, editor: Editor, facts: Sequence[Fact], layers: Sequence[int],
                   max_neighbours: int | None, seed: int, problem) -> list[list[dict]]:
    from causaleval.editing.problems import problem_scores

    layers = [int(l) for l in layers]
    for layer in layers:
        check_layer(layer, bundle.n_layers)
    n = len(facts)
    t0 = time.perf_counter()
    prep = editor.prepare(bundle, facts, problem=problem)
    starts = sorted({min(editor.touched(l, bundle.n_layers)) for l in layers})
    draws = problem.score_draws if problem.noise is not None else 1
    probes = [prepare_probes(bundle, facts, max_neighbours=max_neighbours, seed=seed, layers=starts,
                             noise=problem.noise, draw=d) for d in range(draws)]
    before = np.mean([p.before for p in probes], axis=0)
    shared = (time.perf_counter() - t0) / max(len(layers), 1) / n
    rows: list[list[dict]] = [[] for _ in facts]
    for layer in layers:
        t1 = time.perf_counter()
        edits = editor.compute(bundle, prep, layer)
        after = np.mean([probs_after_edits(bundle, p, [e.deltas for e in edits]) for p in probes], axis=0)
        seconds = (time.perf_counter() - t1) / n + shared
        for c, (fact, e) in enumerate(zip(facts, edits)):
            at = probes[0].prompts[c]
            sc = problem_scores(problem, probes[0].kind(c), before[at], after[at])
            rows[c].append({"case_id": int(fact.case_id), "relation_id": str(fact.relation_id), "layer": layer,
                            **sc.to_dict(), "steps": int(e.steps), "final_loss": float(e.final_loss),
                            "seconds": float(seconds)})
    return rows


class RomeEditor:
    """ROME (Meng et al. 2022) behind the editor interface, computed exactly as :mod:`causaleval.editing.rome`."""

    name = "rome"

    def __init__(self, hparams, stats, contexts: list[str]):
        self.hp, self.stats, self.contexts = hparams, stats, list(contexts)

    def touched(self, layer: int, n_layers: int) -> list[int]:
        return [int(layer)]

    def prepare(self, bundle: ModelBundle, facts: Sequence[Fact], problem=None):
        from causaleval.editing.rome.compute import prepare_edits

        return prepare_edits(bundle, facts, self.contexts, self.hp, problem)

    def compute(self, bundle: ModelBundle, prepared, layer: int) -> list[Edit]:
        from causaleval.editing.rome.compute import compute_edits

        return [Edit(r.case_id, r.layer, {r.layer: r.delta_w}, r.steps, r.final_loss, r.seconds, r.losses,
                     {"result": r}) for r in compute_edits(bundle, prepared, int(layer), self.hp, self.stats)]


def parse_editors(value) -> list[str]:
    """``"rome,ft1"`` or a list → the editor names, checked (before any model loads)."""
    from causaleval.runs.rules import parse_names

    return parse_names("editors", value, EDITORS, "--set editors=rome,ft1,ft5,memit", "an editor")


def stat_layers(editors: Sequence[str], layers: Sequence[int], n_layers: int) -> list[int]:
    """The layers whose key second moments ``editors`` need at edit layers ``layers`` (MEMIT: its whole
    windows; the others: the edit layers)."""
    from causaleval.editing.memit import MemitHyperParams

    need = set(layers)
    if "memit" in editors:
        for layer in layers:
            need |= set(centred_window(layer, MemitHyperParams().window, n_layers))
    return sorted(need)
