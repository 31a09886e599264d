"""FT drops a case from its batched optimisation once the case stops (docs/editors.md, "Speed"): the edits
equal those of the code that kept finished cases in the batch (frozen below as the reference), on tiny
models of every family, for error injection, fact erasure and subject-noised rows."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from causaleval.editing.editor import Edit, centred_window
from causaleval.editing.ft import FTHyperParams, _case_losses, compute_ft, prepare_ft
from causaleval.model.sites import check_layer, down_proj_weight_out_in
from causaleval.model.testing import BATCH_FACTS, FAMILY_CONFIGS, isolated_cache, tiny_model

FAMILIES = tuple(FAMILY_CONFIGS)
FACTS = BATCH_FACTS[:4]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    yield from isolated_cache(tmp_path, monkeypatch)


def reference_compute_ft(bundle, batch, layer: int, hp: FTHyperParams) -> list[Edit]:
    """compute_ft as it was before finished cases were dropped (commit 9b01538), kept verbatim."""
    check_layer(layer, bundle.n_layers)
    t0 = time.perf_counter()
    layers = centred_window(layer, hp.window, bundle.n_layers)
    n = len(batch.facts)
    eps = hp.norm_constraint
    deltas = [[torch.zeros_like(down_proj_weight_out_in(bundle.model, bundle.family, l), dtype=torch.float32,
                                requires_grad=True) for l in layers] for _ in range(n)]
    opt = torch.optim.Adam([d for case in deltas for d in case], lr=hp.lr, weight_decay=hp.weight_decay)
    losses: list[list[float]] = [[] for _ in range(n)]
    steps, done = [0] * n, [False] * n
    for step in range(hp.num_steps + 1):
        with torch.enable_grad():
            loss = _case_losses(bundle, batch, layers, deltas)
            if batch.minimise:
                loss = torch.exp(-loss)
        go_on = []
        for c, value in enumerate(loss.detach().tolist()):
            if done[c]:
                continue
            losses[c].append(value)
            if (value < hp.loss_stop and not batch.minimise) or step == hp.num_steps:
                done[c] = True
            else:
                go_on.append(c)
        if not go_on:
            break
        opt.zero_grad()
        loss[go_on].sum().backward()
        for c in range(n):
            if c not in go_on:
                for d in deltas[c]:
                    d.grad = None
        opt.step()
        with torch.no_grad():
            for c in go_on:
                steps[c] += 1
                for d in deltas[c]:
                    d.clamp_(-eps, eps)
    seconds = (time.perf_counter() - t0) / max(n, 1)
    out = []
    for c, fact in enumerate(batch.facts):
        dws = {l: d.detach().to(down_proj_weight_out_in(bundle.model, bundle.family, l).dtype)
               for l, d in zip(layers, deltas[c])}
        out.append(Edit(int(fact.case_id), int(layer), dws, steps[c], losses[c][-1], seconds, losses[c],
                        {"window": layers}))
    return out


def _staggered_stop(bundle, batch, layer, hp) -> float:
    """A loss threshold that some cases cross early and some late (or never): the median of the cases'
    losses half-way through an unstopped run, so the batch shrinks mid-way."""
    free = reference_compute_ft(bundle, batch, layer, hp.updated(loss_stop=0.0))
    return float(np.median([e.losses[hp.num_steps // 2] for e in free]))


def _assert_same(new: list[Edit], ref: list[Edit]) -> None:
    for a, b in zip(new, ref):
        assert a.case_id == b.case_id and a.steps == b.steps and len(a.losses) == len(b.losses)
        np.testing.assert_allclose(a.losses, b.losses, rtol=1e-5, atol=1e-6)
        assert sorted(a.deltas) == sorted(b.deltas)
        for l in a.deltas:
            torch.testing.assert_close(a.deltas[l], b.deltas[l], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("window", [1, 5])
def test_dropping_finished_cases_leaves_the_edits_unchanged(family, window):
    b = tiny_model(family)
    batch = prepare_ft(b, FACTS)
    hp = FTHyperParams(window=window, norm_constraint=1.0, lr=5e-2, num_steps=20)
    hp = hp.updated(loss_stop=_staggered_stop(b, batch, 2, hp))
    ref = reference_compute_ft(b, batch, 2, hp)
    steps = [e.steps for e in ref]
    assert min(steps) < hp.num_steps and len(set(steps)) > 1, steps     # the batch does shrink mid-way
    _assert_same(compute_ft(b, batch, 2, hp), ref)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("name", ["fact_forcing", "fact_erasure"])
def test_dropping_finished_cases_with_noised_copies_and_erasure(family, name):
    from causaleval.editing.problems import make_problem, request

    b = tiny_model(family)
    problem = make_problem(name, nu=0.5, edit_draws=3)
    batch = prepare_ft(b, [request(f, problem) for f in FACTS], problem)
    assert batch.repeat == (3 if name == "fact_forcing" else 1) and batch.minimise == (name == "fact_erasure")
    hp = FTHyperParams(window=3, norm_constraint=1.0, lr=5e-2, num_steps=12)
    if not batch.minimise:             # erasure never stops early: every case runs the whole budget
        hp = hp.updated(loss_stop=_staggered_stop(b, batch, 1, hp))
    _assert_same(compute_ft(b, batch, 1, hp), reference_compute_ft(b, batch, 1, hp))
