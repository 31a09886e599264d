"""Side-by-side table of two or more finished studies (one per model), for the replication section.

Each study is a results folder (``paper/study`` for the embedded default, ``paper/replication/<model>``
for the others, see ``experiments.publish --dest``). Nothing is recomputed: every cell is read from
the folder's ``analysis/summary.json``, ``support/summary.json``, ``facts_filter.parquet`` and
``run.json``. Rows are quantities, columns models, so a reader compares a number across families as
Hase et al. (2023) compare GPT-J and GPT-2 XL.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from causaleval.analysis import ESTIMATORS
from causaleval.reporting.tables import LABELS, booktabs, est_ci, num, pval, tex_escape
from causaleval.runs.store import atomic_write_text

# the paper's names of the embedded models
MODEL_LABELS = {"smollm2": "SmolLM2-135M", "gemma3-270m": "Gemma 3 270M"}
# macro tags by position, so the paper's prose works whichever models are compared: the study passed as
# --results (paper/study) is Main, the replications Second, Third, ...
MACRO_TAGS = ("Main", "Second", "Third", "Fourth", "Fifth")


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def study_facts(folder: Path) -> dict:
    """What one study folder reports, as plain numbers (None where the folder lacks the output)."""
    folder = Path(folder)
    summary = _read_json(folder / "analysis" / "summary.json")
    if not summary:
        raise FileNotFoundError(f"{folder}: no analysis/summary.json (publish a finished run there first)")
    v = summary["variants"]["default"]
    run = _read_json(folder / "run.json")
    support = _read_json(folder / "support" / "summary.json")
    model = summary.get("model", {})
    known = None
    if (folder / "facts_filter.parquet").is_file():
        f = pd.read_parquet(folder / "facts_filter.parquet", columns=["known"])
        known = (int(f.known.sum()), len(f))
    stages = run.get("completed_stages", {})
    within = {}
    if (folder / "analysis" / "within_case.parquet").is_file():
        w = pd.read_parquet(folder / "analysis" / "within_case.parquet")
        w = w[(w.get("variant", "default") == "default") & (w.score == "rewrite_score")
              & (w.estimator == "flip - noise")]
        if len(w):
            within = {k: float(w[k].iloc[0]) for k in ("mean_rho", "ci_low", "ci_high", "p_perm", "p_perm_lower")
                      if k in w}
    cfg = summary.get("config", {})
    return {
        "name": model.get("name") or cfg.get("model"), "n_layers": model.get("n_layers"),
        "n_params": model.get("n_params"), "known": known, "n_cases": v.get("n_cases"),
        "layers": v.get("layers", []), "noise_draws": cfg.get("noise_draws"),
        "partner_draws": cfg.get("partner_draws"),
        "delta_r2": v.get("delta_r2", {}).get("rewrite_score", {}),
        "h1": v.get("h1", {}).get("rewrite_score", {}),
        "h1_delta_r2": v.get("h1_delta_r2", {}).get("rewrite_score", {}),
        "reliability": v.get("reliability", {}),
        "auroc": support.get("auroc_mean_over_layers", {}),
        # a stage merged from runs of its own (experiments.merge_edits) counts their edits' compute time
        "seconds": {k: (s.get("seconds") or 0) + sum(m.get("edit_seconds") or m.get("seconds") or 0
                                                     for m in s.get("merged_from", []))
                    for k, s in stages.items()},
        "split": {k: len(s["merged_from"]) for k, s in stages.items() if s.get("merged_from")},
        "reused": {k for k, s in stages.items() if s.get("reused_from")},
        "within": within,
    }


def _how(s: dict, stage: str) -> str:
    if stage in s["reused"]:
        return " (reused)"
    if s.get("split", {}).get(stage):
        return f" (edits' compute time, {s['split'][stage]} parallel runs)"
    return ""


def _label(s: dict) -> str:
    return MODEL_LABELS.get(s["name"], tex_escape(str(s["name"])))


def replication_table(studies: list[dict]) -> str:
    """Rows: the study design, reliability, r_w, Hase et al.'s ΔR² with its excess, H1 on both measures,
    the support AUROC and the run's wall time; one column per study (see :func:`study_facts`)."""
    header = [""] + [_label(s) for s in studies]
    cell = lambda f: [f(s) for s in studies]        # noqa: E731
    d = lambda s, e, k: s["delta_r2"].get(e, {}).get(k)   # noqa: E731
    body: list = ["Design"]
    body.append(["layers, parameters"] + cell(lambda s: f"{s['n_layers']}, {s['n_params'] / 1e6:.0f}M"
                                                if s["n_params"] else "--"))
    body.append(["known facts"] + cell(lambda s: f"{s['known'][0]} of {s['known'][1]}" if s["known"] else "--"))
    body.append([r"facts analysed $\times$ edit layers"] + cell(lambda s: rf"{s['n_cases']} $\times$ {len(s['layers'])}"))
    body.append(["noise draws / partners"] + cell(lambda s: f"{s['noise_draws']} / {s['partner_draws']}"))
    body.append(r"Reliability of the effect (split-half, Spearman--Brown) [95\% CI]")
    for e in ESTIMATORS:
        rel = lambda s, k: s["reliability"].get(e, {}).get(k)   # noqa: E731
        body.append([LABELS[e]] + cell(lambda s: est_ci(rel(s, "reliability"), rel(s, "ci_low"), rel(s, "ci_high"), 2)))
    body.append(r"$r_w$ (rewrite score) [95\% CI], one-sided $p$")
    for e in ESTIMATORS:
        body.append([LABELS[e]] + cell(lambda s: f"{est_ci(d(s, e, 'r_w'), d(s, e, 'r_w_ci_low'), d(s, e, 'r_w_ci_high'))}"
                                                 f", {pval(d(s, e, 'p_r_w'))}"))
    body.append(r"Hase et al.'s $\Delta R^2$ (excess over $E_0$), case-permutation $p$")
    for e in ESTIMATORS:
        body.append([LABELS[e]] + cell(lambda s: f"{num(d(s, e, 'delta_r2'), 4)} ({num(d(s, e, 'excess'), 4)}), "
                                                 f"{pval(d(s, e, 'p_cluster'))}"))
    for key, title, digits in (("h1", r"H1 on $r_w$", 3), ("h1_delta_r2", r"H1 on $\Delta R^2$", 4)):
        body.append(rf"{title}: paired difference [95\% CI]; one-sided $p$; upper bound; MDD")
        for pair in ("flip-noise", "flip-resample"):
            h = lambda s: s[key].get(pair, {})    # noqa: E731
            body.append([pair.replace("-", r" $-$ ")] + cell(
                lambda s: f"{est_ci(h(s).get('diff'), h(s).get('ci_low'), h(s).get('ci_high'), digits)}; "
                          f"{pval(h(s).get('p_one_sided'))}; {num(h(s).get('upper'), digits)}; "
                          f"{num(h(s).get('mdd'), digits)}"))
    if any(s["auroc"] for s in studies):
        body.append("Support: AUROC against held-out real states (mean over layers; 0.5 = on support)")
        for arm in ("noise@3", "resample", "flip"):
            body.append([arm] + cell(lambda s: num(s["auroc"].get(arm), 2)))
    body.append("Wall time, minutes (a 2-core CPU machine)")
    for stage in ("trace", "edit", "support"):
        body.append([stage] + cell(lambda s: (f"{s['seconds'][stage] / 60:.0f}" + _how(s, stage))
                                   if s["seconds"].get(stage) else "not run"))
    caption = (r"The study on two model families side by side. Every number is computed as in "
               r"Tables~\ref{tab:r2}--\ref{tab:h1} from that model's own run: $r_w$ the within-layer "
               r"correlation of rewrite score and effect, $\Delta R^2$ Hase et al.'s (2023) sign-blind "
               r"measure with its excess over the no-signal expectation $E_0$, H1 the paired swap test "
               r"(one-sided $p$), the paired case-bootstrap interval, its one-sided 95\% upper bound and the "
               r"simulated minimum detectable difference at 80\% power.")
    return booktabs(header, body, caption, "tab:replication", align="l" + "l" * len(studies), fit=True)


