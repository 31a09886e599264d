"""Bootstrap confidence intervals over cases (scipy.stats.bootstrap; docs/estimands.md: every estimate reports
a point estimate and a bootstrap CI, resampling cases)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats


@dataclass(frozen=True)
class Interval:
    """A point estimate with a confidence interval; ``n`` is the number of cases."""

    estimate: float
    low: float
    high: float
    n: int


def bootstrap_ci(samples: Sequence[Sequence[float]] | Sequence[float], statistic: Callable = np.mean,
                 n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0,
                 method: str = "percentile") -> Interval:
    """Point estimate and CI of ``statistic`` (vectorised: it takes ``axis``) resampling cases.

    ``samples`` is one array of per-case values, or a tuple of equally long arrays resampled together
    (paired, e.g. (ie, te) for a ratio of means).  The CI collapses to the point when every resampled
    statistic is equal (e.g. all per-case values equal); fewer than two cases give a NaN interval.
    """
    arrays = _as_arrays(samples)
    n = len(arrays[0])
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    estimate = float(statistic(*arrays, axis=-1))
    if n < 2:
        return Interval(estimate, float("nan"), float("nan"), n)
    if all(np.all(a == a[0]) for a in arrays):
        return Interval(estimate, estimate, estimate, n)
    res = stats.bootstrap(arrays, statistic, n_resamples=n_resamples, confidence_level=confidence,
                          paired=len(arrays) > 1, vectorized=True, method=method,
                          rng=np.random.default_rng(seed))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return Interval(estimate, low, high, n)


def _as_arrays(samples) -> tuple[np.ndarray, ...]:
    if isinstance(samples, tuple):
        arrays = tuple(np.asarray(s, dtype=float) for s in samples)
    else:
        arrays = (np.asarray(samples, dtype=float),)
    if len({len(a) for a in arrays}) != 1:
        raise ValueError("paired samples must have equal lengths")
    return arrays


def ratio_of_means(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    """mean(a) / mean(b): the normalised effect as a ratio of means (docs/estimands.md)."""
    return np.mean(a, axis=axis) / np.mean(b, axis=axis)


def summarise_by(frame: pd.DataFrame, by: list[str], value: str = "ie", total: str | None = "te",
                 n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Per group of ``by``: the mean of ``value`` over rows (one per case) with a bootstrap CI, and,
    when ``total`` is given, the normalised effect as a ratio of means mean(value)/mean(total) with
    its paired bootstrap CI."""
    rows = []
    for key, g in frame.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        g = g.dropna(subset=[value])
        ci = bootstrap_ci(g[value].to_numpy(), n_resamples=n_resamples, confidence=confidence, seed=seed)
        row = dict(zip(by, key))
        row.update(estimate=ci.estimate, ci_low=ci.low, ci_high=ci.high, n_cases=ci.n)
        if total is not None:
            ok = g[total].notna()
            if ok.sum() and g.loc[ok, total].mean() != 0:
                r = bootstrap_ci((g.loc[ok, value].to_numpy(), g.loc[ok, total].to_numpy()), ratio_of_means,
                                 n_resamples=n_resamples, confidence=confidence, seed=seed)
                row.update(norm_estimate=r.estimate, norm_ci_low=r.low, norm_ci_high=r.high)
            else:
                row.update(norm_estimate=np.nan, norm_ci_low=np.nan, norm_ci_high=np.nan)
        rows.append(row)
    return pd.DataFrame(rows)
