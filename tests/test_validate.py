"""The validate stage on a tiny model: a planted edit raises the planted fact's effect at its layer, the
weights come back bitwise, a killed run resumes to the same tables; the accuracy metrics on known
profiles; the paired sign-flip test holds its size under a simulated null."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from causaleval.data.counterfact import Fact, write_jsonl
from causaleval.data.tokens import answer_ids
from causaleval.editing.rome import SecondMoments, apply_edit, compute_edits, default_contexts, prepare_edits
from causaleval.errors import CausalEvalError
from causaleval.estimators import noise_tracing
from causaleval.groundtruth.planted import edit_metrics, top_k_hit
from causaleval.inference.paired import sign_flip_test
from causaleval.model.testing import isolated_cache, tiny_model
from experiments.config import resolve
from experiments.context import StageContext
from experiments.publish import publish_validate
from experiments.stages import validate
from experiments.stages.edit import _hparams
from experiments.stages.report import validate_report

SUBJECTS = ("France", "Germany", "Spain", "Italy", "Poland", "Greece")
ANSWERS = ("Paris", "Berlin", "Madrid", "Rome", "Warsaw", "Athens")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    yield from isolated_cache(tmp_path / "cache", monkeypatch)


def _facts() -> list[Fact]:
    return [Fact(i, "The capital of {}", "P36", s, a, ANSWERS[(i + 2) % len(ANSWERS)])
            for i, (s, a) in enumerate(zip(SUBJECTS, ANSWERS))]


def _ctx(out, bundle, **over) -> StageContext:
    facts = _facts()
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl([f.to_record() for f in facts], out / "facts.jsonl")
    settings = dict(validate_facts=3, validate_layers=[1, 2], validate_windows=[1, 3], noise_draws=2,
                    partner_draws=2, n_bootstrap=50, validate_permutations=99, rome_context_texts=2,
                    rome_stat_tokens=300, max_facts=None, shard_size=1)
    settings.update(over)
    cfg = resolve("smoke", **settings)
    return StageContext(config=cfg, out_dir=out, progress=False, _bundle=bundle)


def _strong():
    """ROME settings under which the tiny model's edits succeed (many steps, a loose clamp, no penalty)."""
    return dict(rome_hparams={"v_num_grad_steps": 60, "clamp_norm_factor": 1000.0, "kl_factor": 0.0,
                              "v_weight_decay": 0.0})


def test_planted_edit_raises_the_window1_effect_at_its_layer(cache, tmp_path):
    """On the edited model the planted fact's window-1 MLP effect at l exceeds the unedited model's at l
    (same answer o_new, same noise draws); the edit is the one the stage applies."""
    bundle = tiny_model("llama", n_layers=4)
    ctx = _ctx(tmp_path / "r", bundle, **_strong())
    cfg = ctx.config
    hp = _hparams(bundle, cfg)
    stats = SecondMoments(bundle, hp, seed=0)
    facts = _facts()[:3]
    prep = prepare_edits(bundle, facts, default_contexts(bundle, hp), hp)
    nu = noise_tracing.noise_scale(bundle, facts, 3.0)
    state = dict(config=cfg, bundle=bundle, grids=validate.grids([1]), nu=nu, pool=_facts(), estimators=["noise"])
    planted = [validate.planted_fact(f) for f in facts]
    assert planted[0].target_true == facts[0].target_new

    last = validate.subject_last(bundle, facts)

    def ie_at(tables, layer):
        s = tables.sites
        s = s[(s.position == s.case_id.map(last)) & (s.layer == layer) & (s.window == 1)]
        return float(s.ie.iloc[0])

    before = validate.trace_planted(state, planted)
    gains = []
    for layer in (1, 2):
        for fact, res, b in zip(planted, compute_edits(bundle, prep, layer, hp, stats), before):
            with apply_edit(bundle, res):
                new = answer_ids(bundle.tokenizer, fact.target_true)[0]
                assert int(validate._next_token(bundle, fact).argmax()) == new     # the edit took
                after = validate.trace_planted(state, [fact])[0]
            gains.append(ie_at(after, layer) - ie_at(b, layer))
    assert min(gains) > 0, gains


