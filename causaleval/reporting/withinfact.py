"""The paper's tables, figure and macros of the within-fact analyses (``<run>/withinfact/*.parquet``,
written by the analyze stage or ``python -m experiments.withinfact``), for every model side by side:
measures with baseline predictors, H1 on every measure, the per-relation forest, the golden layer, the
specification curve and where the max lands.
Nothing is recomputed here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from causaleval.data.catalogue import relation_name
from causaleval.reporting.figures import COLORS, STYLE, WIDTH, plt, save
from causaleval.reporting.replication import MODEL_LABELS
from causaleval.reporting.tables import (
    LABELS,
    SCORE_LABELS,
    booktabs,
    est_ci,
    num,
    pval,
    tex_escape,
)
from causaleval.runs.store import atomic_write_text

MEASURE_TEX = {"r_w": "$r_w$", "r_w_rank": "$r_w$ (ranks)", "twoway": "two-way", "twoway_rank": "two-way (ranks)",
               "r_w_adj": "$r_w$ adj.", "r_w_rank_adj": "$r_w$ (ranks) adj.", "twoway_rank_adj": "two-way (ranks) adj."}
PREDICTOR_TEX = {"log_p_true": r"$\log p(o_{\mathrm{true}})$", "te_noise": "TE (noise)", "te_resample": "TE (resample)",
                 "te_flip": "TE (flip)", **LABELS}
OUTCOME_TEX = {**SCORE_LABELS, "margin": "Log-odds margin"}
CHOICE_LABELS = {"measure": MEASURE_TEX, "effect": {"fraction": "fraction", "raw": "raw IE"},
                 "token_rule": {"max": "max from subject", "subject_last": "subject last"},
                 "layer_set": {"all": "all edit layers", "working": "layers where edits work"},
                 "outcome": {"rewrite_score": "rewrite", "paraphrase_score": "paraphrase",
                             "neighborhood_score": "neighbourhood", "margin": "log-odds margin"},
                 "site": {"mlp 5": "MLP window 5", "mlp 10": "MLP window 10", "mlp 1": "MLP window 1",
                          "attn 5": "attention window 5", "attn 10": "attention window 10",
                          "attn 1": "attention window 1", "residual 1": "residual stream"},
                 "metric": {"p": "probability", "ld": "logit difference"}}
TEX_MACRO_MODEL = {"smollm2": "SmolLM", "gemma3-270m": "Gemma"}


def model_name(folder: Path) -> str:
    run = Path(folder) / "run.json"
    return json.loads(run.read_text()).get("config", {}).get("model", Path(folder).name) if run.is_file() \
        else Path(folder).name


def read_withinfact(folder: Path) -> dict[str, pd.DataFrame] | None:
    """The within-fact tables of a run, or None when ``experiments.withinfact`` has not been run on it."""
    d = Path(folder) / "withinfact"
    names = ("withinfact", "withinfact_h1", "golden", "speccurve", "speccurve_joint", "positions", "relations")
    if not all((d / f"{n}.parquet").is_file() for n in names):
        return None
    return {n: pd.read_parquet(d / f"{n}.parquet") for n in names}


def measures_table(runs: dict[str, dict], outcome: str = "rewrite_score") -> str:
    """Per model: every localiser and baseline predictor on each measure (value [CI], permutation null mean)."""
    measures = ["r_w", "r_w_rank", "twoway", "twoway_rank", "r_w_rank_adj", "twoway_rank_adj"]
    body: list = []
    for model, t in runs.items():
        w = t["withinfact"]
        w = w[w.outcome == outcome]
        body.append(tex_escape(model))
        for pred, g in w[w.measure.isin(measures)].groupby("predictor", sort=False):
            cells = []
            for m in measures:
                r = g[g.measure == m]
                cells.append(est_ci(r.value.iloc[0], r.ci_low.iloc[0], r.ci_high.iloc[0]) if len(r) else "--")
            body.append([PREDICTOR_TEX.get(pred, tex_escape(pred))] + cells)
        share = w[w.measure == "relation_share"].value
        share_r = w[w.measure == "relation_share_rank"].value
        if len(share):
            body.append([r"relation (share of within-layer variance)", num(share.iloc[0]),
                         num(share_r.iloc[0]) if len(share_r) else "--"] + [""] * (len(measures) - 2))
    caption = (r"Within-fact association of the localisation effect with the rewrite score, and of baseline "
               r"predictors with no localisation content (the model's confidence $\log p(o_{\mathrm{true}})$ "
               r"and the total effect TE of each corruption; constant within a fact, so the two-way measures do "
               r"not apply to them). $r_w$: within-layer correlation; ranks: on within-layer ranks; two-way: fact "
               r"and layer effects both removed (at which layer does \emph{this} fact edit best?); adj.: "
               r"$\log p(o_{\mathrm{true}})$, the three TEs and relation partialled out within layer. 95\% "
               r"case-bootstrap CIs. Relation row: its share of the within-layer variance of the score (raw, ranks).")
    header = [""] + [MEASURE_TEX[m] for m in measures]
    return booktabs(header, body, caption, "tab:withinfact", align="l" + "l" * len(measures), fit=True)


def h1_measures_table(runs: dict[str, dict], outcomes=("rewrite_score", "margin")) -> str:
    """H1 (a − b) per model, outcome and measure: difference [95 % CI] and one-sided swap p."""
    body: list = []
    pairs = [("flip", "noise"), ("resample", "noise")]
    for model, t in runs.items():
        h = t["withinfact_h1"]
        for outcome in outcomes:
            body.append(f"{tex_escape(model)}, {OUTCOME_TEX.get(outcome, outcome).lower()}")
            for m, g in h[h.outcome == outcome].groupby("measure", sort=False):
                row = [MEASURE_TEX.get(m, tex_escape(m))]
                for a, b in pairs:
                    r = g[(g.a == a) & (g.b == b)]
                    row += ([est_ci(r["diff"].iloc[0], r.ci_low.iloc[0], r.ci_high.iloc[0]), pval(r.p_one_sided.iloc[0])]
                            if len(r) else ["--", "--"])
                body.append(row)
    caption = (r"H1 on every within-fact measure: $T_a - T_b$ with a 95\% paired case-bootstrap CI and the "
               r"one-sided $p$ of the paired swap test (each fact's two effect profiles exchanged at random), for "
               r"the rewrite score and the post-edit log-odds margin $\log p(o_{\mathrm{new}}) - \log "
               r"p(o_{\mathrm{true}})$ (off the rewrite score's ceiling). Exploratory: no measure was fixed in "
               r"advance except $r_w$.")
    header = ["Measure", r"flip $-$ noise [95\% CI]", "$p$", r"resample $-$ noise [95\% CI]", "$p$"]
    return booktabs(header, body, caption, "tab:withinfact-h1", align="lllll", fit=True)


def golden_tex(runs: dict[str, dict], outcomes=("rewrite_score", "margin")) -> str:
    """Editing at the localiser's top layer vs the cross-fitted golden layer, the ceiling and a random layer."""
    body: list = []
    for model, t in runs.items():
        g = t["golden"]
        for outcome in outcomes:
            rows = g[g.outcome == outcome]
            if rows.empty:
                continue
            r0 = rows.iloc[0]
            body.append(f"{tex_escape(model)}, {OUTCOME_TEX.get(outcome, outcome).lower()} (golden layer "
                        f"{int(r0.golden_layer)}: {num(r0.golden)}; ceiling {num(r0.ceiling)}; random layer "
                        f"{num(r0.random)}; {int(r0.n_cases)} facts)")
            for r in rows.itertuples():
                body.append([LABELS.get(r.estimator, r.estimator), num(r.localiser),
                             est_ci(r.localiser_minus_golden, r.localiser_minus_golden_ci_low,
                                    r.localiser_minus_golden_ci_high),
                             est_ci(r.ceiling_minus_localiser, r.ceiling_minus_localiser_ci_low,
                                    r.ceiling_minus_localiser_ci_high),
                             est_ci(r.localiser_minus_random, r.localiser_minus_random_ci_low,
                                    r.localiser_minus_random_ci_high)])
    caption = (r"Which layer should I edit? Mean outcome when each fact is edited at the edit layer its "
               r"localiser ranks first (ties split), against the single best layer chosen on the other facts "
               r"(golden; 10-fold cross-fitted), the per-fact best layer (ceiling) and a uniformly random edit "
               r"layer; paired differences with 95\% case-bootstrap CIs.")
    header = ["Localiser", "Mean", r"$-$ golden [95\% CI]", r"ceiling $-$ [95\% CI]", r"$-$ random [95\% CI]"]
    return booktabs(header, body, caption, "tab:golden", align="lrlll", fit=True)


