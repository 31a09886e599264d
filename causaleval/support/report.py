"""Summaries, LaTeX tables, macros and figures of the support diagnostics.

Every share is a mean over cases of the per-case share over draws, with a percentile bootstrap CI
resampling cases (:func:`causaleval.bootstrap.summarise_by`).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from causaleval.bootstrap import summarise_by  # noqa: E402
from causaleval.reporting.figures import COLORS, save  # noqa: E402
from causaleval.reporting.tables import booktabs, est_ci, num, pval  # noqa: E402
from causaleval.store import atomic_write_text  # noqa: E402
from causaleval.support.measure import OUTCOMES  # noqa: E402

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


def summarise_states(states: pd.DataFrame, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per (arm, layer): the share of states beyond τ_l (mean over cases, bootstrap CI) and the median
    distance over draws."""
    per_case = states.groupby(["arm", "layer", "case_id"]).beyond.mean().rename("value").reset_index()
    out = summarise_by(per_case, ["arm", "layer"], value="value", total=None, n_resamples=n_resamples, seed=seed)
    med = states.groupby(["arm", "layer"]).distance.median().rename("median_distance").reset_index()
    return _sorted_by_arm(out.merge(med, on=["arm", "layer"]), "layer")


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
                     num(s.estimate.mean(), 2), num(s.estimate.max(), 2)])
    caption = (f"Where corrupted runs land ({n_cases} known facts). Top-1 next token of the corrupted run: the clean "
               "answer (no flip), another answer of the relation (a flip), or off-task; $p(A_r)$: probability "
               "mass on the relation's answer set. Beyond $\\tau$: share of states at the last subject token "
               "beyond the 99th percentile of held-out real subjects' Mahalanobis distances (mean and max over "
               "layers). Means over cases with 95\\% bootstrap CIs.")
    return booktabs(["base distribution", "clean answer", "other answer", "off-task", "$p(A_r)$",
                     "beyond $\\tau$ (mean)", "(max)"], body, caption, "tab:support_answers", align="lrrrrrr")


def noise_scale_table(scale: pd.DataFrame, score: str = "rewrite_score") -> str:
    d = scale[scale.score == score]
    body = [[f"{r.nu_factor:g}", est_ci(r.delta_r2, r.delta_ci_low, r.delta_ci_high, 4),
             est_ci(r.h1_diff, r.h1_ci_low, r.h1_ci_high, 4), pval(r.h1_p)] for r in d.itertuples()]
    n = int(d.n_cases.iloc[0]) if len(d) else 0
    caption = (f"Does another noise scale rescue noise tracing? $\\Delta R^2_\\text{{noise}}$ of the rewrite score "
               f"and $\\Delta R^2_\\text{{flip}} - \\Delta R^2_\\text{{noise}}$ (95\\% paired cluster bootstrap CI, "
               f"one-sided $p$) with noise tracing retraced at $\\nu = f\\,\\sigma_\\text{{emb}}$ ({n} facts).")
    return booktabs(["$f = \\nu/\\sigma_\\text{emb}$", "$\\Delta R^2_\\text{noise}$",
                     "$\\Delta R^2_\\text{flip} - \\Delta R^2_\\text{noise}$", "$p$"], body, caption,
                    "tab:support_noise_scale", align="lrrr")


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
    for arm, word in [("flip", "Flip"), ("resample", "Resample")] + [
            (f"noise@{f:g}", "Noise" + FACTOR_WORDS[f]) for f in summary["noise_factors"] if f in FACTOR_WORDS]:
        lines += [_macro(f"Sup{word}Flip", q(arm, "share_relation")),
                  _macro(f"Sup{word}FlipCI", f"[{q(arm, 'share_relation', 'ci_low')}, {q(arm, 'share_relation', 'ci_high')}]"),
                  _macro(f"Sup{word}Clean", q(arm, "share_clean")),
                  _macro(f"Sup{word}Off", q(arm, "share_off")),
                  _macro(f"Sup{word}Mass", q(arm, "p_answer_set"))]
        s = s_sum[s_sum.arm == arm].estimate
        lines += [_macro(f"Sup{word}Beyond", num(s.mean(), 2) if len(s) else r"\text{n/a}"),
                  _macro(f"Sup{word}BeyondMax", num(s.max(), 2) if len(s) else r"\text{n/a}")]
    lines.append(_macro("SupFlipPartnerAnswered", q("flip", "share_partner_answered")))
    d = scale[scale.score == "rewrite_score"] if len(scale) else scale
    if len(d):
        best = d.loc[d.delta_r2.idxmax()]
        lines += [_macro("SupScaleNCases", str(int(d.n_cases.iloc[0]))),
                  _macro("SupScaleBestFactor", f"{best.nu_factor:g}"),
                  _macro("SupScaleBestDelta", num(best.delta_r2, 4)),
                  _macro("SupScaleMinDelta", num(d.delta_r2.min(), 4)),
                  _macro("SupScaleMaxDiff", num(d.h1_diff.max(), 4)),
                  _macro("SupScaleMinDiff", num(d.h1_diff.min(), 4))]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- figures

def _arm_style(arm: str, noise_arms: list[str]) -> dict:
    if arm.startswith("noise@"):
        k = noise_arms.index(arm)
        shade = plt.cm.Greys(0.35 + 0.6 * k / max(1, len(noise_arms) - 1))
        return dict(color=shade, ls="-", label=arm_label(arm))
    return dict(color=COLORS.get(arm, "#2ca02c"), ls="--" if arm == "clean" else "-", lw=2, label=arm_label(arm))


def states_figure(s_sum: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Share of states beyond τ_l and median distance by layer, one line per arm."""
    arms = arm_order(s_sum.arm)
    noise = [a for a in arms if a.startswith("noise@")]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for arm in arms:
        d = s_sum[s_sum.arm == arm].sort_values("layer")
        st = _arm_style(arm, noise)
        axes[0].plot(d.layer, d.estimate, **st)
        axes[0].fill_between(d.layer, d.ci_low, d.ci_high, color=st["color"], alpha=0.12, lw=0)
        axes[1].plot(d.layer, d.median_distance, **st)
    axes[0].set_ylabel(r"share beyond $\tau_l$ (99th pct. of real)")
    axes[1].set_ylabel("median Mahalanobis distance")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("layer")
    axes[1].legend(fontsize=6, ncol=2)
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
    """``tables/support_{answers,noise_scale,numbers}.tex`` and ``figures/support_*`` under ``out_dir``."""
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
