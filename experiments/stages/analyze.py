"""Stage ``analyze``: the hypothesis tests (Hase et al. 2023 design) over trace.parquet and edits.parquet.

Writes ``analysis/{joined,r2,h1,per_layer,within_case,argmax,excluded}.parquet`` (one ``variant``
column: the default effect, Hase et al.'s fraction restored, and the raw_ie / subject_last variants,
plus the flip-only noising / logit-difference rows where they exist) and ``analysis/summary.json``
(the headline numbers: the directional r_w and Hase et al.'s ΔR² with CIs, permutation p-values and
no-signal expectations; H1 on both with intervals, one-sided bounds and p, minimum detectable
difference and verdict; with ``trace_draws.parquet``, each effect's split-half reliability
(``analysis/reliability.parquet``) and the disattenuated numbers; the TE floor and the excluded cases),
then prints the headline answer.  When ``edits.parquet`` holds several editors, that is ROME's analysis;
each other editor gets the default analysis in ``editors/<editor>/analysis/`` and
``analysis/editors.parquet`` compares them (causaleval.analysis.editors).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from causaleval.analysis import AnalysisError, AnalysisSpec, analyze_all, headline, write_results
from causaleval.analysis.editors import analyze_editors, editor_names, primary_edits
from causaleval.runs.store import atomic_write_parquet
from experiments.context import StageContext

NAME = "analyze"
OUTPUTS = ("analysis/summary.json",)


def spec_from_config(config) -> AnalysisSpec:
    """The default analysis of a study config: window, bootstrap size and seed from the config."""
    return AnalysisSpec(window=config.analysis_window, n_bootstrap=config.n_bootstrap, seed=config.seed)


def analyze_folder(out_dir: Path, spec: AnalysisSpec) -> dict:
    """Run every analysis on a results folder; returns the summary (also written to analysis/summary.json)."""
    out_dir = Path(out_dir)
    inputs = {}
    for name in ("trace", "edits"):
        path = out_dir / f"{name}.parquet"
        if not path.is_file():
            raise AnalysisError(f"{path} is missing: run the {name if name == 'trace' else 'edit'} stage first "
                                f"(python -m experiments.main --out {out_dir})")
        inputs[name] = pd.read_parquet(path)
    run_info = json.loads((out_dir / "run.json").read_text()) if (out_dir / "run.json").is_file() else {}
    draws_path = out_dir / "trace_draws.parquet"
    draws = pd.read_parquet(draws_path) if draws_path.is_file() else None   # per-draw IE/TE: reliability
    edits = inputs["edits"]
    results = analyze_all(inputs["trace"], primary_edits(edits), spec, draws)
    path = write_results(results, out_dir, run_info)
    summary = json.loads(path.read_text())
    if len(editor_names(edits)) > 1:     # the other editors' tests and the comparison (docs/editors.md)
        table = analyze_editors(inputs["trace"], edits, spec, out_dir, summary, draws, run_info)
        atomic_write_parquet(out_dir / "analysis" / "editors.parquet", table)
    return summary


def run(ctx: StageContext) -> None:
    summary = analyze_folder(ctx.out_dir, spec_from_config(ctx.config))
    print(headline(summary))
