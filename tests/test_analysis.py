"""The hypothesis tests (Hase et al. 2023 design) on synthetic tables whose truth is known (causaleval.inference.synthetic)."""

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from causaleval.analysis import (AnalysisError, AnalysisSpec, analyze, case_layer_arrays, half_effects, headline,
                                 load_results, localisation_effects, summary_dict, write_results)
from causaleval.inference.correlation import fisher_ci, williams_abs, williams_t
from causaleval.inference.regression import delta_r2_many, f_test, weighted_r2
from causaleval.inference.synthetic import SyntheticSpec, draws_around, synthetic_tables

SPEC = AnalysisSpec(n_bootstrap=200, n_permutations=199, power_reps=100, seed=1)


@pytest.fixture(scope="module")
def tables():
    return synthetic_tables(SyntheticSpec(n_cases=30, n_layers=10, seed=3))


@pytest.fixture(scope="module")
def result(tables):
    return analyze(tables["trace"], tables["edits"], SPEC)


def test_williams_t_matches_worked_example():
    # Howell, Statistical Methods for Psychology (6th ed., p. 262): t = 1.361, df = 23, p = .187.
    t, df, p = williams_t(0.80, 0.72, 0.89, 26)
    assert df == 23
    assert t == pytest.approx(1.361, abs=5e-4)
    assert p == pytest.approx(0.187, abs=5e-4)
    t2, _, p2 = williams_t(0.72, 0.80, 0.89, 26)
    assert t2 == pytest.approx(-t) and p2 == pytest.approx(p)


def test_weighted_r2_equals_ols_on_resampled_rows():
    rng = np.random.default_rng(0)
    cases, layers = 12, 5
    y = rng.standard_normal((cases, layers)) + np.arange(layers)
    x = rng.standard_normal((cases, layers)) + 0.5 * y
    y[2, 3] = np.nan  # a missing row
    w = rng.multinomial(cases, np.full(cases, 1 / cases), size=3).astype(float)
    r2l, r2b = weighted_r2(y, x, w)
    for b in range(3):
        rows = [dict(case=c, layer=l, score=y[c, l], effect=x[c, l])
                for c in range(cases) for _ in range(int(w[b, c])) for l in range(layers) if np.isfinite(y[c, l])]
        d = pd.DataFrame(rows)
        assert r2l[b] == pytest.approx(smf.ols("score ~ C(layer)", d).fit().rsquared, abs=1e-9)
        assert r2b[b] == pytest.approx(smf.ols("score ~ C(layer) * effect", d).fit().rsquared, abs=1e-9)


def test_delta_r2_detects_the_estimator_that_carries_signal(result):
    r2 = result.r2[result.r2.score == "rewrite_score"].set_index("estimator")
    assert r2.loc["flip", "delta_r2"] > r2.loc["resample", "delta_r2"] > r2.loc["noise", "delta_r2"]
    assert r2.loc["flip", "p_f"] < 1e-3 and r2.loc["flip", "p_cluster"] == pytest.approx(1 / 200)
    assert r2.loc["noise", "p_cluster"] > 0.05 and (r2.n_excluded == 0).all()
    assert r2.cluster_method.str.startswith("case permutation").all()
    # layer explains most of the variance (the Hase et al. pattern for noise tracing)
    assert r2.loc["noise", "r2_layer"] > 0.5 and r2.loc["noise", "delta_r2"] < 0.05
    assert (r2.r2_both >= r2.r2_layer - 1e-12).all()
    assert (r2.n_cases == 30).all() and (r2.n_rows == 30 * 6).all()


@pytest.mark.parametrize("measure", ["r_w", "delta_r2"])
def test_h1_sign_and_bootstrap_ci(result, measure):
    h1 = result.h1[(result.h1.a == "flip") & (result.h1.b == "noise") & (result.h1.measure == measure)]
    row = h1.set_index("score").loc["rewrite_score"]
    assert row["diff"] > 0 and row.ci_low > 0 and row.lower > 0 and row.p_one_sided < 0.05
    assert (result.h1.ci_low <= result.h1["diff"]).all() and (result.h1["diff"] <= result.h1.ci_high).all()
    assert (result.h1.ci_low <= result.h1.lower).all() and (result.h1.upper <= result.h1.ci_high).all()
    assert row.p_one_sided >= 1 / (SPEC.n_permutations + 1)
    assert 0 < row.mdd < row["diff"] and row.verdict.startswith("supports H1")
    assert set(result.h1.columns) >= {"a", "b", "score", "measure", "diff", "ci_low", "ci_high", "lower", "upper",
                                      "p_one_sided", "mdd", "n_cases", "method"}
    assert result.h1.groupby(["a", "b", "score"]).measure.nunique().eq(2).all()


