"""The primary test of an analysis plan (:mod:`causaleval.analysis.plan`), computed exactly as the plan
fixes it: H1 on the plan's measure of the plan's score, T_a − T_b one-sided, by the paired swap test
within fact with the paired fact-bootstrap interval (:func:`causaleval.inference.h1.swap_test`), its
minimum detectable difference on the analysed design and the verdict at the plan's margin.  Everything
else an analysis reports is secondary (:func:`secondary_rows`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from causaleval.analysis.effects import case_layer_arrays, common_rows
from causaleval.analysis.plan import AnalysisPlan
from causaleval.analysis.spec import AnalysisError
from causaleval.inference.h1 import minimum_detectable_difference, swap_test, verdict


def covariate_measures() -> frozenset:
    """The registry's measures that take fact-level covariates z (none before they exist)."""
    from causaleval.inference import h1

    return frozenset(getattr(h1, "COVARIATE_MEASURES", ()))


def primary_result(joined: pd.DataFrame, plan: AnalysisPlan) -> dict:
    """The plan's primary test on the analysed rows ``joined`` (the default analysis of the plan's spec)."""
    p = plan.primary
    for e in (p.a, p.b):
        if f"effect_{e}" not in joined.columns:
            raise AnalysisError(f"the plan's primary test needs estimator {e!r}, which the trace table lacks")
    data = common_rows(joined, p.score, [p.a, p.b])
    layers, cases = sorted(data.layer.unique()), sorted(data.case_id.unique())
    y = case_layer_arrays(data, p.score, layers, cases)
    xa, xb = (case_layer_arrays(data, f"effect_{e}", layers, cases) for e in (p.a, p.b))
    return primary_test(y, xa, xb, plan, layers)


def primary_result_with_covariates(trace: pd.DataFrame, edits: pd.DataFrame, facts: pd.DataFrame,
                                   plan: AnalysisPlan) -> dict:
    """The primary test of a covariate measure: the arrays and the fact-level covariates z (log p(o_true),
    each estimator's TE, relation indicators) of :func:`causaleval.analysis.withinfact.study_arrays`."""
    from causaleval.analysis.withinfact import study_arrays

    p = plan.primary
    arr = study_arrays(trace, edits, facts, plan.spec(), outcome=p.score)
    return primary_test(arr.y, arr.x[p.a], arr.x[p.b], plan, arr.layers, arr.z)


def planned_mdd(y: np.ndarray, measure: str, alpha: float, power: float, reps: int, seed: int,
                z: np.ndarray | None = None) -> float:
    """:func:`~causaleval.inference.h1.minimum_detectable_difference` of ``measure`` on the design of ``y``
    (``z``: the fact-level covariates of a covariate measure)."""
    return minimum_detectable_difference(y, alpha, power, reps, seed=seed, measure=measure, z=z).mdd


def primary_test(y: np.ndarray, xa: np.ndarray, xb: np.ndarray, plan: AnalysisPlan, layers: list,
                 z: np.ndarray | None = None) -> dict:
    """H1 on the plan's measure for (cases × layers) arrays: swap test, interval, MDD and verdict."""
    p = plan.primary
    cases = y.shape[0]
    if cases < 3 or len(layers) < 2:
        raise AnalysisError(f"the plan's primary test needs ≥ 3 facts and ≥ 2 layers; {cases} facts × "
                            f"{len(layers)} layers were analysed")
    extra = {} if z is None else {"z": z}
    res = swap_test(y, xa, xb, p.n_permutations, np.random.default_rng([plan.seed, 29]), 1 - p.alpha,
                    p.measure, p.n_bootstrap, **extra)
    mdd = planned_mdd(y, p.measure, p.alpha, p.power, p.power_reps, plan.seed, z)
    return dict(measure=p.measure, score=p.score, a=p.a, b=p.b, direction=p.direction, alpha=p.alpha,
                margin=p.margin, margin_reason=p.margin_reason, wording=plan.primary_sentence(),
                question=plan.question, delta_a=res.delta_a, delta_b=res.delta_b, diff=res.diff,
                ci_low=res.ci_low, ci_high=res.ci_high, lower=res.lower, upper=res.upper,
                p_one_sided=res.p_one_sided, n_perm=res.n_perm, n_boot=res.n_boot, mdd=mdd,
                n_cases=cases, n_layers=len(layers), layers=[int(x) for x in layers],
                verdict=verdict(res.diff, res.lower, res.upper, res.p_one_sided, mdd, p.alpha, p.margin,
                                p.a, p.b))


def secondary_rows(h1: pd.DataFrame, plan: AnalysisPlan) -> pd.DataFrame:
    """Every H1 row of an analysis, each marked ``secondary`` (the primary test is :func:`primary_result`)."""
    if h1.empty:
        return h1
    return h1.assign(role="secondary", plan_measure=plan.primary.measure)
