"""Summaries, LaTeX tables, macros and figures of the support diagnostics.

Every share is a mean over cases of the per-case share over draws, with a percentile bootstrap CI
resampling cases (:func:`causaleval.inference.bootstrap.summarise_by`).  The AUROC of an arm's distances against
the held-out calibration states' (sklearn) is pooled over the arm's states; its CI resamples cases
(the calibration states held fixed) through the mean percentile rank, which equals the AUROC.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from causaleval.inference.bootstrap import bootstrap_ci, ratio_of_means, summarise_by  # noqa: E402
from causaleval.reporting.figures import COLORS, save  # noqa: E402
from causaleval.reporting.tables import booktabs, est_ci, num, pval  # noqa: E402
from causaleval.runs.store import atomic_write_text  # noqa: E402
from causaleval.support.measure import OUTCOMES, auroc  # noqa: E402

STATE_COLUMNS = ("auroc", "auroc_ci_low", "auroc_ci_high", "mean_percentile", "share_massive", "massive_ci_low",
                 "massive_ci_high", "median_distance", "n_states", "n_massive")
FACTOR_WORDS = {0.5: "Half", 1.0: "One", 2.0: "Two", 3.0: "Three", 5.0: "Five", 8.0: "Eight"}


def arm_order(arms) -> list[str]:
    """clean, noise arms by increasing ν, resample, flip."""
    arms = list(dict.fromkeys(arms))
    noise = sorted((a for a in arms if a.startswith("noise@")), key=lambda a: float(a.split("@")[1]))
    return [a for a in ("clean",) if a in arms] + noise + [a for a in ("resample", "flip") if a in arms]


def arm_label(arm: str) -> str:
    return f"noise, ν = {arm.split('@')[1]}σ" if arm.startswith("noise@") else arm


def _sorted_by_arm(frame: pd.DataFrame, then: str) -> pd.DataFrame:
    """Rows in ``arm_order`` of their arm, then by ``then`` (stable)."""
    order = {a: i for i, a in enumerate(arm_order(frame.arm))}
    return frame.sort_values(["arm", then], key=lambda s: s.map(order) if s.name == "arm" else s,
                             kind="stable").reset_index(drop=True)


def summarise_answers(answers: pd.DataFrame, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per (arm, quantity): the mean over cases with a bootstrap CI; quantities share_<outcome>,
    p_answer_set, p_answer and (partner arms) share_partner_answered."""
    per_case = answers.assign(**{f"share_{o}": (answers.outcome == o).astype(float) for o in OUTCOMES},
                              share_partner_answered=answers.partner_answered.astype(float))
    cols = [f"share_{o}" for o in OUTCOMES] + ["p_answer_set", "p_answer", "share_partner_answered"]
    means = per_case.groupby(["arm", "case_id"])[cols].mean()
    means["n_draws"] = per_case.groupby(["arm", "case_id"]).size()
    long = means.reset_index().melt(id_vars=["arm", "case_id", "n_draws"], value_vars=cols, var_name="quantity")
    long = long[~((long.quantity == "share_partner_answered") & ~long.arm.isin(["resample", "flip"]))]
    out = summarise_by(long, ["arm", "quantity"], value="value", total=None, n_resamples=n_resamples, seed=seed)
    draws = long.groupby(["arm", "quantity"]).n_draws.sum().rename("n_draws").reset_index()
    return _sorted_by_arm(out.merge(draws, on=["arm", "quantity"]), "quantity")


