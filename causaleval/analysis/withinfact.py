"""The within-fact question with its confounders, from a finished run's trace, edit and fact tables.

* :func:`study_arrays` — the (case × layer) score, effect and covariate arrays of one specification
  (the analysis spec's effect rule, one outcome, a layer set);
* :func:`estimator_table` — per outcome, estimator and measure of :data:`causaleval.inference.h1.MEASURES`
  the value with a case-bootstrap CI, its whole-fact permutation null mean and one-sided p;
  with the fact-level covariates (log p(o_true), each estimator's TE) as *baseline predictors* beside
  the localisers, and relation's share of the within-layer score variance;
* :func:`h1_table` — H1 (a − b) on every measure by the paired swap test (causaleval.inference.h1);
* :func:`relation_table` — per relation r_w and r_w_rank (a forest) and a heterogeneity test (the
  spread of the per-relation values against whole-fact permutations of the relation labels);
* :func:`position_table` — which token role the max over positions lands on, per estimator and layer.

Outcome ``margin``: the post-edit log-odds margin log p_after(o_new) − log p_after(o_true), each
probability clipped below at :data:`MARGIN_CLIP` — off the rewrite score's ceiling (Meng et al. 2022
report the same pair of probabilities as efficacy magnitude).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from causaleval.analysis.editors import primary_edits
from causaleval.analysis.effects import (
    case_layer_arrays,
    exclusions,
    join_effects,
    localisation_effects,
)
from causaleval.analysis.spec import AnalysisError, AnalysisSpec
from causaleval.inference.directional import resample_cases
from causaleval.inference.h1 import (
    COVARIATE_MEASURES,
    MEANINGFUL,
    MEASURES,
    statistic,
    swap_test,
)
from causaleval.inference.withinfact import rank_within_layer

MARGIN_CLIP = 1e-12
OUTCOMES = ("rewrite_score", "paraphrase_score", "neighborhood_score", "margin")
WITHIN_MEASURES = tuple(m for m in MEASURES if m != "delta_r2")
WORKING_SCORE = 0.5      # "layers where edits work": mean rewrite score at least this


def with_margin(edits: pd.DataFrame, clip: float = MARGIN_CLIP) -> pd.DataFrame:
    """``edits`` plus ``margin`` = log max(p_after_new, clip) − log max(p_after_true, clip)."""
    for c in ("p_after_new", "p_after_true"):
        if c not in edits.columns:
            raise AnalysisError(f"edits.parquet lacks {c}: rerun the edit stage with --force")
    return edits.assign(margin=np.log(np.maximum(edits.p_after_new, clip))
                        - np.log(np.maximum(edits.p_after_true, clip)))


def working_layers(edits: pd.DataFrame, threshold: float = WORKING_SCORE) -> list[int]:
    """Edit layers whose mean rewrite score is at least ``threshold``."""
    mean = edits.groupby("layer").rewrite_score.mean()
    return sorted(int(x) for x in mean.index[mean >= threshold])


@dataclass
class StudyArrays:
    """One specification's arrays: score ``y`` and effects ``x`` (cases × layers), covariates ``z``
    (cases × k, standardised columns named ``z_names``), each case's relation."""

    y: np.ndarray
    x: dict[str, np.ndarray]
    z: np.ndarray
    z_names: list[str]
    relation: np.ndarray
    cases: list
    layers: list