def replication_numbers(studies: list[dict]) -> str:
    """Macros for the prose: ``\\Rep<Tag><Quantity>`` for every study, the tag by position (``\\RepMainHOneUpper`` for
    the first, ``\\RepSecondHOneUpper`` for the second, ...)."""
    lines = ["% generated by causaleval.reporting.replication; do not edit"]
    for tag, s in zip(MACRO_TAGS, studies):
        h = s["h1"].get("flip-noise", {})
        rel = s["reliability"]
        vals = {"Label": _label(s), "Cases": str(s["n_cases"]), "Layers": str(len(s["layers"])),
                "Draws": str(s["noise_draws"]), "Partners": str(s["partner_draws"]),
                "HOneDiff": num(h.get("diff")), "HOneLow": num(h.get("ci_low")), "HOneHigh": num(h.get("ci_high")),
                "HOneP": pval(h.get("p_one_sided")), "HOneUpper": num(h.get("upper")), "HOneMDD": num(h.get("mdd")),
                **{f"Rw{e.title()}": num(s["delta_r2"].get(e, {}).get("r_w")) for e in ESTIMATORS},
                **{f"Rel{e.title()}": num(rel.get(e, {}).get("reliability"), 2) for e in ESTIMATORS},
                **{f"Delta{e.title()}": num(s["delta_r2"].get(e, {}).get("delta_r2"), 4) for e in ESTIMATORS},
                **{f"DeltaPos{e.title()}": num(s["delta_r2"].get(e, {}).get("delta_r2_pos"), 4) for e in ESTIMATORS},
                **{f"Perm{e.title()}": pval(s["delta_r2"].get(e, {}).get("p_cluster")) for e in ESTIMATORS},
                "WfDiff": num(s["within"].get("mean_rho")), "WfLow": num(s["within"].get("ci_low")),
                "WfHigh": num(s["within"].get("ci_high")), "WfP": pval(s["within"].get("p_perm")),
                "WfPLower": pval(s["within"].get("p_perm_lower"))}
        lines += [rf"\newcommand{{\Rep{tag}{k}}}{{{x}}}" for k, x in vals.items()]
    lines.append(rf"\newcommand{{\ReplicationVerdict}}{{{replication_verdict(studies)}}}")
    lines.append(rf"\newcommand{{\ReplicationWithinFact}}{{{within_fact_verdict(studies)}}}")
    return "\n".join(lines) + "\n"