@pytest.fixture(scope="module")
def strong_run(tmp_path_factory, one_thread_tiny_gpt2):
    """The stage once on a tiny GPT-2 whose edits succeed: (results folder, weights before, model after)."""
    root = tmp_path_factory.mktemp("validate")
    with one_thread_tiny_gpt2(root) as (bundle, _, original):
        validate.run(_ctx(root / "r", bundle, **_strong()))
    return root / "r", original, bundle


def test_stage_restores_weights_and_writes_its_tables(strong_run):
    folder, original, bundle = strong_run
    for k, v in bundle.model.state_dict().items():
        assert torch.equal(v, original[k]), k
    out = folder / "validate"
    edits = pd.read_parquet(out / "edits.parquet")
    assert len(edits) == 3 * 2 and set(edits.planted_layer) == {1, 2}
    assert edits.success.any(), edits
    sites = pd.read_parquet(out / "sites.parquet")
    assert set(sites.estimator) == {"noise", "resample", "flip"} and set(sites.metric) == {"p"}
    assert set(sites.window) == {1, 3} and set(sites.component) == {"mlp"}
    # traced: the unedited model once per fact, the edited model only for successful edits
    traced = sites[sites.planted_layer >= 0][["case_id", "planted_layer"]].drop_duplicates()
    ok = edits[edits.success][["case_id", "planted_layer"]]
    assert sorted(map(tuple, traced.to_numpy())) == sorted(map(tuple, ok.to_numpy()))
    assert set(sites[sites.planted_layer == -1].case_id) == set(edits.case_id)
    # every layer, positions from the first subject token
    g = sites[(sites.planted_layer == -1) & (sites.estimator == "noise") & (sites.window == 1)]
    assert set(g.layer) == {0, 1, 2, 3} and not (g.role == "before_subject").any() and len(g)
    acc = pd.read_parquet(out / "accuracy.parquet")
    assert {"hit1", "hit1_low", "hit3", "distance", "mass", "added"} <= set(acc.columns)
    assert set(acc.planted_layer) <= {-1, 1, 2} and -1 in set(acc.planted_layer)
    assert ((acc.hit1 >= 0) & (acc.hit1 <= acc.hit3 + 1e-12) & (acc.hit3 <= 1)).all()
    paired = pd.read_parquet(out / "paired.parquet")
    assert {("flip", "noise"), ("resample", "noise")} == set(zip(paired.a, paired.b))
    hist = pd.read_parquet(out / "argmax.parquet")
    assert np.allclose(hist.groupby(["estimator", "window", "planted_layer"]).share.sum(), 1.0)


def test_killed_run_resumes_to_the_same_tables(cache, tmp_path, monkeypatch):
    bundle = tiny_model("gpt2", n_layers=4)
    ctx = _ctx(tmp_path / "full", bundle)
    validate.run(ctx)
    full = {n: pd.read_parquet(tmp_path / "full" / "validate" / f"{n}.parquet") for n in ("localisation", "accuracy")}
    # a run killed after its first case: the work generator stops after that case's parts
    real = validate._work

    def dies_after_one(state, facts):
        for key, frame in real(state, facts):
            yield key, frame
            if key.endswith("_sites"):
                raise KeyboardInterrupt

    monkeypatch.setattr(validate, "_work", dies_after_one)
    part_ctx = _ctx(tmp_path / "resumed", bundle)
    with pytest.raises(KeyboardInterrupt):
        validate.run(part_ctx)
    parts = tmp_path / "resumed" / "validate_parts"
    assert len(list(parts.glob("*_sites.parquet"))) == 1
    stamp = {p.name: p.stat().st_mtime_ns for p in parts.glob("*.parquet")}
    monkeypatch.setattr(validate, "_work", real)
    validate.run(_ctx(tmp_path / "resumed", bundle))
    assert all(p.stat().st_mtime_ns == stamp[p.name] for p in parts.glob("*.parquet") if p.name in stamp)
    for n, frame in full.items():
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "resumed" / "validate" / f"{n}.parquet"), frame)
    # a deleted part is recomputed to the same values
    victim = sorted(parts.glob("*_sites.parquet"))[-1]
    victim.unlink()
    validate.run(_ctx(tmp_path / "resumed", bundle))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "resumed" / "validate" / "localisation.parquet"),
                                  full["localisation"])


