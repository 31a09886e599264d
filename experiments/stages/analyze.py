"""Stage ``analyze``: the hypothesis tests (Hase et al. 2023 design) over trace.parquet and edits.parquet.

Writes ``analysis/{joined,r2,h1,per_layer,within_case,argmax,excluded}.parquet`` (one ``variant``
column: the default effect, Hase et al.'s fraction restored, and the raw_ie / subject_last variants,
plus the flip-only noising / logit-difference rows where they exist) and ``analysis/summary.json``
(the headline numbers: the directional r_w and Hase et al.'s ΔR² with CIs, permutation p-values and
no-signal expectations; H1 on both with intervals, one-sided bounds and p, minimum detectable
difference and verdict; with ``trace_draws.parquet``, each effect's split-half reliability
(``analysis/reliability.parquet``) and the disattenuated numbers; the TE floor and the excluded cases),
then prints the headline answer.  Then the within-fact analyses (exploratory: the measures with
baseline predictors, the per-relation forest, the golden layer and the specification curve) into
``withinfact/*.parquet`` (causaleval.analysis.withinfact_outputs; setting ``withinfact_permutations``).
When ``edits.parquet`` holds several editors, that is ROME's analysis;
each other editor gets the default analysis in ``editors/<editor>/analysis/`` and
``analysis/editors.parquet`` compares them (causaleval.analysis.editors).

With an analysis plan (``--plan paper/plan.yaml``, setting ``plan``; docs/confirmatory.md) the analysis
uses the plan's specification, computes the plan's primary test and writes ``analysis/confirmatory.json``
(the label *confirmatory* or *exploratory* with its reasons, the plan's sha256 and commit, the primary
result); summary.json carries the same under ``plan`` and run.json under ``plan``.
"""

from __future__ import annotations

import json
from pathlib import Path

from causaleval.analysis import AnalysisError, AnalysisSpec, analyze_all, headline, write_results
from causaleval.analysis.editors import analyze_editors, editor_names, primary_edits
from causaleval.runs.store import atomic_write_parquet, read_parquet_checked
from experiments.context import StageContext

NAME = "analyze"
OUTPUTS = ("analysis/summary.json",)


def spec_from_config(config) -> AnalysisSpec:
    """The default analysis of a study config: window, bootstrap size and seed from the config."""
    return AnalysisSpec(window=config.analysis_window, n_bootstrap=config.n_bootstrap, seed=config.seed)


def analyze_folder(out_dir: Path, spec: AnalysisSpec, plan=None, model: str | None = None) -> dict:
    """Run every analysis on a results folder; returns the summary (also written to analysis/summary.json).
    With ``plan`` (an :class:`~causaleval.analysis.plan.AnalysisPlan`) and the run's ``model``: the plan's
    spec replaces ``spec``, overlap with the exploratory facts is refused before anything is read, and the
    label and primary result are added (``analysis/confirmatory.json``, summary.json's ``plan``)."""
    out_dir = Path(out_dir)
    run_info = json.loads((out_dir / "run.json").read_text()) if (out_dir / "run.json").is_file() else {}
    status = None
    if plan is not None:
        from experiments.confirm import confirmatory_status

        status = confirmatory_status(out_dir, plan, model or run_info.get("config", {}).get("model"), run_info)
        spec = plan.spec()
        print(status.describe())
    inputs = {}
    for name in ("trace", "edits"):
        path = out_dir / f"{name}.parquet"
        if not path.is_file():
            raise AnalysisError(f"{path} is missing: run the {name if name == 'trace' else 'edit'} stage first "
                                f"(python -m experiments.main --out {out_dir})")
        inputs[name] = read_parquet_checked(path)
    draws_path = out_dir / "trace_draws.parquet"
    draws = read_parquet_checked(draws_path) if draws_path.is_file() else None   # per-draw IE/TE: reliability
    edits = inputs["edits"]
    results = analyze_all(inputs["trace"], primary_edits(edits), spec, draws)
    if status is None:
        (out_dir / PLAN_RECORD).unlink(missing_ok=True)     # a record of an earlier planned analysis
        path = write_results(results, out_dir, run_info)
        return _with_editors(json.loads(path.read_text()), inputs["trace"], edits, spec, out_dir, draws, run_info)
    from causaleval.analysis.confirmatory import covariate_measures, primary_result, primary_result_with_covariates
    from causaleval.analysis.study import _finite
    from causaleval.runs.store import atomic_write_json

    if plan.primary.measure in covariate_measures():         # fact-level covariates from facts_filter.parquet
        if not (out_dir / "facts_filter.parquet").is_file():
            raise AnalysisError(f"{out_dir / 'facts_filter.parquet'} is missing: the plan's measure "
                                f"{plan.primary.measure} needs each fact's p(o_true); rerun the facts stage")
        primary = primary_result_with_covariates(inputs["trace"], primary_edits(edits),
                                                 read_parquet_checked(out_dir / "facts_filter.parquet"), plan)
    else:
        primary = primary_result(results[0].joined, plan)
    record = {**status.to_dict(), "primary": primary,
              "secondary": "every other number of this analysis (other measures, scores, pairs, variants)"}
    # the label first: a summary.json (the stage's finished mark) never exists without it
    atomic_write_json(out_dir / PLAN_RECORD, _finite(record))
    path = write_results(results, out_dir, run_info)
    summary = json.loads(path.read_text())
    summary["plan"] = _finite(record)
    atomic_write_json(path, summary)
    return _with_editors(summary, inputs["trace"], edits, spec, out_dir, draws, run_info)


