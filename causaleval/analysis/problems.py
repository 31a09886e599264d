"""Editing problems × editors × estimators (docs/problems.md): the study's tests in every cell, and the
matched pairs (Fact Forcing ↔ noise tracing, Flip Forcing ↔ flip scrubbing).

``edits.parquet`` holds ``problem`` (and ``draw``, ``partner_case``) when the edit stage ran more than
error injection; a table without it is all error injection.  The study's analysis reads the error
injection rows only, unchanged.  Every other (problem, editor) cell gets the default analysis in
``problems/<problem>/<editor>/analysis/`` (flip forcing's rows averaged over the fact's partner draws
first, one row per fact and layer as in every cell), and :func:`problem_grid` writes one row per cell
and estimator, Hase et al. (2023)'s Table 3 in our measures: R²(layer), ΔR² with its no-signal
expectation, the primary measure r_w with its CI, H1 (flip − noise in r_w) with its CI, and whether the
estimator is the cell's matched one.  Flip forcing is also matched per draw (:func:`per_draw_matched`):
each edit toward o on the flipped prompt (s′, r) pairs with flip scrubbing's effect of that same draw
(the same partner s′) at the same layer.  Exploratory.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from causaleval.analysis.effects import localisation_effects
from causaleval.analysis.spec import AnalysisSpec
from causaleval.editing.problems import MATCHED_ESTIMATOR, PROBLEMS
from causaleval.inference.directional import resample_cases, within_layer_r

EXTRA = ("problem", "draw", "partner_case")


def with_problem(edits: pd.DataFrame) -> pd.DataFrame:
    """``edits`` with ``problem``, ``draw``, ``partner_case`` (a table without them is error injection)."""
    if "problem" in edits:
        return edits
    return edits.assign(problem="error_injection", draw=-1, partner_case=-1)


def problem_names(edits: pd.DataFrame) -> list[str]:
    found = list(dict.fromkeys(with_problem(edits).problem.astype(str)))
    return sorted(found, key=lambda p: (PROBLEMS.index(p) if p in PROBLEMS else len(PROBLEMS), p))


def error_injection_rows(edits: pd.DataFrame) -> pd.DataFrame:
    """The error injection rows without the problem columns: what the study's analysis reads."""
    if "problem" not in edits:
        return edits
    rows = edits[edits.problem == "error_injection"]
    return rows.drop(columns=[c for c in EXTRA if c in rows]).reset_index(drop=True)


