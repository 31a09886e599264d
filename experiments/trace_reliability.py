"""Split-half reliability of the localisation effects of trace runs, without an edit stage.

    python -m experiments.trace_reliability FOLDER [FOLDER ...] [--parts] [--out FILE.csv]

Reads each folder's ``trace.parquet`` and ``trace_draws.parquet`` (with ``--parts``: every finished case
part under ``trace_parts/``, for a run still going or stopped early) and prints
:func:`causaleval.analysis.trace_reliability.trace_reliability` per estimator, pooled over the analysis
layers (``layer`` = -1, with a case-bootstrap CI) and per layer.  Several folders are pooled (e.g. noise and
flip traced in separate folders on the same facts); each estimator is then judged on its own cases.
Each row also gives the mean number of draws per case (``mean_draws``) and, by the Spearman–Brown prophecy,
the draws a case would need for the pooled reliability to reach ``--target`` (``draws_for_target``, with the
draws at the CI's bounds: ``draws_for_target_low`` at ``ci_high``, ``draws_for_target_high`` at ``ci_low``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from causaleval.analysis.spec import AnalysisSpec
from causaleval.analysis.trace_reliability import trace_reliability
from causaleval.inference.reliability import length_factor


def with_projection(table: pd.DataFrame, mean_draws: float, target: float) -> pd.DataFrame:
    """Adds ``mean_draws``, ``target`` and the draws per case the prophecy needs for ``target``."""
    return table.assign(mean_draws=mean_draws, target=target,
                        draws_for_target=mean_draws * length_factor(table.reliability, target),
                        draws_for_target_low=mean_draws * length_factor(table.ci_high, target),
                        draws_for_target_high=mean_draws * length_factor(table.ci_low, target))


def read_folder(folder: Path, parts: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    if not parts:
        return pd.read_parquet(folder / "trace.parquet"), pd.read_parquet(folder / "trace_draws.parquet")
    sites = sorted((folder / "trace_parts").glob("*_sites.parquet"))
    if not sites:
        raise SystemExit(f"{folder}/trace_parts holds no finished case yet")
    trace = pd.concat([pd.read_parquet(p) for p in sites], ignore_index=True)
    draws = pd.concat([pd.read_parquet(str(p).replace("_sites.parquet", "_draws.parquet")) for p in sites],
                      ignore_index=True)
    return trace, draws


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--parts", action="store_true", help="read the finished case parts (trace_parts/)")
    p.add_argument("--n-bootstrap", type=int, default=2000)
    p.add_argument("--target", type=float, default=0.9, help="reliability to project the draws for (default 0.9)")
    p.add_argument("--out", type=Path, help="also write the table as CSV")
    a = p.parse_args(argv)
    rows = []
    for folder in a.folders:
        trace, draws = read_folder(folder, a.parts)
        for est in sorted(trace.estimator.unique()):
            spec = AnalysisSpec(estimators=(est,), n_bootstrap=a.n_bootstrap)
            own = draws[draws.estimator == est]
            mean_draws = float(own.groupby("case_id").draw.nunique().mean())
            rows.append(with_projection(trace_reliability(trace[trace.estimator == est], own, spec), mean_draws,
                                        a.target).assign(folder=str(folder)))
    table = pd.concat(rows, ignore_index=True)
    print(table[["folder", "estimator", "layer", "n_cases", "reliability", "ci_low", "ci_high", "mean_draws",
                 "draws_for_target"]]
          .to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if a.out:
        table.to_csv(a.out, index=False)


if __name__ == "__main__":
    main()