def test_h1_is_negative_when_noise_carries_the_signal():
    t = synthetic_tables(SyntheticSpec(n_cases=30, n_layers=8, flip_loading=0.0, noise_loading=1.0, seed=5))
    spec = AnalysisSpec(n_bootstrap=100, n_permutations=199, power_reps=50, scores=("rewrite_score",),
                        pairs=(("flip", "noise"),))
    res = analyze(t["trace"], t["edits"], spec)
    for _, row in res.h1.iterrows():
        assert row["diff"] < 0 and row.ci_high < 0 and row.p_one_sided > 0.5
        assert row.verdict.startswith("does not support H1")


def test_directional_r_w_keeps_the_sign_that_delta_r2_loses():
    """An effect that predicts *worse* edits raises Hase et al.'s ΔR² like a good one, but not r_w."""
    t = synthetic_tables(SyntheticSpec(n_cases=30, n_layers=8, flip_loading=-1.0, noise_loading=0.0, seed=5))
    spec = AnalysisSpec(n_bootstrap=200, n_permutations=199, power_reps=50, scores=("rewrite_score",),
                        pairs=(("flip", "noise"),))
    res = analyze(t["trace"], t["edits"], spec)
    r2 = res.r2.set_index("estimator")
    assert r2.loc["flip", "delta_r2"] > 0.05 and r2.loc["flip", "p_cluster"] < 0.05
    assert r2.loc["flip", "r_w"] < -0.3 and r2.loc["flip", "r_w_ci_high"] < 0 and r2.loc["flip", "p_r_w"] > 0.9
    assert r2.loc["flip", "delta_r2_neg"] > 10 * r2.loc["flip", "delta_r2_pos"]
    h = res.h1.set_index("measure")
    assert h.loc["delta_r2", "diff"] > 0 and h.loc["r_w", "diff"] < 0 and h.loc["r_w", "p_one_sided"] > 0.9


def test_r_w_is_the_spread_weighted_mean_of_per_layer_correlations():
    from causaleval.inference.directional import within_layer_r

    rng = np.random.default_rng(4)
    y = rng.standard_normal((40, 5)) * np.array([0.1, 1, 2, 0.5, 3]) + np.arange(5)
    x = 0.3 * y + rng.standard_normal((40, 5)) * np.array([5, 1, 0.2, 1, 1])
    r = np.array([np.corrcoef(y[:, l], x[:, l])[0, 1] for l in range(5)])
    sd = y.std(0)
    assert within_layer_r(y, x) == pytest.approx((sd * r).sum() / np.sqrt(5 * (sd ** 2).sum()), rel=1e-10)
    # invariant to any increasing affine map of one layer's effects
    x2 = x.copy()
    x2[:, 2] = 7 * x2[:, 2] - 3
    assert within_layer_r(y, x2) == pytest.approx(within_layer_r(y, x), rel=1e-10)


def test_signed_parts_add_up_to_delta_r2(result):
    r2 = result.r2
    assert np.allclose(r2.delta_r2_pos + r2.delta_r2_neg, r2.delta_r2, atol=1e-10)
    assert (r2.delta_r2_pos >= 0).all() and (r2.delta_r2_neg >= 0).all()
    # no signal: ΔR² is still positive, and its permutation-null expectation says by how much
    noise = r2[(r2.estimator == "noise") & (r2.score == "rewrite_score")].iloc[0]
    assert noise.delta_null_mean > 0 and abs(noise.delta_excess) < 3 * noise.delta_null_mean



