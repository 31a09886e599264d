"""Hase et al.'s (2023) regression table and the directional test per estimator and score: R²(layer),
R²(effect), R²(layer × effect), ΔR² with its BC bootstrap CI, no-signal expectation and case-permutation
p; the within-layer correlation r_w with its CI and one-sided p; H1 per pair by the paired swap test.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats

from causaleval.analysis.effects import HALVES, _case_counts, case_layer_arrays, common_rows, present_estimators
from causaleval.analysis.spec import AnalysisSpec
from causaleval.inference.directional import resample_cases, within_layer_r
from causaleval.inference.h1 import ANALYZE_MEASURES, MEANINGFUL, PRIMARY, minimum_detectable_difference, swap_test, verdict
from causaleval.inference.regression import case_permutation_test, signed_r2_parts, weighted_r2
from causaleval.inference.reliability import half_correlation, spearman_brown, split_half


def fit_r2(data: pd.DataFrame, score: str, estimator: str) -> dict:
    """R² of layer, effect and both models and ΔR² with the nested F-test (statsmodels OLS).

    Both = ``score ~ C(layer) * effect`` (Hase et al. 2023): a separate intercept and effect slope per layer.
    """
    eff = f"effect_{estimator}"
    d = data[[score, eff, "layer", "case_id"]]
    m_layer = smf.ols(f"{score} ~ C(layer)", d).fit()
    m_eff = smf.ols(f"{score} ~ {eff}", d).fit()
    m_both = smf.ols(f"{score} ~ C(layer) * {eff}", d).fit()
    f_stat, p_f, df_num = m_both.compare_f_test(m_layer)
    return dict(r2_layer=m_layer.rsquared, r2_effect=m_eff.rsquared, r2_both=m_both.rsquared,
                delta_r2=m_both.rsquared - m_layer.rsquared, f=float(f_stat), f_df_num=float(df_num),
                f_df_den=float(m_both.df_resid), p_f=float(p_f), n_cases=int(d.case_id.nunique()), n_rows=len(d))


def bootstrap_weights(n_cases: int, n_boot: int, seed: int) -> np.ndarray:
    """Case multiplicities (B × cases) of a cluster bootstrap: cases drawn with replacement."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_cases, np.full(n_cases, 1.0 / n_cases), size=n_boot).astype(float)


def percentile_ci(samples: np.ndarray, level: float) -> tuple[float, float]:
    a = (1 - level) / 2
    s = samples[np.isfinite(samples)]
    if s.size == 0:
        return float("nan"), float("nan")
    return float(np.quantile(s, a)), float(np.quantile(s, 1 - a))


def bc_percentile_ci(samples: np.ndarray, estimate: float, level: float) -> tuple[float, float]:
    """Bias-corrected percentile CI (Efron 1987, BC without acceleration): the quantiles
    Φ(2 z0 ± z_{(1+level)/2}) of the bootstrap samples, z0 = Φ⁻¹(share of samples below the estimate).
    Corrects the upward bias of ΔR² under a case bootstrap (duplicated cases are fitted twice)."""
    s = samples[np.isfinite(samples)]
    if s.size == 0:
        return float("nan"), float("nan")
    share = (np.sum(s < estimate) + 0.5 * np.sum(s == estimate)) / s.size
    z0 = stats.norm.ppf(np.clip(share, 1 / (s.size + 1), s.size / (s.size + 1)))
    z = stats.norm.ppf((1 + level) / 2)
    lo, hi = stats.norm.cdf(2 * z0 - z), stats.norm.cdf(2 * z0 + z)
    return float(np.quantile(s, lo)), float(np.quantile(s, hi))


def half_arrays(halves: pd.DataFrame, estimator: str, layers: list, cases: list) -> tuple[np.ndarray, ...] | None:
    """(a, b, first) half-effect arrays (cases × layers) of one estimator, or None without halves."""
    if halves is None or halves.empty or estimator not in set(halves.estimator):
        return None
    h = halves[halves.estimator == estimator]
    return tuple(case_layer_arrays(h[h.half == name], "effect", layers, cases) for name in HALVES)


