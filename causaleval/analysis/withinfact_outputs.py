"""The within-fact analyses of a finished run written to ``<run>/withinfact/*.parquet``: the measures
with baseline predictors, H1 on every measure, the per-relation forest, the positions of the max
(:mod:`causaleval.analysis.withinfact`), the golden layer (:mod:`causaleval.analysis.golden`) and the
specification curve (:mod:`causaleval.analysis.speccurve`).

The ``analyze`` stage calls :func:`write_withinfact_outputs` after the hypothesis tests, so every run
gets them; ``python -m experiments.withinfact`` calls it on committed runs.  Each group of tables is
written atomically and a group already there and newer than the run's trace, edit and fact tables is kept
(an interrupted run resumes) unless ``force``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from causaleval.analysis.golden import golden_table
from causaleval.analysis.spec import AnalysisSpec
from causaleval.analysis.speccurve import CurveSpec, spec_curve
from causaleval.analysis.withinfact import read_run, study_arrays, withinfact_tables
from causaleval.runs.store import atomic_write_parquet

TABLES = ("withinfact", "withinfact_h1", "relations", "positions", "golden", "speccurve", "speccurve_joint")
FOLDER = "withinfact"


@dataclass(frozen=True)
class WithinFactSettings:
    """Swap/permutation draws and bootstrap resamples per test, the outcomes of the measure, H1 and
    golden tables (the spec curve always has every outcome), bootstrap resamples per specification
    (0: the interval from the swap null's SD), and whether to recompute tables that exist."""

    n_perm: int = 100
    n_boot: int = 100
    outcomes: tuple[str, ...] = ("rewrite_score", "margin")
    curve_boot: int = 0
    force: bool = False


def write_withinfact_outputs(folder: Path, settings: WithinFactSettings = WithinFactSettings(),
                             spec: AnalysisSpec = AnalysisSpec(), log=print) -> list[Path]:
    """Compute and write the within-fact tables of the run in ``folder`` (trace, edits and
    facts_filter are read; a missing one is a clear :class:`~causaleval.analysis.spec.AnalysisError`).
    Returns the paths written."""
    folder = Path(folder)
    out = folder / FOLDER
    run = read_run(folder)
    s = settings

    inputs = max((folder / f"{n}.parquet").stat().st_mtime for n in ("trace", "edits", "facts_filter"))

    def have(names) -> bool:      # finished, and newer than the run's inputs
        paths = [out / f"{n}.parquet" for n in names]
        return not s.force and all(p.is_file() and p.stat().st_mtime >= inputs for p in paths)

    def golden() -> dict:
        frames = [golden_table(a.y, a.x, a.layers, o, n_boot=s.n_boot, seed=k)
                  for k, o in enumerate(s.outcomes)
                  for a in [study_arrays(run.trace, run.edits, run.facts, spec, o)]]
        return {"golden": pd.concat(frames, ignore_index=True)}

    def curve() -> dict:
        table, joint = spec_curve(run, base=spec, curve=CurveSpec(n_perm=s.n_perm, n_boot=s.curve_boot))
        return {"speccurve": table, "speccurve_joint": joint}

    steps = [(("withinfact", "withinfact_h1", "relations", "positions"),
              lambda: withinfact_tables(run, spec, s.n_perm, s.n_boot, s.outcomes)),
             (("golden",), golden),
             (("speccurve", "speccurve_joint"), curve)]
    written = []
    for names, compute in steps:
        if have(names):
            continue
        t = time.time()
        for name, frame in compute().items():
            atomic_write_parquet(out / f"{name}.parquet", frame)
            written.append(out / f"{name}.parquet")
        log(f"{folder}: {', '.join(names)} in {time.time() - t:.0f} s")
    return written