def summarise_states(states: pd.DataFrame, calibration: pd.DataFrame, n_resamples: int = 1000,
                     seed: int = 0) -> pd.DataFrame:
    """Per (arm, layer), over the arm's measured states (partner draws whose partner is in the reference
    left out):

    * ``share_massive`` (mean over cases, CI ``massive_ci_*``): states with a massive activation;
    * over the ordinary (not massive) states: ``auroc`` of their distances against the fold's ordinary
      calibration distances (``calibration``: fold, layer, distance; folds weighted by their states),
      ``mean_percentile`` (pooled mean percentile rank among them, = ``auroc`` for one fold) with a CI
      resampling cases (``auroc_ci_*``), the share beyond τ_l (``estimate``, mean over cases, CI) and the
      median distance; ``n_states`` and ``n_massive`` count states."""
    states = states[~states.partner_in_reference] if "partner_in_reference" in states else states
    ordinary = states[~states.massive]
    per_case = ordinary.groupby(["arm", "layer", "case_id"]).beyond.mean().rename("value").reset_index()
    out = summarise_by(per_case, ["arm", "layer"], value="value", total=None, n_resamples=n_resamples, seed=seed)
    massive = states.groupby(["arm", "layer", "case_id"]).massive.mean().rename("value").reset_index()
    m = summarise_by(massive, ["arm", "layer"], value="value", total=None, n_resamples=n_resamples, seed=seed)
    m = m.rename(columns=dict(estimate="share_massive", ci_low="massive_ci_low", ci_high="massive_ci_high"))
    cal = {key: g.distance.to_numpy() for key, g in calibration.groupby(["fold", "layer"])}
    rows = []
    for (arm, layer), g in states.groupby(["arm", "layer"]):
        o = g[~g.massive]
        w = o.groupby("fold").size()
        auc = (sum(n * auroc(o[o.fold == k].distance, cal[(k, layer)]) for k, n in w.items()) / w.sum()
               if len(o) else np.nan)
        sums = o.groupby("case_id").percentile.agg(["sum", "size"])
        ci = bootstrap_ci((sums["sum"].to_numpy(), sums["size"].to_numpy().astype(float)), ratio_of_means,
                          n_resamples=n_resamples, seed=seed)
        rows.append(dict(arm=arm, layer=layer, auroc=auc, mean_percentile=ci.estimate, auroc_ci_low=ci.low,
                         auroc_ci_high=ci.high, median_distance=o.distance.median(), n_states=len(o),
                         n_massive=int(g.massive.sum())))
    out = out.merge(m[["arm", "layer", "share_massive", "massive_ci_low", "massive_ci_high"]], on=["arm", "layer"],
                    how="outer").merge(pd.DataFrame(rows), on=["arm", "layer"], how="outer")
    return _sorted_by_arm(out, "layer")


# ----------------------------------------------------------------------------- tables and macros

def answers_table(a_sum: pd.DataFrame, s_sum: pd.DataFrame, n_cases: int) -> str:
    body = []
    for arm in arm_order(a_sum.arm):
        v = a_sum[a_sum.arm == arm].set_index("quantity")
        s = s_sum[s_sum.arm == arm]

        def cell(q):
            return est_ci(*v.loc[q, ["estimate", "ci_low", "ci_high"]], digits=2) if q in v.index else "--"
        body.append([arm_label(arm).replace("ν", r"$\nu$").replace("σ", r"$\sigma$"),
                     cell("share_clean"), cell("share_relation"), cell("share_off"), cell("p_answer_set"),
                     num(s.auroc.mean(), 2), num(s.auroc.max(), 2), num(s.estimate.mean(), 2),
                     num(s.share_massive.max(), 2)])
    caption = (f"Where corrupted runs land ({n_cases} known facts). Top-1 next token of the corrupted run: the clean "
               "answer (no flip), another answer of the relation (a flip), or off-task; $p(A_r)$: probability "
               "mass on the relation's answer set. States at the last subject token against held-out real "
               "subjects' (Mahalanobis distance, Ledoit--Wolf covariance fitted without massive states): AUROC "
               "of the distances against held-out real states' (0.5: indistinguishable; mean and max over "
               "layers), share beyond their 99th percentile $\\tau$ (mean over layers), and share of massive "
               "states (max over layers). Means over cases with 95\\% bootstrap CIs.")
    return booktabs(["base distribution", "clean answer", "other answer", "off-task", "$p(A_r)$",
                     "AUROC (mean)", "(max)", "beyond $\\tau$", "massive"], body, caption, "tab:support_answers",
                    align="lrrrrrrrr")


def noise_scale_table(scale: pd.DataFrame, score: str = "rewrite_score") -> str:
    d = scale[scale.score == score]
    body = [[f"{r.nu_factor:g}", est_ci(r.delta_r2, r.delta_ci_low, r.delta_ci_high, 4),
             num(getattr(r, "r_w", None)), est_ci(r.h1_diff, r.h1_ci_low, r.h1_ci_high, 4), pval(r.h1_p)]
            for r in d.itertuples()]
    n = int(d.n_cases.iloc[0]) if len(d) else 0
    caption = (f"Does another noise scale rescue noise tracing? With noise tracing retraced at "
               f"$\\nu = f\\,\\sigma_\\text{{emb}}$ ({n} facts): Hase et al.'s $\\Delta R^2_\\text{{noise}}$ of the "
               f"rewrite score (95\\% bias-corrected bootstrap CI), the directional $r_w$ of noise tracing, and "
               f"H1 on $r_w$: $r_w(\\text{{flip}}) - r_w(\\text{{noise}})$ (95\\% paired case-bootstrap interval, "
               f"one-sided swap-test $p$).")
    return booktabs(["$f = \\nu/\\sigma_\\text{emb}$", "$\\Delta R^2_\\text{noise}$", "$r_w$ noise",
                     "$r_w$ flip $-$ noise", "$p$"], body, caption, "tab:support_noise_scale", align="lrrrr")


