"""The editing problems' table and figure (``tables/problems.tex``, ``figures/problems_grid.pdf``) from
``analysis/problems.parquet`` (causaleval.analysis.problems): Hase et al. (2023)'s Table 3 in our
measures, one block per (problem, editor) cell and a row per estimator: R²(layer), ΔR² with its
no-signal expectation, r_w with its 95% CI, the matched estimator marked (†) with flip forcing's
per-draw matched r_w, and the cell's H1 (flip − noise in r_w) with its CI; and the macros the paper's
prose quotes (``tables/problems_numbers.tex``, :func:`problems_numbers`): for each matched cell whether
the matched estimator's r_w exceeds the unmatched one's (the other estimator of H1), with the interval of
their difference, and the wall time per cell.  Exploratory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from causaleval.editing.problems import MATCHED_ESTIMATOR
from causaleval.reporting.confirmatory import macro_tag
from causaleval.reporting.tables import EDITOR_LABELS, LABELS, booktabs, ci, est_ci, num, pexpr
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


UNMATCHED = {"noise": "flip", "flip": "noise"}     # the other estimator of H1 (flip − noise)


def matched_difference(cell: pd.DataFrame) -> dict:
    """Matched − unmatched r_w of one matched cell with its 95% CI: the cell's H1 (flip − noise) with the
    sign that puts the matched estimator first (percentile intervals flip with the sign).  ``p``: the H1
    swap test's one-sided p when the matched estimator is flip (the direction it tests), else None."""
    problem = cell.problem.iloc[0]
    matched = MATCHED_ESTIMATOR[problem]
    r = cell.iloc[0]
    if matched == "flip":
        return {"diff": r.h1_diff, "low": r.h1_ci_low, "high": r.h1_ci_high, "p": r.h1_p}
    return {"diff": -r.h1_diff, "low": -r.h1_ci_high, "high": -r.h1_ci_low, "p": None}


def matched_sentence(cell: pd.DataFrame) -> str:
    """One sentence on a matched cell: both estimators' r_w with CIs, their difference and what it shows."""
    first = cell.iloc[0]
    problem, editor = first.problem, first.editor
    matched = MATCHED_ESTIMATOR[problem]
    by = cell.set_index("estimator")
    m, u = by.loc[matched], by.loc[UNMATCHED[matched]]
    d = matched_difference(cell)
    if pd.isna(d["low"]) or pd.isna(d["high"]):
        reading = "cannot be compared with the unmatched one's (no interval)"
    elif d["low"] > 0:
        reading = "exceeds the unmatched one's (the interval lies above zero)"
    elif d["high"] < 0:
        reading = "falls below the unmatched one's (the interval lies below zero)"
    else:
        reading = "is not distinguishable from the unmatched one's (the interval includes zero)"
    text = (f"{PROBLEM_LABELS.get(problem, problem)} with {EDITOR_LABELS.get(editor, editor)} "
            f"({int(first.n_facts)} facts $\\times$ {int(first.n_layers)} layers): {LABELS[matched].lower()}'s "
            f"$r_w$ (matched) is {est_ci(m.r_w, m.r_w_ci_low, m.r_w_ci_high)}, "
            f"{LABELS[UNMATCHED[matched]].lower()}'s {est_ci(u.r_w, u.r_w_ci_low, u.r_w_ci_high)}; matched "
            f"$-$ unmatched is {est_ci(d['diff'], d['low'], d['high'])}"
            + (f" (one-sided {pexpr(d['p'])})" if d["p"] is not None else "")
            + f", so the matched estimator's measure {reading}")
    per_draw = _per_draw(m)
    if per_draw is not None:
        text += (f"; paired draw by draw with flip scrubbing's effect of the same partner, $r_w$ is "
                 f"{per_draw}")
    return text + "."


def _per_draw(row: pd.Series) -> str | None:
    """Flip forcing's per-draw matched r_w with its CI, or None when the cell has none."""
    r = row.get("per_draw_r_w")
    if r is None or pd.isna(r):
        return None
    return est_ci(r, row.get("per_draw_ci_low"), row.get("per_draw_ci_high"))