def disattenuated_diff(y: np.ndarray, xa: np.ndarray, xb: np.ndarray, ha: tuple, hb: tuple, n_boot: int,
                       rng: np.random.Generator, level: float) -> tuple[float, float, float]:
    """r_w,a / √ρ_a − r_w,b / √ρ_b (ρ the split-half reliabilities) with a case-bootstrap percentile CI
    that resamples the scores, effects and half-effects of the same cases together."""
    def value(idx):
        ra, rb = within_layer_r(y[idx], xa[idx]), within_layer_r(y[idx], xb[idx])
        rel_a = spearman_brown(half_correlation(ha[0][idx], ha[1][idx]))
        rel_b = spearman_brown(half_correlation(hb[0][idx], hb[1][idx]))
        with np.errstate(invalid="ignore"):
            return ra / np.sqrt(np.where(rel_a > 0, rel_a, np.nan)) - rb / np.sqrt(np.where(rel_b > 0, rel_b, np.nan))
    est = float(value(np.arange(y.shape[0])))
    lo, hi = percentile_ci(value(resample_cases(y.shape[0], n_boot, rng)), level)
    return est, lo, hi


def regression_tables(joined: pd.DataFrame, spec: AnalysisSpec, n_edit_cases: int | None = None,
                      halves: pd.DataFrame | None = None,
                      reliability: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per (estimator, score): Hase et al.'s R² and ΔR² [BC bootstrap CI] with the F-test (it assumes
    independent rows: descriptive), ΔR² split by slope sign, ΔR²'s no-signal expectation (the mean of
    its case-permutation null) and the excess over it, the case-permutation p (the evidence), and the
    directional r_w [case-bootstrap CI] with its one-sided case-permutation p; with ``halves``, the
    split-half reliability and the disattenuated r_w, excess and H1.  The reliability of a score whose
    rows are those of ``reliability`` (the table of
    :func:`causaleval.analysis.reliability.reliability_table`) is its pooled row, CI included, so one
    quantity has one interval; a score with other rows gets the same computation (same seed) on them.
    Per pair and measure (r_w primary,
    ΔR² descriptive): H1 by the paired swap test with the paired bootstrap interval, the one-sided
    bounds and the minimum detectable difference at 80 % power on this score's design."""
    ests = present_estimators(joined, spec)
    total = int(joined.case_id.nunique()) if n_edit_cases is None else n_edit_cases
    pooled = {} if reliability is None or reliability.empty else \
        {r.estimator: r for r in reliability.itertuples() if r.layer == -1}
    r2_rows, h1_rows = [], []
    for k, score in enumerate(spec.scores):
        data = common_rows(joined, score, ests)
        if data.case_id.nunique() < 3 or data.layer.nunique() < 2:
            continue
        counts = _case_counts(total, data)
        same_rows = len(data) == len(joined.dropna(subset=[f"effect_{e}" for e in ests]))
        layers = sorted(data.layer.unique())
        cases = sorted(data.case_id.unique())
        y = case_layer_arrays(data, score, layers, cases)
        w = bootstrap_weights(len(cases), spec.n_bootstrap, spec.seed)
        idx = resample_cases(len(cases), spec.n_bootstrap, np.random.default_rng([spec.seed, k, 55]))
        few = len(cases) < spec.min_clusters
        method = (f"too few clusters ({len(cases)} < {spec.min_clusters})" if few
                  else f"case permutation (B = {spec.n_permutations})")
        xs, hs = {}, {}
        for j, e in enumerate(ests):
            fit = fit_r2(data, score, e)
            x = xs[e] = case_layer_arrays(data, f"effect_{e}", layers, cases)
            r2l, r2b = weighted_r2(y, x, w)
            lo, hi = bc_percentile_ci(r2b - r2l, fit["delta_r2"], spec.ci_level)
            _, _, pos, neg = signed_r2_parts(y, x)
            r_w = float(within_layer_r(y, x))
            r_lo, r_hi = percentile_ci(within_layer_r(y[idx], x[idx]), spec.ci_level)
            perm = dict(p_cluster=np.nan, delta_null_mean=np.nan, p_r_w=np.nan, r_w_null_mean=np.nan)
            if not few:
                dr = case_permutation_test(y, x, spec.n_permutations, np.random.default_rng([spec.seed, k, j]))
                rw = case_permutation_test(y, x, spec.n_permutations, np.random.default_rng([spec.seed, k, j, 1]),
                                           statistic=within_layer_r)
                perm = dict(p_cluster=dr.p, delta_null_mean=dr.null_mean, p_r_w=rw.p, r_w_null_mean=rw.null_mean)
            row = dict(estimator=e, score=score, **fit, delta_ci_low=lo, delta_ci_high=hi, n_boot=spec.n_bootstrap,
                       delta_r2_pos=float(pos), delta_r2_neg=float(neg), **perm,
                       delta_excess=fit["delta_r2"] - perm["delta_null_mean"], r_w=r_w, r_w_ci_low=r_lo,
                       r_w_ci_high=r_hi, cluster_method=method, n_excluded=counts["n_excluded"],
                       reliability=np.nan, reliability_ci_low=np.nan, reliability_ci_high=np.nan,
                       r_w_disattenuated=np.nan, delta_excess_disattenuated=np.nan)
            h = half_arrays(halves, e, layers, cases)
            if h is not None:
                hs[e] = h
            r = None
            if e in pooled and same_rows:     # the reliability table's own computation: one value, one CI
                r = pooled[e]
            elif h is not None:               # this score's rows differ: the same computation on them
                r = split_half(h[0], h[1], spec.n_bootstrap, np.random.default_rng([spec.seed, j, 3]), spec.ci_level)
            if r is not None:
                root = np.sqrt(r.reliability) if r.reliability > 0 else np.nan
                row.update(reliability=r.reliability, reliability_ci_low=r.ci_low, reliability_ci_high=r.ci_high,
                           r_w_disattenuated=r_w / root,
                           delta_excess_disattenuated=row["delta_excess"] / r.reliability if r.reliability > 0
                           else np.nan)
            r2_rows.append(row)
        pairs = [(a, b) for a, b in spec.pairs if a in xs and b in xs]
        if not pairs:
            continue
        for m_i, measure in enumerate(ANALYZE_MEASURES):
            power = minimum_detectable_difference(y, spec.alpha, 0.8, spec.power_reps, seed=spec.seed + k,
                                                  measure=measure)
            for i, (a, b) in enumerate(pairs):
                res = swap_test(y, xs[a], xs[b], spec.n_permutations,
                                np.random.default_rng([spec.seed, k, 100 + i, m_i]), spec.ci_level, measure,
                                spec.n_bootstrap)
                dis = (np.nan,) * 3
                if measure == "r_w" and a in hs and b in hs:
                    dis = disattenuated_diff(y, xs[a], xs[b], hs[a], hs[b], spec.n_bootstrap,
                                             np.random.default_rng([spec.seed, k, 200 + i]), spec.ci_level)
                h1_rows.append(dict(
                    a=a, b=b, score=score, measure=measure, primary=measure == PRIMARY, delta_a=res.delta_a,
                    delta_b=res.delta_b, diff=res.diff, ci_low=res.ci_low, ci_high=res.ci_high, lower=res.lower,
                    upper=res.upper, p_one_sided=res.p_one_sided, mdd=power.mdd, n_perm=res.n_perm,
                    n_boot=res.n_boot, n_rows=len(data), **counts, diff_disattenuated=dis[0],
                    ci_low_disattenuated=dis[1], ci_high_disattenuated=dis[2],
                    method="paired swap test within case; paired case-bootstrap percentile interval",
                    verdict=verdict(res.diff, res.lower, res.upper, res.p_one_sided, power.mdd, spec.alpha,
                                    MEANINGFUL[measure], a, b)))
    return pd.DataFrame(r2_rows), pd.DataFrame(h1_rows)
