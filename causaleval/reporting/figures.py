"""The paper's figures, each built as a matplotlib ``Figure`` from the analysis tables and saved as PDF
and PNG, plus ``captions.tex``: macros with what each figure actually shows (how many cases, which
layers, which effect), so that captions state the data plotted rather than the study's plan.

* H1 forest plot: ΔR²_a − ΔR²_b for every pair × score × variant with its CI and the minimum
  detectable difference (Hase et al. 2023 regressions; the paired comparison of two estimators);
* per-layer Pearson r(score, effect) per estimator with CIs, and Williams' (1959) test of each pair
  after correction across layers (degenerate layers, without variance in the score, greyed out);
* trace heatmaps (Meng et al. 2022, Fig. 1) on one diverging colour scale per component;
* effect against edit score, one row per estimator and one column per edit layer;
* layer profiles of edit scores and effects with bootstrap CIs over cases;
* ΔR² per estimator and score with its CI.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from causaleval.analysis import ESTIMATORS, AnalysisTables  # noqa: E402
from causaleval.inference.bootstrap import bootstrap_ci  # noqa: E402
from causaleval.reporting import heatmaps  # noqa: E402
from causaleval.reporting.tables import tex_escape  # noqa: E402
from causaleval.runs.store import atomic_write_text  # noqa: E402

COLORS = {"noise": "#666666", "resample": "#1f77b4", "flip": "#d62728"}
MARKERS = {"noise": "o", "resample": "s", "flip": "^"}
LABELS = {"noise": "noise tracing", "resample": "resample scrubbing", "flip": "flip scrubbing"}
SCORE_LABELS = {"rewrite_score": "rewrite", "paraphrase_score": "paraphrase", "neighborhood_score": "neighbourhood"}
VARIANT_LABELS = {"default": "default effect", "subject_last": "last subject token", "raw_ie": "raw IE",
                  "noising": "noising", "logit_diff": "logit difference"}
PAIRS = (("flip", "noise"), ("resample", "noise"), ("flip", "resample"))
ALPHA = 0.05
STYLE = {**heatmaps.STYLE, "axes.spines.top": False, "axes.spines.right": False, "axes.grid": False,
         "errorbar.capsize": 2, "lines.linewidth": 1.0, "lines.markersize": 4}
WIDTH = 6.5  # inches: the paper's text width, so figures print at their drawn font size


@dataclass
class Drawn:
    """A figure with the caption facts it shows (``captions.tex`` macro name → LaTeX text)."""

    name: str
    figure: Figure | None
    macros: dict[str, str] = field(default_factory=dict)


def save(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    """Write ``name.pdf`` and ``name.png`` into ``out_dir`` and close the figure."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.pdf", out_dir / f"{name}.png"]
    # No creation date, so rebuilding the paper from the same results gives the same bytes.
    fig.savefig(paths[0], bbox_inches="tight", metadata={"CreationDate": None})
    fig.savefig(paths[1], bbox_inches="tight", dpi=200)
    plt.close(fig)
    return paths


def _ests(frame: pd.DataFrame, prefix: str = "effect_") -> list[str]:
    return [e for e in ESTIMATORS if f"{prefix}{e}" in frame and frame[f"{prefix}{e}"].notna().any()]


def _scores(frame: pd.DataFrame) -> list[str]:
    have = list(dict.fromkeys(frame.score)) if "score" in frame else []
    return [s for s in SCORE_LABELS if s in have] + [s for s in have if s not in SCORE_LABELS]


def _finite(x) -> bool:
    return x is not None and not pd.isna(x) and np.isfinite(float(x))


def _span(values) -> str:
    """``12`` or ``10--12`` for counts that differ between panels (LaTeX en dash)."""
    v = sorted({int(x) for x in values if _finite(x)})
    return "0" if not v else str(v[0]) if v[0] == v[-1] else f"{v[0]}--{v[-1]}"


def layer_ticks(ax, layers, most: int = 12) -> None:
    """Tick every edit layer when there are few of them (they need not be evenly spaced)."""
    if 0 < len(layers) <= most:
        ax.set_xticks(list(layers), [str(int(x)) for x in layers])


def _variant(frame: pd.DataFrame, variant: str = "default") -> pd.DataFrame:
    """The rows of one analysis variant (all rows of a table without the column)."""
    return frame[frame.variant == variant] if "variant" in frame else frame


# ----------------------------------------------------------------------------- H1 forest plot