def test_reliability_is_one_without_draw_noise_and_drops_with_it(tables):
    spec = AnalysisSpec(n_bootstrap=100, n_permutations=99, power_reps=20, seed=1, scores=("rewrite_score",))
    exact = analyze(tables["trace"], tables["edits"], spec, draws_around(tables["trace"], 6, 0.0))
    rel = exact.reliability[exact.reliability.layer == -1].set_index("estimator")
    assert np.allclose(rel.reliability, 1.0) and np.allclose(rel.first3_minus_all, 0.0, atol=1e-12)
    noisy = analyze(tables["trace"], tables["edits"], spec, draws_around(tables["trace"], 6, 0.03))
    rel2 = noisy.reliability[noisy.reliability.layer == -1].set_index("estimator")
    assert (rel2.reliability < 0.999).all() and (rel2.ci_low <= rel2.reliability).all()
    noisier = analyze(tables["trace"], tables["edits"], spec, draws_around(tables["trace"], 6, 0.1))
    rel3 = noisier.reliability[noisier.reliability.layer == -1].set_index("estimator")
    assert (rel3.reliability < rel2.reliability).all()
    r2 = noisy.r2.set_index("estimator")
    assert np.allclose(r2.r_w_disattenuated, r2.r_w / np.sqrt(r2.reliability))
    assert noisy.h1.loc[noisy.h1.measure == "r_w", "diff_disattenuated"].notna().all()


def test_one_reliability_one_interval_in_every_table_and_page(tables):
    """The reliability of an effect is computed once: the r2 rows of a score on the same rows (and so the
    directional table, the macros, the headline and the replication table) carry the pooled row's CI;
    a score missing for some facts gets the same computation on its own rows."""
    from causaleval.analysis.study import effect_reliability, summary_dict

    spec = AnalysisSpec(n_bootstrap=60, n_permutations=20, power_reps=4,
                        scores=("rewrite_score", "neighborhood_score"))
    edits = tables["edits"].copy()
    edits.loc[edits.case_id == edits.case_id.iloc[0], "neighborhood_score"] = np.nan
    res = analyze(tables["trace"], edits, spec, draws_around(tables["trace"], 6, 0.05))
    pooled = res.reliability[res.reliability.layer == -1].set_index("estimator")
    r2 = res.r2.set_index(["score", "estimator"])
    for e in pooled.index:
        same = r2.loc[("rewrite_score", e)]
        assert (same.reliability, same.reliability_ci_low, same.reliability_ci_high) == \
            (pooled.reliability[e], pooled.ci_low[e], pooled.ci_high[e])
        other = r2.loc[("neighborhood_score", e)]
        assert other.reliability != pooled.reliability[e]         # fewer facts: another quantity
    v = summary_dict([res])["variants"]["default"]
    e = pooled.index[0]
    assert effect_reliability(v, e, v["delta_r2"]["rewrite_score"][e]) == \
        (pooled.reliability[e], pooled.ci_low[e], pooled.ci_high[e])
    own = v["delta_r2"]["neighborhood_score"][e]
    assert effect_reliability(v, e, own) == (own["reliability"], own["reliability_ci_low"], own["reliability_ci_high"])
    # an older summary whose per-score copy drew another bootstrap stream: the pooled interval wins
    stale = dict(own, reliability=pooled.reliability[e], reliability_ci_low=0.0, reliability_ci_high=1.0)
    assert effect_reliability(v, e, stale)[1:] == (pooled.ci_low[e], pooled.ci_high[e])


def test_a_half_whose_te_averages_below_the_floor_does_not_sink_the_reliability(tables):
    """A fact whose odd draws almost fail to corrupt (half-TE 0.002 though its TE is above the floor):
    its odd half's fraction restored is IE/0.002, an outlier that alone drags the split-half correlation
    down.  The half is undefined below the TE floor, as a case is in the analysis."""
    spec = AnalysisSpec(n_bootstrap=100, n_permutations=99, power_reps=20, seed=1, scores=("rewrite_score",))
    draws = draws_around(tables["trace"], 6, 0.0)
    te = draws.groupby(["estimator", "case_id"]).te.first()
    est, case = te[te > 0.2].index[0]
    odd = (draws.estimator == est) & (draws.case_id == case) & (draws.draw % 2 == 1)
    even = (draws.estimator == est) & (draws.case_id == case) & (draws.draw % 2 == 0)
    draws.loc[odd, "te"] = 0.002
    draws.loc[even, "te"] = 2 * te[(est, case)] - 0.002        # the mean over all draws is unchanged
    rel = analyze(tables["trace"], tables["edits"], spec, draws).reliability.set_index(["estimator", "layer"])
    assert rel.loc[(est, -1), "reliability"] > 0.99
    halves = half_effects(draws, tables["trace"], spec)
    assert halves[(halves.estimator == est) & (halves.case_id == case) & (halves.half == "b")].effect.isna().all()
    no_floor = AnalysisSpec(n_bootstrap=100, n_permutations=99, power_reps=20, seed=1, scores=("rewrite_score",),
                            te_floor=0.0)
    rel0 = analyze(tables["trace"], tables["edits"], no_floor, draws).reliability.set_index(["estimator", "layer"])
    assert rel0.loc[(est, -1), "reliability"] < 0.9


