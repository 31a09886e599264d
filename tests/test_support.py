"""The support diagnostics on a tiny model: answer classification, flips by construction, the
real-state reference, and the stage's resumability."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from causaleval.data.counterfact import write_jsonl
from causaleval.data.geofacts import build_facts
from causaleval.data.tokens import answer_ids, encode_prompt
from causaleval.estimators import flip_scrubbing, noise_tracing
from causaleval.support import (MASSIVE_FACTOR, OUTCOMES, RealStates, SupportDataError, answer_set, auroc, classify,
                                clean_states, corrupted_runs, split_reference)
from causaleval.support.report import summarise_answers, summarise_states
from experiments.config import resolve
from experiments.context import StageContext
from experiments.stages import support as support_stage


def _known_to(bundle, facts):
    """Relabel each fact's true answer as the model's own top-1 token (where it decodes and re-encodes
    to that token), so the tiny random model 'knows' every fact it keeps: the facts stage's filter."""
    encs = [encode_prompt(bundle.tokenizer, f.prompt, f.subject, f.case_id) for f in facts]
    top1 = {}
    for length in {e.length for e in encs}:
        idx = [i for i, e in enumerate(encs) if e.length == length]
        logits = bundle.model(torch.tensor([encs[i].input_ids for i in idx])).logits[:, -1]
        top1.update(zip(idx, logits.argmax(-1).tolist()))
    kept = []
    for i, f in enumerate(facts):
        text = bundle.tokenizer.decode([top1[i]]).strip()
        if text and answer_ids(bundle.tokenizer, text)[0] == top1[i]:
            kept.append(dataclasses.replace(f, target_true=text))
    return kept


@pytest.fixture(scope="module")
def known(tiny_llama):
    with torch.no_grad():
        facts = _known_to(tiny_llama, build_facts(seed=0))
    assert len(facts) >= 60, "the tiny model should keep enough facts after relabelling"
    return facts


def test_classify_is_exhaustive():
    answers = frozenset({3, 5, 7})
    assert classify(5, 5, answers) == "clean"
    assert classify(7, 5, answers) == "relation"
    assert classify(9, 5, answers) == "off"


def test_counts_add_up_to_the_draws(tiny_llama, known):
    fact, pool = known[0], known
    sigma = noise_tracing.noise_scale(tiny_llama, pool, 1.0)
    ref = RealStates.fit(clean_states(tiny_llama, pool[10:40]), clean_states(tiny_llama, pool[40:70]))
    answers, states = support_stage.measure_case(tiny_llama, fact, pool, sigma, (0.5, 3.0), 4, 0, ref)
    arms = support_stage.case_draws(tiny_llama, fact, pool, sigma, (0.5, 3.0), 4, 0)
    assert set(answers.arm) == set(arms) >= {"clean", "noise@0.5", "noise@3", "resample"}
    for arm, draws in arms.items():
        a = answers[answers.arm == arm]
        assert len(a) == len(draws)
        assert a.outcome.value_counts().reindex(OUTCOMES, fill_value=0).sum() == len(draws)
        assert len(states[states.arm == arm]) == len(draws) * tiny_llama.n_layers
    assert ((answers.p_answer <= answers.p_answer_set + 1e-6) | (answers.outcome == "off")).all()
    assert answers.p_answer_set.between(0, 1 + 1e-6).all()
    # the clean prompt of a known fact: its top-1 is the answer
    assert (answers[answers.arm == "clean"].outcome == "clean").all()
    summary = summarise_answers(answers, n_resamples=50)
    shares = summary[summary.quantity.str.startswith("share_") & (summary.quantity != "share_partner_answered")]
    assert np.allclose(shares.groupby("arm").estimate.sum(), 1.0)