def _outcome(study: dict) -> str:
    """'supports', 'does not support' or 'inconclusive': the first words of the H1 verdict on r_w."""
    text = study["h1"].get("flip-noise", {}).get("verdict", "")
    return next((o for o in ("supports", "does not support") if text.startswith(o)), "inconclusive")


def replication_verdict(studies: list[dict]) -> str:
    """One sentence: whether the directional H1 test reads the same on every model."""
    outcomes = [_outcome(s) for s in studies]
    names = [_label(s) for s in studies]
    if len(set(outcomes)) == 1:
        o = outcomes[0]
        words = {"supports": "supports H1 on every model",
                 "does not support": "does not support H1 on either model: the null result replicates",
                 "inconclusive": "is inconclusive on every model"}[o]
        mdd = ", ".join(f"{num(s['h1'].get('flip-noise', {}).get('mdd'))} on {n}" for s, n in zip(studies, names))
        return f"The directional test {words} (smallest difference detectable with 80\\% power: {mdd})."
    parts = ", ".join(f"{o} H1 on {n}" if o != "inconclusive" else f"is inconclusive on {n}"
                      for o, n in zip(outcomes, names))
    return f"The models disagree: the directional test {parts}."


def _within_reading(w: dict, alpha: float) -> str:
    """'positive', 'negative' or 'neither': which one-sided swap test of flip − noise rejects at ``alpha``."""
    if w.get("p_perm", 1.0) < alpha:
        return "positive"
    if w.get("p_perm_lower", 1.0) < alpha:
        return "negative"
    return "neither"


def within_fact_verdict(studies: list[dict], alpha: float = 0.05) -> str:
    """What the paired swap tests allow one to say about the within-fact difference flip − noise (mean
    within-fact Spearman, rewrite score) across the models: each model's reading (its one-sided tests
    at ``alpha``, each tail from the same swap draws) and whether the models' signs disagree."""
    have = [s for s in studies if s["within"].get("p_perm_lower") is not None]
    if len(have) < 2:
        return "The within-fact swap tests of both tails are not in every model's analysis."
    readings = [_within_reading(s["within"], alpha) for s in have]
    names = [_label(s) for s in have]
    signs = {np.sign(s["within"]["mean_rho"]) for s in have}
    said = {"positive": "flip scrubbing follows the score's layer profile more closely than noise tracing",
            "negative": "noise tracing follows the score's layer profile more closely than flip scrubbing",
            "neither": "neither estimator follows the score's layer profile detectably more closely"}
    per_model = "; ".join(f"on {n}, {said[r]}" for n, r in zip(names, readings))
    if len(signs) > 1:
        sig = [n for n, r in zip(names, readings) if r != "neither"]
        if len(sig) == len(have):
            tail = "the models disagree in direction, each significantly"
        elif sig:
            tail = (f"the estimates differ in sign, but only {', '.join(sig)} is distinguishable from its swap null, "
                    "so the data show no reversal, only a difference on " + ", ".join(sig))
        else:
            tail = "the estimates differ in sign, but neither is distinguishable from its swap null"
    else:
        tail = "the models agree in sign"
    return (f"By the paired swap test (one-sided, each direction at {num(alpha, 2)}): {per_model}; {tail}. "
            "These within-fact tests are exploratory: the primary measure of this study was $r_w$.")


def write_replication(folders: list[Path], dest_dir: Path) -> list[Path]:
    """``tables/replication.tex`` and ``tables/replication_numbers.tex`` from the study folders (the first is
    the reference model); nothing is written for fewer than two."""
    folders = [Path(f) for f in folders if (Path(f) / "analysis" / "summary.json").is_file()]
    if len(folders) < 2:
        return []
    studies = [study_facts(f) for f in folders]
    out = Path(dest_dir) / "tables"
    paths = [out / "replication.tex", out / "replication_numbers.tex"]
    atomic_write_text(paths[0], replication_table(studies))
    atomic_write_text(paths[1], replication_numbers(studies))
    return paths