def test_split_half_reliability_recovers_a_known_reliability():
    from causaleval.inference.reliability import split_half

    rng = np.random.default_rng(0)
    signal = rng.standard_normal((3000, 4)) + np.arange(4)
    h1, h2 = signal + rng.standard_normal(signal.shape), signal + rng.standard_normal(signal.shape)
    r = split_half(h1, h2, 200, rng)
    assert r.r_half == pytest.approx(0.5, abs=0.03) and r.reliability == pytest.approx(2 / 3, abs=0.03)
    assert r.ci_low < r.reliability < r.ci_high


def test_per_layer_williams_and_correction(result):
    pl = result.per_layer[(result.per_layer.score == "rewrite_score") & (result.per_layer.a == "flip")
                          & (result.per_layer.b == "noise")]
    assert len(pl) == 6 and not pl.degenerate.any()
    assert (pl.williams_t > 0).all() and (pl.r_diff > 0).all()
    assert (pl.p_adj >= pl.p - 1e-15).all()
    assert ((pl.ci_low <= pl.r_diff) & (pl.r_diff <= pl.ci_high)).all()
    assert ((pl.r_flip_ci_low < pl.r_flip) & (pl.r_flip < pl.r_flip_ci_high)).all()


def test_within_case_profiles_and_argmax(result):
    wc = result.within_case[result.within_case.score == "rewrite_score"].set_index("estimator")
    assert wc.loc["flip", "mean_rho"] > 0.3 > abs(wc.loc["noise", "mean_rho"])
    assert wc.loc["flip", "ci_low"] <= wc.loc["flip", "mean_rho"] <= wc.loc["flip", "ci_high"]
    assert wc.loc["flip - noise", "p"] < 0.05
    am = result.argmax[result.argmax.score == "rewrite_score"].set_index("estimator")
    assert am.loc["flip", "hit_rate"] > am.loc["flip", "chance"] and am.loc["flip", "p"] < 0.05
    assert am.loc["flip", "uniform_chance"] == pytest.approx(1 / 6)


def test_token_rules(tables):
    trace = tables["trace"]
    mx = localisation_effects(trace, SPEC).set_index(["estimator", "case_id", "layer"]).effect
    last = localisation_effects(trace, AnalysisSpec(token_rule="subject_last")) \
        .set_index(["estimator", "case_id", "layer"]).effect
    assert (mx >= last - 1e-12).all()
    sel = trace[(trace.role == "subject_last") & (trace.component == "mlp") & (trace.window == 5)
                & (trace.direction == "denoise") & (trace.metric == "p")]
    row = sel.iloc[0]
    assert last.loc[(row.estimator, row.case_id, row.layer)] == pytest.approx(row.ie / row.te)
    raw = localisation_effects(trace, AnalysisSpec(effect="raw")).set_index(["estimator", "case_id", "layer"])
    assert raw.effect.loc[(row.estimator, row.case_id, row.layer)] == pytest.approx(row.ie)


def test_effect_is_hase_fraction_restored_from_the_first_subject_token(tables):
    trace = tables["trace"].copy()
    key = (trace.estimator == "noise") & (trace.case_id == trace.case_id.iloc[0]) & (trace.layer == 0)
    # a large IE before the subject is ignored; a negative fraction is clipped to 0
    trace.loc[key & (trace.role == "before_subject"), "ie"] = 99.0
    trace.loc[key & (trace.role != "before_subject"), "ie"] = -0.1
    eff = localisation_effects(trace, SPEC).set_index(["estimator", "case_id", "layer"]).effect
    assert eff.loc[("noise", trace.case_id.iloc[0], 0)] == 0.0
    sel = trace[(trace.component == "mlp") & (trace.window == 5) & (trace.direction == "denoise")
                & (trace.metric == "p") & (trace.role != "before_subject") & ~key]
    expect = (sel.ie / sel.te).clip(lower=0).groupby([sel.estimator, sel.case_id, sel.layer]).max()
    assert np.allclose(eff.loc[expect.index].to_numpy(), expect.to_numpy())


