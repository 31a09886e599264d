"""The hypothesis tests of SPEC §7 on synthetic tables whose truth is known (causaleval.synthetic)."""

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from causaleval.analysis import (AnalysisError, AnalysisSpec, analyze, case_layer_arrays, headline,
                                 localisation_effects, load_results, summary_dict, weighted_r2, williams_t,
                                 write_results)
from causaleval.synthetic import SyntheticSpec, synthetic_tables

SPEC = AnalysisSpec(n_bootstrap=200, seed=1)


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
    assert r2.loc["flip", "p_f"] < 1e-3 and r2.loc["flip", "p_wald"] < 1e-3
    # layer explains most of the variance (the Hase et al. pattern for noise tracing)
    assert r2.loc["noise", "r2_layer"] > 0.5 and r2.loc["noise", "delta_r2"] < 0.05
    assert (r2.r2_both >= r2.r2_layer - 1e-12).all()
    assert (r2.n_cases == 30).all() and (r2.n_rows == 30 * 6).all()


def test_h1_sign_and_bootstrap_ci(result):
    h1 = result.h1[(result.h1.a == "flip") & (result.h1.b == "noise")].set_index("score")
    row = h1.loc["rewrite_score"]
    assert row["diff"] > 0 and row.ci_low > 0 and row.p_one_sided < 0.05
    assert (result.h1.ci_low <= result.h1["diff"]).all() and (result.h1["diff"] <= result.h1.ci_high).all()
    assert row.p_one_sided >= 1 / (SPEC.n_bootstrap + 1)


def test_h1_is_negative_when_noise_carries_the_signal():
    t = synthetic_tables(SyntheticSpec(n_cases=30, n_layers=8, flip_loading=0.0, noise_loading=1.0, seed=5))
    spec = AnalysisSpec(n_bootstrap=100, scores=("rewrite_score",), pairs=(("flip", "noise"),))
    res = analyze(t["trace"], t["edits"], spec)
    row = res.h1.iloc[0]
    assert row["diff"] < 0 and row.ci_high < 0 and row.p_one_sided > 0.5


def test_per_layer_williams_and_correction(result):
    pl = result.per_layer[(result.per_layer.score == "rewrite_score") & (result.per_layer.a == "flip")
                          & (result.per_layer.b == "noise")]
    assert len(pl) == 6
    assert (pl.williams_t > 0).all() and (pl.r_diff > 0).all()
    assert (pl.p_adj >= pl.p - 1e-15).all()
    assert ((pl.ci_low <= pl.r_diff) & (pl.r_diff <= pl.ci_high)).all()


def test_within_case_profiles_and_argmax(result):
    wc = result.within_case[result.within_case.score == "rewrite_score"].set_index("estimator")
    assert wc.loc["flip", "mean_rho"] > 0.3 > abs(wc.loc["noise", "mean_rho"])
    assert wc.loc["flip", "ci_low"] <= wc.loc["flip", "mean_rho"] <= wc.loc["flip", "ci_high"]
    assert wc.loc["flip - noise", "p"] < 0.05
    am = result.argmax[result.argmax.score == "rewrite_score"].set_index("estimator")
    assert am.loc["flip", "hit_rate"] > am.loc["flip", "chance"] and am.loc["flip", "p"] < 0.05
    assert am.loc["flip", "chance"] == pytest.approx(1 / 6)


def test_token_rules(tables):
    trace = tables["trace"]
    mx = localisation_effects(trace, SPEC).set_index(["estimator", "case_id", "layer"]).effect
    last = localisation_effects(trace, AnalysisSpec(token_rule="subject_last")) \
        .set_index(["estimator", "case_id", "layer"]).effect
    assert (mx >= last - 1e-12).all()
    sel = trace[(trace.role == "subject_last") & (trace.component == "mlp") & (trace.window == 5)
                & (trace.direction == "denoise") & (trace.metric == "p")]
    row = sel.iloc[0]
    assert last.loc[(row.estimator, row.case_id, row.layer)] == pytest.approx(row.ie)


def test_missing_trace_rows_are_a_clear_error(tables):
    with pytest.raises(AnalysisError, match="window 7"):
        localisation_effects(tables["trace"], AnalysisSpec(window=7))
    with pytest.raises(AnalysisError, match="lacks columns"):
        localisation_effects(tables["trace"].drop(columns=["ie"]), SPEC)


def test_edits_without_effects_are_reported(tables):
    edits = tables["edits"]
    extra = edits[edits.case_id == edits.case_id.iloc[0]].assign(case_id=-1)
    spec = AnalysisSpec(n_bootstrap=50, scores=("rewrite_score",), pairs=(("flip", "noise"),))
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
    assert summary_dict([result])["variants"]["default"]["n_cases"] == 30
    with pytest.raises(AnalysisError, match="analyze stage"):
        load_results(tmp_path / "nothing")


def test_case_layer_arrays_marks_missing_rows(result):
    d = result.joined[~((result.joined.case_id == result.joined.case_id.iloc[0]) & (result.joined.layer == 0))]
    arr = case_layer_arrays(d, "rewrite_score", sorted(d.layer.unique()), sorted(d.case_id.unique()))
    assert arr.shape == (30, 6) and np.isnan(arr[0, 0]) and np.isfinite(arr[1:, :]).all()
