"""Split-half reliability of the localisation effects from a trace run alone (no edits needed).

The same quantity as the analyze stage's ``analysis/reliability.parquet`` (:func:`reliability_table`):
per estimator, the effect from the even-numbered and from the odd-numbered draws of each case, their
Pearson correlation within layer over cases, Spearman–Brown corrected (ρ = 2r / (1 + r); Spearman 1910,
Brown 1910), pooled over layers with a case-bootstrap CI.  The layers are the trace's analysis layers
(the edit layers: by default the layers every case was traced at, since heatmap cases have more), the cases
those whose TE is above the floor for every estimator, as in the analysis.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from causaleval.analysis.effects import exclusions, half_effects, localisation_effects
from causaleval.analysis.reliability import reliability_table
from causaleval.analysis.spec import AnalysisSpec


def trace_reliability(trace: pd.DataFrame, draws: pd.DataFrame, spec: AnalysisSpec,
                      layers: list[int] | None = None) -> pd.DataFrame:
    """Reliability rows (estimator, layer (-1 = pooled), r_half, reliability, ci_low, ci_high, n_cases, …)."""
    effects = localisation_effects(trace, spec)
    if layers is None:
        per_case = effects.groupby("case_id").layer.agg(set)
        layers = sorted(set.intersection(*per_case)) if len(per_case) else []
    effects = effects[effects.layer.isin(layers)]
    bad = set(exclusions(effects, spec).case_id)
    wide = effects[~effects.case_id.isin(bad)].pivot_table(index=["case_id", "layer"], columns="estimator",
                                                             values="effect", dropna=False)
    wide.columns = [f"effect_{e}" for e in wide.columns]
    joined = wide.reset_index().sort_values(["case_id", "layer"]).reset_index(drop=True)
    return reliability_table(joined, half_effects(draws, trace, spec), spec)


def folder_reliability(folder: Path, spec: AnalysisSpec | None = None) -> pd.DataFrame:
    """:func:`trace_reliability` of a results folder's trace.parquet and trace_draws.parquet."""
    folder = Path(folder)
    trace = pd.read_parquet(folder / "trace.parquet")
    draws = pd.read_parquet(folder / "trace_draws.parquet")
    return trace_reliability(trace, draws, spec or AnalysisSpec())
