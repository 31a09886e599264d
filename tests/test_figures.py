"""The paper's figures, inspected as matplotlib objects: panels, labels, colour norms, CIs and the
caption facts, on synthetic analysis tables with and without the newer columns (mdd, method,
degenerate, p_cluster, n_excluded)."""

import re
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.container import ErrorbarContainer
from matplotlib.patches import Rectangle

from causaleval.analysis import AnalysisSpec, load_results
from causaleval.inference.synthetic import SyntheticSpec, synthetic_tables, write_synthetic_results
from causaleval.reporting import figures, heatmaps
from experiments.stages.analyze import analyze_folder

PAPER = Path(__file__).resolve().parents[1] / "paper" / "main.tex"


NEWER = {"h1": ["mdd", "method", "verdict"], "per_layer": ["degenerate"], "r2": ["p_cluster", "n_excluded"]}


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    out = write_synthetic_results(tmp_path_factory.mktemp("figs"), SyntheticSpec(n_cases=16, n_layers=6, seed=5))
    analyze_folder(out, AnalysisSpec(n_bootstrap=40))
    return load_results(out)


@pytest.fixture(scope="module")
def tables(analysed):
    """The analysis tables without the newer columns (as older analyses wrote them)."""
    return replace(analysed, **{name: getattr(analysed, name).drop(columns=cols, errors="ignore")
                                for name, cols in NEWER.items()})


@pytest.fixture(scope="module")
def newer(tables):
    """The same tables with the newer analysis columns, one degenerate layer and no Wald column."""
    h1 = tables.h1.assign(mdd=0.03, method="paired permutation within case")
    h1.loc[h1[h1.measure == "r_w"].index[1], "mdd"] = np.nan
    pl = tables.per_layer.copy()
    last = pl.layer.max()
    pl["degenerate"] = pl.layer == last
    pl.loc[pl.degenerate, ["p", "p_adj", "williams_t"]] = np.nan
    r2 = tables.r2.drop(columns=["p_wald"], errors="ignore").assign(p_cluster=0.4, n_excluded=1)
    return replace(tables, h1=h1, per_layer=pl, r2=r2)


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _errorbars(ax):
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def test_forest_plot_has_every_pair_score_and_variant_with_its_ci(tables):
    drawn = figures.forest_figure(tables.h1)
    h1 = tables.h1[tables.h1.measure == "r_w"]        # the primary measure is drawn
    scores = list(dict.fromkeys(h1.score))
    axes = drawn.figure.axes
    assert len(axes) == len(scores)
    n = h1.groupby("score").n_cases.max()
    assert [ax.get_title() for ax in axes] == [f"{figures.SCORE_LABELS[s]} score (n = {n[s]})" for s in scores]
    labels = [t.get_text() for t in axes[0].get_yticklabels()]
    assert labels.count("flip $-$ noise") == h1[(h1.a == "flip") & (h1.b == "noise")].variant.nunique()
    assert "last subject token" in labels          # a heading per variant
    for ax, score in zip(axes, scores):
        rows = h1[h1.score == score]
        bars = _errorbars(ax)
        assert len(bars) == len(rows)
        got = sorted(float(b.lines[0].get_xdata()[0]) for b in bars)
        assert np.allclose(got, sorted(rows["diff"]))
        # each CI segment spans [ci_low, ci_high]
        spans = sorted(tuple(np.round(seg[:, 0], 9)) for b in bars for seg in b.lines[2][0].get_segments())
        assert np.allclose(spans, sorted(zip(rows.ci_low.round(9), rows.ci_high.round(9))))
        assert not [p for p in ax.patches if isinstance(p, Rectangle)]      # no mdd column: no band
    legend = drawn.figure.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["one-sided $p < 0.05$", r"$p \geq 0.05$"]
    assert "No minimum detectable difference" in drawn.macros["FigForestMDD"]
    assert drawn.macros["FigForestCases"] == f"{n.min()}--16" and "bootstrap" in drawn.macros["FigForestMethod"]