def forest_figure(h1: pd.DataFrame, measure: str = "r_w") -> Drawn:
    """T_a − T_b of one H1 measure (default the directional r_w; ``delta_r2`` for Hase et al.'s ΔR²) with
    its CI, one panel per score, one row per (variant, pair); a grey band marks ±mdd (the minimum
    detectable difference at 80 % power) where the table has it; filled markers have one-sided p < 0.05."""
    if not h1.empty and "measure" in h1:
        h1 = h1[h1.measure == measure]
    d = h1[h1["diff"].notna()] if not h1.empty else h1
    if d.empty:
        return Drawn("h1_forest", None, {"FigForestCases": "0"})
    d = d if "variant" in d else d.assign(variant="default")
    variants = sorted(dict.fromkeys(d.variant), key=lambda v: (v != "default", list(d.variant).index(v)))
    rows: list[tuple[str, str | None, str | None]] = []   # (variant, a, b); a None row is a heading
    for v in variants:
        g = d[d.variant == v]
        pairs = [p for p in PAIRS if ((g.a == p[0]) & (g.b == p[1])).any()]
        pairs += sorted({(r.a, r.b) for r in g.itertuples()} - set(pairs))
        if len(variants) > 1:
            rows.append((v, None, None))
        rows += [(v, a, b) for a, b in pairs]
    ypos = {r: i for i, r in enumerate(rows)}
    scores = _scores(d)
    has_mdd = "mdd" in d and d["mdd"].notna().any()
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(scores), figsize=(WIDTH, 0.28 * len(rows) + 1.3), sharey=True,
                                 squeeze=False, layout="constrained")
        for ax, score in zip(axes[0], scores):
            s = d[d.score == score]
            for r in s.itertuples():
                y = ypos[(r.variant, r.a, r.b)]
                mdd = getattr(r, "mdd", np.nan)
                if _finite(mdd):
                    ax.barh(y, 2 * mdd, left=-mdd, height=0.7, color="0.86", lw=0, zorder=0)
                sig = _finite(r.p_one_sided) and r.p_one_sided < ALPHA
                err = [[max(r.diff - r.ci_low, 0)], [max(r.ci_high - r.diff, 0)]] if _finite(r.ci_low) else None
                ax.errorbar(r.diff, y, xerr=err, fmt="o", color="black", mfc="black" if sig else "white",
                            ms=4, zorder=3)
            ax.axvline(0, color="0.4", lw=0.7, zorder=1)
            n = _span(s.n_cases) if "n_cases" in s else "?"
            ax.set_title(f"{SCORE_LABELS.get(score, score)} score (n = {n})")
            ax.set_xlabel(r"$\Delta R^2_a - \Delta R^2_b$" if measure == "delta_r2" else r"$r_{w,a} - r_{w,b}$")
            ax.margins(x=0.12)
        ax0 = axes[0, 0]
        ax0.set_yticks(range(len(rows)), [f"{VARIANT_LABELS.get(v, v.replace('_', ' '))}" if a is None
                                          else f"{a} $-$ {b}" for v, a, b in rows])
        for tick, (v, a, b) in zip(ax0.get_yticklabels(), rows):
            if a is None:
                tick.set_fontweight("bold")
        ax0.set_ylim(len(rows) - 0.5, -0.5)
        handles = [Line2D([], [], marker="o", ls="", color="black", label=f"one-sided $p < {ALPHA}$"),
                   Line2D([], [], marker="o", ls="", color="black", mfc="white", label=rf"$p \geq {ALPHA}$")]
        if has_mdd:
            handles.append(Patch(color="0.86", label=r"$\pm$ minimum detectable difference"))
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
    method = (tex_escape(d["method"].dropna().iloc[0]) if "method" in d and d["method"].notna().any()
              else "a paired cluster bootstrap over facts")
    mdd_text = (r"The grey band marks $\pm$ the minimum detectable difference (80\% power, $\alpha = 0.05$, "
                r"simulated on the run's design): a CI that covers 0 but stays inside the band rules out "
                r"differences that large; one that reaches past it is inconclusive." if has_mdd else
                r"No minimum detectable difference was computed for this run, so an interval that covers 0 is "
                r"inconclusive rather than evidence of no difference.")
    return Drawn("h1_forest", fig, {"FigForestCases": _span(d.n_cases) if "n_cases" in d else "n/a",
                                    "FigForestMethod": method, "FigForestMDD": mdd_text})


# ----------------------------------------------------------------------------- per-layer correlations

