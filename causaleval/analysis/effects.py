"""The joined (case, edit layer) table: the localisation effect per estimator under a spec's rule
(fraction restored max(IE/TE, 0) or raw IE; max over positions from the first subject token or one
token role), the TE-floor exclusions, the per-draw half effects of the reliability, and the join with
the edit scores (Hase et al. 2023, §4.1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from causaleval.analysis.spec import AnalysisError, AnalysisSpec

TRACE_COLUMNS = ("estimator", "direction", "metric", "case_id", "component", "window", "layer", "position",
                 "role", "ie", "te")
EDIT_COLUMNS = ("case_id", "relation_id", "layer")


def _require(frame: pd.DataFrame, columns, what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise AnalysisError(f"{what} lacks columns {missing}; it must follow the trace/edit stage schema "
                            "(rerun those stages with --force)")


def localisation_effects(trace: pd.DataFrame, spec: AnalysisSpec) -> pd.DataFrame:
    """Effect per (estimator, case_id, layer) with the case's TE: the spec's effect (fraction restored
    max(IE/TE, 0), or the raw IE) under its token rule, over positions from the first subject token."""
    _require(trace, TRACE_COLUMNS, "trace.parquet")
    sel = trace[(trace.component == spec.component) & (trace.window == spec.window)
                & (trace.direction == spec.direction) & (trace.metric == spec.metric)
                & trace.estimator.isin(spec.estimators)]
    if sel.empty:
        have = trace[["estimator", "direction", "metric", "component", "window"]].drop_duplicates()
        raise AnalysisError(f"trace.parquet has no rows for {spec.describe()} and estimators {spec.estimators}; "
                            f"it holds:\n{have.to_string(index=False)}")
    sel = sel[sel.role != "before_subject"]
    if spec.token_rule != "max":
        sel = sel[sel.role == spec.token_rule]
        if sel.empty:
            raise AnalysisError(f"trace.parquet has no positions with role {spec.token_rule!r}")
    te = sel.te.to_numpy(float)
    if spec.effect == "fraction":
        with np.errstate(invalid="ignore", divide="ignore"):
            value = np.where(te > 0, np.maximum(sel.ie.to_numpy(float) / np.where(te > 0, te, 1.0), 0.0), np.nan)
    else:
        value = sel.ie.to_numpy(float)
    g = sel.assign(effect=value).groupby(["estimator", "case_id", "layer"])
    agg = g.effect.max() if spec.token_rule == "max" else g.effect.mean()
    return pd.concat([agg, g.te.first()], axis=1).reset_index()


DRAW_COLUMNS = ("estimator", "direction", "metric", "case_id", "component", "window", "layer", "position",
                "draw", "value", "te")
HALVES = ("a", "b", "first")


def below_floor(te: pd.Series, spec: AnalysisSpec) -> pd.Series:
    """True where a TE is not above the spec's floor (TE ≤ 0 always; NaN too): no fraction restored there."""
    return ~(te >= spec.floor) | ~(te > 0)


def half_effects(draws: pd.DataFrame | None, trace: pd.DataFrame, spec: AnalysisSpec, first: int = 3) -> pd.DataFrame:
    """The effect per (estimator, case_id, layer, half) from a subset of each case's draws, by the rule of
    :func:`localisation_effects` (ratio of the subset's mean IE and mean TE, ...): ``a`` the even-numbered
    and ``b`` the odd-numbered draws (split-half reliability), ``first`` the first ``first`` draws (does
    the max over positions move with the number of draws?).  Empty without per-draw values and TEs.

    The fraction restored is left undefined (NaN) where the subset's mean TE is below the TE floor, the
    rule that excludes a case from the analysis: a few draws can average to a TE near zero even when all
    of them do not, and the ratio then explodes (on Gemma 3 one such half, TE 0.008, held 72 % of the
    noise halves' disagreement and lowered its split-half reliability from 0.79 to 0.43)."""
    if draws is None or draws.empty or not set(DRAW_COLUMNS) <= set(draws.columns):
        return pd.DataFrame()
    sel = draws[(draws.component == spec.component) & (draws.window == spec.window)
                & (draws.direction == spec.direction) & (draws.metric == spec.metric)
                & draws.estimator.isin(spec.estimators)]
    if sel.empty:
        return pd.DataFrame()
    keys = ["estimator", "direction", "metric", "case_id", "component", "window", "layer", "position"]
    roles = trace[keys + ["role"]].drop_duplicates(keys)
    order = sel.groupby(["estimator", "case_id"]).draw.rank(method="dense").to_numpy() - 1
    out = []
    for name, mask in zip(HALVES, (order % 2 == 0, order % 2 == 1, order < first)):
        part = sel[mask].groupby(keys, as_index=False).agg(ie=("value", "mean"), te=("te", "mean"))
        part = part.merge(roles, on=keys, how="inner")
        if len(part):
            eff = localisation_effects(part, spec)
            if spec.effect == "fraction":
                eff.loc[below_floor(eff.te, spec), "effect"] = np.nan
            out.append(eff.assign(half=name))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def exclusions(effects: pd.DataFrame, spec: AnalysisSpec) -> pd.DataFrame:
    """(estimator, case_id, te, reason) for every case whose TE is not above the floor (TE ≤ 0 always)."""
    te = effects.groupby(["estimator", "case_id"]).te.first().reset_index()
    bad = te[below_floor(te.te, spec)]
    return bad.assign(reason=[f"TE = {t:.4g} below the floor {spec.floor:g}" for t in bad.te])


def join_effects(effects: pd.DataFrame, edits: pd.DataFrame, spec: AnalysisSpec) -> pd.DataFrame:
    """One row per (case, edit layer): edit scores plus ``effect_<estimator>`` columns (inner join)."""
    _require(edits, EDIT_COLUMNS + tuple(spec.scores), "edits.parquet")
    wide = effects.pivot_table(index=["case_id", "layer"], columns="estimator", values="effect", dropna=False)
    wide.columns = [f"effect_{e}" for e in wide.columns]
    joined = edits[list(EDIT_COLUMNS) + list(spec.scores)].merge(wide.reset_index(), on=["case_id", "layer"],
                                                                  how="inner")
    if joined.empty:
        raise AnalysisError("no (case_id, layer) of edits.parquet has a localisation effect in trace.parquet: "
                            "were trace and edit run on the same facts and layers?")
    return joined.sort_values(["case_id", "layer"]).reset_index(drop=True)


def present_estimators(joined: pd.DataFrame, spec: AnalysisSpec) -> list[str]:
    return [e for e in spec.estimators if f"effect_{e}" in joined.columns and joined[f"effect_{e}"].notna().any()]


def common_rows(joined: pd.DataFrame, score: str, estimators: list[str]) -> pd.DataFrame:
    """Rows where the score and every estimator's effect are present (one sample for all estimators)."""
    cols = [score] + [f"effect_{e}" for e in estimators]
    return joined.dropna(subset=cols).reset_index(drop=True)


def case_layer_arrays(data: pd.DataFrame, column: str, layers: list[int], cases: list) -> np.ndarray:
    """A (case × layer) array of one column, NaN where the row is missing."""
    return data.pivot_table(index="case_id", columns="layer", values=column, dropna=False) \
        .reindex(index=cases, columns=layers).to_numpy(dtype=float)


def _case_counts(edits_cases: int, data: pd.DataFrame) -> dict:
    n = int(data.case_id.nunique())
    return dict(n_cases=n, n_excluded=max(edits_cases - n, 0))
