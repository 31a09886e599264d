"""The within-fact measures, their registry in H1, the golden-layer comparison and the spec curve's joint test."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from causaleval.analysis.golden import golden_table, localiser_choice
from causaleval.analysis.spec import AnalysisSpec
from causaleval.analysis.speccurve import (
    CurveSpec,
    joint_test,
    spec_curve,
    specifications,
)
from causaleval.analysis.withinfact import (
    estimator_table,
    h1_table,
    position_table,
    read_run,
    relation_share,
    relation_table,
    study_arrays,
    with_margin,
)
from causaleval.inference.directional import within_layer_r
from causaleval.inference.h1 import COVARIATE_MEASURES, MEASURES, statistic, swap_test
from causaleval.inference.withinfact import (
    r_w_adj,
    r_w_rank,
    rank_within_layer,
    twoway_r,
    twoway_rank,
    twoway_rank_adj,
)
from causaleval.reporting.withinfact import write_withinfact


def _study(seed=0, n=60, layers=6, slope=0.5):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, layers))
    y = rng.normal(size=(n, 1)) + rng.normal(size=(1, layers)) + slope * x + rng.normal(size=(n, layers))
    return y, x, rng


def _long(y, x):
    c, l = np.indices(y.shape)
    d = pd.DataFrame(dict(case=c.ravel(), layer=l.ravel(), y=y.ravel(), x=x.ravel()))
    return d.dropna()


def test_twoway_is_the_partial_correlation_given_fact_and_layer_fixed_effects():
    y, x, rng = _study()
    y[rng.random(y.shape) < 0.1] = np.nan                       # unbalanced: the iterative path
    xs = (x - x.mean(0)) / x.std(0)                               # the measure standardises within layer
    d = _long(y, xs)
    ry = smf.ols("y ~ C(case) + C(layer)", d).fit().resid
    rx = smf.ols("x ~ C(case) + C(layer)", d).fit().resid
    expected = np.corrcoef(ry, rx)[0, 1]
    # the standardisation uses the rows present in each layer; recompute it that way for the reference
    xm = np.where(np.isnan(y), np.nan, x)
    xs2 = (xm - np.nanmean(xm, 0)) / np.nanstd(xm, 0)
    d2 = _long(y, xs2)
    rx2 = smf.ols("x ~ C(case) + C(layer)", d2).fit().resid
    assert twoway_r(y, x) == pytest.approx(np.corrcoef(ry, rx2)[0, 1], abs=1e-6)
    assert abs(expected - twoway_r(y, x)) < 0.05


def test_covariate_adjusted_r_w_matches_per_layer_regression_residuals():
    y, x, rng = _study(1)
    z = rng.normal(size=(y.shape[0], 3))
    ry, rx = np.empty_like(y), np.empty_like(x)
    design = np.column_stack([np.ones(len(z)), z])
    for l in range(y.shape[1]):
        xs = (x[:, l] - x[:, l].mean()) / x[:, l].std()
        ry[:, l] = y[:, l] - design @ np.linalg.lstsq(design, y[:, l], rcond=None)[0]
        rx[:, l] = xs - design @ np.linalg.lstsq(design, xs, rcond=None)[0]
    assert r_w_adj(y, x, z) == pytest.approx(np.sum(ry * rx) / np.sqrt(np.sum(ry ** 2) * np.sum(rx ** 2)))


def test_rank_measures_use_within_layer_ranks_and_resist_outliers():
    y, x, _ = _study(2)
    assert r_w_rank(y, x) == pytest.approx(within_layer_r(rank_within_layer(y), rank_within_layer(x)))
    y2 = y.copy()
    y2[0] = -1e6                                                  # one failed fact far below the rest
    assert abs(r_w_rank(y2, x) - r_w_rank(y, x)) < 0.05
    assert abs(within_layer_r(y2, x) - within_layer_r(y, x)) > 0.1


def test_measures_are_invariant_to_increasing_affine_maps_per_layer_and_vectorised():
    y, x, rng = _study(3)
    z = rng.normal(size=(y.shape[0], 2))
    a, b = rng.uniform(0.5, 2, (1, y.shape[1])), rng.normal(size=(1, y.shape[1]))
    for key in MEASURES:
        if key == "delta_r2":
            continue
        f = statistic(key, z if key in COVARIATE_MEASURES else None)
        assert f(y, a * x + b) == pytest.approx(f(y, x)), key
        stack = np.stack([x, -x])
        np.testing.assert_allclose(f(y, stack), [f(y, x), f(y, -x)], atol=1e-9)


def test_twoway_removes_fact_offsets_that_r_w_keeps():
    rng = np.random.default_rng(4)
    offset = rng.normal(size=(80, 1))
    y = offset + rng.normal(size=(80, 5)) * 0.3
    x = offset + rng.normal(size=(80, 5)) * 0.3                  # shared fact offset, no within-fact link
    assert within_layer_r(y, x) > 0.5
    assert abs(twoway_r(y, x)) < 0.15 and abs(twoway_rank(y, x)) < 0.15


def test_covariate_measure_requires_covariates_and_unknown_key_is_named():
    with pytest.raises(ValueError, match="needs the fact-level covariates"):
        statistic("twoway_rank_adj")
    with pytest.raises(ValueError, match="unknown H1 measure"):
        statistic("nope")


def test_swap_test_on_adjusted_measure_detects_a_planted_difference():
    y, x, rng = _study(5, n=120, slope=0.0)
    z = rng.normal(size=(y.shape[0], 2))
    good = x + 0.0
    yy = y + 0.8 * good
    res = swap_test(yy, good, rng.normal(size=x.shape), 199, rng, measure="twoway_rank_adj", n_boot=99, z=z)
    assert res.diff > 0.3 and res.p_one_sided < 0.05 and res.ci_low > 0
    assert twoway_rank_adj(yy, good, z) == pytest.approx(res.delta_a)


def test_golden_layer_against_localiser_ceiling_and_random():
    rng = np.random.default_rng(6)
    y = rng.normal(size=(100, 5)) + np.array([0, 0, 2, 0, 0])
    table = golden_table(y, {"oracle": y.copy(), "blind": rng.normal(size=y.shape)}, [0, 4, 8, 12, 16],
                         "rewrite_score", n_boot=200)
    oracle, blind = table.set_index("estimator").loc["oracle"], table.set_index("estimator").loc["blind"]
    assert oracle.localiser == pytest.approx(oracle.ceiling)
    assert oracle.golden_layer == 8 and blind.localiser_minus_golden_ci_high < 0
    assert abs(blind.localiser_minus_random) < 0.3
    assert localiser_choice(np.array([[1.0, 3.0]]), np.array([[2.0, 2.0]]))[0] == 2.0   # ties split


def test_joint_test_uses_the_shared_null_draws():
    rng = np.random.default_rng(7)
    null = rng.normal(size=(199, 20))
    lo, hi = np.quantile(null, 0.025, 0), np.quantile(null, 0.975, 0)
    table = pd.DataFrame(dict(diff=hi + 1.0, crit_low=lo, crit_high=hi, significant=1))
    j = joint_test(table, null, "flip", "noise")
    assert j["share_positive"] == 1 and j["p_share_positive"] == pytest.approx(1 / 200)
    assert j["p_median"] == pytest.approx(1 / 200)
    typical = table.assign(diff=null[0], significant=np.where(null[0] > hi, 1, np.where(null[0] < lo, -1, 0)))
    assert joint_test(typical, null, "flip", "noise")["p_median"] > 0.01


def test_margin_clips_zero_probabilities_and_spec_grid_is_complete():
    e = with_margin(pd.DataFrame(dict(p_after_new=[0.5, 0.0], p_after_true=[0.0, 0.5])), clip=1e-6)
    np.testing.assert_allclose(e.margin, [np.log(0.5 / 1e-6), np.log(1e-6 / 0.5)])
    with pytest.raises(Exception, match="p_after_true"):
        with_margin(pd.DataFrame(dict(p_after_new=[0.5])))
    assert len(specifications()) == 6 * 2 * 2 * 2 * 4
    assert len(specifications(sites=("mlp 5", "attn 5"), metrics=("p", "ld"))) == 6 * 2 * 2 * 2 * 4 * 2 * 2


def test_traced_choices_are_the_sites_and_metrics_every_fact_has_for_every_estimator():
    from causaleval.analysis.speccurve import traced_choices

    rows = [(e, c, w, m, case) for e in ("noise", "flip") for case in range(4)
            for c, w, m in (("mlp", 5, "p"), ("attn", 5, "p"), ("mlp", 5, "ld"))]
    rows += [(e, "mlp", 10, "p", 0) for e in ("noise", "flip")]           # a heatmap fact only
    rows += [("flip", "attn", 5, "ld", case) for case in range(4)]          # one estimator only
    trace = pd.DataFrame(rows, columns=["estimator", "component", "window", "metric", "case_id"]).assign(
        direction="denoise")
    assert traced_choices(trace, ["noise", "flip"]) == (["mlp 5", "attn 5"], ["p"])
    assert traced_choices(trace, ["flip"]) == (["mlp 5", "attn 5"], ["p", "ld"])


def test_relation_share_is_zero_without_and_one_with_pure_relation_effects():
    rel = np.repeat(np.array(["a", "b"]), 20)
    y = np.where(rel[:, None] == "a", 1.0, 0.0) + np.zeros((40, 3))
    assert relation_share(y + np.arange(3), rel) == pytest.approx(1.0)
    rng = np.random.default_rng(8)
    assert relation_share(rng.normal(size=(40, 3)), rel) < 0.15


STUDY = Path(__file__).resolve().parents[1] / "paper" / "study"


@pytest.mark.slow
def test_tables_spec_curve_and_report_from_the_committed_study(tmp_path):
    """Every within-fact table on the committed SmolLM2 run (few draws, a slice of the spec grid), then
    the paper's tables and figure from them."""
    run = read_run(STUDY)
    arr = study_arrays(run.trace, run.edits, run.facts, AnalysisSpec(), "rewrite_score")
    assert arr.y.shape[1] == 9 and arr.z_names[0] == "log_p_true" and len(set(arr.relation)) >= 3
    est = estimator_table(arr, "rewrite_score", n_boot=20, n_perm=20, measures=("r_w", "twoway_rank_adj"))
    assert {"localiser", "baseline"} <= set(est.kind)
    assert est[(est.measure == "twoway_rank_adj")].kind.eq("localiser").all()   # baselines vanish there
    h1 = h1_table(arr, "rewrite_score", [("flip", "noise")], n_perm=20, n_boot=20, measures=("twoway_rank",))
    rel = relation_table(arr, "rewrite_score", [("flip", "noise")], n_boot=10, n_perm=10, measures=("r_w",))
    assert rel.p_heterogeneity.between(0, 1).all() and rel.relation.nunique() == len(set(arr.relation))
    specs = specifications(measures=("r_w", "twoway_rank"), effects=("fraction",), layer_sets=("all", "working"),
                           outcomes=("rewrite_score", "margin"))
    curve, joint = spec_curve(run, specs=specs, curve=CurveSpec(n_perm=30, n_boot=20))
    assert len(curve) == 2 * len(specs) and set(joint.n_specs) == {len(specs)}
    quick, _ = spec_curve(run, specs=specs.head(2), curve=CurveSpec(n_perm=30, n_boot=0))
    assert (quick.ci_low < quick["diff"]).all() and (quick["diff"] < quick.ci_high).all()
    assert curve.groupby(["measure", "token_rule", "layer_set", "outcome"]).size().eq(2).all()
    gold = golden_table(arr.y, arr.x, arr.layers, "rewrite_score", n_boot=50)
    assert (gold.ceiling >= gold.localiser).all() and (gold.ceiling >= gold.golden).all()
    out = tmp_path / "run"
    (out / "withinfact").mkdir(parents=True)
    (out / "run.json").write_text((STUDY / "run.json").read_text())
    frames = dict(withinfact=est, withinfact_h1=h1, relations=rel, golden=gold, speccurve=curve,
                  speccurve_joint=joint, positions=position_table(run.trace, AnalysisSpec()))
    for name, frame in frames.items():
        frame.to_parquet(out / "withinfact" / f"{name}.parquet")
    paths = write_withinfact([out], tmp_path / "paper")
    names = {p.name for p in paths}
    assert {"speccurve.tex", "golden.tex", "withinfact_numbers.tex", "speccurve.pdf", "relations.pdf"} <= names
    numbers = (tmp_path / "paper" / "tables" / "withinfact_numbers.tex").read_text()
    assert rf"\SpecSmolLMFlipNoiseN}}{{{len(specs)}}}" in numbers and "nan" not in numbers.lower()
    assert write_withinfact([tmp_path / "nothing"], tmp_path / "p2") == []