def test_flip_draws_flip_whenever_the_partner_is_answered(tiny_llama, known):
    """A flip partner's answer o′ differs from o and belongs to the relation, so a run that outputs o′
    is a flip; partners are real known facts, so the model answers them (outputs o′) by construction."""
    n_checked = 0
    for fact in known:
        partners = flip_scrubbing.flip_set(tiny_llama, fact, known)
        if not partners:
            continue
        from causaleval.estimators.resample_scrubbing import partner_draws
        draws = partner_draws(tiny_llama, fact, partners, 5, 0, "flip", prefer_same_length=True)
        runs = corrupted_runs(tiny_llama, draws)
        o = answer_ids(tiny_llama.tokenizer, fact.target_true)[0]
        from causaleval.support import answer_rows
        rows = answer_rows(runs, o, answer_set(tiny_llama.tokenizer, known, fact.relation_id), draws)
        assert rows.partner_answered.all()     # known partners: the run outputs o′
        assert (rows[rows.partner_answered].outcome == "relation").all()
        n_checked += len(rows)
        if n_checked >= 30:
            break
    assert n_checked >= 30


def test_distance_is_sklearns_ledoit_wolf_mahalanobis():
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(1)
    fit, new = rng.normal(size=(30, 1, 50)) * np.linspace(0.2, 2, 50), rng.normal(size=(7, 1, 50))
    ref = RealStates.fit(fit, rng.normal(size=(10, 1, 50)))
    want = np.sqrt(LedoitWolf().fit(fit[:, 0]).mahalanobis(new[:, 0]))
    assert np.allclose(ref.distance(new)[:, 0], want, rtol=1e-8)


def test_real_states_reference_has_its_nominal_size():
    """On Gaussian 'states', a fresh real point lies beyond τ with probability ≈ 1 − q."""
    rng = np.random.default_rng(0)
    cov = np.diag(np.linspace(0.5, 3, 8))
    draw = lambda n: rng.multivariate_normal(np.zeros(8), cov, size=(n, 2))   # (n, L=2, d=8)
    ref = RealStates.fit(draw(2000), draw(4000), 0.99)
    beyond = (ref.distance(draw(20000)) > ref.threshold).mean(0)
    se = np.sqrt(0.01 * 0.99 / 4000) * 3 + np.sqrt(0.01 * 0.99 / 20000) * 3
    assert np.all(np.abs(beyond - 0.01) < se), beyond
    far = (ref.distance(draw(200) * 10) > ref.threshold).mean(0)
    assert np.all(far > 0.9)


def _anisotropic(rng, n, n_layers=2, d=20):
    """Gaussian 'states' (n, L, d) with unequal variances, centred away from 0 (ordinary max|h| ≈ 12–20)."""
    return 10 + rng.normal(size=(n, n_layers, d)) * np.linspace(0.3, 3, d)


def test_a_massive_state_in_the_reference_leaves_the_ordinary_fit_unmoved():
    """One attention-sink-like state (Sun et al. 2024) planted in the fit and the calibration set: without the
    guard it takes over the covariance (shrinkage → 1, ordinary distances squashed); with it the fit, τ and
    every ordinary distance equal those of the reference without the planted state."""
    rng = np.random.default_rng(3)
    fit, cal, new = _anisotropic(rng, 60), _anisotropic(rng, 60), _anisotropic(rng, 40)
    sink = np.zeros((1, 2, 20))
    sink[0, :, 0] = 20_000.0
    clean = RealStates.fit(fit, cal)
    guarded = RealStates.fit(np.r_[fit, sink], np.r_[cal, sink])
    unguarded = RealStates.fit(np.r_[fit, sink], np.r_[cal, sink], massive_factor=np.inf)
    assert guarded.n_massive_fit.tolist() == [1, 1] and clean.n_massive_fit.tolist() == [0, 0]
    assert np.allclose(guarded.shrinkage, clean.shrinkage) and np.allclose(guarded.threshold, clean.threshold)
    assert np.allclose(guarded.distance(new), clean.distance(new))
    assert np.allclose(guarded.percentile(guarded.distance(new)), clean.percentile(clean.distance(new)))
    assert (unguarded.shrinkage > 0.9).all() and (clean.shrinkage < 0.5).all()
    # states twice as dispersed as real ones: separated by the guarded fit, much less by the unguarded one
    wide = 10 + 2 * (new - 10)
    for l in range(2):
        assert auroc(guarded.distance(wide)[:, l], guarded.calibration_distance[:, l]) > 0.95
        assert auroc(unguarded.distance(wide)[:, l], unguarded.distance(cal)[:, l]) < 0.85