def speccurve_tex(runs: dict[str, dict]) -> str:
    """Per model and pair: the number of specifications, median H1 with its joint p, and the shares
    significant in each direction with their joint p."""
    body = []
    for model, t in runs.items():
        for r in t["speccurve_joint"].itertuples():
            body.append([tex_escape(model), f"{r.a} $-$ {r.b}", str(int(r.n_specs)), num(r.median), pval(r.p_median),
                         f"{num(r.share_positive, 2)} ({pval(r.p_share_positive)})",
                         f"{num(r.share_negative, 2)} ({pval(r.p_share_negative)})"])
    caption = (r"Specification curve of H1 \citep{simonsohn2020specification}: every combination of measure (6), "
               r"effect (fraction restored, raw IE), token rule (max from the first subject token, last subject "
               r"token), layer set (all edit layers, layers whose mean rewrite score is at least 0.5) and outcome "
               r"(rewrite, paraphrase, neighbourhood, log-odds margin). Median: the median difference over "
               r"specifications; shares: specifications whose swap test is significant at 0.05 (two-sided) in "
               r"each direction. Joint $p$: the same swap draws applied to every specification give the null "
               r"distribution of the median and of each share. " + _site_metric_text(runs))
    header = ["Model", "H1", "Specs", "Median", r"$p$ (median)", r"Share $> 0$ ($p$)", r"Share $< 0$ ($p$)"]
    return booktabs(header, body, caption, "tab:speccurve", align="llrrrll", fit=True)