def per_fact(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (case, layer): flip forcing's rows averaged over the fact's partner draws."""
    rows = rows.drop(columns=[c for c in EXTRA + ("editor",) if c in rows])
    if not rows.duplicated(["case_id", "layer"]).any():
        return rows.reset_index(drop=True)
    numeric = [c for c in rows.columns if c not in ("case_id", "relation_id", "layer")]
    return rows.groupby(["case_id", "relation_id", "layer"], as_index=False)[numeric].mean()


def per_draw_effects(draws: pd.DataFrame | None, trace: pd.DataFrame, spec: AnalysisSpec,
                     estimator: str = "flip") -> pd.DataFrame:
    """The effect per (case, draw, layer) of ``estimator`` by the spec's rule (:func:`localisation_effects`
    applied to each draw's own IE and TE); empty without per-draw values."""
    if draws is None or draws.empty or "value" not in draws:
        return pd.DataFrame(columns=["case_id", "draw", "layer", "effect"])
    sel = draws[(draws.estimator == estimator) & (draws.component == spec.component) & (draws.window == spec.window)
                & (draws.direction == spec.direction) & (draws.metric == spec.metric)]
    keys = ["estimator", "direction", "metric", "case_id", "component", "window", "layer", "position"]
    roles = trace[keys + ["role"]].drop_duplicates(keys)
    out = []
    for k, part in sel.groupby("draw"):
        part = part.rename(columns={"value": "ie"}).merge(roles, on=keys, how="inner")
        if len(part):
            out.append(localisation_effects(part, spec).assign(draw=int(k)))
    if not out:
        return pd.DataFrame(columns=["case_id", "draw", "layer", "effect"])
    return pd.concat(out, ignore_index=True)[["case_id", "draw", "layer", "effect"]]


def per_draw_matched(rows: pd.DataFrame, effects: pd.DataFrame, score: str = "rewrite_score", n_boot: int = 1000,
                     seed: int = 0) -> dict:
    """r_w between flip forcing's per-draw score and flip scrubbing's effect of the same draw and layer, the
    (case, draw) pairs as units, with a case-bootstrap 95% interval (a fact's draws resampled together)."""
    j = rows[["case_id", "draw", "layer", score]].merge(effects, on=["case_id", "draw", "layer"], how="inner")
    empty = dict(r_w=np.nan, ci_low=np.nan, ci_high=np.nan, n_cases=0, n_pairs=0)
    if j.empty:
        return empty
    y = j.pivot_table(index=["case_id", "draw"], columns="layer", values=score)
    x = j.pivot_table(index=["case_id", "draw"], columns="layer", values="effect").reindex_like(y)
    cases = y.index.get_level_values(0).to_numpy()
    r = float(within_layer_r(y.to_numpy(), x.to_numpy()))
    uniq = np.unique(cases)
    idx = resample_cases(len(uniq), n_boot, np.random.default_rng(seed))
    units = [np.flatnonzero(cases == c) for c in uniq]
    boots = [float(within_layer_r(y.to_numpy()[np.concatenate([units[i] for i in b])],
                                  x.to_numpy()[np.concatenate([units[i] for i in b])])) for b in idx]
    lo, hi = np.nanpercentile(boots, [2.5, 97.5]) if np.isfinite(boots).any() else (np.nan, np.nan)
    return dict(r_w=r, ci_low=float(lo), ci_high=float(hi), n_cases=len(uniq), n_pairs=len(y))


def cell_rows(summary: dict, problem: str, editor: str, score: str = "rewrite_score") -> list[dict]:
    """A row per estimator of one cell's default analysis (see module docstring)."""
    v = summary.get("variants", {}).get("default", {})
    h1 = v.get("h1", {}).get(score, {}).get("flip-noise", {})
    out = []
    for est, d in v.get("delta_r2", {}).get(score, {}).items():
        out.append(dict(problem=problem, editor=editor, estimator=est,
                        matched=MATCHED_ESTIMATOR.get(problem) == est,
                        n_facts=v.get("n_cases"), n_layers=len(v.get("layers", [])),
                        r2_layer=d.get("r2_layer"), delta_r2=d.get("delta_r2"), delta_r2_null=d.get("null_mean"),
                        r_w=d.get("r_w"), r_w_ci_low=d.get("r_w_ci_low"), r_w_ci_high=d.get("r_w_ci_high"),
                        h1_diff=h1.get("diff"), h1_ci_low=h1.get("ci_low"), h1_ci_high=h1.get("ci_high"),
                        h1_p=h1.get("p_one_sided")))
    return out


def problem_grid(trace: pd.DataFrame, edits: pd.DataFrame, spec: AnalysisSpec, out_dir: Path,
                 primary_summary: dict, draws: pd.DataFrame | None = None, run_info: dict | None = None,
                 primary_editor: str = "rome") -> pd.DataFrame:
    """Every (problem, editor) cell's default analysis and the grid (see module docstring); the error
    injection × primary editor cell is the study's own analysis (``primary_summary``)."""
    from causaleval.analysis.editors import editor_names, with_editor
    from causaleval.analysis.study import analyze, write_results

    e = with_problem(with_editor(edits))
    rows = []
    for problem in problem_names(e):
        for editor in editor_names(e[e.problem == problem]):
            cell = e[(e.problem == problem) & (e.editor == editor)]
            if problem == "error_injection" and editor == primary_editor:
                summary = primary_summary
            else:
                path = write_results([analyze(trace, per_fact(cell), spec, draws)],
                                     Path(out_dir) / "problems" / problem / editor, run_info)
                summary = json.loads(path.read_text())
            found = cell_rows(summary, problem, editor)
            if problem == "flip_forcing":
                m = per_draw_matched(cell, per_draw_effects(draws, trace, spec), n_boot=spec.n_bootstrap,
                                     seed=spec.seed)
                for r in found:
                    r.update({f"per_draw_{k}": (val if r["matched"] else np.nan) for k, val in m.items()})
            rows += found
    return pd.DataFrame(rows)