def _macro(name: str, value: str) -> str:
    return rf"\newcommand{{\{name}}}{{{value}}}"


def numbers_tex(a_sum: pd.DataFrame, s_sum: pd.DataFrame, scale: pd.DataFrame, reference: pd.DataFrame,
                summary: dict) -> str:
    """Macros ``\\Sup…`` the theory section quotes (missing numbers read n/a)."""
    def q(arm, quantity, col="estimate", digits=2):
        v = a_sum[(a_sum.arm == arm) & (a_sum.quantity == quantity)][col]
        return num(v.iloc[0], digits) if len(v) else r"\text{n/a}"
    lines = ["% Generated by the support stage (python -m experiments.main --stage support): do not edit.",
             _macro("SupNFacts", str(summary["n_cases"])), _macro("SupNDraws", str(summary["draws_per_arm"])),
             _macro("SupNRefFit", str(min(summary["reference_fit"]))),
             _macro("SupNRefCal", str(min(summary["reference_calibration"]))),
             _macro("SupCleanBeyond", num(summary["study_clean_beyond_mean"], 3))]
    def layers(arm, col, how, digits=2):
        v = s_sum[s_sum.arm == arm][col] if col in s_sum else pd.Series(dtype=float)
        return num(getattr(v, how)(), digits) if v.notna().any() else r"\text{n/a}"
    lines += [_macro("SupMassiveFactor", f"{summary['massive_factor']:g}" if "massive_factor" in summary else r"\text{n/a}"),
              _macro("SupShrinkMax", num(reference.shrinkage.max(), 2)),
              _macro("SupShrinkMassiveMax", num(reference.shrinkage_with_massive.max(), 2)
                     if "shrinkage_with_massive" in reference else r"\text{n/a}"),
              _macro("SupCleanAUROC", layers("clean", "auroc", "mean")),
              _macro("SupCleanMassive", layers("clean", "share_massive", "max"))]
    for arm, word in [("flip", "Flip"), ("resample", "Resample")] + [
            (f"noise@{f:g}", "Noise" + FACTOR_WORDS[f]) for f in summary["noise_factors"] if f in FACTOR_WORDS]:
        lines += [_macro(f"Sup{word}Flip", q(arm, "share_relation")),
                  _macro(f"Sup{word}FlipCI", f"[{q(arm, 'share_relation', 'ci_low')}, {q(arm, 'share_relation', 'ci_high')}]"),
                  _macro(f"Sup{word}Clean", q(arm, "share_clean")),
                  _macro(f"Sup{word}Off", q(arm, "share_off")),
                  _macro(f"Sup{word}Mass", q(arm, "p_answer_set"))]
        s = s_sum[s_sum.arm == arm].estimate
        lines += [_macro(f"Sup{word}Beyond", num(s.mean(), 2) if len(s) else r"\text{n/a}"),
                  _macro(f"Sup{word}BeyondMax", num(s.max(), 2) if len(s) else r"\text{n/a}"),
                  _macro(f"Sup{word}AUROC", layers(arm, "auroc", "mean")),
                  _macro(f"Sup{word}AUROCMin", layers(arm, "auroc", "min")),
                  _macro(f"Sup{word}AUROCMax", layers(arm, "auroc", "max")),
                  _macro(f"Sup{word}Massive", layers(arm, "share_massive", "max"))]
    lines.append(_macro("SupFlipPartnerAnswered", q("flip", "share_partner_answered")))
    d = scale[scale.score == "rewrite_score"] if len(scale) else scale
    if len(d):
        best = d.loc[d.delta_r2.idxmax()]
        lines += [_macro("SupScaleNCases", str(int(d.n_cases.iloc[0]))),
                  _macro("SupScaleBestFactor", f"{best.nu_factor:g}"),
                  _macro("SupScaleBestDelta", num(best.delta_r2, 4)),
                  _macro("SupScaleMinDelta", num(d.delta_r2.min(), 4)),
                  _macro("SupScaleMaxDiff", num(d.h1_diff.max(), 4)),
                  _macro("SupScaleMinDiff", num(d.h1_diff.min(), 4)),
                  _macro("SupScaleMinRw", num(d.r_w.min(), 3) if "r_w" in d else r"\text{n/a}"),
                  _macro("SupScaleMaxRw", num(d.r_w.max(), 3) if "r_w" in d else r"\text{n/a}")]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- figures

def _arm_style(arm: str, noise_arms: list[str]) -> dict:
    if arm.startswith("noise@"):
        k = noise_arms.index(arm)
        shade = plt.cm.Greys(0.35 + 0.6 * k / max(1, len(noise_arms) - 1))
        return dict(color=shade, ls="-", label=arm_label(arm))
    return dict(color=COLORS.get(arm, "#2ca02c"), ls="--" if arm == "clean" else "-", lw=2, label=arm_label(arm))