def _site_metric_text(runs: dict[str, dict]) -> str:
    """What the curves' site and metric were: one each (the only ones traced for every fact with every
    estimator), or the choices."""
    def values(c, default):
        return sorted({v for t in runs.values() for v in (t["speccurve"][c] if c in t["speccurve"] else [default])})
    sites, metrics = values("site", "mlp 5"), values("metric", "p")
    name = lambda c, v: CHOICE_LABELS[c].get(v, v)     # noqa: E731
    if len(sites) == 1 and len(metrics) == 1:
        return (f"Site {name('site', sites[0])} and metric {name('metric', metrics[0])} throughout: the only ones "
                r"traced for every fact with every estimator (other windows, the residual stream and the logit "
                r"difference were traced for the heatmap facts or for flip scrubbing only).")
    return ("Sites: " + ", ".join(name("site", v) for v in sites) + "; metrics: "
            + ", ".join(name("metric", v) for v in metrics) + ".")


def positions_tex(runs: dict[str, dict], role: str = "last") -> str:
    """Per model, layer and estimator: the share of facts whose max over positions lies on the last token."""
    body: list = []
    ests = ["noise", "resample", "flip"]
    for model, t in runs.items():
        p = t["positions"]
        body.append(tex_escape(model))
        wide = p[p.role == role].pivot(index="layer", columns="estimator", values="share").reindex(
            sorted(p.layer.unique())).fillna(0.0)
        for layer, r in wide.iterrows():
            body.append([str(int(layer))] + [num(r.get(e, np.nan), 2) for e in ests])
    caption = (r"Where the effect sits: per edit layer, the share of facts whose maximum over positions (from the "
               r"first subject token, the default token rule) lies on the last token of the prompt, a position "
               r"ROME never edits (it edits the last subject token).")
    return booktabs(["Layer"] + [LABELS[e] for e in ests], body, caption, "tab:positions", align="rrrr")


def relations_tex(runs: dict[str, dict], measure: str = "r_w", outcome: str = "rewrite_score") -> str:
    """Per model and estimator (and flip − noise): the measure within each relation [95 % CI] and the
    heterogeneity test's p (spread of the per-relation values against relation labels permuted over facts)."""
    rels = sorted({r for t in runs.values() for r in t["relations"].relation.unique()})
    body: list = []
    for model, t in runs.items():
        r = t["relations"]
        r = r[(r.measure == measure) & (r.outcome == outcome)]
        body.append(tex_escape(model) + " (facts per relation: " + ", ".join(
            f"{rel} {int(n)}" for rel, n in r.groupby("relation").n_cases.first().items()) + ")")
        for target, g in r.groupby("target", sort=False):
            g = g.set_index("relation")
            body.append([LABELS.get(target, target.replace(" - ", " $-$ "))]
                        + [est_ci(g.value[x], g.ci_low[x], g.ci_high[x], 2) if x in g.index else "--" for x in rels]
                        + [pval(g.p_heterogeneity.iloc[0])])
    caption = (rf"{MEASURE_TEX.get(measure, measure)} of the rewrite score within each relation (Wikidata "
               r"property), with 95\% case-bootstrap CIs, and a test of heterogeneity across relations: the "
               r"case-weighted spread of the per-relation values against its distribution when the relation "
               r"labels are permuted over facts.")
    return booktabs([""] + rels + [r"$p$ (het.)"], body, caption, "tab:relations", align="l" * (len(rels) + 1) + "r",
                    fit=True)


