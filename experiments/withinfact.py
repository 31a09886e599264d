"""The within-fact analyses of a finished run, read from its committed trace, edit and fact tables:
measures with baseline predictors, H1 on every measure, relations, positions of the max, the golden
layer and the specification curve, written to ``<run>/withinfact/*.parquet`` (each table atomically;
a table already there is kept, so an interrupted run resumes; ``--force`` recomputes).  The ``analyze``
stage writes the same tables for every run (causaleval.analysis.withinfact_outputs); this command
recomputes them for committed runs with other draw counts.

    python -m experiments.withinfact --run paper/study [--perm 300] [--boot 300] [--outcomes ...]
                                     [--curve-boot 0] [--force]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from causaleval.analysis.per_layer import per_layer_tests
from causaleval.analysis.spec import AnalysisSpec
from causaleval.analysis.within_case import within_case_tests
from causaleval.analysis.withinfact import OUTCOMES
from causaleval.analysis.withinfact_outputs import TABLES, WithinFactSettings, write_withinfact_outputs  # noqa: F401
from causaleval.errors import CausalEvalError
from causaleval.runs.store import atomic_write_parquet


def refresh_analysis(folder: Path) -> list[Path]:
    """Recompute ``analysis/{per_layer,within_case,argmax}.parquet`` of every variant from the committed
    ``analysis/joined.parquet`` with the current code (they depend on nothing else; the directional
    Williams test and the within-fact permutation nulls are newer than the committed tables)."""
    folder = Path(folder) / "analysis"
    joined = pd.read_parquet(folder / "joined.parquet")
    summary = json.loads((folder / "summary.json").read_text())
    frames: dict[str, list] = {"per_layer": [], "within_case": [], "argmax": []}
    for name, v in summary["variants"].items():
        raw = {k: (tuple(tuple(x) if isinstance(x, list) else x for x in val) if isinstance(val, list) else val)
               for k, val in v["spec"].items()}
        spec = AnalysisSpec(**raw)
        rows = joined[joined.variant == name].drop(columns="variant")
        pl = per_layer_tests(rows, spec, v["n_edit_cases"])
        wc, am = within_case_tests(rows, spec, v["n_edit_cases"])
        for key, frame in (("per_layer", pl), ("within_case", wc), ("argmax", am)):
            if not frame.empty:
                frames[key].append(frame.assign(variant=name))
    paths = []
    for key, parts in frames.items():
        atomic_write_parquet(folder / f"{key}.parquet", pd.concat(parts, ignore_index=True))
        paths.append(folder / f"{key}.parquet")
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.withinfact", description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, action="append", required=True, help="a finished run folder (repeatable)")
    p.add_argument("--perm", type=int, default=300, help="swap / permutation draws per test")
    p.add_argument("--boot", type=int, default=300, help="bootstrap resamples per interval")
    p.add_argument("--force", action="store_true", help="recompute tables that exist")
    p.add_argument("--outcomes", nargs="+", default=list(OUTCOMES), choices=OUTCOMES,
                   help="outcomes of the measure, H1 and golden tables (the spec curve always has all)")
    p.add_argument("--curve-boot", type=int, default=0,
                   help="bootstrap resamples per specification (0: interval from the swap null's SD)")
    p.add_argument("--refresh-analysis", action="store_true",
                   help="only recompute analysis/{per_layer,within_case,argmax}.parquet from analysis/joined.parquet")
    a = p.parse_args(argv)
    try:
        for folder in a.run:
            if a.refresh_analysis:
                refresh_analysis(folder)
            else:
                write_withinfact_outputs(folder, WithinFactSettings(a.perm, a.boot, tuple(a.outcomes), a.curve_boot,
                                                                    a.force))
    except CausalEvalError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
