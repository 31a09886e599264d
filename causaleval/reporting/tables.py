"""LaTeX tables (booktabs) and the ``numbers.tex`` macros of the analysis (Hase et al. 2023 design).

Every function takes the :class:`causaleval.analysis.AnalysisTables` read back from a results folder
and returns LaTeX source; :func:`write_tables` writes them all.  Numbers are formatted to three
decimals (ΔR² to four), CIs in brackets, p-values as ``<0.001`` below one in a thousand.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from causaleval.analysis import AnalysisTables
from causaleval.analysis.study import effect_reliability
from causaleval.runs.store import atomic_write_text

LABELS = {"noise": "Noise tracing", "resample": "Resample scrubbing", "flip": "Flip scrubbing"}
SHORT = {"noise": "noise", "resample": "resample", "flip": "flip"}
SCORE_LABELS = {"rewrite_score": "Rewrite score", "paraphrase_score": "Paraphrase score",
                "neighborhood_score": "Neighborhood score"}
VARIANT_LABELS = {"default": "fraction restored, max over subject and later tokens", "raw_ie": "raw IE",
                  "subject_last": "last subject token", "noising": "noising (flip into clean; flip only, descriptive)",
                  "logit_diff": "logit difference (flip only, descriptive)"}
EDITOR_LABELS = {"rome": "ROME", "ft1": "FT-1", "ft5": "FT-5", "memit": "MEMIT"}   # editors as tables name them


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x)) or pd.isna(x)


def num(x, digits: int = 3) -> str:
    """A number for a table cell; ``--`` when missing."""
    return "--" if _missing(x) else f"{float(x):.{digits}f}"


def pval(p) -> str:
    """A p-value: three decimals, or ``$<$0.001``."""
    if _missing(p):
        return "--"
    return "$<$0.001" if p < 0.001 else f"{p:.3f}"


def pexpr(p) -> str:
    """A p-value for prose: ``$p = 0.012$`` or ``$p < 0.001$``."""
    if _missing(p):
        return "$p$ n/a"
    return "$p < 0.001$" if p < 0.001 else f"$p = {p:.3f}$"


def ci(lo, hi, digits: int = 3) -> str:
    return "" if _missing(lo) or _missing(hi) else f"[{float(lo):.{digits}f}, {float(hi):.{digits}f}]"


def est_ci(x, lo, hi, digits: int = 3) -> str:
    """``0.123 [0.045, 0.201]``."""
    c = ci(lo, hi, digits)
    return f"{num(x, digits)} {c}".strip()


def tex_escape(text: str) -> str:
    """Escape LaTeX specials in plain text (backslashes become slashes)."""
    text = text.replace("\\", "/")
    for a in "_%&#${}":
        text = text.replace(a, "\\" + a)
    return text


def booktabs(header: list[str], body: list[list[str] | str], caption: str, label: str,
             align: str | None = None, fit: bool = False, size: str = r"\small") -> str:
    """A ``table`` with a booktabs ``tabular``; a body entry that is a string is a group heading row.
    ``fit`` (or 8 columns or more): scaled down to the text width rather than overflowing the margin;
    ``size``: the font size command (a long table takes a smaller one to fit the page's height)."""
    ncol = len(header)
    wide = fit or ncol >= 8      # scaled down to the text width (graphicx's \resizebox) rather than overflowing
    lines = [r"\begin{table}[t]", r"\centering", size, rf"\caption{{{caption}}}", rf"\label{{{label}}}",
             *([r"\resizebox{\linewidth}{!}{%"] if wide else []),
             rf"\begin{{tabular}}{{{align or 'l' + 'r' * (ncol - 1)}}}", r"\toprule",
             " & ".join(header) + r" \\", r"\midrule"]
    first = True
    for row in body:
        if isinstance(row, str):
            if not first:
                lines.append(r"\midrule")
            lines.append(rf"\multicolumn{{{ncol}}}{{l}}{{\emph{{{row}}}}} \\")
        else:
            lines.append(" & ".join(row) + r" \\")
        first = False
    lines += [r"\bottomrule", r"\end{tabular}" + ("}" if wide else ""), r"\end{table}"]
    return "\n".join(lines) + "\n"


def _variant(frame: pd.DataFrame, variant: str) -> pd.DataFrame:
    return frame[frame.variant == variant] if not frame.empty and "variant" in frame else frame.iloc[0:0]


# what a table of the per-estimator regressions says when a small run left none (issue 34: report what can be)
NO_REGRESSION = ("No regression could be computed: fewer than 3 facts or 2 edit layers were left after the TE floor "
                 "(see analysis/summary.json)")


def _by_score(r2: pd.DataFrame):
    """(score, rows) groups of a regression table; none when a small run wrote an empty table."""
    return r2.groupby("score", sort=False) if "score" in r2 else ()


def _info(t: AnalysisTables, variant: str) -> dict:
    return t.summary["variants"].get(variant, {})


def _p_cluster(p, method) -> str:
    return "too few" if _missing(p) and isinstance(method, str) and method.startswith("too few") else pval(p)


def hase_table(t: AnalysisTables, variant: str = "default") -> str:
    """Layer / Effect / Both / ΔR² [CI] / p (F) / p (cluster) per estimator, grouped by score
    (Hase et al. 2023, Table 1); the group heading counts the facts analysed and excluded."""
    r2 = _variant(t.r2, variant)
    info = _info(t, variant)
    body: list = []
    ns = []
    few = False
    for score, g in _by_score(r2):
        excl = int(g.n_excluded.iloc[0]) if "n_excluded" in g else 0
        floor = min(int(info.get("n_excluded", 0) or 0), excl)
        why = (f"{excl} excluded: {floor} below the TE floor, {excl - floor} without this score"
               + (" (no neighbourhood prompts)" if score == "neighborhood_score" else "")
               if excl > floor else f"{excl} excluded")
        body.append(f"{SCORE_LABELS.get(score, score)} (n = {int(g.n_cases.iloc[0])} facts, "
                    f"{int(g.n_rows.iloc[0])} rows; {why})")
        ns.append(int(g.n_cases.iloc[0]))
        for r in g.itertuples():
            few |= _p_cluster(r.p_cluster, r.cluster_method) == "too few"
            body.append([LABELS.get(r.estimator, r.estimator), num(r.r2_layer), num(r.r2_effect), num(r.r2_both),
                         est_ci(r.delta_r2, r.delta_ci_low, r.delta_ci_high, 4),
                         num(getattr(r, "delta_null_mean", None), 4), _p_cluster(r.p_cluster, r.cluster_method),
                         pval(r.p_f)])
    n_boot = int(r2.n_boot.iloc[0]) if not r2.empty else 0
    method = r2.cluster_method.iloc[0] if not r2.empty else ""
    descriptive = "" if info.get("comparative", True) else " Only flip scrubbing has these rows: descriptive, no comparison."
    caption = (f"Variance of the edit score explained by the edit layer (Layer), the localisation effect (Effect) "
               f"and both with per-layer slopes (Both: score $\\sim$ C(layer) $\\times$ effect), as in "
               f"\\citet{{hase2023does}}. Effect: {tex_escape(info.get('description', variant))}."
               f"{descriptive} $n$ = {max(ns) if ns else 0} facts $\\times$ {len(info.get('layers', []))} edit layers "
               f"({info.get('n_excluded', 0)} of {info.get('n_edit_cases', 'n/a')} facts excluded). "
               f"$\\Delta R^2$ = Both $-$ Layer with a 95\\% bias-corrected cluster-bootstrap CI over facts "
               f"(B = {n_boot}). $\\Delta R^2$ is sign-blind and positive without any signal: $E_0$ is its "
               f"no-signal expectation on this design (the mean of the permutation null). $p$ (perm.): the "
               f"evidence, a permutation test of the added terms permuting whole facts' effect profiles across "
               f"facts ({tex_escape(method)}); $p$ (F): Hase et al.'s nested F-test, which assumes independent "
               f"rows (a fact's rows are correlated across layers; it over-rejects here, see the calibration)"
               + ("; ``too few'': too few facts for a cluster test." if few else "."))
    header = ["", r"$R^2$ Layer", r"$R^2$ Effect", r"$R^2$ Both", r"$\Delta R^2$ [95\% CI]", r"$E_0$",
              r"$p$ (perm.)", r"$p$ (F)"]
    body = body or [NO_REGRESSION]
    label = "tab:r2" if variant == "default" else f"tab:r2-{variant.replace('_', '-')}"
    return booktabs(header, body, caption, label, align="lrrrlrrr")


def directional_table(t: AnalysisTables, variant: str = "default") -> str:
    """Per score and estimator: the directional r_w [bootstrap CI] with its one-sided permutation p, the
    part of ΔR² from positive slopes, the excess of ΔR² over its no-signal expectation, the effect's
    split-half reliability [CI], and r_w and the excess disattenuated by it."""
    r2 = _variant(t.r2, variant)
    v = (t.summary.get("variants") or {}).get(variant, {})
    body: list = []
    for score, g in _by_score(r2):
        body.append(f"{SCORE_LABELS.get(score, score)} (n = {int(g.n_cases.iloc[0])} facts)")
        for row in g.itertuples():
            r = lambda name: getattr(row, name, None)      # an analysis written before these columns: --
            rel, rel_lo, rel_hi = effect_reliability(v, row.estimator, dict(
                reliability=r("reliability"), reliability_ci_low=r("reliability_ci_low"),
                reliability_ci_high=r("reliability_ci_high")))
            body.append([LABELS.get(row.estimator, row.estimator), est_ci(r("r_w"), r("r_w_ci_low"), r("r_w_ci_high")),
                         pval(r("p_r_w")), num(r("delta_r2_pos"), 4), num(r("delta_excess"), 4),
                         est_ci(rel, rel_lo, rel_hi, 2),
                         num(r("r_w_disattenuated")), num(r("delta_excess_disattenuated"), 4)])
    n_boot = int(r2.n_boot.iloc[0]) if not r2.empty else 0
    caption = (r"Does a larger localisation effect go with a \emph{better} edit at the same layer? $r_w$: the "
               r"within-layer correlation of score and effect (score centred and effect standardised within "
               r"layer, layers weighted by the score's spread), 95\% case-bootstrap CI "
               rf"(B = {n_boot}) and one-sided permutation $p$ (whole facts permuted; $H_0$: no association, "
               r"$H_1$: $r_w > 0$). $\Delta R^2_+$: the part of Hase et al.'s $\Delta R^2$ from layers whose "
               r"slope is positive. Excess: $\Delta R^2 - E_0$. Reliability: split-half (even vs odd draws) "
               r"within-layer correlation of the effect, Spearman--Brown corrected to all draws, 95\% "
               r"case-bootstrap CI; disattenuated: $r_w/\sqrt{\text{rel.}}$ and excess/rel. "
               r"(\citealp{spearman1904proof}).")
    header = ["", r"$r_w$ [95\% CI]", r"$p$", r"$\Delta R^2_+$", "Excess", r"Reliability [95\% CI]",
              r"$r_w$ disatt.", "Excess disatt."]
    body = body or [NO_REGRESSION]
    return booktabs(header, body, caption, "tab:directional", align="llrrrlrr")


def h1_table(t: AnalysisTables) -> str:
    """H1 per pair and score (default analysis), then flip − noise under each comparative variant: the
    directional r_w difference (primary) and Hase et al.'s ΔR² difference, each with its paired
    bootstrap CI, one-sided upper bound, one-sided swap-test p and the minimum detectable difference."""
    body: list = []
    n_perm = n_cases = 0
    for variant in [v for v in t.summary["variants"]]:
        if not _info(t, variant).get("comparative", True):
            continue
        h1 = _variant(t.h1, variant)
        if h1.empty:          # a small run (too few facts or layers for any H1 test): nothing in this variant
            continue
        if variant != "default":
            h1 = h1[(h1.a == "flip") & (h1.b == "noise") & (h1.score == "rewrite_score")]
        if h1.empty:
            continue
        body.append(f"Effect: {VARIANT_LABELS.get(variant, variant)}"
                    + (" (default)" if variant == "default" else ""))
        for r in h1.itertuples():
            n_perm = max(n_perm, int(r.n_perm))
            n_cases = max(n_cases, int(r.n_cases))
            measure = getattr(r, "measure", "delta_r2")
            body.append([f"{SHORT.get(r.a, r.a)} $-$ {SHORT.get(r.b, r.b)}",
                         SCORE_LABELS.get(r.score, r.score).replace(" score", ""),
                         "$r_w$" if measure == "r_w" else r"$\Delta R^2$",
                         num(r.delta_a, 4), num(r.delta_b, 4), est_ci(r.diff, r.ci_low, r.ci_high, 4),
                         num(getattr(r, "upper", None), 4), pval(r.p_one_sided), num(r.mdd, 4), str(int(r.n_cases))])
    caption = (r"H1: does the localisation of estimator $a$ predict edit success better than that of $b$? "
               r"Primary: the directional $r_w$ (Table~\ref{tab:directional}); descriptive: Hase et al.'s "
               r"sign-blind $\Delta R^2$. Differences by a paired swap test within fact (each fact's two effect "
               rf"profiles, standardised within layer, swapped at random; B = {n_perm}); one-sided $p$ = "
               r"$(1 + \#\{\text{diff}^* \ge \text{diff}\})/(B+1)$; 95\% CI and the one-sided 95\% upper "
               r"bound (``$a$ exceeds $b$ by at most'') from a paired case bootstrap. MDD: the smallest difference "
               r"the test detects with 80\% power at $\alpha = 0.05$, simulated on this design. $n$: facts "
               rf"analysed (up to {n_cases}); the noising and logit-difference variants exist for flip scrubbing "
               r"only and compare nothing.")
    header = [r"$a - b$", "Score", "Measure", r"$T_a$", r"$T_b$", r"Difference [95\% CI]", "Upper",
              r"$p$ (one-sided)", "MDD", r"$n$"]
    if not body:
        body = ["No H1 test could be computed: too few facts or edit layers in this run (see analysis/summary.json)"]
    return booktabs(header, body, caption, "tab:h1", align="lllrrlrrrr")


def per_layer_table(t: AnalysisTables, variant: str = "default", score: str = "rewrite_score",
                    pair: tuple[str, str] = ("flip", "noise")) -> str:
    """Per layer: r(score, effect) per estimator, r_a − r_b [bootstrap CI], Williams' t (signed r), p and
    corrected p; degenerate layers (no variance in the score) are marked and not tested."""
    pl = _variant(t.per_layer, variant)
    pl = pl[(pl.score == score) & (pl.a == pair[0]) & (pl.b == pair[1])] if not pl.empty else pl
    ests = [e for e in ("noise", "resample", "flip") if not pl.empty and f"r_{e}" in pl and pl[f"r_{e}"].notna().any()]
    body = []
    for r in pl.sort_values("layer").itertuples():
        if r.degenerate:
            body.append([str(r.layer), str(r.n)] + ["--"] * len(ests) + [r"\emph{degenerate}", "--", "--", "--"])
            continue
        body.append([str(r.layer), str(r.n)] + [num(getattr(r, f"r_{e}")) for e in ests]
                    + [est_ci(r.r_diff, r.ci_low, r.ci_high), num(r.williams_t, 2), pval(r.p), pval(r.p_adj)])
    corr = pl.correction.iloc[0] if not pl.empty else "holm"
    corr_name = {"holm": "Holm", "fdr_bh": "Benjamini--Hochberg"}.get(corr, corr)
    n = int(pl.n.max()) if not pl.empty else 0
    n_deg = int(pl.degenerate.sum()) if not pl.empty else 0
    caption = (f"Per edit layer: Pearson correlation of the {SCORE_LABELS.get(score, score).lower()} with each "
               f"localisation effect, and the directional difference $r_{{\\mathrm{{{pair[0]}}}}} - "
               f"r_{{\\mathrm{{{pair[1]}}}}}$ with a 95\\% paired bootstrap CI over facts (a negative $r$ counts "
               f"against an estimator). Williams' $t$ \\citep{{williams1959regression,steiger1980tests}} tests the "
               f"two dependent signed correlations (two-sided; df = $n-3$); $p_{{\\mathrm{{adj}}}}$: {corr_name} correction across the "
               f"{len(pl) - n_deg} non-degenerate layers. Degenerate: the score does not vary across facts at that "
               f"layer ({n_deg} layers; not tested). $n$ = {n} facts per layer.")
    header = ["Layer", "$n$"] + [f"$r$ {SHORT[e]}" for e in ests] + \
             [rf"$r_{{\mathrm{{{pair[0]}}}}} - r_{{\mathrm{{{pair[1]}}}}}$ [95\% CI]", "$t$", "$p$",
              r"$p_{\mathrm{adj}}$"]
    return booktabs(header, body, caption, "tab:per-layer", align="rr" + "r" * len(ests) + "lrrr")


def within_case_table(t: AnalysisTables, variant: str = "default", score: str = "rewrite_score") -> str:
    """Within-fact agreement of layer profiles: mean Spearman ρ [CI]; argmax hit rate [CI] against the
    case-permutation chance level."""
    wc = _variant(t.within_case, variant)
    wc = wc[wc.score == score] if not wc.empty else wc
    am = _variant(t.argmax, variant)
    am = am[am.score == score].set_index("estimator") if not am.empty else am
    body: list = []
    n_layers = int(wc.n_layers.iloc[0]) if not wc.empty else 0
    for r in wc.itertuples():
        null, p_perm = num(getattr(r, "null_mean", float("nan"))), pval(getattr(r, "p_perm", float("nan")))
        if r.b == "":
            a = am.loc[r.estimator] if r.estimator in am.index else None
            body.append([LABELS.get(r.estimator, r.estimator), est_ci(r.mean_rho, r.ci_low, r.ci_high), null, p_perm,
                         str(r.n_cases),
                         est_ci(a.hit_rate, a.ci_low, a.ci_high) if a is not None else "--",
                         num(a.chance) if a is not None else "--",
                         pval(a.p) if a is not None else "--"])
        else:
            body.append([f"{SHORT.get(r.a, r.a)} $-$ {SHORT.get(r.b, r.b)}",
                         est_ci(r.mean_rho, r.ci_low, r.ci_high), null, p_perm, str(r.n_cases), "", "", ""])
    caption = (f"Within-fact agreement between the layer profile of the localisation effect and that of the "
               f"{SCORE_LABELS.get(score, score).lower()} over {n_layers} edit layers. $\\bar\\rho$: mean over facts "
               f"of the Spearman correlation across layers after subtracting each layer's mean over facts, with a "
               f"95\\% bootstrap CI. Null: the mean of $\\bar\\rho$ when facts' effect and score profiles are "
               f"paired at random (whole-fact permutation; for a difference, the paired swap test that exchanges a "
               f"fact's two effect profiles); it is not 0, because layers where every score is equal and facts' "
               f"offsets are shared; $p$: one-sided permutation $p$ against that null. Argmax hit: share of facts whose "
               f"effect peaks at the layer where editing works best, ties split (a fact whose effect peaks at $k$ "
               f"layers counts $1/k$ per matching layer), with a 95\\% bootstrap CI; chance: the hit rate expected "
               f"when facts' effect and score profiles are paired at random; $p$: one-sided permutation test "
               f"against it (not against $1/L$: both argmax distributions concentrate on few layers).")
    header = ["", r"$\bar\rho$ [95\% CI]", "Null", r"$p$ (perm.)", "$n$", r"Argmax hit [95\% CI]", r"Chance",
              r"$p$ (vs chance)"]
    return booktabs(header, body, caption, "tab:within", align="llrrrlrr")


# ----------------------------------------------------------------------------- numbers.tex

def mnum(x, digits: int = 3) -> str:
    """A number for a macro that prose may use in math mode: ``\\text{n/a}`` when missing."""
    return r"\text{n/a}" if _missing(x) else f"{float(x):.{digits}f}"


def _macro(name: str, value: str) -> str:
    return rf"\newcommand{{\{name}}}{{{value}}}"


def calibration_score_correlation() -> float:
    """The correlation of a fact's scores across layers that the calibration's dependent design builds in
    (the default of :meth:`causaleval.inference.synthetic.SyntheticSpec.dependent`)."""
    import inspect

    from causaleval.inference.synthetic import SyntheticSpec

    return float(inspect.signature(SyntheticSpec.dependent).parameters["score_corr"].default)


def score_layer_correlation(t: AnalysisTables, score: str = "rewrite_score") -> float | None:
    """How strongly a fact's rows depend on each other: the mean over pairs of edit layers of the Pearson
    correlation, across facts, of the score minus its layer mean (default analysis; None without rows)."""
    j = _variant(t.joined, "default") if "variant" in t.joined else t.joined
    if j.empty or score not in j:
        return None
    wide = j.pivot_table(index="case_id", columns="layer", values=score)
    r = (wide - wide.mean()).corr().to_numpy()
    pairs = r[np.triu_indices_from(r, 1)]
    pairs = pairs[np.isfinite(pairs)]
    return float(pairs.mean()) if pairs.size else None


def numbers_tex(t: AnalysisTables, score: str = "rewrite_score") -> str:
    """``\\newcommand`` macros so the paper's prose quotes live numbers (n/a where a value is missing)."""
    s = t.summary
    v = s["variants"].get("default", {})
    model = s.get("model") or {}
    cfg = s.get("config") or {}
    m: dict[str, str] = {
        "ModelName": tex_escape(str(model.get("hf_name") or model.get("name") or "unknown model")),
        "ModelLayers": str(model.get("n_layers", "n/a")),
        "nFacts": str(v.get("n_cases", "n/a")),
        "nEditLayers": str(len(v.get("layers", []))),
        "nRows": str(v.get("n_rows", "n/a")),
        "EditLayers": ", ".join(str(x) for x in v.get("layers", [])),
        "AnalysisWindow": str((v.get("spec") or {}).get("window", "n/a")),
        "nBoot": str((v.get("spec") or {}).get("n_bootstrap", "n/a")),
        "NoiseDraws": str(cfg.get("noise_draws", "n/a")),
        "PartnerDraws": str(cfg.get("partner_draws", "n/a")),
    }
    m["ScoreLayerCorr"] = mnum(score_layer_correlation(t, score), 2)
    m["CalibScoreCorr"] = mnum(calibration_score_correlation(), 2)
    d = v.get("delta_r2", {}).get(score, {})
    first = next(iter(d.values()), {})
    m["RLayer"] = mnum(first.get("r2_layer"))
    for est in ("noise", "resample", "flip"):
        e = d.get(est, {})
        cap = est.capitalize()
        m[f"REffect{cap}"] = mnum(e.get("r2_effect"))
        m[f"RBoth{cap}"] = mnum(e.get("r2_both"))
        m[f"DeltaR{cap}"] = mnum(e.get("delta_r2"), 4)
        m[f"DeltaR{cap}CI"] = ci(e.get("ci_low"), e.get("ci_high"), 4) or "n/a"
        # partial R²: ΔR² as a share of the variance the layer leaves unexplained (compares studies whose
        # R²(layer) differ, as Hase et al.'s and this one do)
        unexplained = None if _missing(e.get("r2_layer")) else 1 - e["r2_layer"]
        m[f"PartialR{cap}"] = mnum(e["delta_r2"] / unexplained, 4) if unexplained and not _missing(
            e.get("delta_r2")) else "n/a"
        m[f"PF{cap}"] = pexpr(e.get("p_f"))
        m[f"PCluster{cap}"] = (pexpr(e.get("p_cluster")) if not _missing(e.get("p_cluster"))
                               else r"\text{(too few facts for a cluster test)}")
    for est in ("noise", "resample", "flip"):
        e = d.get(est, {})
        cap = est.capitalize()
        m[f"Rw{cap}"] = mnum(e.get("r_w"))
        m[f"Rw{cap}CI"] = ci(e.get("r_w_ci_low"), e.get("r_w_ci_high")) or "n/a"
        m[f"PRw{cap}"] = pexpr(e.get("p_r_w"))
        m[f"DeltaRPos{cap}"] = mnum(e.get("delta_r2_pos"), 4)
        m[f"NullDeltaR{cap}"] = mnum(e.get("null_mean"), 4)
        m[f"Excess{cap}"] = mnum(e.get("excess"), 4)
        rel, rel_lo, rel_hi = effect_reliability(v, est, e)
        m[f"Rel{cap}"] = mnum(rel, 2)
        m[f"Rel{cap}CI"] = ci(rel_lo, rel_hi, 2) or "n/a"
        m[f"RwDis{cap}"] = mnum(e.get("r_w_disattenuated"))
        m[f"ExcessDis{cap}"] = mnum(e.get("excess_disattenuated"), 4)
        rel = (v.get("reliability") or {}).get(est, {})
        m[f"DrawBias{cap}"] = mnum(rel.get("first3_minus_all"), 4)
        m[f"DrawBias{cap}CI"] = ci(rel.get("bias_ci_low"), rel.get("bias_ci_high"), 4) or "n/a"
    h = v.get("h1", {}).get(score, {}).get("flip-noise", {})
    m["HOneUpper"] = mnum(h.get("upper"), 4)
    m["HOneLower"] = mnum(h.get("lower"), 4)
    m["HOneDis"] = mnum(h.get("diff_disattenuated"), 4)
    m["HOneDisCI"] = ci(h.get("ci_low_disattenuated"), h.get("ci_high_disattenuated"), 4) or "n/a"
    hd = v.get("h1_delta_r2", {}).get(score, {}).get("flip-noise", {})
    m["HOneDRDiff"] = mnum(hd.get("diff"), 4)
    m["HOneDRCI"] = ci(hd.get("ci_low"), hd.get("ci_high"), 4) or "n/a"
    m["HOneDRUpper"] = mnum(hd.get("upper"), 4)
    m["HOneDRP"] = pexpr(hd.get("p_one_sided"))
    m["HOneDRMDD"] = mnum(hd.get("mdd"), 4)
    m["HOneDiff"] = mnum(h.get("diff"), 4)
    m["HOneCI"] = ci(h.get("ci_low"), h.get("ci_high"), 4) or "n/a"
    m["HOneP"] = pexpr(h.get("p_one_sided"))
    m["HOneMDD"] = mnum(h.get("mdd"), 4)
    m["HOneVerdict"] = tex_escape(h["verdict"]) if h.get("verdict") else "cannot test H1"
    m["nExcluded"] = str(v.get("n_excluded", "n/a"))
    m["nEditCases"] = str(v.get("n_edit_cases", "n/a"))
    m["TEFloor"] = f"{v['te_floor']:g}" if v.get("te_floor") is not None else "n/a"
    for variant, tag in (("subject_last", "SubjectLast"), ("raw_ie", "RawIE")):
        hv = s["variants"].get(variant, {}).get("h1", {}).get(score, {}).get("flip-noise", {})
        m[f"HOneDiff{tag}"] = mnum(hv.get("diff"), 4)
        m[f"HOneCI{tag}"] = ci(hv.get("ci_low"), hv.get("ci_high"), 4) or "n/a"
        m[f"HOneP{tag}"] = pexpr(hv.get("p_one_sided"))
        m[f"HOneMDD{tag}"] = mnum(hv.get("mdd"), 4)
    pl = _variant(t.per_layer, "default")
    pl = pl[(pl.score == score) & (pl.a == "flip") & (pl.b == "noise")] if not pl.empty else pl
    tested = pl[~pl.degenerate.astype(bool)] if not pl.empty else pl
    m["WilliamsLayers"] = str(len(tested))
    m["WilliamsDegenerate"] = str(len(pl) - len(tested))
    m["WilliamsSig"] = str(int((tested.p_adj < 0.05).sum())) if not pl.empty else "n/a"
    m["WilliamsSigFlipBetter"] = (str(int(((tested.p_adj < 0.05) & (tested.r_diff > 0)).sum()))
                                  if not pl.empty else "n/a")
    wc = _variant(t.within_case, "default")
    am = _variant(t.argmax, "default")
    for est in ("noise", "resample", "flip"):
        cap = est.capitalize()
        w = wc[(wc.score == score) & (wc.estimator == est)] if not wc.empty else wc
        m[f"Within{cap}"] = mnum(w.mean_rho.iloc[0]) if len(w) else "n/a"
        m[f"Within{cap}CI"] = (ci(w.ci_low.iloc[0], w.ci_high.iloc[0]) or "n/a") if len(w) else "n/a"
        m[f"WithinNull{cap}"] = mnum(w.null_mean.iloc[0]) if len(w) and "null_mean" in w else "n/a"
        m[f"WithinP{cap}"] = pexpr(w.p_perm.iloc[0]) if len(w) and "p_perm" in w else "n/a"
        a = am[(am.score == score) & (am.estimator == est)] if not am.empty else am
        m[f"Argmax{cap}"] = mnum(a.hit_rate.iloc[0]) if len(a) else "n/a"
        m[f"ArgmaxP{cap}"] = pexpr(a.p.iloc[0]) if len(a) else "n/a"
        m[f"ArgmaxChance{cap}"] = mnum(a.chance.iloc[0]) if len(a) else "n/a"
    m["ArgmaxChance"] = mnum(1.0 / am.n_layers.iloc[0]) if not am.empty else "n/a"
    # Only the last three path parts: the file must not depend on where the project was cloned.
    source = "/".join(Path(t.folder).parts[-3:])
    lines = ["% Generated by causaleval.reporting.tables.numbers_tex from " + tex_escape(source),
             *(_macro(k, val) for k, val in m.items())]
    return "\n".join(lines) + "\n"


def write_tables(t: AnalysisTables, out_dir: Path) -> list[Path]:
    """Write every table and numbers.tex into ``out_dir``; returns the paths."""
    out_dir = Path(out_dir)
    files = {"r2.tex": hase_table(t), "directional.tex": directional_table(t), "h1.tex": h1_table(t),
             "per_layer.tex": per_layer_table(t),
             "within_case.tex": within_case_table(t), "numbers.tex": numbers_tex(t)}
    for variant in t.summary["variants"]:
        if variant != "default":
            files[f"r2_{variant}.tex"] = hase_table(t, variant)
    paths = []
    for name, text in files.items():
        atomic_write_text(out_dir / name, text)
        paths.append(out_dir / name)
    return paths