def test_scaling_a_cases_ie_and_te_changes_no_effect_and_no_delta_r2(tables, result):
    trace = tables["trace"].copy()
    cid = trace.case_id.iloc[0]
    for est, c in (("flip", 7.0), ("noise", 0.2)):
        rows = (trace.case_id == cid) & (trace.estimator == est)
        trace.loc[rows, ["ie", "te"]] *= c
    before = localisation_effects(tables["trace"], SPEC)
    after = localisation_effects(trace, SPEC)
    assert np.allclose(before.effect, after.effect)
    res = analyze(trace, tables["edits"], SPEC)
    assert np.allclose(res.r2.delta_r2, result.r2.delta_r2) and np.allclose(res.h1["diff"], result.h1["diff"])
    assert np.allclose(res.r2.r2_both, result.r2.r2_both)


def test_cases_below_the_te_floor_are_excluded_and_counted(tables):
    trace = tables["trace"].copy()
    ids = sorted(trace.case_id.unique())
    trace.loc[(trace.case_id == ids[0]) & (trace.estimator == "noise"), "te"] = -0.2   # TE ≤ 0
    trace.loc[(trace.case_id == ids[1]) & (trace.estimator == "flip"), "te"] = 0.01   # below 0.05
    spec = AnalysisSpec(n_bootstrap=50, n_permutations=99, power_reps=30, scores=("rewrite_score",))
    res = analyze(trace, tables["edits"], spec)
    assert set(res.excluded.case_id) == {ids[0], ids[1]}
    assert not set(res.joined.case_id) & {ids[0], ids[1]}
    assert (res.r2.n_excluded == 2).all() and (res.r2.n_cases == 28).all()
    assert (res.h1.n_excluded == 2).all() and (res.per_layer.n_excluded == 2).all()
    assert summary_dict([res])["variants"]["default"]["n_excluded"] == 2
    with pytest.raises(AnalysisError, match="te_floor"):
        AnalysisSpec(te_floor=-1.0)


def test_delta_r2_many_and_f_test_equal_statsmodels():
    rng = np.random.default_rng(4)
    cases, layers = 15, 4
    y = rng.standard_normal((cases, layers)) + np.arange(layers)
    x = rng.standard_normal((3, cases, layers)) + 0.3 * y
    y[1, 2] = np.nan
    r2l, r2b = delta_r2_many(y, x)
    f, p, q, df = f_test(y, x)
    for b in range(3):
        d = pd.DataFrame(dict(score=y.ravel(), effect=x[b].ravel(), layer=np.tile(np.arange(layers), cases))).dropna()
        small, big = smf.ols("score ~ C(layer)", d).fit(), smf.ols("score ~ C(layer) * effect", d).fit()
        assert r2l[b] == pytest.approx(small.rsquared, abs=1e-9) and r2b[b] == pytest.approx(big.rsquared, abs=1e-9)
        fs, ps, dfn = big.compare_f_test(small)
        assert f[b] == pytest.approx(fs, rel=1e-7) and p[b] == pytest.approx(ps, rel=1e-6) and q[b] == dfn


def test_fisher_ci_and_williams_on_absolute_correlations():
    lo, hi = fisher_ci(0.5, 28)
    z = np.arctanh(0.5)
    assert lo == pytest.approx(np.tanh(z - 1.959963984540054 / 5)) and hi == pytest.approx(np.tanh(z + 1.959963984540054 / 5))
    # r_noise = −0.675 explains more variance than r_flip = −0.207: a "flip better" count must not see it
    t, _, p = williams_abs(-0.207, -0.675, 0.3, 12)
    assert t < 0
    t2, _, _ = williams_abs(0.207, -0.675, -0.3, 12)
    assert t2 == pytest.approx(t)


