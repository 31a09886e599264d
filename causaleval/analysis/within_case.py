"""Within-case (within-fact) measures: the Spearman correlation of each case's layer profiles and the
argmax-layer hit rate against a case-permutation chance level."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from causaleval.analysis.effects import (
    _case_counts,
    case_layer_arrays,
    common_rows,
    present_estimators,
)
from causaleval.analysis.spec import AnalysisSpec
from causaleval.inference.argmax import argmax_test
from causaleval.inference.h1 import standardise_by_layer
from causaleval.inference.regression import case_permutation_test
from causaleval.inference.withinfact import within_fact_spearman


def _mean_ci(values: np.ndarray, spec: AnalysisSpec, salt: int = 0) -> tuple[float, float, float]:
    v = values[np.isfinite(values)]
    if v.size < 3 or np.ptp(v) == 0:
        return float(np.mean(v)) if v.size else float("nan"), float("nan"), float("nan")
    res = stats.bootstrap((v,), np.mean, n_resamples=spec.n_bootstrap, confidence_level=spec.ci_level,
                          method="percentile", rng=np.random.default_rng(spec.seed + salt))
    return float(v.mean()), float(res.confidence_interval.low), float(res.confidence_interval.high)


def _wilcoxon_p(d: np.ndarray) -> float:
    """Wilcoxon signed-rank p of paired differences: exact without ties or zeros, else the normal
    approximation (scipy's default for ties is a slow resampling test: ≈ 5 s per call at 12 cases)."""
    if d.size < 3 or not np.any(d != 0):
        return float("nan")
    a = np.abs(d)
    ties = np.any(d == 0) or np.unique(a).size < a.size
    return float(stats.wilcoxon(d, method="asymptotic" if ties else "auto").pvalue)


def swap_spearman(y: np.ndarray, xa: np.ndarray, xb: np.ndarray, n_perm: int,
                  rng: np.random.Generator) -> tuple[float, float, float]:
    """(null mean, one-sided p of a > b, one-sided p of a < b) of the within-fact Spearman difference
    a − b under the paired swap test (each fact's two effect profiles exchanged with probability ½;
    effects standardised within layer)."""
    za, zb = standardise_by_layer(xa), standardise_by_layer(xb)
    obs = within_fact_spearman(y, za) - within_fact_spearman(y, zb)
    coin = rng.random((n_perm, y.shape[0]))[:, :, None] < 0.5
    null = within_fact_spearman(y, np.where(coin, zb, za)) - within_fact_spearman(y, np.where(coin, za, zb))
    return (float(np.nanmean(null)), float((1 + np.sum(null >= obs - 1e-12)) / (n_perm + 1)),
            float((1 + np.sum(null <= obs + 1e-12)) / (n_perm + 1)))


def within_case_tests(joined: pd.DataFrame, spec: AnalysisSpec, n_edit_cases: int | None = None
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Within-case rank correlation of layer profiles and the argmax-layer hit rate.

    Profiles: score and effect minus their mean over cases at each layer; per case the Spearman ρ across
    layers; the mean ρ over cases with a bootstrap CI, its no-association mean (``null_mean``: shared
    degenerate layers and fact offsets make it non-zero) and one-sided p from whole-fact permutations
    (``p_perm``); for pairs, the mean paired difference ρ_a − ρ_b with a bootstrap CI, a Wilcoxon
    signed-rank test (against 0: descriptive) and the paired swap test (``p_perm``, one-sided a > b, and
    ``p_perm_lower``, a < b, from the same draws; the estimators' profiles swapped within fact;
    ``null_mean`` its null mean).  Argmax: per case the tie-split hit of the raw
    effect profile's peak layer against the score's best layer; hit rate with a bootstrap CI over cases,
    against the case-permutation chance level (:mod:`causaleval.inference.argmax`).
    """
    ests = present_estimators(joined, spec)
    total = int(joined.case_id.nunique()) if n_edit_cases is None else n_edit_cases
    wc_rows, am_rows = [], []
    for k, score in enumerate(spec.scores):
        data = common_rows(joined, score, ests)
        layers = sorted(data.layer.unique())
        cases = sorted(data.case_id.unique())
        if len(layers) < 3 or len(cases) < 3:
            continue
        n_excl = _case_counts(total, data)["n_excluded"]
        y = case_layer_arrays(data, score, layers, cases)
        complete = ~np.isnan(y).any(1)
        rhos, xs = {}, {}
        for j, e in enumerate(ests):
            x = case_layer_arrays(data, f"effect_{e}", layers, cases)
            full = complete & ~np.isnan(x).any(1)
            yr, xr = y - np.nanmean(y, 0), x - np.nanmean(x, 0)
            rho = np.full(len(cases), np.nan)
            for i in np.flatnonzero(full):
                if np.ptp(xr[i]) > 0 and np.ptp(yr[i]) > 0:
                    rho[i] = stats.spearmanr(xr[i], yr[i]).statistic
            rhos[e], xs[e] = rho, x
            mean, lo, hi = _mean_ci(rho, spec)
            perm = case_permutation_test(y, x, spec.n_permutations, np.random.default_rng([spec.seed, k, j, 9]),
                                         statistic=within_fact_spearman)
            wc_rows.append(dict(score=score, estimator=e, a=e, b="", mean_rho=mean, ci_low=lo, ci_high=hi,
                                p=float("nan"), n_cases=int(np.isfinite(rho).sum()), n_layers=len(layers),
                                n_excluded=n_excl, null_mean=perm.null_mean, p_perm=perm.p))
            n = int(full.sum())
            if n < 3:
                continue
            res = argmax_test(x[full], y[full], spec.n_permutations, np.random.default_rng([spec.seed, k, j, 7]))
            _, lo, hi = _mean_ci(res.hits, spec, salt=11)
            am_rows.append(dict(score=score, estimator=e, hits=float(res.hits.sum()), n_cases=n,
                                hit_rate=res.hit_rate, ci_low=lo, ci_high=hi, n_layers=len(layers),
                                chance=res.chance, p=res.p, n_perm=res.n_perm, uniform_chance=1.0 / len(layers),
                                n_excluded=n_excl))
        for k2, (a, b) in enumerate(spec.pairs):
            if a not in rhos or b not in rhos:
                continue
            d = rhos[a] - rhos[b]
            mean, lo, hi = _mean_ci(d, spec, salt=k2 + 1)
            ok = d[np.isfinite(d)]
            p = _wilcoxon_p(ok)
            null_mean, p_swap, p_swap_lower = swap_spearman(y, xs[a], xs[b], spec.n_permutations,
                                              np.random.default_rng([spec.seed, k, k2, 13]))
            wc_rows.append(dict(score=score, estimator=f"{a} - {b}", a=a, b=b, mean_rho=mean, ci_low=lo,
                                ci_high=hi, p=p, n_cases=int(ok.size), n_layers=len(layers), n_excluded=n_excl,
                                null_mean=null_mean, p_perm=p_swap, p_perm_lower=p_swap_lower))
    return pd.DataFrame(wc_rows), pd.DataFrame(am_rows)
