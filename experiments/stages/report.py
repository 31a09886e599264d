"""Stage ``report``: LaTeX tables and figures from the analysis outputs (docs/design.md#stages).

Writes ``tables/*.tex`` (booktabs; ``numbers.tex`` holds macros for the paper's prose) and
``figures/*.{pdf,png}`` into the results folder only; with the validate stage's outputs also
``tables/validate.tex``, ``tables/validate_numbers.tex`` and ``figures/validate.{pdf,png}``.  The paper is built from the committed study run
(``paper/study``) by ``python -m experiments.paper`` (``make paper``), which calls :func:`build_report`
with ``paper/`` as the destination; an ordinary run never writes into ``paper/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from causaleval.analysis import load_results
from causaleval.errors import CausalEvalError
from causaleval.reporting.figures import write_figures
from causaleval.reporting.tables import write_tables
from causaleval.runs.store import read_parquet_checked
from experiments.context import StageContext

NAME = "report"
OUTPUTS = ("tables/h1.tex", "figures/delta_r2.pdf")


def build_report(results_dir: Path, dest_dir: Path | None = None) -> list[Path]:
    """Tables and figures of a results folder into ``dest_dir/tables`` and ``dest_dir/figures``
    (default: the results folder itself), from its analysis outputs, trace table and support summaries.
    Nothing is recomputed.  Returns the written paths."""
    results_dir = Path(results_dir)
    dest_dir = results_dir if dest_dir is None else Path(dest_dir)
    t = load_results(results_dir)
    default = t.summary.get("variants", {}).get("default", {})
    if not default.get("n_cases"):
        notes = "; ".join(default.get("notes", [])) or "no case has every estimator's effect"
        raise CausalEvalError(f"{results_dir}: the analysis kept no case ({notes}), so there is nothing to "
                              "report; see analysis/summary.json (excluded) and the trace stage's TE per case")
    # the heatmaps: a published heatmap run's rows (trace_heatmaps.parquet, see experiments.publish) or the
    # trace table's own heatmap cases
    trace_path = next((p for p in (results_dir / "trace_heatmaps.parquet", results_dir / "trace.parquet")
                       if p.is_file()), None)
    trace = read_parquet_checked(trace_path) if trace_path is not None else None
    window = None
    if (results_dir / "run.json").is_file():
        window = json.loads((results_dir / "run.json").read_text()).get("config", {}).get("trace_window")
    paths = write_tables(t, dest_dir / "tables") + write_figures(t, dest_dir / "figures", trace, mlp_window=window)
    if (results_dir / "calibration.csv").is_file():     # python -m causaleval.inference.calibration --out <results>/calibration.csv
        from causaleval.inference.calibration import calibration_tex
        from causaleval.runs.store import atomic_write_text

        path = dest_dir / "tables" / "calibration.tex"
        atomic_write_text(path, calibration_tex(pd.read_csv(results_dir / "calibration.csv")))
        paths.append(path)
    from causaleval.reporting.confirmatory import write_confirm_report
    from causaleval.reporting.editors import write_editors_report
    from causaleval.reporting.problems import write_problems_report

    return (paths + support_report(results_dir, dest_dir) + validate_report(results_dir / "validate", dest_dir)
            + write_confirm_report(results_dir, dest_dir) + write_editors_report(results_dir, dest_dir)
            + write_problems_report(results_dir, dest_dir))


def validate_report(folder: Path, dest_dir: Path) -> list[Path]:
    """The validate stage's table, macros and figure, from a ``validate/`` folder when that stage has
    finished (causaleval.reporting.validate), into ``dest_dir/tables`` and ``dest_dir/figures``."""
    if not (Path(folder) / "summary.json").is_file():
        return []
    from causaleval.reporting.validate import write_validate_report

    return write_validate_report(Path(folder), Path(dest_dir))


def support_report(results_dir: Path, dest_dir: Path | None = None) -> list[Path]:
    """The support stage's tables and figures, rebuilt from ``<results>/support`` when that stage has
    finished, into ``dest_dir`` (default: the results folder)."""
    folder = Path(results_dir) / "support"
    if not (folder / "summary.json").is_file():
        return []
    from causaleval.support.report import write_support_report

    frames = {n: read_parquet_checked(folder / f"{n}.parquet")
              for n in ("answers_summary", "states_summary", "noise_scale", "reference")}
    return write_support_report(frames["answers_summary"], frames["states_summary"], frames["noise_scale"],
                                frames["reference"], json.loads((folder / "summary.json").read_text()),
                                Path(results_dir) if dest_dir is None else Path(dest_dir))


def run(ctx: StageContext) -> None:
    from causaleval.reporting.withinfact import write_withinfact

    # the within-fact tables and specification curve, when python -m experiments.withinfact has been run
    paths = build_report(ctx.out_dir) + write_withinfact([ctx.out_dir], ctx.out_dir)
    print(f"wrote {len(paths)} table and figure files to {ctx.out_dir}/tables and {ctx.out_dir}/figures "
          "(the paper is built from the committed study: make paper)")