def states_figure(s_sum: pd.DataFrame, out_dir: Path) -> list[Path]:
    """By layer, one line per arm: AUROC against held-out real states, share beyond τ_l, share massive."""
    arms = arm_order(s_sum.arm)
    noise = [a for a in arms if a.startswith("noise@")]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for arm in arms:
        d = s_sum[s_sum.arm == arm].sort_values("layer")
        st = _arm_style(arm, noise)
        for ax, (col, lo, hi) in zip(axes, [("auroc", "auroc_ci_low", "auroc_ci_high"), ("estimate", "ci_low", "ci_high"),
                                            ("share_massive", "massive_ci_low", "massive_ci_high")]):
            ax.plot(d.layer, d[col], **st)
            ax.fill_between(d.layer, d[lo], d[hi], color=st["color"], alpha=0.12, lw=0)
    axes[0].axhline(0.5, color="black", lw=0.6)
    axes[0].set_ylabel("AUROC vs held-out real states")
    axes[1].set_ylabel(r"share beyond $\tau_l$ (99th pct. of real)")
    axes[2].set_ylabel("share of massive states")
    for ax in axes:
        ax.set_xlabel("layer")
    axes[2].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return save(fig, out_dir, "support_states")


def answers_figure(a_sum: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Stacked shares of clean / other answer / off-task per arm."""
    arms = arm_order(a_sum.arm)
    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * len(arms), 3))
    bottom = np.zeros(len(arms))
    for o, color in zip(OUTCOMES, ("#bbbbbb", "#d62728", "#1f1f1f")):
        v = np.array([a_sum[(a_sum.arm == a) & (a_sum.quantity == f"share_{o}")].estimate.sum() for a in arms])
        ax.bar(range(len(arms)), v, bottom=bottom, color=color,
               label={"clean": "clean answer", "relation": "other answer (flip)", "off": "off-task"}[o])
        bottom += v
    ax.set_xticks(range(len(arms)), [arm_label(a).replace("noise, ", "") for a in arms], rotation=45, ha="right",
                  fontsize=7)
    ax.set_ylabel("share of corrupted runs")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1, 1))
    fig.tight_layout()
    return save(fig, out_dir, "support_answers")


def noise_scale_figure(scale: pd.DataFrame, out_dir: Path, score: str = "rewrite_score") -> list[Path]:
    d = scale[scale.score == score].sort_values("nu_factor")
    fig, ax = plt.subplots(figsize=(4.2, 3))
    for col, lo, hi, label, color in [("delta_r2", "delta_ci_low", "delta_ci_high", r"$\Delta R^2_{noise}$", "#7f7f7f"),
                                      ("h1_diff", "h1_ci_low", "h1_ci_high",
                                       r"$\Delta R^2_{flip} - \Delta R^2_{noise}$", "#d62728")]:
        err = np.vstack([d[col] - d[lo], d[hi] - d[col]]).clip(min=0)
        ax.errorbar(d.nu_factor, d[col], yerr=err, fmt="o-", capsize=3, ms=4, label=label, color=color)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xscale("log")
    ax.set_xticks(list(d.nu_factor), [f"{f:g}" for f in d.nu_factor])
    ax.set_xlabel(r"noise scale $\nu / \sigma_{emb}$")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, out_dir, "support_noise_scale")


def write_support_report(a_sum: pd.DataFrame, s_sum: pd.DataFrame, scale: pd.DataFrame, reference: pd.DataFrame,
                         summary: dict, out_dir: Path) -> list[Path]:
    """``tables/support_{answers,noise_scale,numbers}.tex`` and ``figures/support_*`` under ``out_dir``.

    A summary from before the massive-state guard (no AUROC or massive columns) reads n/a there."""
    s_sum = s_sum.assign(**{c: np.nan for c in STATE_COLUMNS if c not in s_sum})
    tables = Path(out_dir) / "tables"
    texts = {"support_answers.tex": answers_table(a_sum, s_sum, summary["n_cases"]),
             "support_numbers.tex": numbers_tex(a_sum, s_sum, scale, reference, summary)}
    if len(scale):
        texts["support_noise_scale.tex"] = noise_scale_table(scale)
    paths = []
    for name, text in texts.items():
        atomic_write_text(tables / name, text)
        paths.append(tables / name)
    figures = Path(out_dir) / "figures"
    paths += states_figure(s_sum, figures) + answers_figure(a_sum, figures)
    if len(scale):
        paths += noise_scale_figure(scale, figures)
    return paths
