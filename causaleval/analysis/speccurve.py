"""The specification curve of H1 (Simonsohn, Simmons & Nelson 2020; Steegen et al. 2016's multiverse):
every defensible way of asking "does estimator a's localisation predict edit success better than b's?"
and the joint test over all of them.

Choices (:func:`specifications`): measure (:data:`SPEC_MEASURES`, keys of
:data:`causaleval.inference.h1.MEASURES`) × effect (fraction restored, raw IE) × token rule (max from the
first subject token, the last subject token) × layer set (all edit layers; the layers where edits work,
mean rewrite score ≥ 0.5) × outcome (rewrite, paraphrase, neighbourhood score, the post-edit log-odds
margin) × site (component and window) × metric (probability, logit difference).  Sites and metrics are
those the run traced for every fact with every estimator of the pairs (:func:`traced_choices`): the
study presets trace the MLP at window 5 for every fact, other windows and the residual stream for the
heatmap facts only, the attention not at all, and the logit difference for flip only, so on those runs
the site and the metric are one choice each; a run that traces more gets them as choices.

Per specification: H1 = T_a − T_b with a paired case-bootstrap percentile CI (or, with ``n_boot = 0``,
diff ± z·SD of its swap null, the permutation standard error: cheaper, and close where the difference
is small) and the two-sided swap p.  Joint inference: the *same* swap draws (one coin per fact, shared by every specification) give a
null curve per draw; its median and its share of specifications significant in each direction
(against each specification's own null quantiles) form the null distributions of the observed median
and shares (p = share of null draws at least as extreme).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import product

import numpy as np
import pandas as pd
from scipy import stats

from causaleval.analysis.spec import AnalysisError, AnalysisSpec
from causaleval.analysis.withinfact import (
    OUTCOMES,
    RunTables,
    study_arrays,
    working_layers,
)
from causaleval.inference.h1 import (
    COVARIATE_MEASURES,
    paired_bootstrap,
    standardise_by_layer,
    statistic,
)

SPEC_MEASURES = ("r_w", "r_w_rank", "twoway", "twoway_rank", "r_w_rank_adj", "twoway_rank_adj")
EFFECTS = ("fraction", "raw")
TOKEN_RULES = ("max", "subject_last")
LAYER_SETS = ("all", "working")
SITES = ("mlp 5",)
METRICS = ("p",)
CHOICES = ("measure", "effect", "token_rule", "layer_set", "outcome", "site", "metric")


@dataclass(frozen=True)
class CurveSpec:
    """Swap draws and bootstrap resamples per specification (0: the interval from the swap null's SD),
    α of each specification's test, seed."""

    n_perm: int = 300
    n_boot: int = 200
    alpha: float = 0.05
    level: float = 0.95
    seed: int = 0


def specifications(measures=SPEC_MEASURES, effects=EFFECTS, token_rules=TOKEN_RULES, layer_sets=LAYER_SETS,
                   outcomes=OUTCOMES, sites=SITES, metrics=METRICS) -> pd.DataFrame:
    """Every combination of the choices (one row each); a site is ``"<component> <window>"``."""
    return pd.DataFrame(list(product(measures, effects, token_rules, layer_sets, outcomes, sites, metrics)),
                        columns=list(CHOICES))


def traced_choices(trace: pd.DataFrame, estimators, direction: str = "denoise") -> tuple[list[str], list[str]]:
    """(sites, metrics) traced for every fact by every one of ``estimators``: a (component, window,
    metric) counts when each estimator has rows for all the cases it has at all (heatmap-only sites and
    flip-only metrics drop out); sites are those with the probability metric, metrics those traced at
    every such site, so every (site, metric) of the grid exists.  MLP window 5 and ``p`` first."""
    ests = list(estimators)
    sel = trace[(trace.direction == direction) & trace.estimator.isin(ests)]
    cases = sel.groupby("estimator").case_id.nunique().reindex(ests)
    have = sel.groupby(["component", "window", "metric", "estimator"]).case_id.nunique().unstack("estimator")
    full = have.reindex(columns=ests).eq(cases).all(axis=1)
    keys = {(c, int(w), m) for (c, w, m), ok in full.items() if ok}
    sites = sorted({(c, w) for c, w, m in keys if m == "p"}, key=lambda x: (x != ("mlp", 5), x))
    metrics = sorted({m for _, _, m in keys if all((c, w, m) in keys for c, w in sites)}, key=lambda x: (x != "p", x))
    return [f"{c} {w}" for c, w in sites], metrics


def spec_curve(run: RunTables, pairs=(("flip", "noise"), ("resample", "noise")), base: AnalysisSpec = AnalysisSpec(),
               curve: CurveSpec = CurveSpec(), specs: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-specification table, joint table) for each pair; see the module docstring."""
    if specs is None:
        sites, metrics = traced_choices(run.trace, sorted({e for pair in pairs for e in pair}), base.direction)
        specs = specifications(sites=sites or SITES, metrics=metrics or METRICS)
    for c, default in (("site", SITES[0]), ("metric", METRICS[0])):
        if c not in specs:
            specs = specs.assign(**{c: default})
    all_cases = np.array(sorted(run.edits.case_id.unique()))
    coins = np.random.default_rng([curve.seed, 1]).random((curve.n_perm, all_cases.size)) < 0.5
    working = working_layers(run.edits)
    rows, nulls = [], {p: [] for p in pairs}
    for (effect, token, layer_set, outcome, site, metric), g in specs.groupby(
            ["effect", "token_rule", "layer_set", "outcome", "site", "metric"], sort=False):
        component, window = site.split()
        spec = replace(base, effect=effect, token_rule=token, component=component, window=int(window), metric=metric)
        try:
            arr = study_arrays(run.trace, run.edits, run.facts, spec, outcome,
                               working if layer_set == "working" else None)
        except AnalysisError:
            continue
        coin = coins[:, np.searchsorted(all_cases, arr.cases)][:, :, None]
        for measure in g.measure:
            stat = statistic(measure, arr.z if measure in COVARIATE_MEASURES else None)
            for i, (a, b) in enumerate(pairs):
                if a not in arr.x or b not in arr.x:
                    continue
                za, zb = standardise_by_layer(arr.x[a]), standardise_by_layer(arr.x[b])
                diff = float(stat(arr.y, za) - stat(arr.y, zb))
                null = stat(arr.y, np.where(coin, zb, za)) - stat(arr.y, np.where(coin, za, zb))
                q = (1 - curve.level) / 2
                if curve.n_boot:
                    boot = paired_bootstrap(arr.y, za, zb, curve.n_boot, np.random.default_rng([curve.seed, 2, i]),
                                            measure, arr.z if measure in COVARIATE_MEASURES else None)
                    boot = boot[np.isfinite(boot)]
                    lo, hi = np.quantile(boot, [q, 1 - q]) if boot.size else (np.nan, np.nan)
                else:
                    half = stats.norm.ppf(1 - q) * np.nanstd(null)
                    lo, hi = diff - half, diff + half
                p = float((1 + np.sum(np.abs(null) >= abs(diff) - 1e-12)) / (curve.n_perm + 1))
                nulls[(a, b)].append(null)
                rows.append(dict(a=a, b=b, measure=measure, effect=effect, token_rule=token, layer_set=layer_set,
                                 outcome=outcome, site=site, metric=metric, diff=diff, ci_low=float(lo),
                                 ci_high=float(hi), p_two_sided=p,
                                 crit_low=float(np.quantile(null, curve.alpha / 2)),
                                 crit_high=float(np.quantile(null, 1 - curve.alpha / 2)),
                                 n_cases=len(arr.cases), n_layers=len(arr.layers), n_perm=curve.n_perm,
                                 n_boot=curve.n_boot,
                                 interval="case bootstrap" if curve.n_boot else "swap-null standard error"))
    table = pd.DataFrame(rows)
    if table.empty:
        raise AnalysisError("no specification of the curve could be computed from this run")
    table["significant"] = np.where(table["diff"] > table.crit_high, 1, np.where(table["diff"] < table.crit_low, -1, 0))
    joint = [joint_test(table[(table.a == a) & (table.b == b)], np.column_stack(nulls[(a, b)]), a, b)
             for a, b in pairs if nulls[(a, b)]]
    return table, pd.DataFrame(joint)


def joint_test(table: pd.DataFrame, null: np.ndarray, a: str, b: str) -> dict:
    """The curve's median and shares significant (positive, negative) with their swap-null p-values;
    ``null`` is draws × specifications in the order of ``table``'s rows."""
    lo, hi = table.crit_low.to_numpy(), table.crit_high.to_numpy()
    med, med_null = float(np.median(table["diff"])), np.median(null, 1)
    pos, neg = float(np.mean(table.significant == 1)), float(np.mean(table.significant == -1))
    pos_null, neg_null = np.mean(null > hi, 1), np.mean(null < lo, 1)
    n = null.shape[0]
    pv = lambda k: float((1 + k) / (n + 1))
    return dict(a=a, b=b, n_specs=len(table), median=med, median_null_mean=float(med_null.mean()),
                p_median=pv(np.sum(np.abs(med_null - med_null.mean()) >= abs(med - med_null.mean()) - 1e-12)),
                share_positive=pos, p_share_positive=pv(np.sum(pos_null >= pos - 1e-12)),
                share_negative=neg, p_share_negative=pv(np.sum(neg_null >= neg - 1e-12)),
                share_positive_null_mean=float(pos_null.mean()), share_negative_null_mean=float(neg_null.mean()),
                n_perm=n)