def test_forest_plot_draws_the_minimum_detectable_difference(newer):
    drawn = figures.forest_figure(newer.h1)
    ax = drawn.figure.axes[0]
    rows = newer.h1[(newer.h1.score == "rewrite_score") & (newer.h1.measure == "r_w")]
    bands = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(bands) == rows.mdd.notna().sum() == len(rows) - 1
    assert all(np.isclose(b.get_x(), -0.03) and np.isclose(b.get_width(), 0.06) for b in bands)
    texts = [t.get_text() for t in drawn.figure.legends[0].get_texts()]
    assert r"$\pm$ minimum detectable difference" in texts
    assert "grey band" in drawn.macros["FigForestMDD"] and drawn.macros["FigForestMethod"] == \
        "paired permutation within case"
    filled = [b.lines[0].get_markerfacecolor() for b in _errorbars(ax)]
    assert sum(f == "black" for f in filled) == int((rows.p_one_sided < 0.05).sum())


def test_per_layer_figure_has_r_with_cis_and_williams_marks(newer):
    drawn = figures.per_layer_figure(newer.per_layer)       # the default variant of every variant's rows
    pl = newer.per_layer[newer.per_layer.variant == "default"]
    scores = list(dict.fromkeys(pl.score))
    axes = drawn.figure.axes
    assert len(axes) == 2 * len(scores)
    top, strip = axes[0], axes[len(scores)]
    assert top.get_ylabel() == "Pearson $r$(score, effect)" and strip.get_xlabel() == "edit layer"
    s = pl[pl.score == "rewrite_score"]
    last = s.layer.max()
    bars = _errorbars(top)
    assert [b.get_label() for b in bars] == [figures.LABELS[e] for e in ("noise", "resample", "flip")]
    flip = next(b for b in bars if b.get_label() == "flip scrubbing")
    by_layer = s.groupby("layer").first()
    tested = by_layer[~by_layer.degenerate]
    assert np.allclose(flip.lines[0].get_ydata(), tested.r_flip)        # degenerate layer not drawn
    assert last not in np.round(flip.lines[0].get_xdata())
    low = [seg[0, 1] for seg in flip.lines[2][0].get_segments()]
    assert np.allclose(sorted(low), sorted(tested.r_flip_ci_low))
    assert any(isinstance(c, PolyCollection) or isinstance(c, Rectangle) for c in top.patches + top.collections)
    marks = [ln.get_marker() for ln in strip.get_lines()]
    n_pairs = s[["a", "b"]].drop_duplicates().shape[0]
    assert marks.count("x") == n_pairs                                      # the degenerate layer, every pair
    assert marks.count("*") == int(((s.p_adj < 0.05) & ~s.degenerate).sum())
    assert marks.count("o") == int(((s.p_adj >= 0.05) & ~s.degenerate).sum())
    assert [t.get_text() for t in strip.get_yticklabels()][:1] == ["flip vs noise"]
    assert f"Layer {last} has no variance in the score" in drawn.macros["FigPerLayerDegenerate"]
    assert drawn.macros["FigPerLayerCorrection"] == "Holm"


def test_per_layer_figure_without_the_degenerate_column(tables):
    drawn = figures.per_layer_figure(tables.per_layer)
    strip = drawn.figure.axes[len(set(tables.per_layer.score))]
    assert "x" not in [ln.get_marker() for ln in strip.get_lines()]
    assert drawn.macros["FigPerLayerDegenerate"] == ""


def test_scatter_has_a_row_per_estimator_and_names_its_quantity(tables):
    label = figures.effect_label(tables.summary)
    assert tables.summary["variants"]["default"]["description"] in label
    joined = tables.joined[tables.joined.variant == "default"]
    drawn = figures.scatter_figure(joined, label=label)
    layers = sorted(joined.layer.unique())
    axes = np.array(drawn.figure.axes).reshape(3, len(layers))
    for i, est in enumerate(("noise", "resample", "flip")):
        assert axes[i, 0].get_ylabel() == f"{figures.LABELS[est]}\nrewrite score"
        x = axes[i, 1].collections[0].get_offsets()[:, 0]
        assert np.allclose(np.sort(x), np.sort(joined[joined.layer == layers[1]][f"effect_{est}"]))
    assert [ax.get_title() for ax in axes[0]] == [f"layer {x}" for x in layers]
    assert drawn.figure._supxlabel.get_text().replace("\n", " ") == label
    assert drawn.macros["FigScatterCases"] == "16" and drawn.macros["FigScatterLayers"] == ", ".join(map(str, layers))