def speccurve_figure(runs: dict[str, dict], pair: tuple[str, str] = ("flip", "noise")):
    """Per model: the sorted H1 estimates with 95 % CIs (coloured by significance) above, the choice matrix below."""
    curves = pd.concat([t["speccurve"] for t in runs.values()])
    # a choice with one level on every run (e.g. the site, where only MLP window 5 was traced for every fact)
    # is no choice: it has no row; a site or metric without a label is shown as written
    labels = {c: {**names, **{v: v for v in (curves[c].unique() if c in curves else []) if v not in names}}
              for c, names in CHOICE_LABELS.items()}
    levels = [(c, v) for c in labels if c in curves and curves[c].nunique() > 1
              for v in labels[c] if (curves[c] == v).any()]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(2, len(runs), figsize=(WIDTH, 5.6), squeeze=False, sharex="col",
                                 gridspec_kw={"height_ratios": [1.0, 1.6]}, layout="constrained")
        for j, (model, t) in enumerate(runs.items()):
            s = t["speccurve"]
            s = s[(s.a == pair[0]) & (s.b == pair[1])].sort_values("diff").reset_index(drop=True)
            x = np.arange(len(s))
            col = np.where(s.significant > 0, COLORS["flip"], np.where(s.significant < 0, COLORS["resample"], "0.6"))
            top, bottom = axes[0, j], axes[1, j]
            top.vlines(x, s.ci_low, s.ci_high, color=col, lw=0.5, alpha=0.6)
            top.scatter(x, s["diff"], c=col, s=3, zorder=3)
            top.axhline(0, color="0.3", lw=0.7)
            top.set_title(f"{model}: {pair[0]} $-$ {pair[1]}")
            if j == 0:
                top.set_ylabel("H1 difference [95% CI]")
            for k, (c, v) in enumerate(levels):
                on = (s[c] == v).to_numpy()
                bottom.scatter(x[on], np.full(on.sum(), k), s=2, c=col[on], marker="s")
            bottom.set_ylim(len(levels) - 0.5, -0.5)
            bottom.set_yticks(range(len(levels)),
                              [labels[c][v].replace("$", "") if j == 0 else "" for c, v in levels])
            bottom.set_xlabel("specification (sorted by estimate)")
    return fig


FOREST_TARGETS = ("noise", "resample", "flip", "flip - noise")


def relations_figure(runs: dict[str, dict], measure: str = "r_w", outcome: str = "rewrite_score"):
    """Per model (a panel): the forest of Table relations — per relation, each localiser's measure and
    flip − noise with 95 % case-bootstrap CIs, and a row ``all facts`` with the pooled value (from the
    measure and H1 tables); the legend gives each target's heterogeneity p."""
    offsets = dict(zip(FOREST_TARGETS, np.linspace(-0.27, 0.27, len(FOREST_TARGETS))))
    colours = {**COLORS, "flip - noise": "black"}
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(runs), figsize=(WIDTH, 3.6), squeeze=False, sharex=True, layout="constrained")
        for j, (model, t) in enumerate(runs.items()):
            ax = axes[0, j]
            r = t["relations"]
            r = r[(r.measure == measure) & (r.outcome == outcome)]
            rels = sorted(r.relation.unique())
            w, h = t["withinfact"], t["withinfact_h1"]
            pooled = {e: w[(w.measure == measure) & (w.outcome == outcome) & (w.predictor == e)]
                      for e in FOREST_TARGETS[:3]}
            pooled["flip - noise"] = h[(h.measure == measure) & (h.outcome == outcome) & (h.a == "flip")
                                       & (h.b == "noise")].rename(columns={"diff": "value"})
            for target in FOREST_TARGETS:
                g = r[r.target == target].set_index("relation").reindex(rels)
                rows = pd.concat([g[["value", "ci_low", "ci_high"]], pooled[target][["value", "ci_low", "ci_high"]]
                                  .head(1).set_axis(["all facts"])]) if len(pooled[target]) else g
                ypos = np.arange(len(rows)) + offsets[target]
                p_het = g.p_heterogeneity.dropna()
                label = target.replace(" - ", " − ") + (f" (het. p {p_het.iloc[0]:.2f})" if len(p_het) else "")
                ax.errorbar(rows.value, ypos, xerr=[rows.value - rows.ci_low, rows.ci_high - rows.value], fmt="o",
                            ms=3, color=colours.get(target, "0.4"), label=label, lw=0.8)
            ax.axvline(0, color="0.5", lw=0.6, ls="--")
            names = [f"{x} {relation_name(x)}" for x in rels] + ["all facts"]
            ax.set_yticks(range(len(rels) + 1), names if j == 0 else [""] * len(names))
            ax.set_ylim(len(rels) + 0.6, -0.6)
            ax.set_title(MODEL_LABELS.get(model, model), pad=30)
            ax.set_xlabel(f"{MEASURE_TEX.get(measure, measure)} (rewrite score) [95% CI]")
            ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=6, frameon=False, ncol=2,
                      handletextpad=0.2, columnspacing=0.8)
    return fig