def study_arrays(trace: pd.DataFrame, edits: pd.DataFrame, facts: pd.DataFrame, spec: AnalysisSpec,
                 outcome: str = "rewrite_score", layers: list[int] | None = None) -> StudyArrays:
    """The arrays of the analysis spec's effect on one outcome: cases below any estimator's TE floor
    excluded (as in ``analyze``), rows with a missing score or effect dropped, ``layers`` kept."""
    if "p_true" not in facts.columns:
        raise AnalysisError("facts_filter.parquet lacks p_true: rerun the facts stage with --force")
    edits = with_margin(edits) if "margin" not in edits.columns else edits
    spec = replace(spec, scores=(outcome,))
    effects = localisation_effects(trace, spec)
    bad = set(exclusions(effects, spec).case_id)
    joined = join_effects(effects, edits, spec)
    joined = joined[~joined.case_id.isin(bad)]
    if layers is not None:
        joined = joined[joined.layer.isin(layers)]
    ests = [e for e in spec.estimators if f"effect_{e}" in joined.columns]
    joined = joined.dropna(subset=[outcome] + [f"effect_{e}" for e in ests])
    cases, lays = sorted(joined.case_id.unique()), sorted(joined.layer.unique())
    if len(cases) < 3 or len(lays) < 2:
        raise AnalysisError(f"{spec.describe()}, outcome {outcome}: too few cases or layers to analyse")
    te = effects.groupby(["estimator", "case_id"]).te.first().unstack(0).reindex(cases)
    fact = facts.drop_duplicates("case_id").set_index("case_id").reindex(cases)
    cols = {"log_p_true": np.log(np.maximum(fact.p_true.to_numpy(float), MARGIN_CLIP))}
    cols.update({f"te_{e}": te[e].to_numpy(float) for e in ests})
    relation = joined.drop_duplicates("case_id").set_index("case_id").relation_id.reindex(cases).to_numpy()
    for r in sorted(set(relation))[1:]:
        cols[f"relation_{r}"] = (relation == r).astype(float)
    z = np.column_stack(list(cols.values()))
    z = (z - np.nanmean(z, 0)) / np.where(np.nanstd(z, 0) > 0, np.nanstd(z, 0), 1.0)
    return StudyArrays(case_layer_arrays(joined, outcome, lays, cases),
                       {e: case_layer_arrays(joined, f"effect_{e}", lays, cases) for e in ests},
                       np.nan_to_num(z), list(cols), relation, cases, lays)