def _with_editors(summary: dict, trace, edits, spec, out_dir: Path, draws, run_info: dict) -> dict:
    """With several editors in ``edits``: the other editors' tests and the comparison (docs/editors.md)."""
    from causaleval.analysis.problems import error_injection_rows, problem_grid, problem_names

    injected = error_injection_rows(edits)
    if len(editor_names(injected)) > 1:
        table = analyze_editors(trace, injected, spec, out_dir, summary, draws, run_info)
        atomic_write_parquet(out_dir / "analysis" / "editors.parquet", table)
    if problem_names(edits) != ["error_injection"]:          # docs/problems.md
        grid = problem_grid(trace, edits, spec, out_dir, summary, draws, run_info, editor_names(edits)[0])
        atomic_write_parquet(out_dir / "analysis" / "problems.parquet", grid)
    return summary


PLAN_RECORD = "analysis/confirmatory.json"


def plan_headline(summary: dict) -> str:
    """The primary result in the plan's words, with its label (empty without a plan)."""
    rec = summary.get("plan")
    if not rec:
        return ""
    p = rec["primary"]
    def fmt(x):
        return "n/a" if x is None else f"{x:.4f}"

    return (f"[{rec['label'].upper()}] {p['wording']}\n  {p['a']} − {p['b']} = {fmt(p['diff'])} "
            f"[{fmt(p['ci_low'])}, {fmt(p['ci_high'])}], one-sided lower bound {fmt(p['lower'])}, "
            f"p = {fmt(p['p_one_sided'])}, MDD {fmt(p['mdd'])} ({p['n_cases']} facts × {p['n_layers']} layers)\n"
            f"  → the evidence {p['verdict']}\n  (every other number is secondary)")


def run(ctx: StageContext) -> None:
    plan = None
    if ctx.config.plan:
        from causaleval.analysis.plan import load_plan

        plan = load_plan(ctx.config.plan)
    summary = analyze_folder(ctx.out_dir, spec_from_config(ctx.config), plan, Path(ctx.config.model).name)
    if plan is not None:
        print(plan_headline(summary))
    print(headline(summary))
    withinfact_outputs(ctx)


def withinfact_outputs(ctx: StageContext) -> list[Path]:
    """The within-fact measures with baseline predictors, the per-relation forest, the golden layer and
    the specification curve into ``withinfact/`` (exploratory; ``withinfact_permutations`` = 0 skips
    them).  A run they cannot be computed on (too few facts or layers, a facts table without p(o_true))
    gets a one-line note instead: the hypothesis tests above stand without them."""
    c = ctx.config
    if not c.withinfact_permutations:
        return []
    from causaleval.analysis.withinfact_outputs import WithinFactSettings, write_withinfact_outputs

    settings = WithinFactSettings(n_perm=c.withinfact_permutations, n_boot=c.withinfact_bootstrap,
                                  force=ctx.recompute)
    try:
        return write_withinfact_outputs(ctx.out_dir, settings, spec_from_config(c))
    except AnalysisError as err:
        print(f"[analyze] within-fact analyses not computed: {err}")
        return []
