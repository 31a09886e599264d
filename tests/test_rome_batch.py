"""Batched ROME sweeps equal the one-at-a-time run, case by case (tiny models of every family; SmolLM2 slow)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from causaleval.editing.rome import (SecondMoments, apply_edit, compute_edits, default_contexts, hparams_for,
                                     prepare_edit, prepare_edits, sweep_case, sweep_cases)
from causaleval.editing.rome.compute import build_edit_batch
from causaleval.editing.scores import prepare_probes, probs_after
from causaleval.model.testing import BATCH_FACTS, FAMILY_CONFIGS, isolated_cache, tiny_model

FAMILIES = tuple(FAMILY_CONFIGS)
FACTS = BATCH_FACTS
TOL = 1e-5   # absolute; losses (O(1)–O(10) on SmolLM2) also relative: float32 rounding differs with batch shapes


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    yield from isolated_cache(tmp_path, monkeypatch)


def _hp(family, **kw):
    base = dict(context_lengths=((4, 2),), stat_tokens=400, stat_seq_len=20, stat_batch=32)
    return hparams_for(family, 4, **{**base, **kw})


def _one_at_a_time(b, facts, ctx, layer, hp, stats):
    return [compute_edits(b, prepare_edit(b, f, ctx, hp), layer, hp, stats)[0] for f in facts]


def _assert_same_trajectories(single, batched, v_rtol: float = TOL):
    for s, r in zip(single, batched):
        assert (r.case_id, r.steps, len(r.losses)) == (s.case_id, s.steps, len(s.losses))
        np.testing.assert_allclose(r.losses, s.losses, rtol=TOL, atol=TOL)
        assert float((r.v_star - s.v_star).norm() / s.v_star.norm()) <= v_rtol


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_v_star_follows_each_case_alone(family):
    """Each case keeps its own δ, Adam state, clamp and early stop: loss trajectories equal to 1e-5."""
    b = tiny_model(family)
    free = _hp(family, v_weight_decay=0.0, clamp_norm_factor=1000.0, v_loss_stop=0.0)
    stats = SecondMoments(b, free)
    ctx = default_contexts(b, free)
    layer = 1
    # a stopping threshold that one case crosses mid-way while the others run all steps
    ref = _one_at_a_time(b, FACTS, ctx, layer, free, stats)
    stop = float(np.mean(ref[0].losses[5:7]))
    for hp in (free.updated(v_loss_stop=stop), free.updated(clamp_norm_factor=0.5)):   # early stop; active clamp
        single = _one_at_a_time(b, FACTS, ctx, layer, hp, stats)
        batched = compute_edits(b, prepare_edits(b, FACTS, ctx, hp), layer, hp, stats)
        _assert_same_trajectories(single, batched)
        if hp.v_loss_stop == stop:
            assert len({r.steps for r in batched}) > 1 and min(r.steps for r in batched) < hp.v_num_grad_steps
        else:   # the clamp binds (‖δ‖ = 0.5 ‖v₀‖) for some case
            ratios = [float((r.v_star - r.v0).norm() / r.v0.norm()) for r in batched]
            assert max(ratios) == pytest.approx(0.5, rel=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_sweep_scores_equal_one_at_a_time_and_the_applied_edit(family):
    b = tiny_model(family)
    hp = _hp(family, v_weight_decay=0.0, clamp_norm_factor=1000.0, v_num_grad_steps=6)
    stats = SecondMoments(b, hp)
    ctx = default_contexts(b, hp)
    layers = [0, 2]
    batched = sweep_cases(b, FACTS, layers, hp, stats, ctx, max_neighbours=10)
    for fact, rows in zip(FACTS, batched):
        alone = sweep_case(b, fact, layers, hp, stats, ctx, max_neighbours=10)
        for r, a in zip(rows, alone):
            assert (r["case_id"], r["layer"], r["steps"]) == (a["case_id"], a["layer"], a["steps"])
            for k in ("p_after_new", "p_after_true", "p_before_new", "rewrite_score", "final_loss"):
                assert r[k] == pytest.approx(a[k], abs=TOL), k
            for k in ("paraphrase_score", "neighborhood_score"):
                assert r[k] == pytest.approx(a[k], abs=TOL, nan_ok=True), k
    # the per-row edit of the batched scoring equals the edit written into the weights
    res = compute_edits(b, prepare_edits(b, FACTS, ctx, hp), 2, hp, stats)
    probes = prepare_probes(b, FACTS, max_neighbours=10, layers=[2])
    hooked = probs_after(b, probes, 2, [r.delta_w for r in res])
    for c, r in enumerate(res):
        with apply_edit(b, r):
            applied = prepare_probes(b, FACTS[c], max_neighbours=10).before
        np.testing.assert_allclose(hooked[probes.prompts[c]], applied, rtol=0, atol=TOL)
    assert not np.allclose(hooked[:, 0], probes.before[:, 0], rtol=1e-2, atol=0)   # the edits move p(new)


def test_subset_keeps_each_cases_rows_and_reads():
    b = tiny_model("llama")
    batch = build_edit_batch(b, FACTS, ["a b", "c d"])
    sub, rows = batch.subset(torch.tensor([1, 3]))
    alone = [build_edit_batch(b, FACTS[c], ["a b", "c d"]) for c in (1, 3)]
    assert sub.n_cases == 2 and rows.tolist() == (batch.case == 1).nonzero().squeeze(1).tolist() + \
        (batch.case == 3).nonzero().squeeze(1).tolist()
    assert sub.n_rewrite.tolist() == [3, 3] and sub.n_target.tolist() == [int(a.n_target[0]) for a in alone]
    assert sub.tgt_tokens.tolist() == alone[0].tgt_tokens.tolist() + alone[1].tgt_tokens.tolist()
    assert sub.kl_rows.tolist() == [3, 7] and sub.first_rows.tolist() == [0, 4]


@pytest.mark.slow
def test_batched_sweep_equals_one_at_a_time_on_smollm2():
    from causaleval.data.geofacts import build_facts
    from causaleval.model.loading import load_model

    b = load_model("smollm2")
    facts = {f.relation_id: f for f in build_facts(seed=0)}   # one fact per relation
    facts = list(facts.values())
    hp = hparams_for(b.family.name, b.n_layers, context_lengths=((5, 2),), stat_tokens=256, v_num_grad_steps=8)
    stats = SecondMoments(b, hp, progress=False)
    ctx = default_contexts(b, hp)
    for layer in (6, 24):
        single = _one_at_a_time(b, facts, ctx, layer, hp, stats)
        batched = compute_edits(b, prepare_edits(b, facts, ctx, hp), layer, hp, stats)
        # Adam amplifies float32 rounding in single coordinates of v* (seen: 2e-4 in one of 576)
        _assert_same_trajectories(single, batched, v_rtol=1e-3)
    rows = sweep_cases(b, facts, [12], hp, stats, ctx, max_neighbours=10)
    for fact, r in zip(facts, rows):
        a = sweep_case(b, fact, [12], hp, stats, ctx, max_neighbours=10)[0]
        assert r[0]["p_after_new"] == pytest.approx(a["p_after_new"], abs=TOL)
        assert r[0]["final_loss"] == pytest.approx(a["final_loss"], abs=TOL)


def _partition_cost(groups, spans, overhead):
    return sum(overhead + len(g) * max(spans[i] for i in g) for g in groups)


def test_span_buckets_are_an_optimal_partition_of_every_row():
    """Every row lands in exactly one group, and no split of the sorted rows costs less (brute force)."""
    import itertools

    from causaleval.editing.suffix import span_buckets

    rng = np.random.default_rng(0)
    for _ in range(40):
        spans = rng.integers(1, 12, size=int(rng.integers(1, 9))).tolist()
        overhead = int(rng.integers(0, 20))
        groups = span_buckets(spans, overhead)
        assert sorted(i for g in groups for i in g) == list(range(len(spans)))
        order = sorted(range(len(spans)), key=lambda i: spans[i])
        best = min(_partition_cost([order[a:b] for a, b in zip((0,) + cuts, cuts + (len(spans),))], spans, overhead)
                   for k in range(len(spans)) for cuts in itertools.combinations(range(1, len(spans)), k))
        assert _partition_cost(groups, spans, overhead) == best
    assert span_buckets([1, 1, 9, 9, 9], overhead=0) == [[0, 1], [2, 3, 4]]
    assert span_buckets([1, 9], overhead=100) == [[0, 1]]


def test_prepared_windows_pad_less_than_one_window():
    """The facts' rows (templates with the subject first, mid-prompt and last, and KL rows of one token)
    are split into windows that together hold fewer padded positions than one window as wide as the widest row."""
    b = tiny_model("llama")
    hp = _hp("llama")
    prep = prepare_edits(b, FACTS, ["Once upon a time", "The weather"], hp)
    rows = torch.cat(prep.window_rows)
    assert sorted(rows.tolist()) == list(range(prep.batch.input_ids.shape[0]))
    spans = [w.ends - w.starts for w in prep.windows]
    real = int(sum(int(s.sum()) for s in spans))
    padded = sum(w.hidden[0].shape[0] * w.hidden[0].shape[1] for w in prep.windows)
    widest = int(max(int(s.max()) for s in spans)) * len(rows)
    assert len(prep.windows) > 1 and real <= padded < widest
