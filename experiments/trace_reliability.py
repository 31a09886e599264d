"""Split-half reliability of the localisation effects of trace runs, without an edit stage.

    python -m experiments.trace_reliability FOLDER [FOLDER ...] [--parts] [--out FILE.csv]

Reads each folder's ``trace.parquet`` and ``trace_draws.parquet`` (with ``--parts``: every finished case
part under ``trace_parts/``, for a run still going or stopped early) and prints
:func:`causaleval.analysis.trace_reliability.trace_reliability` per estimator, pooled over the analysis
layers (``layer`` = -1, with a case-bootstrap CI) and per layer.  Several folders are pooled (e.g. noise and
flip traced in separate folders on the same facts); each estimator is then judged on its own cases.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from causaleval.analysis.spec import AnalysisSpec
from causaleval.analysis.trace_reliability import trace_reliability


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
    p.add_argument("--out", type=Path, help="also write the table as CSV")
    a = p.parse_args(argv)
    rows = []
    for folder in a.folders:
        trace, draws = read_folder(folder, a.parts)
        for est in sorted(trace.estimator.unique()):
            spec = AnalysisSpec(estimators=(est,), n_bootstrap=a.n_bootstrap)
            rows.append(trace_reliability(trace[trace.estimator == est], draws[draws.estimator == est], spec)
                        .assign(folder=str(folder)))
    table = pd.concat(rows, ignore_index=True)
    print(table[["folder", "estimator", "layer", "n_cases", "reliability", "ci_low", "ci_high"]]
          .to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if a.out:
        table.to_csv(a.out, index=False)


if __name__ == "__main__":
    main()
