"""Tables, figures and the analyze/report stages on a synthetic results folder."""

import re

import pytest

from causaleval.analysis import load_results
from causaleval.inference.synthetic import SyntheticSpec, write_synthetic_results
from causaleval.reporting.tables import booktabs, est_ci, pval, write_tables
from experiments.config import resolve
from experiments.context import StageContext
from experiments.stages import analyze, report


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = write_synthetic_results(tmp_path_factory.mktemp("results"), SyntheticSpec(n_cases=20, n_layers=8, seed=2))
    ctx = StageContext(config=resolve("smoke", n_bootstrap=60, seed=2), out_dir=out, progress=False)
    analyze.run(ctx)
    report.run(ctx)
    paper = tmp_path_factory.mktemp("paper")
    report.build_report(out, paper)
    return out, paper


def test_stages_write_their_outputs(folder):
    out, paper = folder
    for rel in analyze.OUTPUTS + report.OUTPUTS:
        assert (out / rel).is_file(), rel
    assert (paper / "tables" / "h1.tex").is_file() and (paper / "figures" / "delta_r2.pdf").is_file()
    assert (paper / "tables" / "h1.tex").read_text() == (out / "tables" / "h1.tex").read_text()


def test_an_ordinary_run_never_writes_into_the_paper(folder):
    """The report stage writes into its results folder only; the paper is rebuilt from the committed
    study by ``python -m experiments.paper``."""
    from pathlib import Path

    out, _ = folder
    repo_paper = Path(report.__file__).resolve().parents[2] / "paper"
    def snapshot():
        return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in repo_paper.rglob("*") if p.is_file()}
    before = snapshot()
    report.run(StageContext(config=resolve("smoke", n_bootstrap=60, seed=2), out_dir=out, progress=False))
    assert snapshot() == before


def test_tables_are_booktabs_with_the_analysis_numbers(folder):
    out, _ = folder
    t = load_results(out)
    r2_tex = (out / "tables" / "r2.tex").read_text()
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert rule in r2_tex
    row = t.r2[(t.r2.variant == "default") & (t.r2.score == "rewrite_score") & (t.r2.estimator == "flip")].iloc[0]
    assert f"{row.delta_r2:.4f} [{row.delta_ci_low:.4f}, {row.delta_ci_high:.4f}]" in r2_tex
    assert f"{row.r2_layer:.3f}" in r2_tex and "$n$ = 20 facts" in r2_tex
    h1 = t.h1[(t.h1.variant == "default") & (t.h1.a == "flip") & (t.h1.b == "noise")
              & (t.h1.score == "rewrite_score")].iloc[0]
    h1_tex = (out / "tables" / "h1.tex").read_text()
    assert f"{h1['diff']:.4f} [{h1.ci_low:.4f}, {h1.ci_high:.4f}]" in h1_tex
    per_layer = (out / "tables" / "per_layer.tex").read_text()
    assert "Williams" in per_layer and "Holm" in per_layer
    assert per_layer.count(r"\\") - 1 == len(t.per_layer[(t.per_layer.variant == "default")
                                                         & (t.per_layer.score == "rewrite_score")
                                                         & (t.per_layer.a == "flip") & (t.per_layer.b == "noise")])
    numbers = (out / "tables" / "numbers.tex").read_text()
    assert rf"\newcommand{{\HOneDiff}}{{{h1['diff']:.4f}}}" in numbers
    assert r"\newcommand{\nFacts}{20}" in numbers
    names = re.findall(r"\\newcommand\{\\(\w+)\}", numbers)
    assert len(names) == len(set(names)) and all(re.fullmatch("[A-Za-z]+", n) for n in names)


def test_figures_are_written(folder):
    out, paper = folder
    for name in ("h1_forest", "per_layer_r", "delta_r2", "layer_profiles", "effect_vs_rewrite", "trace_heatmaps"):
        pdf, png = out / "figures" / f"{name}.pdf", out / "figures" / f"{name}.png"
        assert pdf.read_bytes()[:4] == b"%PDF", name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    captions = (paper / "figures" / "captions.tex").read_text()
    assert r"\newcommand{\FigScatterCases}{20}" in captions and r"\newcommand{\FigHeatCases}{20}" in captions


def test_formatting_helpers():
    assert pval(0.0004) == "$<$0.001" and pval(0.0123) == "0.012" and pval(float("nan")) == "--"
    assert est_ci(0.12345, 0.1, 0.2, 3) == "0.123 [0.100, 0.200]"
    tex = booktabs(["a", "b"], ["group", ["1", "2"]], "cap n = 3", "tab:x")
    assert r"\multicolumn{2}{l}{\emph{group}}" in tex and "1 & 2" in tex and r"\caption{cap n = 3}" in tex


def test_write_tables_without_variants(folder, tmp_path):
    out, _ = folder
    t = load_results(out)
    t.summary["variants"] = {"default": t.summary["variants"]["default"]}
    paths = write_tables(t, tmp_path)
    assert {p.name for p in paths} == {"r2.tex", "directional.tex", "h1.tex", "per_layer.tex", "within_case.tex",
                                        "numbers.tex"}


def test_score_layer_correlation_is_the_mean_pairwise_correlation_of_layer_centred_scores():
    import types

    import numpy as np
    import pandas as pd

    from causaleval.reporting.tables import score_layer_correlation

    rng = np.random.default_rng(0)
    fact = rng.normal(size=(400, 1))
    y = fact + rng.normal(size=(400, 4)) + np.arange(4)          # correlation 0.5 between any two layers
    case, layer = np.indices(y.shape)
    joined = pd.DataFrame(dict(case_id=case.ravel(), layer=layer.ravel(), rewrite_score=y.ravel(), variant="default"))
    t = types.SimpleNamespace(joined=joined)
    assert score_layer_correlation(t) == pytest.approx(0.5, abs=0.06)
    independent = joined.assign(rewrite_score=rng.normal(size=len(joined)))
    assert abs(score_layer_correlation(types.SimpleNamespace(joined=independent))) < 0.06
    assert score_layer_correlation(types.SimpleNamespace(joined=pd.DataFrame())) is None