def numbers_tex(runs: dict[str, dict]) -> str:
    """Macros: per model (SmolLM, Gemma), the spec curve summary, two-way rank H1 and the golden layer."""
    lines = ["% Generated by causaleval.reporting.withinfact.numbers_tex"]
    mac = lambda k, v: lines.append(rf"\newcommand{{\{k}}}{{{v}}}")
    for model, t in runs.items():
        tag = TEX_MACRO_MODEL.get(model, "".join(ch for ch in model.title() if ch.isalpha()))
        for r in t["speccurve_joint"].itertuples():
            pt = "FlipNoise" if (r.a, r.b) == ("flip", "noise") else "ResampleNoise"
            mac(f"Spec{tag}{pt}N", str(int(r.n_specs)))
            mac(f"Spec{tag}{pt}Median", num(r.median))
            mac(f"Spec{tag}{pt}PMedian", pval(r.p_median))
            mac(f"Spec{tag}{pt}Pos", num(r.share_positive, 2))
            mac(f"Spec{tag}{pt}PPos", pval(r.p_share_positive))
            mac(f"Spec{tag}{pt}Neg", num(r.share_negative, 2))
            mac(f"Spec{tag}{pt}PNeg", pval(r.p_share_negative))
        h = t["withinfact_h1"]
        for m, mt in (("twoway_rank", "TwowayRank"), ("r_w_rank", "RwRank"), ("twoway_rank_adj", "TwowayRankAdj")):
            r = h[(h.outcome == "rewrite_score") & (h.measure == m) & (h.a == "flip") & (h.b == "noise")]
            if len(r):
                mac(f"Wf{tag}{mt}", num(r["diff"].iloc[0]))
                mac(f"Wf{tag}{mt}CI", f"[{num(r.ci_low.iloc[0])}, {num(r.ci_high.iloc[0])}]")
                mac(f"Wf{tag}{mt}P", pval(r.p_one_sided.iloc[0]))
        g = t["golden"]
        g = g[g.outcome == "rewrite_score"].set_index("estimator")
        if len(g):
            mac(f"Golden{tag}", num(g.golden.iloc[0]))
            mac(f"Golden{tag}Layer", str(int(g.golden_layer.iloc[0])))
            mac(f"Golden{tag}Ceiling", num(g.ceiling.iloc[0]))
            for e in g.index:
                mac(f"Golden{tag}{e.capitalize()}", num(g.loc[e, "localiser"]))
        w = t["withinfact"]
        w = w[(w.outcome == "rewrite_score") & (w.measure == "r_w")].set_index("predictor")
        for pred, pt in (("log_p_true", "PTrue"), ("te_noise", "TENoise")):
            if pred in w.index:
                mac(f"Base{tag}{pt}", num(w.loc[pred, "value"]))
    return "\n".join(lines) + "\n"


def write_withinfact(folders: list[Path], dest_dir: Path) -> list[Path]:
    """tables/{withinfact,withinfact_h1,golden,speccurve,positions,relations,withinfact_numbers}.tex and
    figures/{speccurve,relations}.{pdf,png} for every folder with within-fact tables (none: nothing written)."""
    runs = {model_name(f): t for f in folders if (t := read_withinfact(f)) is not None}
    if not runs:
        return []
    out = Path(dest_dir) / "tables"
    files = {"withinfact.tex": measures_table(runs), "withinfact_h1.tex": h1_measures_table(runs),
             "golden.tex": golden_tex(runs), "speccurve.tex": speccurve_tex(runs),
             "positions.tex": positions_tex(runs), "relations.tex": relations_tex(runs),
             "withinfact_numbers.tex": numbers_tex(runs)}
    paths = []
    for name, text in files.items():
        atomic_write_text(out / name, text)
        paths.append(out / name)
    return (paths + save(speccurve_figure(runs), Path(dest_dir) / "figures", "speccurve")
            + save(relations_figure(runs), Path(dest_dir) / "figures", "relations"))
