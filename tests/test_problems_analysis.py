"""The problems × editors × estimators analysis (causaleval.analysis.problems) on synthetic results: the
study's analysis is unchanged by other problems' rows, every cell gets its tests and a row per estimator
with the matched estimator marked, flip forcing's rows are averaged over its draws per fact; the per-draw
matched r_w has its size under a null that keeps each fact's correlation across layers and draws, and
power under a planted effect; the report writes the table and the grid figure."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from causaleval.analysis import AnalysisSpec
from causaleval.analysis.effects import localisation_effects
from causaleval.analysis.problems import (error_injection_rows, per_draw_effects, per_draw_matched, per_fact,
                                          with_problem)
from causaleval.runs.store import atomic_write_parquet
from experiments.stages.analyze import analyze_folder


def _spec():
    a = AnalysisSpec(window=5, n_bootstrap=50, seed=0)
    return a.__class__(**{**a.__dict__, "n_permutations": 99, "power_reps": 20})


def test_grid_cells_matched_and_study_unchanged(tmp_path, twin_synthetic_runs):
    plain, multi, edits, forced, rng = twin_synthetic_runs
    flips = pd.concat([edits.assign(rewrite_score=edits.rewrite_score + rng.normal(0, 0.1, len(edits)), draw=k,
                                    partner_case=1000 + k) for k in range(3)], ignore_index=True)
    table = pd.concat([with_problem(edits), forced.assign(problem="fact_forcing", draw=-1, partner_case=-1),
                       flips.assign(problem="flip_forcing")], ignore_index=True).assign(editor="rome")
    atomic_write_parquet(multi / "edits.parquet", table)
    s_plain, s_multi = analyze_folder(plain, _spec()), analyze_folder(multi, _spec())
    assert s_multi["variants"]["default"]["h1"] == s_plain["variants"]["default"]["h1"]
    grid = pd.read_parquet(multi / "analysis" / "problems.parquet")
    assert list(dict.fromkeys(grid.problem)) == ["error_injection", "fact_forcing", "flip_forcing"]
    assert set(grid.estimator) == {"noise", "resample", "flip"}
    matched = grid[grid.matched]
    assert sorted(zip(matched.problem, matched.estimator)) == [("fact_forcing", "noise"), ("flip_forcing", "flip")]
    ei = grid[(grid.problem == "error_injection") & (grid.estimator == "flip")].iloc[0]
    d = s_plain["variants"]["default"]["delta_r2"]["rewrite_score"]["flip"]
    assert (ei.r_w, ei.delta_r2, ei.r2_layer) == (d["r_w"], d["delta_r2"], d["r2_layer"])
    cell = json.loads((multi / "problems" / "flip_forcing" / "rome" / "analysis" / "summary.json").read_text())
    ff = grid[(grid.problem == "flip_forcing") & (grid.estimator == "flip")].iloc[0]
    assert ff.r_w == cell["variants"]["default"]["delta_r2"]["rewrite_score"]["flip"]["r_w"]
    assert cell["variants"]["default"]["n_rows"] <= len(edits)          # one row per fact and layer
    assert np.isnan(ff.per_draw_r_w)                                    # no trace_draws: no per-draw pairing
    from causaleval.reporting.problems import write_problems_report

    paths = write_problems_report(multi, tmp_path / "out")
    text = paths[0].read_text()
    assert r"\label{tab:problems}" in text and "Flip Forcing" in text and r"$^\dagger$" in text
    assert any(p.suffix == ".pdf" for p in paths)
    assert write_problems_report(plain, tmp_path / "none") == []


def test_per_fact_means_over_draws_and_old_tables_are_error_injection():
    rows = pd.DataFrame({"case_id": [1, 1, 1, 1], "relation_id": ["P"] * 4, "layer": [0, 0, 1, 1],
                         "rewrite_score": [0.2, 0.4, 0.6, 1.0], "draw": [0, 1, 0, 1], "partner_case": [5, 6, 5, 6],
                         "problem": ["flip_forcing"] * 4})
    out = per_fact(rows)
    assert list(out.rewrite_score) == pytest.approx([0.3, 0.8]) and "draw" not in out
    old = pd.DataFrame({"case_id": [1], "layer": [0], "rewrite_score": [0.5]})
    assert error_injection_rows(old) is old and with_problem(old).problem.tolist() == ["error_injection"]


def test_per_draw_effects_follow_the_specs_rule_draw_by_draw():
    spec = AnalysisSpec(window=1)
    keys = dict(estimator="flip", direction="denoise", metric="p", component="mlp", window=1)
    trace = pd.DataFrame([{**keys, "case_id": 3, "layer": 2, "position": p, "role": r, "ie": 0.0, "te": 1.0}
                          for p, r in ((0, "before_subject"), (1, "subject_last"), (2, "last"))])
    draws = pd.DataFrame([{**keys, "case_id": 3, "layer": 2, "position": p, "draw": k, "value": v, "te": te}
                          for k, te in ((0, 0.5), (1, 0.8))
                          for p, v in ((0, 9.0), (1, 0.1 * (k + 1)), (2, 0.3 * (k + 1)))])
    got = per_draw_effects(draws, trace, spec).sort_values("draw")
    # max over positions from the first subject token of IE/TE: draw 0: 0.3/0.5; draw 1: 0.6/0.8
    assert got.effect.tolist() == pytest.approx([0.6, 0.75])
    one = draws[draws.draw == 1].rename(columns={"value": "ie"}).merge(trace[list(keys) + ["case_id", "layer",
                                                                                          "position", "role"]])
    assert localisation_effects(one, spec).effect.iloc[0] == pytest.approx(0.75)


def _draw_data(rng, n_cases=40, n_draws=5, n_layers=4, beta=0.0):
    """Per (case, draw, layer): a flip effect and a flip-forcing score that share a fact-level component
    across layers and draws (the real dependence), related with slope ``beta`` within layer."""
    rows = []
    for c in range(n_cases):
        fact_x, fact_y = rng.normal(), rng.normal()
        for k in range(n_draws):
            draw_x = rng.normal(0, 0.5)
            for l in range(n_layers):
                x = fact_x + draw_x + rng.normal(0, 0.5) + l
                y = fact_y + beta * x + rng.normal(0, 0.7) + 0.2 * l
                rows.append((c, k, l, x, y))
    d = pd.DataFrame(rows, columns=["case_id", "draw", "layer", "effect", "rewrite_score"])
    return d[["case_id", "draw", "layer", "rewrite_score"]], d[["case_id", "draw", "layer", "effect"]]


@pytest.mark.slow
def test_per_draw_matched_size_under_null_and_power_when_planted():
    rng = np.random.default_rng(11)
    reps = 200
    rejects = 0
    for i in range(reps):
        edits, eff = _draw_data(rng)
        m = per_draw_matched(edits, eff, n_boot=200, seed=i)
        rejects += not (m["ci_low"] <= 0 <= m["ci_high"])
    size = rejects / reps        # nominal 0.05; Monte-Carlo SE ≈ 0.015
    assert 0.01 <= size <= 0.10, size
    hits = 0
    for i in range(50):
        edits, eff = _draw_data(rng, beta=0.4)
        m = per_draw_matched(edits, eff, n_boot=200, seed=i)
        assert m["n_cases"] == 40 and m["n_pairs"] == 200
        hits += m["ci_low"] > 0
    assert hits / 50 >= 0.8