def test_edit_metrics_on_known_profiles():
    layers = np.arange(6)
    ie = np.array([0.5, 0.1, 0.3, 0.2, -0.1, 0.0])
    m = edit_metrics(layers, ie, np.zeros(6), planted=2)
    assert m["hit1"] == 0.0 and m["hit3"] == 1.0 and m["distance"] == 2.0 and m["argmax_layers"] == [0]
    assert m["mass"] == pytest.approx(0.3 / 1.1) and m["added"] == pytest.approx(0.3)
    hit = edit_metrics(layers, ie, np.full(6, 0.1), planted=0)
    assert hit["hit1"] == 1.0 and hit["distance"] == 0.0 and hit["added"] == pytest.approx(0.4)
    # ties are split: two layers share the maximum
    tied = np.array([0.4, 0.4, 0.1, 0.0, 0.0, 0.0])
    assert edit_metrics(layers, tied, np.zeros(6), planted=1)["hit1"] == 0.5
    assert edit_metrics(layers, tied, np.zeros(6), planted=1)["distance"] == 0.5
    assert top_k_hit(np.array([3.0, 2.0, 1.0, 1.0, 0.0]), 2, 3) == 0.5
    assert np.isnan(edit_metrics(layers, -np.ones(6), np.zeros(6), planted=0)["mass"])


@pytest.mark.parametrize("kind", ["continuous", "binary"])
def test_sign_flip_test_holds_its_size_on_a_simulated_null(kind):
    """Per-fact paired differences of two exchangeable estimators: the test rejects at α = 0.05 in a
    share of null studies inside the Monte-Carlo band, and often under a planted difference."""
    rng = np.random.default_rng(0)
    reps, n, alpha = 800, 30, 0.05

    def study(shift):
        if kind == "continuous":       # a fact effect shared by both estimators, plus exchangeable noise
            fact = 2 * rng.normal(size=n)
            return (fact + rng.normal(size=n) + shift) - (fact + rng.normal(size=n))
        p = 0.3 + shift
        return (rng.random(n) < p).astype(float) - (rng.random(n) < 0.3).astype(float)

    null = np.mean([sign_flip_test(study(0.0), 199, rng).p < alpha for _ in range(reps)])
    band = 2.58 * np.sqrt(alpha * (1 - alpha) / reps)
    assert abs(null - alpha) < band, null
    power = np.mean([sign_flip_test(study(0.6), 199, rng).p < alpha for _ in range(200)])
    assert power > 0.5, power


def test_subject_last_positions_give_the_from_subject_effects_there(cache):
    """validate_positions=subject_last traces one position; its IE equals the from_subject trace's there."""
    bundle = tiny_model("llama", n_layers=4)
    facts = [dataclasses.replace(f, prompt="The capital of {} is") for f in _facts()[:2]]
    cfg = resolve("smoke", noise_draws=2, partner_draws=2)
    base = dict(config=cfg, bundle=bundle, nu=noise_tracing.noise_scale(bundle, facts, 3.0), pool=_facts(),
                estimators=["noise", "flip"])
    last = validate.subject_last(bundle, facts)
    wide = _sites(validate.trace_planted(dict(base, grids=validate.grids([1, 3])), facts))
    one = _sites(validate.trace_planted(dict(base, grids=validate.grids([1, 3], "subject_last")), facts))
    assert (one.position == one.case_id.map(last)).all() and (wide.position > wide.case_id.map(last)).any()
    wide = wide[wide.position == wide.case_id.map(last)]
    key = ["estimator", "case_id", "window", "layer"]
    pd.testing.assert_series_equal(one.sort_values(key).ie.reset_index(drop=True),
                                   wide.sort_values(key).ie.reset_index(drop=True), rtol=1e-5, atol=1e-7)


def _sites(tables) -> pd.DataFrame:
    return pd.concat([t.sites for t in tables], ignore_index=True)