def test_degenerate_layer_is_reported_and_left_out(tables):
    edits = tables["edits"].copy()
    last = edits.layer.max()
    edits.loc[edits.layer == last, "rewrite_score"] = 0.0
    spec = AnalysisSpec(n_bootstrap=50, n_permutations=99, power_reps=30, scores=("rewrite_score",),
                        pairs=(("flip", "noise"),))
    pl = analyze(tables["trace"], edits, spec).per_layer
    deg = pl[pl.layer == last].iloc[0]
    assert deg.degenerate and np.isnan(deg.p) and np.isnan(deg.p_adj)
    assert pl[pl.layer != last].p_adj.notna().all() and not pl[pl.layer != last].degenerate.any()


def test_missing_trace_rows_are_a_clear_error(tables):
    with pytest.raises(AnalysisError, match="window 7"):
        localisation_effects(tables["trace"], AnalysisSpec(window=7))
    with pytest.raises(AnalysisError, match="lacks columns"):
        localisation_effects(tables["trace"].drop(columns=["ie"]), SPEC)


def test_edits_without_effects_are_reported(tables):
    edits = tables["edits"]
    extra = edits[edits.case_id == edits.case_id.iloc[0]].assign(case_id=-1)
    spec = AnalysisSpec(n_bootstrap=50, n_permutations=99, power_reps=30, scores=("rewrite_score",),
                        pairs=(("flip", "noise"),))
    res = analyze(tables["trace"], pd.concat([edits, extra]), spec)
    assert -1 not in set(res.joined.case_id)
    assert any("no localisation effect" in n for n in res.notes)


def test_write_load_and_headline(result, tmp_path):
    write_results([result], tmp_path, {"model": {"name": "synthetic"}})
    back = load_results(tmp_path)
    assert set(back.r2.variant) == {"default"}
    assert len(back.r2) == len(result.r2)
    text = headline(back.summary)
    flip = result.r2[(result.r2.score == "rewrite_score") & (result.r2.estimator == "flip")].iloc[0]
    assert f"{flip.delta_r2:.4f}" in text and "H1" in text
    assert "minimum detectable difference" in text and "supports H1" in text and "Wald" not in text
    assert summary_dict([result])["variants"]["default"]["n_cases"] == 30
    with pytest.raises(AnalysisError, match="analyze stage"):
        load_results(tmp_path / "nothing")


def test_case_layer_arrays_marks_missing_rows(result):
    d = result.joined[~((result.joined.case_id == result.joined.case_id.iloc[0]) & (result.joined.layer == 0))]
    arr = case_layer_arrays(d, "rewrite_score", sorted(d.layer.unique()), sorted(d.case_id.unique()))
    assert arr.shape == (30, 6) and np.isnan(arr[0, 0]) and np.isfinite(arr[1:, :]).all()


def test_too_few_clusters_give_no_cluster_p_and_the_table_says_so(tmp_path):
    from causaleval.reporting.tables import hase_table
    t = synthetic_tables(SyntheticSpec(n_cases=5, n_layers=8, seed=2))
    spec = AnalysisSpec(n_bootstrap=50, n_permutations=99, power_reps=30, scores=("rewrite_score",),
                        pairs=(("flip", "noise"),))
    res = analyze(t["trace"], t["edits"], spec)
    assert res.r2.p_cluster.isna().all() and res.r2.cluster_method.str.startswith("too few clusters").all()
    write_results([res], tmp_path)
    tex = hase_table(load_results(tmp_path))
    assert "too few" in tex and "Wald" not in tex


def test_h1_verdict_words_follow_the_test_and_the_one_sided_bounds():
    from causaleval.inference.h1 import verdict

    # verdict(diff, lower, upper, p, mdd)
    assert verdict(0.02, 0.005, 0.03, 0.01, 0.006, a="flip", b="noise").startswith(
        "supports H1 (flip exceeds noise by at least 0.005")
    mixed = verdict(0.005, -0.005, 0.015, 0.034, 0.016)      # p < α but the lower bound is below 0
    assert "inconclusive" in mixed and "p = 0.034" in mixed and "includes 0" in mixed
    bounded = verdict(0.001, -0.004, 0.006, 0.39, 0.006)
    assert bounded.startswith("does not support H1: a exceeds b by at most 0.006") and "80% power at 0.006" in bounded
    assert verdict(0.001, -0.03, 0.05, 0.39, 0.063).startswith("is inconclusive: a may exceed b by up to 0.050")