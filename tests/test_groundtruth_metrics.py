"""Threshold-free accuracy metrics, their baselines, the paired test's size and power on a simulated
null that keeps the dependence, and the knockout check on a synthetic trace."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from causaleval.groundtruth.accuracy import (
    accuracy_rows,
    accuracy_summary,
    chance,
    covers,
    paired_accuracy,
    paired_calibration,
    profile_metrics,
    reciprocal_rank,
)
from causaleval.groundtruth.knockout import (
    knockout_rows,
    knockout_table,
    localiser_picks,
)


def test_reciprocal_rank_and_coverage_on_known_profiles():
    assert reciprocal_rank(np.array([0.1, 0.5, 0.2]), 1) == 1.0
    assert reciprocal_rank(np.array([0.1, 0.5, 0.2]), 0) == pytest.approx(1 / 3)
    assert reciprocal_rank(np.array([0.5, 0.5, 0.2]), 0) == pytest.approx((1 + 1 / 2) / 2)   # tie: random rank
    assert reciprocal_rank(np.array([np.nan, 0.5]), 0) == pytest.approx(0.5)
    assert covers(5, 7, 5, 30) and not covers(5, 8, 5, 30) and covers(0, 2, 5, 30) and covers(1, 0, 5, 30)
    layers = np.arange(10)
    m = profile_metrics(layers, np.eye(10)[4] + 0.01, planted=4, window=1, n_layers=10)
    assert (m["rr"], m["coverage"], m["hit1"], m["covers0"]) == (1.0, 1.0, 1.0, 0.0)
    m = profile_metrics(layers, np.eye(10)[6], planted=4, window=5, n_layers=10)     # peak 2 away, window 5
    assert m["coverage"] == 1.0 and m["hit1"] == 0.0 and m["rr"] < 1
    m = profile_metrics(layers, np.eye(10)[1], planted=4, window=5, n_layers=10)
    assert m["coverage"] == 0.0 and m["covers0"] == 1.0
    ch = chance(layers, 4, 1, 10)
    assert ch["rr"] == pytest.approx(np.mean(1 / np.arange(1, 11))) and ch["coverage"] == pytest.approx(0.1)
    assert chance(layers, 0, 5, 10)["coverage"] == pytest.approx(0.3)          # windows at 0, 1, 2 contain 0


def _profiles(n_facts, planted, signal, rng, n_layers=12, estimators=("noise", "flip")):
    rows = []
    for c in range(n_facts):
        for est in estimators:
            for l in planted:
                e = rng.normal(0, 1, n_layers)
                e[l] += signal[est]
                rows += [dict(case_id=c, relation_id="r", estimator=est, window=1, planted_layer=l, layer=j, ie=e[j])
                         for j in range(n_layers)]
    return pd.DataFrame(rows)


def test_metrics_sit_at_chance_for_unrelated_profiles_and_rise_with_a_planted_locus():
    rng = np.random.default_rng(0)
    prof = _profiles(40, (3, 8), {"noise": 0.0, "flip": 4.0}, rng)
    rows = accuracy_rows(prof, 12)
    s = accuracy_summary(rows, 12, n_perm=199, n_resamples=200).set_index(["estimator", "metric"])
    noise, flip = s.loc[("noise", "rr")], s.loc[("flip", "rr")]
    assert noise.ci_low < noise.chance < noise.ci_high            # no signal: chance inside the CI
    assert flip.ci_low > flip.chance and flip.minus_rule_low > 0 and flip.p_rule < 0.01
    # with two planted layers a constant rule gets one of them right, so it beats chance here
    assert noise.minus_rule < 0 < flip.minus_rule
    paired = paired_accuracy(rows, pairs=(("flip", "noise"),), n_perm=199, n_resamples=200).set_index("metric")
    assert paired.loc["rr", "diff"] > 0 and paired.loc["rr", "p"] < 0.01


def test_the_rule_scores_a_constant_locus():
    """Every fact's argmax at layer 5, planted at 5: the most-common-argmax rule is perfect too, so the
    estimator does not beat it (its profile carries nothing fact-specific)."""
    rng = np.random.default_rng(1)
    prof = _profiles(20, (5,), {"noise": 6.0}, rng, estimators=("noise",))
    s = accuracy_summary(accuracy_rows(prof, 12), 12, n_perm=199, n_resamples=100).set_index("metric")
    assert s.loc["rr", "rule"] == pytest.approx(1.0) and abs(s.loc["rr", "minus_rule"]) < 0.05


def test_paired_sign_flip_test_has_its_size_and_power_under_correlated_rows():
    cal = paired_calibration(n_facts=40, n_layers=4, effects=(0.0, 0.6), n_sim=300, n_perm=199, seed=3)
    for r in cal.itertuples():
        if r.latent_effect == 0:
            assert abs(r.rejection - 0.05) <= 3 * np.sqrt(0.05 * 0.95 / r.n_sim) + 0.005, r
        else:
            assert r.rejection > 0.5 and r.mean_diff > 0, r


def _trace(n_cases=8, layers=(0, 4, 8), positions=(1, 2, 3)):
    rows = []
    for c in range(n_cases):
        store = layers[1 + c % 2]                 # the fact lives at 4 or 8, at position 2
        for est in ("noise", "flip"):
            for l in layers:
                for t in positions:
                    hit = (l == store) and t == 2
                    den = 0.9 if hit else 0.1 * (est == "noise") * (l == 0)
                    rows.append(dict(estimator=est, direction="denoise", metric="p", case_id=c, relation_id="r",
                                     component="mlp", window=5, layer=l, position=t, role="subject_last", ie=den))
                    if est == "flip":
                        rows.append(dict(estimator="flip", direction="noise", metric="p", case_id=c, relation_id="r",
                                         component="mlp", window=5, layer=l, position=t, role="subject_last",
                                         ie=0.5 if hit else 0.05))
    edits = pd.DataFrame([dict(case_id=c, layer=l, rewrite_score=float(l == 8)) for c in range(n_cases) for l in layers])
    return pd.DataFrame(rows), edits


def test_knockout_finds_the_stored_layer_and_compares_with_random_and_golden():
    trace, edits = _trace()
    picks = localiser_picks(trace).set_index(["estimator", "case_id"])
    assert picks.loc[("flip", 0), "layer"] == 4 and picks.loc[("flip", 1), "layer"] == 8
    rows = knockout_rows(trace, edits)
    assert set(rows.golden) == {8}
    f = rows[rows.estimator == "flip"]
    assert np.allclose(f.drop_pick, 0.5) and np.allclose(f.drop_random, (0.5 + 0.05 + 0.05) / 3)
    t = knockout_table(rows, n_perm=199, n_resamples=100).set_index(["kind", "a", "b"])
    assert t.loc[("paired", "flip", "random"), "diff"] == pytest.approx(0.5 - 0.2)
    # golden = 8: the pick is 8 for half the facts (difference 0) and 4 for the other half (0.5 − 0.05)
    assert t.loc[("paired", "flip", "golden"), "diff"] == pytest.approx(0.45 / 2)
    assert t.loc[("share_golden", "flip", "golden"), "diff"] == pytest.approx(0.5)
    # leaving layer 0 out changes nothing here; leaving 4 out moves half the picks
    assert len(knockout_rows(trace, edits, min_layer=5).query("estimator == 'flip' and layer == 8")) == 8