def _degenerate(frame: pd.DataFrame) -> pd.Series:
    if "degenerate" in frame:
        return frame["degenerate"].fillna(False).astype(bool)
    return pd.Series(False, index=frame.index)


def per_layer_figure(per_layer: pd.DataFrame) -> Drawn:
    """Per score: r(score, effect) per estimator and edit layer with its 95 % CI (top), and per pair
    (bottom strip) a star in the colour of the estimator with the larger signed r where Williams' test has
    p_adj < 0.05, a hollow dot where it does not, a cross where the layer is degenerate (left out)."""
    pl = _variant(per_layer)
    ests = _ests(pl, "r_")
    scores = _scores(pl)
    if pl.empty or not ests or not scores:
        return Drawn("per_layer_r", None, {"FigPerLayerCases": "0"})
    pairs = [p for p in PAIRS if "a" in pl and ((pl.a == p[0]) & (pl.b == p[1])).any()]
    degenerate_layers: set[int] = set()
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(2, len(scores), figsize=(WIDTH, 3.2 + 0.18 * len(pairs)), sharex="col",
                                 squeeze=False, layout="constrained",
                                 gridspec_kw={"height_ratios": [3.2, 0.45 + 0.25 * len(pairs)]})
        for j, score in enumerate(scores):
            top, strip = axes[0, j], axes[1, j]
            s = pl[pl.score == score].assign(degenerate=lambda f: _degenerate(f))
            by_layer = s.groupby("layer", as_index=False).first().sort_values("layer")
            layers = by_layer.layer.to_numpy(float)
            gap = np.min(np.diff(layers)) if len(layers) > 1 else 1.0
            bad = by_layer.degenerate.to_numpy(bool)
            dense = len(layers) > 12
            degenerate_layers |= {int(x) for x in layers[bad]}
            for x in layers[bad]:
                for ax in (top, strip):
                    ax.axvspan(x - 0.45 * gap, x + 0.45 * gap, color="0.9", lw=0, zorder=0)
            for k, e in enumerate(ests):
                ok = ~bad & by_layer[f"r_{e}"].notna().to_numpy()
                x = layers[ok] + (k - (len(ests) - 1) / 2) * 0.12 * gap
                r = by_layer[f"r_{e}"].to_numpy(float)[ok]
                err = None
                if f"r_{e}_ci_low" in by_layer:
                    lo = by_layer[f"r_{e}_ci_low"].to_numpy(float)[ok]
                    hi = by_layer[f"r_{e}_ci_high"].to_numpy(float)[ok]
                    err = np.vstack([r - lo, hi - r]).clip(min=0)
                if dense and err is not None:   # many layers: CI as a band, so the bars do not pile up
                    top.fill_between(x, r - err[0], r + err[1], color=COLORS[e], alpha=0.15, lw=0)
                    top.plot(x, r, marker=MARKERS[e], color=COLORS[e], label=LABELS[e], ms=2.5)
                else:
                    top.errorbar(x, r, yerr=err, marker=MARKERS[e], color=COLORS[e], label=LABELS[e], ms=4)
            top.axhline(0, color="0.4", lw=0.7, zorder=1)
            top.set_ylim(-1.05, 1.05)
            top.set_title(f"{SCORE_LABELS.get(score, score)} score, n = {_span(s.n)}")
            if j == 0:
                top.set_ylabel("Pearson $r$(score, effect)")
            for k, (a, b) in enumerate(pairs):
                t = s[(s.a == a) & (s.b == b)].sort_values("layer")
                for r in t.itertuples():
                    if r.degenerate:
                        strip.plot(r.layer, k, marker="x", color="0.5", ms=3 if dense else 4)
                    elif _finite(r.p_adj) and r.p_adj < ALPHA:
                        winner = a if r.r_a >= r.r_b else b
                        strip.plot(r.layer, k, marker="*", color=COLORS.get(winner, "black"), ms=5 if dense else 8)
                    elif _finite(r.p_adj):
                        strip.plot(r.layer, k, marker="o", color="0.5", mfc="white", ms=2.5 if dense else 3.5)
            strip.set_ylim(len(pairs) - 0.5, -0.5)
            strip.set_yticks(range(len(pairs)), [f"{a} vs {b}" if j == 0 else "" for a, b in pairs])
            strip.set_xlabel("edit layer")
            layer_ticks(strip, layers)
            strip.spines["left"].set_visible(False)
            strip.tick_params(axis="y", length=0)
        handles = [Line2D([], [], marker=MARKERS[e], color=COLORS[e], label=LABELS[e]) for e in ests]
        handles += [Line2D([], [], marker="*", ls="", color="black", ms=8,
                           label=rf"Williams $p_{{\mathrm{{adj}}}} < {ALPHA}$ (colour: larger $r$)"),
                    Line2D([], [], marker="o", ls="", color="0.5", mfc="white", label="not significant")]
        if degenerate_layers:
            handles.append(Line2D([], [], marker="x", ls="", color="0.5", label="degenerate layer (not tested)"))
        fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False)
    corr = pl["correction"].dropna().iloc[0] if "correction" in pl and pl["correction"].notna().any() else "holm"
    corr_name = {"holm": "Holm", "fdr_bh": "Benjamini--Hochberg"}.get(corr, tex_escape(corr))
    deg = sorted(degenerate_layers)
    deg_text = ("" if not deg else
                f"Layer{'s' if len(deg) > 1 else ''} {', '.join(map(str, deg))} "
                f"{'have' if len(deg) > 1 else 'has'} no variance in the score or in an effect (degenerate): "
                f"shaded grey, no correlation drawn and left out of the tests.")
    return Drawn("per_layer_r", fig, {"FigPerLayerCases": _span(pl.n), "FigPerLayerCorrection": corr_name,
                                      "FigPerLayerDegenerate": deg_text,
                                      "FigPerLayerTested": str(int(pl[~_degenerate(pl)].layer.nunique()))})