def _value(measure: str, y: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    return statistic(measure, z if measure in COVARIATE_MEASURES else None)(y, x)


def association(measure: str, y: np.ndarray, x: np.ndarray, z: np.ndarray, n_boot: int, n_perm: int,
                seed: int, level: float = 0.95) -> dict:
    """One measure's value, case-bootstrap percentile CI and whole-fact permutation test (the score
    profiles permuted across facts; the null mean is what "no association" looks like on this design,
    one-sided p against a positive association)."""
    rng = np.random.default_rng(seed)
    est = float(_value(measure, y, x, z))
    idx = resample_cases(y.shape[0], n_boot, rng)
    boot = np.asarray(_value(measure, y[idx], x[idx], z[idx]))
    boot = boot[np.isfinite(boot)]
    a = (1 - level) / 2
    lo, hi = np.quantile(boot, [a, 1 - a]) if boot.size else (np.nan, np.nan)
    perm = np.stack([rng.permutation(y.shape[0]) for _ in range(n_perm)])
    null = _value(measure, y[perm], x, z)
    p = float((1 + np.sum(null >= est - 1e-12)) / (n_perm + 1))
    return dict(value=est, ci_low=float(lo), ci_high=float(hi), null_mean=float(np.nanmean(null)),
                p_one_sided=p, n_boot=n_boot, n_perm=n_perm)


def relation_share(y: np.ndarray, relation: np.ndarray, rank: bool = False) -> float:
    """Relation's share of the within-layer score variance: 1 − SS(score − relation × layer means) /
    SS(score − layer means) (on within-layer ranks with ``rank``)."""
    v = rank_within_layer(y) if rank else y
    m = np.isfinite(v)
    within = np.where(m, v - np.nanmean(v, 0), 0.0)
    res = np.zeros_like(within)
    for r in np.unique(relation):
        g = relation == r
        res[g] = np.where(m[g], v[g] - np.nanmean(np.where(m[g], v[g], np.nan), 0), 0.0)
    return float(1 - np.sum(res ** 2) / np.sum(within ** 2))


def estimator_table(arr: StudyArrays, outcome: str, n_boot: int = 300, n_perm: int = 300, seed: int = 0,
                    measures: tuple[str, ...] = WITHIN_MEASURES) -> pd.DataFrame:
    """Per measure, every localiser and baseline predictor (log p(o_true), each TE: a fact-level
    constant broadcast over layers; fact-removing measures do not apply to them), and relation's share."""
    rows = []
    predictors = {**{e: ("localiser", x) for e, x in arr.x.items()},
                  **{n: ("baseline", np.broadcast_to(arr.z[:, [i]], arr.y.shape).copy())
                     for i, n in enumerate(arr.z_names) if not n.startswith("relation_")}}
    for k, measure in enumerate(measures):
        for j, (name, (kind, x)) in enumerate(predictors.items()):
            if kind == "baseline" and (measure.startswith("twoway") or measure in COVARIATE_MEASURES):
                continue
            res = association(measure, arr.y, x, arr.z, n_boot, n_perm, seed + 1000 * k + j)
            rows.append(dict(outcome=outcome, measure=measure, predictor=name, kind=kind, **res,
                             n_cases=len(arr.cases), n_layers=len(arr.layers)))
    for rank in (False, True):
        rows.append(dict(outcome=outcome, measure="relation_share_rank" if rank else "relation_share",
                         predictor="relation", kind="baseline", value=relation_share(arr.y, arr.relation, rank),
                         n_cases=len(arr.cases), n_layers=len(arr.layers)))
    return pd.DataFrame(rows)


def h1_table(arr: StudyArrays, outcome: str, pairs, n_perm: int = 499, n_boot: int = 499, seed: int = 0,
             measures: tuple[str, ...] = WITHIN_MEASURES, level: float = 0.95) -> pd.DataFrame:
    """H1 (T_a − T_b) per measure and pair by the paired swap test with its paired bootstrap interval."""
    rows = []
    for k, measure in enumerate(measures):
        for i, (a, b) in enumerate(pairs):
            if a not in arr.x or b not in arr.x:
                continue
            r = swap_test(arr.y, arr.x[a], arr.x[b], n_perm, np.random.default_rng([seed, k, i]), level, measure,
                          n_boot, arr.z if measure in COVARIATE_MEASURES else None)
            rows.append(dict(outcome=outcome, measure=measure, a=a, b=b, delta_a=r.delta_a, delta_b=r.delta_b,
                             diff=r.diff, ci_low=r.ci_low, ci_high=r.ci_high, lower=r.lower, upper=r.upper,
                             p_one_sided=r.p_one_sided,
                             meaningful=MEANINGFUL[measure], n_perm=n_perm, n_boot=n_boot, n_cases=len(arr.cases)))
    return pd.DataFrame(rows)


def _per_relation(measure: str, y: np.ndarray, x: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """The measure within each group of cases (x may carry leading dims)."""
    return np.stack([MEASURES[measure](y[g], x[..., g, :]) for g in groups], -1)


def relation_table(arr: StudyArrays, outcome: str, pairs, n_boot: int = 300, n_perm: int = 300, seed: int = 0,
                   measures: tuple[str, ...] = ("r_w", "r_w_rank"), level: float = 0.95) -> pd.DataFrame:
    """Per relation, estimator (and pair difference) and measure: the value with a case-bootstrap CI
    within the relation (a forest), and the heterogeneity test: the case-weighted SD of the per-relation
    values against its null under whole-fact permutations of the relation labels (p = share ≥ observed)."""
    rng = np.random.default_rng(seed)
    rels = sorted(set(arr.relation))
    rows = []
    targets = {e: (x, None) for e, x in arr.x.items()}
    targets.update({f"{a} - {b}": (arr.x[a], arr.x[b]) for a, b in pairs if a in arr.x and b in arr.x})
    labels = np.stack([rng.permutation(arr.relation) for _ in range(n_perm)])
    for measure in measures:
        for name, (xa, xb) in targets.items():
            def stat(groups, measure=measure, xa=xa, xb=xb):
                va = _per_relation(measure, arr.y, xa, groups)
                return va if xb is None else va - _per_relation(measure, arr.y, xb, groups)

            sizes = np.array([(arr.relation == r).sum() for r in rels], float)

            def spread(v, sizes=sizes):
                return np.sqrt(np.average((v - np.average(v, weights=sizes)) ** 2, weights=sizes))

            obs = stat([arr.relation == r for r in rels])
            null = np.array([spread(stat([lab == r for r in rels])) for lab in labels])
            p_het = float((1 + np.sum(null >= spread(obs) - 1e-12)) / (n_perm + 1))
            for j, r in enumerate(rels):
                g = np.flatnonzero(arr.relation == r)
                idx = g[resample_cases(len(g), n_boot, rng)]
                boot = np.array([stat([i])[0] for i in idx]) if len(g) >= 3 else np.array([])
                boot = boot[np.isfinite(boot)]
                a = (1 - level) / 2
                lo, hi = np.quantile(boot, [a, 1 - a]) if boot.size else (np.nan, np.nan)
                rows.append(dict(outcome=outcome, measure=measure, target=name, relation=r, n_cases=len(g),
                                 value=float(obs[j]), ci_low=float(lo), ci_high=float(hi),
                                 spread=float(spread(obs)), spread_null_mean=float(null.mean()), p_heterogeneity=p_het,
                                 n_perm=n_perm))
    return pd.DataFrame(rows)


def position_table(trace: pd.DataFrame, spec: AnalysisSpec) -> pd.DataFrame:
    """Per estimator, layer and token role: the share of cases whose max over positions (from the first
    subject token) lies at a position of that role (the spec's effect rule; ties to the first position)."""
    sel = trace[(trace.component == spec.component) & (trace.window == spec.window)
                & (trace.direction == spec.direction) & (trace.metric == spec.metric)
                & trace.estimator.isin(spec.estimators) & (trace.role != "before_subject")]
    if sel.empty:
        raise AnalysisError(f"trace.parquet has no rows for {spec.describe()}")
    top = sel.sort_values("position").loc[lambda d: d.groupby(["estimator", "case_id", "layer"]).ie.idxmax()]
    counts = top.groupby(["estimator", "layer", "role"]).size().rename("n").reset_index()
    counts["share"] = counts.n / counts.groupby(["estimator", "layer"]).n.transform("sum")
    return counts


@dataclass
class RunTables:
    trace: pd.DataFrame
    edits: pd.DataFrame
    facts: pd.DataFrame


def read_run(folder: Path) -> RunTables:
    """trace, edits (the primary editor's) and facts_filter of a finished run (a clear error naming what is missing)."""
    folder = Path(folder)
    missing = [n for n in ("trace", "edits", "facts_filter") if not (folder / f"{n}.parquet").is_file()]
    if missing:
        raise AnalysisError(f"{folder} lacks {', '.join(m + '.parquet' for m in missing)}: point at a finished run")
    t, e, f = (pd.read_parquet(folder / f"{n}.parquet") for n in ("trace", "edits", "facts_filter"))
    return RunTables(t, with_margin(primary_edits(e)), f)


def withinfact_tables(run: RunTables, spec: AnalysisSpec = AnalysisSpec(), n_perm: int = 300, n_boot: int = 300,
                      outcomes: tuple[str, ...] = OUTCOMES,
                      relation_outcomes: tuple[str, ...] = ("rewrite_score",)) -> dict[str, pd.DataFrame]:
    """The estimator (with baselines) and H1 tables of one run per outcome, the relation table per
    ``relation_outcomes``, and the position table."""
    est, h1, rel = [], [], []
    for k, outcome in enumerate(outcomes):
        arr = study_arrays(run.trace, run.edits, run.facts, spec, outcome)
        est.append(estimator_table(arr, outcome, n_boot, n_perm, spec.seed + k))
        h1.append(h1_table(arr, outcome, spec.pairs[:2], n_perm, n_boot, spec.seed + k))
        if outcome in relation_outcomes:
            rel.append(relation_table(arr, outcome, spec.pairs[:2], n_boot, n_perm, spec.seed + k))
    return dict(withinfact=pd.concat(est, ignore_index=True), withinfact_h1=pd.concat(h1, ignore_index=True),
                relations=pd.concat(rel, ignore_index=True), positions=position_table(run.trace, spec))