def test_report_writes_table_macros_and_figure(strong_run, tmp_path):
    folder, _, _ = strong_run
    paths = validate_report(folder / "validate", tmp_path)
    names = {p.name for p in paths}
    assert {"validate.tex", "validate_numbers.tex", "validate.pdf", "validate.png"} <= names
    table = (tmp_path / "tables" / "validate.tex").read_text()
    assert r"\label{tab:validate}" in table and "MLP window 3" in table and "Flip scrubbing" in table
    macros = (tmp_path / "tables" / "validate_numbers.tex").read_text()
    acc = pd.read_parquet(folder / "validate" / "accuracy.parquet")
    pooled = acc[(acc.estimator == "flip") & (acc.window == 1) & (acc.planted_layer == -1)].iloc[0]
    assert rf"\newcommand{{\ValHitOneFlipOne}}{{{pooled.hit1:.2f}}}" in macros
    assert r"\newcommand{\ValNSuccess}" in macros and "ValFlipNoiseOneP" in macros
    # every macro main.tex quotes from the validate run has a fallback in paper/fallbacks.tex, and the run defines it
    paper_dir = Path(__file__).resolve().parents[1] / "paper"
    tex, fallbacks = (paper_dir / "main.tex").read_text(), (paper_dir / "fallbacks.tex").read_text()
    used = set(re.findall(r"\\(Val[A-Za-z]+)", tex))
    assert used and all(rf"\providecommand{{\{m}}}" in fallbacks for m in used)
    defined = set(re.findall(r"\\newcommand\{\\(Val[A-Za-z]+)\}", macros))
    assert {m for m in used if "Five" not in m} <= defined       # this run has windows 1 and 3, not 5


def test_publish_validate_copies_the_compact_outputs(strong_run, tmp_path):
    folder, _, _ = strong_run
    copied = publish_validate(folder, tmp_path / "validate")
    assert {p.name for p in copied} >= {"summary.json", "accuracy.parquet", "argmax.parquet", "paired.parquet"}
    assert not (tmp_path / "validate" / "sites.parquet").exists()
    assert validate_report(tmp_path / "validate", tmp_path / "paper")     # rebuildable from the copy
    with pytest.raises(CausalEvalError, match="validate stage"):
        publish_validate(tmp_path / "nothing", tmp_path / "v2")


def test_validate_settings_are_checked_and_layers_spread_over_the_model():
    from causaleval.errors import ConfigError
    from experiments.config import validate as check

    for bad in (dict(validate_windows=[0]), dict(validate_windows=[1, 1]), dict(validate_positions="all"),
                dict(validate_facts=0), dict(validate_layers=[-1])):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            check(dataclasses.replace(resolve("smoke"), **bad))
    assert validate.validate_layers_for(resolve("study"), 30) == [3, 10, 17, 24]
    assert validate.validate_layers_for(resolve("smoke", validate_layer_count=4), 4) == [0, 1, 2]
    assert validate.validate_layers_for(resolve("smoke", validate_layers=[5, 2]), 30) == [2, 5]
    assert resolve("study").validate_facts >= 50


def test_rows_without_layer0_read_the_peak_among_the_other_layers():
    """A profile that peaks at layer 0 and is second at the planted layer: a miss with layer 0, a hit without."""
    from causaleval.groundtruth.planted import localisation_rows, rows_without_layers

    ie = np.array([0.9, 0.1, 0.5, 0.2])
    profiles = pd.DataFrame(dict(case_id=1, relation_id="P17", estimator="noise", window=1, planted_layer=2,
                                 layer=np.arange(4), ie=ie, ie_unedited=0.0, te=1.0))
    planted0 = profiles.assign(planted_layer=0)           # a planted layer that is excluded is dropped
    both = pd.concat([profiles, planted0, profiles.assign(window=5)], ignore_index=True)
    loc = localisation_rows(both)
    assert loc[(loc.window == 1) & (loc.planted_layer == 2)].hit1.item() == 0.0
    rows = rows_without_layers(both, loc, exclude=(0,))
    assert len(rows) == 1 and rows.planted_layer.item() == 2 and rows.window.item() == 1
    assert rows.hit1.item() == 1.0 and rows.n_layers.item() == 3 and rows.argmax_layers.item() == [2]