def test_auroc_is_one_half_for_real_states_and_one_for_far_ones():
    rng = np.random.default_rng(4)
    ref = RealStates.fit(_anisotropic(rng, 400), _anisotropic(rng, 400))
    cal = ref.calibration_distance
    same, far = ref.distance(_anisotropic(rng, 400)), ref.distance(_anisotropic(rng, 100) + 5)
    for l in range(2):
        assert abs(auroc(same[:, l], cal[:, l]) - 0.5) < 0.06
        assert auroc(far[:, l], cal[:, l]) > 0.99
        # the mean mid-rank percentile among the calibration distances is the AUROC (Mann–Whitney)
        assert ref.percentile(same)[:, l].mean() == pytest.approx(auroc(same[:, l], cal[:, l]), abs=1e-12)
    assert np.isnan(auroc([], cal[:, 0]))


def test_massive_states_are_counted_and_kept_out_of_the_auroc():
    """Planted massive states: counted per arm and layer, left out of the distance summaries."""
    rng = np.random.default_rng(5)
    ref = RealStates.fit(_anisotropic(rng, 80), _anisotropic(rng, 80))
    rows = []
    for case in range(6):
        st = _anisotropic(rng, 10)
        st[:3, 1, 0] = MASSIVE_FACTOR * 3 * ref.massive_limit[1]   # 3 of 10 draws massive at layer 1 only
        d, massive = ref.distance(st), ref.massive(st)
        assert massive[:, 0].sum() == 0 and massive[:, 1].sum() == 3
        for l in range(2):
            rows.append(pd.DataFrame(dict(arm="noise@3", case_id=case, layer=l, draw=np.arange(10), fold=0,
                                          distance=d[:, l], beyond=d[:, l] > ref.threshold[l],
                                          percentile=ref.percentile(d)[:, l], massive=massive[:, l],
                                          partner_in_reference=False)))
    states = pd.concat(rows, ignore_index=True)
    ok = np.isfinite(ref.calibration_distance)
    cal = pd.concat([pd.DataFrame(dict(fold=0, layer=l, distance=ref.calibration_distance[ok[:, l], l]))
                     for l in range(2)])
    summary = summarise_states(states, cal, n_resamples=50).set_index("layer")
    assert summary.share_massive.tolist() == pytest.approx([0.0, 0.3])
    assert summary.n_massive.tolist() == [0, 18] and summary.n_states.tolist() == [60, 42]
    assert summary.auroc.between(0.35, 0.65).all()        # the ordinary draws are real-like
    assert np.allclose(summary.auroc, summary.mean_percentile)
    assert (summary.auroc_ci_low <= summary.auroc).all() and (summary.auroc <= summary.auroc_ci_high).all()


def test_a_real_subjects_own_state_lies_within_the_real_distribution(tiny_llama, known):
    fit, cal = split_reference(known[20:], seed=0)
    ref = RealStates.fit(clean_states(tiny_llama, fit), clean_states(tiny_llama, cal))
    own = ref.distance(clean_states(tiny_llama, known[:20]))
    assert (own <= ref.threshold[None] * 1.05).mean() >= 0.9
    noisy = support_stage.case_draws(tiny_llama, known[0], known, noise_tracing.noise_scale(tiny_llama, known, 1.0),
                                     (8.0,), 10, 0)["noise@8"]
    assert (ref.distance(corrupted_runs(tiny_llama, noisy).states)[:, 0] > ref.threshold[0]).all()