# ----------------------------------------------------------------------------- scatter

def effect_label(summary: dict | None, variant: str = "default") -> str:
    """The effect's description from the analysis summary (what the x axis holds), else a generic name."""
    desc = ((summary or {}).get("variants", {}).get(variant, {}) or {}).get("description")
    return f"localisation effect: {desc}" if desc else "localisation effect"


def shown_layers(layers, most: int = 8) -> list:
    """All layers when few; otherwise ``most`` of them evenly spaced, first and last included."""
    layers = sorted(layers)
    if len(layers) <= most:
        return layers
    return [layers[i] for i in sorted(set(np.linspace(0, len(layers) - 1, most).round().astype(int)))]


def scatter_figure(joined: pd.DataFrame, score: str = "rewrite_score", label: str = "localisation effect",
                   max_layers: int = 8) -> Drawn:
    """Effect (x) against edit score (y): one row per estimator, one column per edit layer, with the
    per-layer least-squares line and Pearson r; the x axis is named by ``label``."""
    joined = _variant(joined)
    ests = _ests(joined)
    layers = shown_layers(joined.layer.unique(), max_layers)
    name = f"effect_vs_{SCORE_LABELS.get(score, score)}"
    if not ests or not layers or score not in joined:
        return Drawn(name, None, {"FigScatterCases": "0"})
    counts = []
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(ests), len(layers), figsize=(WIDTH, 1.25 * len(ests) + 0.9), sharex="col",
                                 sharey=True, squeeze=False, layout="constrained")
        for i, e in enumerate(ests):
            for j, layer in enumerate(layers):
                ax = axes[i, j]
                d = joined[joined.layer == layer]
                x, y = d[f"effect_{e}"].to_numpy(float), d[score].to_numpy(float)
                ok = np.isfinite(x) & np.isfinite(y)
                counts.append(int(ok.sum()))
                ax.scatter(x[ok], y[ok], s=7, alpha=0.6, color=COLORS[e], marker=MARKERS[e], lw=0)
                if ok.sum() > 2 and np.ptp(x[ok]) > 0 and np.ptp(y[ok]) > 0:
                    b, a = np.polyfit(x[ok], y[ok], 1)
                    xs = np.linspace(x[ok].min(), x[ok].max(), 10)
                    ax.plot(xs, a + b * xs, color=COLORS[e], lw=0.9)
                    r = np.corrcoef(x[ok], y[ok])[0, 1]
                    ax.text(0.97, 0.04, f"r = {r:.2f}", transform=ax.transAxes, ha="right", va="bottom", fontsize=6,
                            bbox=dict(boxstyle="square,pad=0.15", fc="white", ec="none", alpha=0.8))
                ax.tick_params(labelsize=6)
                ax.xaxis.set_major_locator(MaxNLocator(2 if len(layers) > 5 else 3))
                if i == 0:
                    ax.set_title(f"layer {layer}")
            axes[i, 0].set_ylabel(f"{LABELS[e]}\n{SCORE_LABELS.get(score, score)} score")
        fig.supxlabel(textwrap.fill(label, 110), fontsize=8)
    return Drawn(name, fig, {"FigScatterCases": _span(counts), "FigScatterLayers": ", ".join(map(str, layers))})


