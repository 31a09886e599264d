"""Reliabilities rebuilt from a published folder's compact per-draw table (docs/confirmatory.md#publishing).

A published run (``experiments.publish --draws``) carries ``trace_draws.parquet`` in compact form: only the
columns the split-half reliability reads (:data:`causaleval.analysis.effects.DRAW_COLUMNS`), only the edit
layers' rows, float32 values, zstd-compressed.  :func:`rebuild_reliability` recomputes each estimator's
split-half reliability (Spearman–Brown, within layer) from it, with the analysis specification recorded
in ``analysis/summary.json``, so that ``make paper`` reports reliabilities rebuilt from committed draws.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from causaleval.analysis.effects import DRAW_COLUMNS, half_effects
from causaleval.analysis.reliability import reliability_table
from causaleval.analysis.spec import AnalysisSpec

# the compact per-draw table: column → dtype (strings as dictionary-encoded categories)
DRAW_DTYPES = {"estimator": "category", "direction": "category", "metric": "category", "case_id": "int32",
               "component": "category", "window": "int16", "layer": "int16", "position": "int16", "draw": "int16",
               "value": "float32", "te": "float32"}
assert tuple(DRAW_DTYPES) == DRAW_COLUMNS


def compact_draws(draws: pd.DataFrame, layers: list[int] | None = None) -> pd.DataFrame:
    """The per-draw table reduced to what the reliability reads: its columns, the ``layers`` (the edit
    layers; None = all), compact dtypes."""
    if layers is not None:
        draws = draws[draws.layer.isin(layers)]
    return draws[list(DRAW_COLUMNS)].astype(DRAW_DTYPES).reset_index(drop=True)


def write_compact_draws(draws: pd.DataFrame, path: Path, layers: list[int] | None = None) -> Path:
    compact = compact_draws(draws, layers)
    compact.to_parquet(path, index=False, compression="zstd")
    return Path(path)


def spec_of(folder: Path, variant: str = "default") -> AnalysisSpec:
    """The analysis specification a folder's summary.json records for ``variant``."""
    spec = json.loads((Path(folder) / "analysis" / "summary.json").read_text())["variants"][variant]["spec"]
    spec = {k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
            for k, v in spec.items()}
    return AnalysisSpec(**spec)


def rebuild_reliability(folder: Path, variant: str = "default") -> pd.DataFrame:
    """Each estimator's reliability (``layer`` = -1 pooled with CI, and per layer) recomputed from the
    folder's ``trace_draws.parquet``, ``trace.parquet`` and analysed rows (``analysis/joined.parquet``)."""
    folder = Path(folder)
    spec = spec_of(folder, variant)
    draws = pd.read_parquet(folder / "trace_draws.parquet")
    draws = draws.astype({c: str for c in ("estimator", "direction", "metric", "component")})
    trace = pd.read_parquet(folder / "trace.parquet")
    joined = pd.read_parquet(folder / "analysis" / "joined.parquet")
    if "variant" in joined.columns:
        joined = joined[joined.variant == variant].drop(columns="variant")
    joined = joined.dropna(axis=1, how="all")
    return reliability_table(joined, half_effects(draws, trace, spec), spec)


def largest_difference(rebuilt: pd.DataFrame, summary: dict, variant: str = "default") -> float:
    """max |rebuilt − recorded| pooled reliability over estimators (NaN when nothing to compare)."""
    recorded = summary["variants"][variant].get("reliability") or {}
    diffs = [abs(r.reliability - recorded[r.estimator]["reliability"]) for r in rebuilt.itertuples()
             if r.layer == -1 and r.estimator in recorded and recorded[r.estimator].get("reliability") is not None]
    return float(max(diffs)) if diffs else float("nan")


def draws_gap(folder: Path) -> float:
    """max |mean over draws − trace.parquet| of the IE over the sites of the folder's per-draw table: how
    closely the draws reproduce the effects the analysis reports (float32 rounding when both come from one
    run; the check that matters when the draws come from a re-trace of the same facts and seeds)."""
    folder = Path(folder)
    keys = ["estimator", "direction", "metric", "case_id", "component", "window", "layer", "position"]
    draws = pd.read_parquet(folder / "trace_draws.parquet", columns=keys + ["value"])
    means = draws.astype({c: str for c in ("estimator", "direction", "metric", "component")}) \
        .groupby(keys, observed=True).value.mean().rename("draws_mean").reset_index()
    trace = pd.read_parquet(folder / "trace.parquet", columns=keys + ["ie"])
    both = means.merge(trace, on=keys, how="left")
    if both.ie.isna().any():
        raise ValueError(f"{folder}: {int(both.ie.isna().sum())} sites of trace_draws.parquet are not in trace.parquet")
    return float(np.abs(both.draws_mean - both.ie).max())


def reliability_tex(rebuilt: pd.DataFrame, name: str, gap: float | None = None) -> str:
    """A small booktabs table: per estimator the pooled split-half reliability [CI] and facts; with ``gap``
    (:func:`draws_gap`), the caption says how closely the draws average to the reported effects."""
    from causaleval.reporting.tables import booktabs, est_ci, tex_escape

    pooled = rebuilt[rebuilt.layer == -1]
    body = [[e, est_ci(r, lo, hi, 2), str(int(n))] for e, r, lo, hi, n in
            zip(pooled.estimator, pooled.reliability, pooled.ci_low, pooled.ci_high, pooled.n_cases)
            if np.isfinite(r)]
    return booktabs(["estimator", "reliability [CI]", "facts"], body,
                    f"Split-half reliability of each localisation effect of {tex_escape(name)} (Spearman--Brown, "
                    "within layer), rebuilt from the published per-draw table." + _gap_sentence(gap),
                    f"tab:reliability-{name}")


def _gap_sentence(gap: float | None) -> str:
    if gap is None:
        return ""
    if gap == 0:
        return " Averaged over draws, its values equal the reported trace's effects."
    mantissa, exponent = f"{gap:.1e}".split("e")
    return (f" Averaged over draws, its values differ from the reported trace's effects by at most "
            f"${mantissa}\\times 10^{{{int(exponent)}}}$.")