def test_reference_needs_enough_subjects():
    with pytest.raises(SupportDataError, match="max-facts"):
        RealStates.fit(np.zeros((2, 1, 3)), np.zeros((5, 1, 3)))


def _ctx(tmp_path, bundle, facts, n_study=4, **over):
    write_jsonl([f.to_record() for f in facts], tmp_path / "facts.jsonl")
    settings = dict(edit_layers=[0, 2, 3], analysis_window=3, n_bootstrap=50, support_draws=3,
                    support_noise_scales=[1.0, 3.0], noise_draws=2, partner_draws=2)
    settings.update(over)
    cfg = dataclasses.replace(resolve("smoke", **settings), max_facts=None)
    ctx = StageContext(config=cfg, out_dir=tmp_path, progress=False, _bundle=bundle)
    ctx.__dict__["study_facts"] = facts[:n_study]
    return ctx


def test_stage_writes_its_outputs_and_resumes_after_a_kill(tmp_path, tiny_llama, known, monkeypatch):
    facts = known[:70]
    full = tmp_path / "full"
    full.mkdir()
    support_stage.run(_ctx(full, tiny_llama, facts))
    for name in ("answers", "states", "answers_summary", "states_summary", "reference", "calibration",
                 "noise_scale"):
        assert (full / "support" / f"{name}.parquet").is_file()
    summary = json.loads((full / "support" / "summary.json").read_text())
    assert summary["n_cases"] == 4 and "edits" in summary["noise_scale_note"]
    assert (full / "tables" / "support_numbers.tex").is_file() and (full / "figures" / "support_states.png").is_file()
    ref = pd.read_parquet(full / "support" / "reference.parquet")
    assert (ref.calibration_beyond <= 0.02 + 1 / ref.n_calibration).all()
    s_sum = pd.read_parquet(full / "support" / "states_summary.parquet")
    assert s_sum.auroc.between(0, 1).all() and s_sum.share_massive.between(0, 1).all()
    assert "reference_partners" in summary and "SupNoiseThreeAUROC" in (full / "tables" / "support_numbers.tex").read_text()

    killed = tmp_path / "killed"
    killed.mkdir()
    real = support_stage.measure_case
    calls = []

    def dies_on_third(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real(*args, **kw)
    monkeypatch.setattr(support_stage, "measure_case", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        support_stage.run(_ctx(killed, tiny_llama, facts))
    assert not (killed / "support" / "summary.json").exists()
    parts = sorted((killed / "support_parts").glob("*_states.parquet"))
    assert len(parts) == 2
    stamps = {p: p.stat().st_mtime_ns for p in parts}
    monkeypatch.setattr(support_stage, "measure_case", real)
    support_stage.run(_ctx(killed, tiny_llama, facts))
    assert all(p.stat().st_mtime_ns == s for p, s in stamps.items())
    for name in ("answers", "states"):
        a = pd.read_parquet(full / "support" / f"{name}.parquet")
        b = pd.read_parquet(killed / "support" / f"{name}.parquet")
        pd.testing.assert_frame_equal(a, b, check_exact=False, atol=1e-5)


def test_cross_fitting_when_no_facts_are_held_out(tmp_path, tiny_llama, known):
    facts = known[:60]
    ctx = _ctx(tmp_path, tiny_llama, facts, n_study=60)
    folds = support_stage.reference_folds(ctx)
    assert len(folds) == 2
    served = folds[0][0] | folds[1][0]
    assert served == {f.case_id for f in facts} and not folds[0][0] & folds[1][0]
    for ids, ref in folds:   # a case is never part of its own reference
        assert not {(f.relation_id, f.subject) for f in ref} & {(f.relation_id, f.subject) for f in facts
                                                                if f.case_id in ids}


@pytest.mark.slow
def test_noise_scale_analysis_reproduces_the_trace_stage_at_its_own_scale(tmp_path, tiny_llama, known, monkeypatch):
    """With edits present, noise tracing is retraced per ν; at ν = 3σ (the trace stage's scale) the
    noise rows, hence ΔR²_noise, equal the trace stage's.  A random tiny model's total effects are far
    below the analysis' TE floor, so the floor is lowered to 0 (TE ≤ 0 stays excluded) for this check,
    and flip scrubbing is left out: the random model's relabelled answers leave no flip partners, and a
    case without a flip effect is dropped for every estimator (the analysis compares common cases).
    16 cases, so that at least the analysis' 6 remain after the TE ≤ 0 exclusions."""
    from dataclasses import replace

    from causaleval.analysis import analyze
    from experiments.stages import analyze as analyze_stage
    from experiments.stages import trace as trace_stage

    def spec_from_config(config):
        return replace(analyze_stage.spec_from_config(config), te_floor=0.0, te_floor_ld=0.0)
    monkeypatch.setattr(support_stage, "spec_from_config", spec_from_config)

    facts = known[:70]
    # trace_batch_cases=1: the trace stage takes the same one-case path as the retrace, so equality is exact
    # (the batched path agrees to ~5e-7, which the random model's TEs of ~1e-4 would amplify in ΔR²)
    ctx = _ctx(tmp_path, tiny_llama, facts, n_study=16, heatmap_cases=0, trace_estimators=["noise", "resample"],
               trace_batch_cases=1)
    trace_stage.run(ctx)
    rng = np.random.default_rng(0)
    edits = pd.DataFrame([dict(case_id=f.case_id, relation_id=f.relation_id, layer=l,
                               rewrite_score=rng.uniform(), paraphrase_score=rng.uniform(),
                               neighborhood_score=rng.uniform()) for f in facts[:16] for l in (0, 2, 3)])
    edits.to_parquet(tmp_path / "edits.parquet")
    support_stage.run(ctx)
    scale = pd.read_parquet(tmp_path / "support" / "noise_scale.parquet")
    assert set(scale.nu_factor) == {1.0, 3.0}
    # about half the random model's cases have TE ≤ 0 for one estimator and are dropped; ≥ 6 remain
    assert scale.delta_r2.notna().all() and scale.n_cases.between(6, 16).all()
    base = analyze(pd.read_parquet(tmp_path / "trace.parquet"), edits, spec_from_config(ctx.config)).r2
    for score in ("rewrite_score", "paraphrase_score"):
        want = base[(base.estimator == "noise") & (base.score == score)].delta_r2.iloc[0]
        got = scale[(scale.nu_factor == 3.0) & (scale.score == score)].delta_r2.iloc[0]
        assert got == pytest.approx(want, abs=1e-9)
    assert (tmp_path / "tables" / "support_noise_scale.tex").is_file()
    # the trace stage's own scale is reused, not retraced; a retrace at that scale reproduces it exactly
    assert not list((tmp_path / "support_parts").glob("nu3_*")) and list((tmp_path / "support_parts").glob("nu1_*"))
    sigma = noise_tracing.noise_scale(tiny_llama, ctx.known_facts, 1.0)
    state = dict(bundle=tiny_llama, nu=3.0 * sigma, n_draws=ctx.config.noise_draws, seed=ctx.config.seed,
                 grids=trace_stage.site_grids(ctx, False), key=lambda f: f.case_id, batch=1)
    retraced = pd.concat([sites for _, sites in support_stage._retrace_work(state, facts[:16])])
    keys = ["case_id", "direction", "metric", "component", "window", "layer", "position"]
    trace = pd.read_parquet(tmp_path / "trace.parquet")
    both = retraced.merge(trace[trace.estimator == "noise"], on=keys, suffixes=("", "_trace"))
    assert len(both) == len(retraced) > 0
    np.testing.assert_allclose(both.ie.to_numpy(), both.ie_trace.to_numpy(), atol=1e-9)