# ----------------------------------------------------------------------------- layer profiles

def layer_means(frame: pd.DataFrame, column: str, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per layer: the mean of ``column`` over cases with a 95 % percentile bootstrap CI over cases."""
    rows = []
    for layer, g in frame.groupby("layer"):
        v = g[column].to_numpy(float)
        ci = bootstrap_ci(v[np.isfinite(v)], n_resamples=n_boot, seed=seed)
        rows.append(dict(layer=layer, mean=ci.estimate, lo=ci.low, hi=ci.high, n=ci.n))
    return pd.DataFrame(rows)


def _profile(ax, g: pd.DataFrame, shift: float = 0.0, **kw) -> None:
    """Means with CI bars, shifted sideways by ``shift`` (a fraction of the layer spacing) to keep
    overlapping bars apart."""
    err = np.nan_to_num(np.vstack([g["mean"] - g.lo, g.hi - g["mean"]]).clip(min=0))
    layers = g.layer.to_numpy(float)
    gap = np.min(np.diff(layers)) if len(layers) > 1 else 1.0
    ax.errorbar(layers + shift * gap, g["mean"], yerr=err, ms=4, **kw)


def profiles_figure(joined: pd.DataFrame, label: str = "localisation effect", n_boot: int = 1000,
                    seed: int = 0) -> Drawn:
    """Mean edit scores (top) and mean localisation effects (bottom) per edit layer, with markers and
    95 % bootstrap CIs over cases."""
    joined = _variant(joined)
    counts = []
    with plt.rc_context(STYLE):
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(WIDTH * 0.62, 4.2), sharex=True, layout="constrained")
        for k, (score, marker, color) in enumerate((("rewrite_score", "o", "black"),
                                                    ("paraphrase_score", "s", "#7570b3"),
                                                    ("neighborhood_score", "D", "#1b9e77"))):
            if score in joined and joined[score].notna().any():
                g = layer_means(joined, score, n_boot, seed)
                counts += list(g.n)
                _profile(top, g, (k - 1) * 0.06, marker=marker, color=color, label=SCORE_LABELS[score])
        top.set_ylabel("mean edit score")
        top.legend(frameon=False)
        for k, e in enumerate(_ests(joined)):
            g = layer_means(joined, f"effect_{e}", n_boot, seed)
            counts += list(g.n)
            _profile(bottom, g, (k - 1) * 0.06, marker=MARKERS[e], color=COLORS[e], label=LABELS[e])
        bottom.axhline(0, color="0.4", lw=0.7, zorder=0)
        bottom.set_ylabel("mean localisation effect")
        bottom.set_title(textwrap.fill(label, 70), fontsize=7, loc="left")
        bottom.set_xlabel("edit layer")
        layer_ticks(bottom, sorted(joined.layer.unique()))
        bottom.legend(frameon=False)
    return Drawn("layer_profiles", fig, {"FigProfileCases": _span(counts), "FigProfileBoot": str(n_boot)})


# ----------------------------------------------------------------------------- ΔR²

def delta_r2_figure(r2: pd.DataFrame) -> Drawn:
    """ΔR² (Both − Layer) with its CI per estimator, grouped by score; a dash beside each marks its
    no-signal expectation (the mean of the case-permutation null), which ΔR² exceeds even without signal."""
    r2 = _variant(r2)
    scores = _scores(r2)
    ests = [e for e in ESTIMATORS if "estimator" in r2 and e in set(r2.estimator)]
    if not scores or not ests:
        return Drawn("delta_r2", None, {"FigDeltaCases": "0"})
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(WIDTH * 0.6, 2.4), layout="constrained")
        width = 0.8 / len(ests)
        for i, e in enumerate(ests):
            d = r2[r2.estimator == e].set_index("score").reindex(scores)
            x = np.arange(len(scores)) + (i - (len(ests) - 1) / 2) * width
            err = np.nan_to_num(np.vstack([d.delta_r2 - d.delta_ci_low, d.delta_ci_high - d.delta_r2]).clip(min=0))
            ax.errorbar(x, d.delta_r2, yerr=err, fmt=MARKERS[e], color=COLORS[e], label=LABELS[e], ms=4)
            if "delta_null_mean" in d:
                ax.plot(x, d.delta_null_mean, ls="", marker="_", ms=10, mew=1.5, color=COLORS[e])
        ax.axhline(0, color="0.4", lw=0.7)
        ns = r2.groupby("score").n_cases.max() if "n_cases" in r2 else {}
        ax.set_xticks(range(len(scores)), [f"{SCORE_LABELS.get(s, s)}\n(n = {int(ns[s])})" if s in ns else
                                           SCORE_LABELS.get(s, s) for s in scores])
        ax.set_ylabel(r"$\Delta R^2 = R^2_{\mathrm{both}} - R^2_{\mathrm{layer}}$")
        ax.legend(frameon=False)
    return Drawn("delta_r2", fig, {"FigDeltaCases": _span(r2.n_cases) if "n_cases" in r2 else "n/a"})


# ----------------------------------------------------------------------------- trace heatmaps

def heatmap_drawn(trace: pd.DataFrame, window: int | None = None) -> Drawn:
    """The trace heatmaps of every estimator and component (denoising, metric p) in one figure."""
    panels = heatmaps.heatmap_panels(trace, window=window) if trace is not None and not trace.empty else []
    if not panels:
        return Drawn("trace_heatmaps", None, {"FigHeatCases": "0"})
    fig = heatmaps.heatmap_figure(panels, heatmaps.quantity_label())
    windows = {p.component: p.window for p in panels}
    parts = [f"{heatmaps.COMPONENT_LABELS.get(c, c)} " + ("(single layers)" if w == 1 else f"(windows of {w} layers)")
             for c, w in windows.items()]
    return Drawn("trace_heatmaps", fig, {"FigHeatCases": _span(p.n_cases for p in panels),
                                         "FigHeatComponents": " and ".join(parts)})


# ----------------------------------------------------------------------------- all of them

CAPTION_DEFAULTS = {"FigForestCases": "0", "FigForestMethod": "n/a", "FigForestMDD": "", "FigPerLayerCases": "0",
                    "FigPerLayerCorrection": "n/a", "FigPerLayerDegenerate": "", "FigPerLayerTested": "0",
                    "FigScatterCases": "0", "FigScatterLayers": "n/a",
                    "FigEffect": "n/a", "FigProfileCases": "0", "FigProfileBoot": "n/a", "FigDeltaCases": "0",
                    "FigHeatCases": "0", "FigHeatComponents": "n/a"}


def captions_tex(macros: dict[str, str]) -> str:
    """``\\newcommand`` per caption fact (defaults for figures that were not drawn)."""
    values = {**CAPTION_DEFAULTS, **macros}
    lines = ["% Generated by causaleval.reporting.figures: what each figure shows."]
    lines += [rf"\newcommand{{\{k}}}{{{v}}}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def draw_all(t: AnalysisTables, trace: pd.DataFrame | None = None, mlp_window: int | None = None) -> list[Drawn]:
    """Every figure of the paper from the analysis tables (default variant; H1 over all variants)."""
    joined, r2, per_layer = (_variant(t.joined), _variant(t.r2), _variant(t.per_layer))
    spec = ((t.summary or {}).get("variants", {}).get("default", {}) or {}).get("spec", {}) or {}
    label = effect_label(t.summary)
    drawn = [forest_figure(t.h1), per_layer_figure(per_layer), scatter_figure(joined, label=label),
             profiles_figure(joined, label, int(spec.get("n_bootstrap", 1000)), int(spec.get("seed", 0))),
             delta_r2_figure(r2)]
    if trace is not None:
        drawn.append(heatmap_drawn(trace, mlp_window))
    drawn.append(Drawn("effect", None, {"FigEffect": tex_escape(label.removeprefix("localisation effect: "))}))
    return drawn


def write_figures(t: AnalysisTables, out_dir: Path, trace: pd.DataFrame | None = None,
                  mlp_window: int | None = None) -> list[Path]:
    """Save every figure (PDF + PNG) and ``captions.tex`` into ``out_dir``; returns the paths."""
    paths: list[Path] = []
    macros: dict[str, str] = {}
    for d in draw_all(t, trace, mlp_window):
        macros.update(d.macros)
        if d.figure is not None:
            paths += save(d.figure, out_dir, d.name)
    path = Path(out_dir) / "captions.tex"
    atomic_write_text(path, captions_tex(macros))
    return paths + [path]
