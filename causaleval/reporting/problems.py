"""The editing problems' table and figure (``tables/problems.tex``, ``figures/problems_grid.pdf``) from
``analysis/problems.parquet`` (causaleval.analysis.problems): Hase et al. (2023)'s Table 3 in our
measures, one block per (problem, editor) cell and a row per estimator: R²(layer), ΔR² with its
no-signal expectation, r_w with its 95% CI, the matched estimator marked (†) with flip forcing's
per-draw matched r_w, and the cell's H1 (flip − noise in r_w) with its CI.  Exploratory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from causaleval.reporting.tables import EDITOR_LABELS, LABELS, booktabs, ci, est_ci, num
from causaleval.runs.store import atomic_write_text

PROBLEM_LABELS = {"error_injection": "Error Injection", "fact_forcing": "Fact Forcing", "flip_forcing": "Flip Forcing",
                  "fact_erasure": "Fact Erasure", "fact_amplification": "Fact Amplification"}


def problems_table(grid: pd.DataFrame) -> str:
    header = ["Estimator", r"$R^2$(layer)", r"$\Delta R^2$", r"$\Delta R^2$ null", r"$r_w$ [95\% CI]"]
    body: list = []
    for (problem, editor), cell in grid.groupby(["problem", "editor"], sort=False):
        first = cell.iloc[0]
        body.append(f"{PROBLEM_LABELS.get(problem, problem)} $\\times$ {EDITOR_LABELS.get(editor, editor)} "
                    f"({int(first.n_facts)} facts $\\times$ {int(first.n_layers)} layers; H1 flip $-$ noise "
                    f"{est_ci(first.h1_diff, first.h1_ci_low, first.h1_ci_high)})")
        for r in cell.itertuples():
            label = LABELS.get(r.estimator, r.estimator) + (r"$^\dagger$" if r.matched else "")
            body.append([label, num(r.r2_layer), num(r.delta_r2), num(r.delta_r2_null),
                         est_ci(r.r_w, r.r_w_ci_low, r.r_w_ci_high)])
            if r.matched and np.isfinite(getattr(r, "per_draw_r_w", np.nan)):
                body.append([r"\quad per draw (same $s'$)", "", "", "",
                             f"{num(r.per_draw_r_w)} {ci(r.per_draw_ci_low, r.per_draw_ci_high)}"])
    caption = (r"Editing problems $\times$ editors (exploratory), in the measures of this study: per cell the "
               r"rewrite score's $R^2$ on layer alone, Hase et al. (2023)'s $\Delta R^2$ (adding the "
               r"localisation effect) with its no-signal expectation, the directional within-layer $r_w$ with "
               r"its case-bootstrap 95\% CI, and the cell's H1 (flip scrubbing's $r_w$ minus noise tracing's). "
               r"$^\dagger$ the estimator matched to the problem (noise tracing for Fact Forcing, flip scrubbing "
               r"for Flip Forcing, whose edits are also paired with the flip effect of the same partner draw).")
    return booktabs(header, body, caption, "tab:problems")


def problems_figure(grid: pd.DataFrame):
    """r_w with its CI per estimator, one panel per (problem, editor) cell; the matched estimator filled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = list(dict.fromkeys(grid.problem))
    editors = list(dict.fromkeys(grid.editor))
    fig, axes = plt.subplots(len(problems), len(editors), figsize=(2.4 * len(editors) + 0.6, 1.6 * len(problems) + 0.6),
                             sharex=True, sharey=True, squeeze=False)
    for i, problem in enumerate(problems):
        for j, editor in enumerate(editors):
            ax = axes[i][j]
            cell = grid[(grid.problem == problem) & (grid.editor == editor)]
            for k, r in enumerate(cell.itertuples()):
                lo, hi = r.r_w - r.r_w_ci_low, r.r_w_ci_high - r.r_w
                ax.errorbar([k], [r.r_w], yerr=[[lo], [hi]], fmt="o" if r.matched else "o", capsize=2,
                            mfc=None if r.matched else "white", color="C%d" % k)
            ax.axhline(0, color="0.6", lw=0.6)
            ax.set_xticks(range(len(cell)), [e[:5] for e in cell.estimator], fontsize=7)
            if i == 0:
                ax.set_title(EDITOR_LABELS.get(editor, editor), fontsize=8)
            if j == 0:
                ax.set_ylabel(PROBLEM_LABELS.get(problem, problem).replace(" ", "\n"), fontsize=7)
            if cell.empty:
                ax.set_visible(False)
    fig.suptitle(r"$r_w$ (rewrite score) per estimator; filled: matched estimator", fontsize=8)
    return fig


def write_problems_report(results_dir: Path, dest_dir: Path) -> list[Path]:
    path = Path(results_dir) / "analysis" / "problems.parquet"
    if not path.is_file():
        return []
    from causaleval.reporting.figures import save

    grid = pd.read_parquet(path)
    out = Path(dest_dir) / "tables" / "problems.tex"
    atomic_write_text(out, problems_table(grid))
    return [out] + save(problems_figure(grid), Path(dest_dir) / "figures", "problems_grid")