def _synthetic_run(folder, with_facts=True):
    from causaleval.inference.synthetic import SyntheticSpec, write_synthetic_results

    out = write_synthetic_results(folder, SyntheticSpec(n_cases=12, n_layers=6, seed=4))
    if with_facts:
        cases = pd.read_parquet(out / "edits.parquet").drop_duplicates("case_id")[["case_id", "relation_id"]]
        cases.assign(known=True, p_true=np.linspace(0.2, 0.9, len(cases))).to_parquet(out / "facts_filter.parquet")
    return out


def test_analyze_stage_writes_the_within_fact_tables_and_report_turns_them_into_tables(tmp_path):
    """The pipeline itself: analyze writes withinfact/*.parquet (measures, H1, relations, positions,
    golden layer, spec curve); report writes their tables and figures into the run's own folder."""
    from experiments.config import resolve
    from experiments.context import StageContext
    from experiments.stages import analyze, report

    out = _synthetic_run(tmp_path / "run")
    ctx = StageContext(config=resolve("smoke", n_bootstrap=30, seed=4), out_dir=out, progress=False)
    analyze.run(ctx)
    tables = {p.stem for p in (out / "withinfact").glob("*.parquet")}
    assert tables == {"withinfact", "withinfact_h1", "relations", "positions", "golden", "speccurve",
                      "speccurve_joint"}
    curve = pd.read_parquet(out / "withinfact" / "speccurve.parquet")
    assert set(curve.n_perm) == {ctx.config.withinfact_permutations} and curve["diff"].notna().all()
    # the synthetic run traces three sites for every fact with every estimator (the logit difference for
    # flip only): the site is a choice of the curve, the metric is not
    assert set(curve.site) == {"mlp 5", "mlp 10", "residual 1"} and set(curve.metric) == {"p"}
    assert len(curve) == 2 * len(specifications(sites=("mlp 5", "mlp 10", "residual 1")))
    # the synthetic run plants flip > noise: the two-way rank H1 sees it
    h1 = pd.read_parquet(out / "withinfact" / "withinfact_h1.parquet")
    row = h1[(h1.measure == "twoway_rank") & (h1.a == "flip") & (h1.outcome == "rewrite_score")]
    assert float(row["diff"].iloc[0]) > 0
    # kept when newer than the run's inputs (an interrupted stage resumes) ...
    stamp = (out / "withinfact" / "golden.parquet").stat().st_mtime_ns
    assert analyze.withinfact_outputs(ctx) == [] and (out / "withinfact" / "golden.parquet").stat().st_mtime_ns == stamp
    # ... recomputed when the edits are newer
    later = max(p.stat().st_mtime_ns for p in (out / "withinfact").glob("*.parquet")) + 10**9
    os.utime(out / "edits.parquet", ns=(later, later))
    assert {p.stem for p in analyze.withinfact_outputs(ctx)} == tables
    report.run(ctx)
    for name in ("tables/withinfact.tex", "tables/speccurve.tex", "tables/golden.tex", "tables/relations.tex",
                 "tables/withinfact_numbers.tex", "figures/speccurve.pdf", "figures/relations.pdf"):
        assert (out / name).is_file(), name


def test_analyze_stage_without_fact_confidences_notes_it_and_keeps_the_analysis(tmp_path, capsys):
    from experiments.config import resolve
    from experiments.context import StageContext
    from experiments.stages import analyze

    out = _synthetic_run(tmp_path / "run", with_facts=False)
    analyze.run(StageContext(config=resolve("smoke", n_bootstrap=30, seed=4), out_dir=out, progress=False))
    assert (out / "analysis" / "summary.json").is_file() and not (out / "withinfact").exists()
    assert "within-fact analyses not computed" in capsys.readouterr().out
    off = resolve("smoke", n_bootstrap=30, seed=4, withinfact_permutations=0)
    assert analyze.withinfact_outputs(StageContext(config=off, out_dir=out, progress=False)) == []