def cell_seconds(cell: dict | None) -> float | None:
    """A grid cell's wall seconds: spent in the grid plus, for reused edits, the source run's for them."""
    if not cell or "wall_s" not in cell:
        return None
    return cell["wall_s"] + cell.get("reused_wall_s", 0.0)


def problems_numbers(grid: pd.DataFrame, record: dict | None = None) -> str:
    """Macros ``\\Prob<Problem><Editor><Quantity>`` for every matched cell (``Matched``, ``Unmatched``: r_w
    with CI; ``Diff``: matched − unmatched with CI; ``PerDraw`` for flip forcing; ``Sentence``), ``Minutes``
    and ``Facts`` for every cell; ``\\ProblemsMatchedSentences`` (every matched cell's sentence),
    ``\\ProblemsCells``, ``\\ProblemsHours`` (wall time of all cells) and ``\\ProblemsTimeList``."""
    cells_time = (record or {}).get("cells", {})
    lines = ["% generated by causaleval.reporting.problems; do not edit"]
    mac = lambda k, v: lines.append(rf"\newcommand{{\{k}}}{{{v}}}")
    sentences, times = [], []
    for (problem, editor), cell in grid.groupby(["problem", "editor"], sort=False):
        tag = "Prob" + macro_tag(problem) + macro_tag(editor)
        first = cell.iloc[0]
        mac(tag + "Facts", str(int(first.n_facts)))
        wall = cell_seconds(cells_time.get(f"{problem}:{editor}"))
        mac(tag + "Minutes", "n/a" if wall is None else f"{wall / 60:.0f}")
        if wall is not None:
            reused = " (edits reused)" if "reused_from" in cells_time[f"{problem}:{editor}"] else ""
            times.append(f"{PROBLEM_LABELS.get(problem, problem)} $\\times$ {EDITOR_LABELS.get(editor, editor)} "
                         f"{wall / 60:.0f} min{reused}")
        if problem not in MATCHED_ESTIMATOR or not {"noise", "flip"} <= set(cell.estimator):
            continue
        by = cell.set_index("estimator")
        matched = MATCHED_ESTIMATOR[problem]
        m, u, d = by.loc[matched], by.loc[UNMATCHED[matched]], matched_difference(cell)
        mac(tag + "Matched", est_ci(m.r_w, m.r_w_ci_low, m.r_w_ci_high))
        mac(tag + "Unmatched", est_ci(u.r_w, u.r_w_ci_low, u.r_w_ci_high))
        mac(tag + "Diff", est_ci(d["diff"], d["low"], d["high"]))
        if problem == "flip_forcing":
            mac(tag + "PerDraw", _per_draw(m) or "n/a")
        sentence = matched_sentence(cell)
        mac(tag + "Sentence", sentence)
        sentences.append(sentence)
    total = sum(cell_seconds(c) or 0.0 for c in cells_time.values())
    mac("ProblemsMatchedSentences", " ".join(sentences) or "No matched cell was run.")
    mac("ProblemsCells", str(grid.groupby(["problem", "editor"]).ngroups))
    mac("ProblemsHours", f"{total / 3600:.1f}" if cells_time else "n/a")
    mac("ProblemsTimeList", ", ".join(times) or "n/a")
    return "\n".join(lines) + "\n"


def write_problems_report(results_dir: Path, dest_dir: Path) -> list[Path]:
    """``tables/problems.tex``, ``tables/problems_numbers.tex`` and ``figures/problems_grid.pdf`` from a
    folder's ``analysis/problems.parquet`` (wall times from its ``problem_grid.json`` when there); nothing
    when the folder has no grid."""
    import json

    path = Path(results_dir) / "analysis" / "problems.parquet"
    if not path.is_file():
        return []
    from causaleval.reporting.figures import save

    grid = pd.read_parquet(path)
    record_path = Path(results_dir) / "problem_grid.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else None
    out = [Path(dest_dir) / "tables" / "problems.tex", Path(dest_dir) / "tables" / "problems_numbers.tex"]
    atomic_write_text(out[0], problems_table(grid))
    atomic_write_text(out[1], problems_numbers(grid, record))
    return out + save(problems_figure(grid), Path(dest_dir) / "figures", "problems_grid")
