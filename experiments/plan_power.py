"""``python -m experiments.plan_power --plan paper/plan.yaml``: the minimum detectable difference of the
plan's tests on each model's held-out design, simulated from the design alone, before any held-out score
exists (docs/confirmatory.md).

The design: the plan's edit layers and the number of held-out facts the analysis is expected to keep
(``n_facts`` of the plan, or every known fact the exploratory run did not study, counted from its
``facts_filter.parquet``; times the share of facts the exploratory run kept above the TE floor).  The
template: the exploratory run's own score table (its analysed facts × the plan's layers), whose fact rows
are drawn with replacement up to that number, so that the simulated scores have the real layer profile,
ceiling and correlation across layers.  On it :func:`causaleval.inference.h1.minimum_detectable_difference`
plants a signal in estimator a only and finds the expected difference the one-sided level-α test detects
with the plan's power.  Only exploratory data (already analysed and published) are read.

Writes the plan's ``power.table`` (CSV, one row per model and measure; the primary measure first).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from causaleval.analysis.confirmatory import covariate_measures, planned_mdd
from causaleval.analysis.effects import case_layer_arrays, common_rows
from causaleval.analysis.plan import AnalysisPlan, ModelDesign, PlanError, load_plan
from causaleval.errors import CausalEvalError
from causaleval.runs.store import atomic_write_text, file_sha256


def held_out_count(exploratory: Path) -> int:
    """Known facts of the exploratory run's filter that it did not study."""
    from experiments.config import excluded_case_ids

    table = pd.read_parquet(exploratory / "facts_filter.parquet", columns=["case_id", "known"])
    studied = excluded_case_ids(str(exploratory))
    return int((table.known & ~table.case_id.astype(str).isin(studied)).sum())


def design_template(plan: AnalysisPlan, m: ModelDesign) -> tuple[np.ndarray, int, int, float]:
    """(the exploratory score array on the plan's layers, facts planned, facts expected after the TE
    floor, the exploratory share kept)."""
    folder = Path(m.exploratory)
    for need in ("analysis/joined.parquet", "facts_filter.parquet", "analysis/summary.json"):
        if not (folder / need).is_file():
            raise PlanError(f"{plan.path}: models.{m.name}.exploratory {folder} has no {need}; name a published "
                            "exploratory run (e.g. paper/study)")
    joined = pd.read_parquet(folder / "analysis" / "joined.parquet")
    joined = joined[joined.variant == "default"] if "variant" in joined.columns else joined
    data = common_rows(joined, plan.primary.score, [plan.primary.a, plan.primary.b])
    missing = sorted(set(m.edit_layers) - set(data.layer.unique()))
    if missing:
        raise PlanError(f"{plan.path}: models.{m.name}.edit_layers {missing} were not edited by {folder}, so it "
                        "cannot be the design template; plan layers the exploratory run has")
    cases = sorted(data.case_id.unique())
    y = case_layer_arrays(data, plan.primary.score, list(m.edit_layers), cases)
    n_edit = int(pd.read_parquet(folder / "edits.parquet", columns=["case_id"]).case_id.nunique())
    kept = len(cases) / n_edit
    planned = m.n_facts if m.n_facts is not None else held_out_count(folder)
    return y, planned, max(3, round(planned * kept)), kept


def covariate_template(plan: AnalysisPlan, m: ModelDesign) -> tuple[np.ndarray, np.ndarray]:
    """(scores, fact-level covariates z) of the exploratory run on the plan's layers, for a covariate
    measure (causaleval.analysis.withinfact.study_arrays: the same facts the analysis keeps)."""
    from causaleval.analysis.withinfact import read_run, study_arrays

    run = read_run(Path(m.exploratory))
    arr = study_arrays(run.trace, run.edits, run.facts, plan.spec(), outcome=plan.primary.score,
                       layers=list(m.edit_layers))
    return arr.y, arr.z


def power_rows(plan: AnalysisPlan, models: list[str] | None = None) -> pd.DataFrame:
    """One row per model and measure (primary first): the MDD at the plan's α and power on the design."""
    rows = []
    p = plan.primary
    for name in models or list(plan.models):
        m = plan.model(name)
        template, planned, expected, kept = design_template(plan, m)
        draw = np.random.default_rng([plan.seed, 7]).integers(0, template.shape[0], expected)
        y = template[draw]
        for role, measure in [("primary", p.measure)] + [("secondary", s) for s in plan.secondary_measures
                                                         if s != p.measure]:
            if measure in covariate_measures():
                yc, z = covariate_template(plan, m)
                pick = np.random.default_rng([plan.seed, 7]).integers(0, yc.shape[0], expected)
                mdd = planned_mdd(yc[pick], measure, p.alpha, p.power, p.power_reps, plan.seed, z[pick])
            else:
                mdd = planned_mdd(y, measure, p.alpha, p.power, p.power_reps, plan.seed)
            rows.append(dict(model=name, role=role, measure=measure, score=p.score, pair=f"{p.a}-{p.b}",
                             alpha=p.alpha, power=p.power, reps=p.power_reps, n_facts_planned=planned,
                             n_facts_expected=expected, share_kept_exploratory=round(kept, 4),
                             layers=" ".join(map(str, m.edit_layers)), template=m.exploratory,
                             template_facts=template.shape[0], mdd=mdd,
                             margin=p.margin if role == "primary" else np.nan,
                             plan_sha256=file_sha256(plan.path)))
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.plan_power", description=__doc__.splitlines()[0])
    ap.add_argument("--plan", type=Path, default=Path("paper/plan.yaml"), help="the analysis plan (default: paper/plan.yaml)")
    ap.add_argument("--model", action="append", default=None, help="only this model of the plan (repeatable)")
    ap.add_argument("--out", type=Path, default=None, help="the table to write (default: the plan's power.table)")
    args = ap.parse_args(argv)
    try:
        plan = load_plan(args.plan)
        table = power_rows(plan, args.model)
    except CausalEvalError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = args.out or Path(plan.mdd_table)
    atomic_write_text(out, table.to_csv(index=False, float_format="%.6g"))
    print(table[["model", "role", "measure", "n_facts_planned", "n_facts_expected", "mdd", "margin"]].to_string(index=False))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
