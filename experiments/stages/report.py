"""Stage ``report``: LaTeX tables and figures from the analysis outputs (docs/design.md#stages).

Writes ``tables/*.tex`` (booktabs; ``numbers.tex`` holds macros for the paper's prose) and
``figures/*.{pdf,png}`` into the results folder and copies them into ``paper/tables`` and
``paper/figures`` so that ``paper/main.tex`` compiles against the latest run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from causaleval.analysis import load_results
from causaleval.reporting.figures import write_figures
from causaleval.reporting.tables import write_tables
from experiments.context import StageContext

NAME = "report"
OUTPUTS = ("tables/h1.tex", "figures/delta_r2.pdf")
PAPER_DIR = Path(__file__).resolve().parents[2] / "paper"


def build_report(out_dir: Path, paper_dir: Path | None = PAPER_DIR) -> list[Path]:
    """Tables and figures of a results folder into ``<out>/tables`` and ``<out>/figures``, copied into
    ``paper_dir/{tables,figures}`` when ``paper_dir`` is given and exists.  Returns the written paths."""
    out_dir = Path(out_dir)
    t = load_results(out_dir)
    trace_path = out_dir / "trace.parquet"
    trace = pd.read_parquet(trace_path) if trace_path.is_file() else None
    window = None
    if (out_dir / "run.json").is_file():
        window = json.loads((out_dir / "run.json").read_text()).get("config", {}).get("trace_window")
    paths = write_tables(t, out_dir / "tables") + write_figures(t, out_dir / "figures", trace, mlp_window=window)
    paths += support_report(out_dir)
    copy_to_paper(paths, paper_dir)
    return paths


def support_report(out_dir: Path) -> list[Path]:
    """The support stage's tables and figures, rebuilt from ``<out>/support`` when that stage has finished."""
    folder = Path(out_dir) / "support"
    if not (folder / "summary.json").is_file():
        return []
    from causaleval.support.report import write_support_report

    frames = {n: pd.read_parquet(folder / f"{n}.parquet")
              for n in ("answers_summary", "states_summary", "noise_scale", "reference")}
    return write_support_report(frames["answers_summary"], frames["states_summary"], frames["noise_scale"],
                                frames["reference"], json.loads((folder / "summary.json").read_text()), out_dir)


def copy_to_paper(paths: list[Path], paper_dir: Path | None) -> None:
    """Copy generated ``tables/*`` and ``figures/*`` files into ``paper_dir`` when it exists."""
    if paper_dir is None or not Path(paper_dir).is_dir():
        return
    for p in paths:
        dest = Path(paper_dir) / p.parent.name / p.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, dest)


def run(ctx: StageContext, paper_dir: Path | None = PAPER_DIR) -> None:
    paths = build_report(ctx.out_dir, paper_dir)
    print(f"wrote {len(paths)} table and figure files to {ctx.out_dir}/tables, {ctx.out_dir}/figures"
          + (f" and {paper_dir}" if paper_dir is not None and Path(paper_dir).is_dir() else ""))