def test_scatter_shows_a_spread_of_layers_when_there_are_many():
    assert figures.shown_layers(range(30), 8) == [0, 4, 8, 12, 17, 21, 25, 29]
    assert figures.shown_layers([0, 6, 12], 8) == [0, 6, 12]


def test_layer_profiles_have_markers_and_bootstrap_cis(tables):
    joined = tables.joined[tables.joined.variant == "default"]
    drawn = figures.profiles_figure(joined, "effect X", n_boot=200, seed=1)
    top, bottom = drawn.figure.axes
    assert top.get_ylabel() == "mean edit score" and bottom.get_xlabel() == "edit layer"
    flip = next(b for b in _errorbars(bottom) if b.get_label() == "flip scrubbing")
    assert flip.lines[0].get_marker() == "^"
    want = figures.layer_means(joined, "effect_flip", 200, 1)
    assert np.allclose(flip.lines[0].get_ydata(), want["mean"])
    lo = np.array([seg[0, 1] for seg in flip.lines[2][0].get_segments()])
    assert np.allclose(lo, want.lo) and (want.lo < want["mean"]).all() and (want["mean"] < want.hi).all()
    # the bootstrap CI is wider than nothing and narrower than the range of the data
    g = joined.groupby("layer").effect_flip
    assert ((want.hi.to_numpy() - want.lo.to_numpy()) < (g.max() - g.min()).to_numpy()).all()
    assert [b.get_label() for b in _errorbars(top)] == ["rewrite", "paraphrase", "neighbourhood"]
    counts = joined[["rewrite_score", "paraphrase_score", "neighborhood_score"]].notna().groupby(joined.layer).sum()
    assert drawn.macros == {"FigProfileCases": f"{counts.to_numpy().min()}--16", "FigProfileBoot": "200"}


def _heat_sites(n_cases=6, heat=2):
    """Synthetic trace rows where only the first ``heat`` cases have every layer (the heatmap set)."""
    trace = synthetic_tables(SyntheticSpec(n_cases=n_cases, n_layers=6, seed=3))["trace"]
    heat_ids = sorted(trace.case_id.unique())[:heat]
    keep = trace.case_id.isin(heat_ids) | trace.layer.isin([0, 5])
    trace = trace[keep].copy()
    trace.loc[(trace.estimator == "resample") & (trace.component == "mlp"), "ie"] *= -1.5   # negative effects
    return trace, heat_ids


def test_heatmaps_share_one_scale_per_component_centred_at_zero():
    trace, heat_ids = _heat_sites()
    drawn = figures.heatmap_drawn(trace)
    fig = drawn.figure
    images = [(ax, ax.images[0]) for ax in fig.axes if ax.images]
    assert len(images) == 6                                      # 3 estimators × (residual, MLP)
    d = trace[(trace.direction == "denoise") & (trace.metric == "p")]
    for comp in ("residual", "mlp"):
        ims = [im for ax, im in images if f": {heatmaps.COMPONENT_LABELS[comp]} (" in ax.get_title()]
        assert len(ims) == 3 and len({id(im.norm) for im in ims}) == 1
        norm = ims[0].norm
        assert norm.vcenter == 0 and norm.vmin == -norm.vmax and norm(0.0) == 0.5
        sel = d[(d.component == comp) & (d.window == (1 if comp == "residual" else 10))
                & d.case_id.isin(heat_ids)]
        top = sel.groupby(["estimator", "case_id", "role", "layer"]).ie.mean().groupby(
            ["estimator", "role", "layer"]).mean().abs().max()
        assert np.isclose(norm.vmax, top)
        assert ims[0].get_cmap().name == "RdBu_r"
    assert all(f"(n = {len(heat_ids)})" in ax.get_title() for ax, _ in images)
    bars = [ax for ax in fig.axes if not ax.images]
    assert len(bars) == 2 and all("mean IE on $p(o)$" in ax.get_xlabel() for ax in bars)
    assert drawn.macros["FigHeatCases"] == str(len(heat_ids))
    assert "MLP (windows of 10 layers)" in drawn.macros["FigHeatComponents"]


def test_heatmap_panels_average_only_cases_traced_at_every_layer():
    trace, heat_ids = _heat_sites(n_cases=5, heat=1)
    panels = heatmaps.heatmap_panels(trace)
    assert {p.n_cases for p in panels} == {1}
    p = next(p for p in panels if p.estimator == "flip" and p.component == "residual")
    one = trace[(trace.estimator == "flip") & (trace.component == "residual") & (trace.direction == "denoise")
                & (trace.metric == "p") & (trace.case_id == heat_ids[0])]
    assert np.isclose(p.grid.loc["subject_last", 0], one[(one.role == "subject_last") & (one.layer == 0)].ie.mean())


def test_trace_stage_heatmaps_use_the_shared_scale(tmp_path):
    trace, _ = _heat_sites()
    paths = heatmaps.trace_heatmaps(trace, tmp_path)
    assert sorted(p.name for p in paths) == sorted(f"trace_{e}_{c}.png" for e in ("noise", "resample", "flip")
                                                   for c in ("mlp", "residual"))
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_write_figures_with_the_newer_columns_and_captions_cover_the_paper(newer, tmp_path):
    trace, heat_ids = _heat_sites()
    paths = figures.write_figures(newer, tmp_path, trace)
    names = {p.name for p in paths}
    for name in ("h1_forest", "per_layer_r", "effect_vs_rewrite", "layer_profiles", "delta_r2", "trace_heatmaps"):
        assert {f"{name}.pdf", f"{name}.png"} <= names
    captions = (tmp_path / "captions.tex").read_text()
    defined = set(re.findall(r"\\newcommand\{\\(\w+)\}", captions))
    assert defined == set(figures.CAPTION_DEFAULTS)
    paper = PAPER.read_text()
    used = set(re.findall(r"\\(Fig[A-Z]\w*)", paper))
    assert used and used <= defined, used - defined
    # main.tex still compiles without captions.tex (figures not generated): a fallback for every fact
    fallbacks = (PAPER.parent / "fallbacks.tex").read_text()
    assert set(re.findall(r"\\providecommand\{\\(Fig\w+)\}", fallbacks)) == defined
    assert rf"\newcommand{{\FigHeatCases}}{{{len(heat_ids)}}}" in captions
    assert r"\newcommand{\FigForestMethod}{paired permutation within case}" in captions


def test_figures_without_data_are_skipped_not_faked(tables, tmp_path):
    empty = replace(tables, per_layer=tables.per_layer.iloc[0:0], h1=tables.h1.iloc[0:0])
    paths = figures.write_figures(empty, tmp_path)
    names = {p.name for p in paths}
    assert "per_layer_r.pdf" not in names and "h1_forest.pdf" not in names and "trace_heatmaps.pdf" not in names
    captions = (tmp_path / "captions.tex").read_text()
    assert r"\newcommand{\FigForestCases}{0}" in captions and r"\newcommand{\FigHeatCases}{0}" in captions


def test_per_layer_figure_with_many_layers_draws_ci_bands():
    """A hand-built per-layer table (20 layers, two estimators, one pair, the newer columns)."""
    rng = np.random.default_rng(0)
    layers = np.arange(20)
    r_noise, r_flip = rng.uniform(-0.5, 0.5, 20), rng.uniform(0, 0.9, 20)
    p_adj = np.where(np.isin(layers, [3, 7]), 0.01, 0.5)
    pl = pd.DataFrame(dict(score="rewrite_score", layer=layers, n=30, degenerate=layers == 19,
                           r_noise=r_noise, r_noise_ci_low=r_noise - 0.2, r_noise_ci_high=r_noise + 0.2,
                           r_flip=r_flip, r_flip_ci_low=r_flip - 0.1, r_flip_ci_high=r_flip + 0.1,
                           a="flip", b="noise", r_a=r_flip, r_b=r_noise, williams_t=1.0, p=p_adj, p_adj=p_adj,
                           correction="fdr_bh", variant="default"))
    drawn = figures.per_layer_figure(pl)
    top, strip = drawn.figure.axes
    bands = [c for c in top.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2 and not _errorbars(top)
    flip = bands[1].get_paths()[0].vertices[:, 1]
    assert np.isclose(flip.max(), (r_flip + 0.1)[:19].max()) and np.isclose(flip.min(), (r_flip - 0.1)[:19].min())
    marks = [ln.get_marker() for ln in strip.get_lines()]
    assert marks.count("*") == 2 and marks.count("x") == 1 and marks.count("o") == 17
    assert drawn.macros["FigPerLayerCorrection"] == "Benjamini--Hochberg" and drawn.macros["FigPerLayerTested"] == "19"
