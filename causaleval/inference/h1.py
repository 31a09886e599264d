"""H1: does estimator a's localisation predict edit success better than estimator b's?

Two measures (:data:`MEASURES`), each compared as a paired difference T_a − T_b over the same rows:

* ``r_w`` (primary, directional): the within-layer correlation of :mod:`causaleval.inference.directional`;
  a > b means a's larger effects go with better edits more consistently;
* ``delta_r2`` (Hase et al. 2023, descriptive): ΔR² of score ~ C(layer) × effect over score ~ C(layer),
  sign-blind (a negative slope counts as much as a positive one).

Paired swap test (a permutation test within case): under H0 the two estimators' effect profiles of a
case are exchangeable, so swapping them in a random subset of cases leaves the distribution of the
difference unchanged.  Before swapping, each estimator's effect is standardised within layer (over
cases); both measures are invariant to that, so the observed values do not change, and the two columns
then share their per-layer location and scale.  One-sided p = (1 + #{diff* ≥ diff}) / (B + 1).

Interval: the paired case bootstrap (whole cases resampled, both estimators together), percentile
bounds: the two-sided ``level`` interval and the one-sided bounds ``lower`` / ``upper`` ("a exceeds b by
at most ``upper`` at 95 %").  Its coverage under the null and under a planted difference, also when a
case's rows are correlated across layers, is measured by ``causaleval.inference.calibration`` (the former
leave-one-case-out jackknife interval was about 1.4× too wide there).

Power: :func:`minimum_detectable_difference` simulates the run's own design (its score array, missing
rows and layers) with estimator b carrying no signal and estimator a carrying a planted share of the
score's within-layer variation, and returns the expected difference at which the level-α test rejects
in 80 % of replicates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from causaleval.inference.directional import resample_cases, within_layer_r
from causaleval.inference.regression import delta_r2, weighted_r2
from causaleval.inference.withinfact import (
    r_w_adj,
    r_w_rank,
    r_w_rank_adj,
    twoway_r,
    twoway_rank,
    twoway_rank_adj,
)

# The registry of H1 measures (key → statistic(y, x[, z])); docs/estimands.md documents each key, an
# analysis plan names its primary measure by key.  The keys of COVARIATE_MEASURES take the fact-level
# covariates z (cases × k) as a third argument.
MEASURES = {"r_w": within_layer_r, "delta_r2": delta_r2, "r_w_rank": r_w_rank, "twoway": twoway_r,
            "twoway_rank": twoway_rank, "r_w_adj": r_w_adj, "r_w_rank_adj": r_w_rank_adj,
            "twoway_rank_adj": twoway_rank_adj}
COVARIATE_MEASURES = frozenset({"r_w_adj", "r_w_rank_adj", "twoway_rank_adj"})
PRIMARY = "r_w"
# The measures of the analyze stage's h1 table; the others are reported by causaleval.analysis.withinfact.
ANALYZE_MEASURES = ("r_w", "delta_r2")
# Differences too small to matter for the question: for ΔR², the largest ΔR² in Hase et al. (2023,
# Table 3); for the correlations, a small correlation (Cohen 1988: r = 0.1).  A test that cannot
# detect them is inconclusive.
MEANINGFUL = {"delta_r2": 0.03, **{k: 0.1 for k in MEASURES if k != "delta_r2"}}


def statistic(measure: str, z: np.ndarray | None = None):
    """The statistic (y, x) → T of ``measure``; a covariate measure binds ``z`` (an error without it)."""
    if measure not in MEASURES:
        raise ValueError(f"unknown H1 measure {measure!r}: choose one of {sorted(MEASURES)}")
    fn = MEASURES[measure]
    if measure not in COVARIATE_MEASURES:
        return fn
    if z is None:
        raise ValueError(f"H1 measure {measure!r} needs the fact-level covariates z (cases × k)")
    return lambda y, x, zz=z: fn(y, x, zz)
MEANINGFUL_DIFF = MEANINGFUL["delta_r2"]


def standardise_by_layer(x: np.ndarray) -> np.ndarray:
    """(x − mean_l) / sd_l within each layer over cases (NaN kept; a constant layer becomes 0)."""
    mu = np.nanmean(x, axis=-2, keepdims=True)
    sd = np.nanstd(x, axis=-2, keepdims=True)
    return np.where(sd > 0, (x - mu) / np.where(sd > 0, sd, 1.0), 0.0) * np.where(np.isnan(x), np.nan, 1.0)


@dataclass(frozen=True)
class H1Result:
    """T_a − T_b of one measure with a bootstrap CI, one-sided bounds and the swap test's one-sided p."""

    measure: str
    delta_a: float
    delta_b: float
    diff: float
    ci_low: float
    ci_high: float
    lower: float
    upper: float
    p_one_sided: float
    n_perm: int
    n_boot: int


def paired_bootstrap(y: np.ndarray, xa: np.ndarray, xb: np.ndarray, n_boot: int, rng: np.random.Generator,
                     measure: str = PRIMARY, z: np.ndarray | None = None) -> np.ndarray:
    """T_a − T_b on ``n_boot`` case resamples (the same cases for both estimators)."""
    idx = resample_cases(y.shape[0], n_boot, rng)
    if measure == "delta_r2":
        w = np.zeros((n_boot, y.shape[0]))
        np.add.at(w, (np.repeat(np.arange(n_boot), y.shape[0]), idx.ravel()), 1.0)
        la, ba = weighted_r2(y, xa, w)
        lb, bb = weighted_r2(y, xb, w)
        return (ba - la) - (bb - lb)
    stat = statistic(measure, None if z is None else z[idx])
    return stat(y[idx], xa[idx]) - stat(y[idx], xb[idx])


def swap_test(y: np.ndarray, xa: np.ndarray, xb: np.ndarray, n_perm: int, rng: np.random.Generator,
              level: float = 0.95, measure: str = PRIMARY, n_boot: int = 1000,
              z: np.ndarray | None = None) -> H1Result:
    """The paired swap test of H0: T_a = T_b against T_a > T_b, with the paired bootstrap interval
    (``z``: the fact-level covariates of a covariate measure)."""
    stat = statistic(measure, z)
    za, zb = standardise_by_layer(xa), standardise_by_layer(xb)
    da, db = float(stat(y, za)), float(stat(y, zb))
    diff = da - db
    coin = rng.random((n_perm, za.shape[0]))[:, :, None] < 0.5
    null = stat(y, np.where(coin, zb, za)) - stat(y, np.where(coin, za, zb))
    p = float((1 + np.sum(null >= diff - 1e-12)) / (n_perm + 1))
    boot = paired_bootstrap(y, za, zb, n_boot, rng, measure, z)
    boot = boot[np.isfinite(boot)]
    a = (1 - level) / 2
    lo, hi, lower, upper = (np.quantile(boot, [a, 1 - a, 1 - level, level]) if boot.size
                            else (np.nan,) * 4)
    return H1Result(measure, da, db, diff, float(lo), float(hi), float(lower), float(upper), p, n_perm, n_boot)


def _design(y: np.ndarray) -> np.ndarray:
    """The score's within-layer standardised variation (what a perfectly informative effect tracks)."""
    return np.nan_to_num(standardise_by_layer(y))


def simulated_differences(y: np.ndarray, loading: float, reps: int, rng: np.random.Generator,
                          measure: str = "delta_r2", z: np.ndarray | None = None) -> np.ndarray:
    """T_a − T_b on the design of ``y`` with x_a = loading · ỹ + ε_a, x_b = ε_b (ε standard normal,
    ỹ the score standardised within layer; rows missing in ``y`` stay missing)."""
    base = _design(y)
    eps = rng.standard_normal((2, reps) + y.shape)
    xa, xb = loading * base + eps[0], eps[1]
    xa, xb = (np.where(np.isnan(y), np.nan, v) for v in (xa, xb))
    stat = statistic(measure, z)
    return stat(y, xa) - stat(y, xb)


@dataclass(frozen=True)
class Power:
    """Minimum detectable difference (``mdd``) at ``power`` and ``alpha``; the curve it came from."""

    mdd: float
    alpha: float
    power: float
    critical: float
    expected_diff: np.ndarray
    power_curve: np.ndarray
    reps: int


def minimum_detectable_difference(y: np.ndarray, alpha: float = 0.05, power: float = 0.8, reps: int = 400,
                                  seed: int = 0, loadings: np.ndarray | None = None,
                                  measure: str = "delta_r2", z: np.ndarray | None = None) -> Power:
    """The expected T_a − T_b at which the one-sided level-α test rejects with probability ``power``.

    The critical value is the (1 − α) quantile of the difference simulated with no signal (the null
    distribution the swap test approximates on this design); power(λ) = P(diff > critical) at loading
    λ; the MDD interpolates the expected difference where power(λ) crosses ``power``.  ``z``: the
    fact-level covariates of a covariate measure (:data:`COVARIATE_MEASURES`)."""
    rng = np.random.default_rng(seed)
    grid = np.geomspace(0.02, 4.0, 28) if loadings is None else np.asarray(loadings, float)
    null = simulated_differences(y, 0.0, reps, rng, measure, z)
    crit = float(np.quantile(null, 1 - alpha))
    exp_diff, pw = np.empty(len(grid)), np.empty(len(grid))
    for i, lam in enumerate(grid):
        d = simulated_differences(y, float(lam), reps, rng, measure, z)
        exp_diff[i], pw[i] = d.mean(), np.mean(d > crit)
    above = np.flatnonzero(pw >= power)
    if above.size == 0:
        mdd = float("nan")
    elif above[0] == 0:
        mdd = float(exp_diff[0])
    else:
        i = above[0]
        t = (power - pw[i - 1]) / (pw[i] - pw[i - 1])
        mdd = float(exp_diff[i - 1] + t * (exp_diff[i] - exp_diff[i - 1]))
    return Power(mdd, alpha, power, crit, exp_diff, pw, reps)


def verdict(diff: float, lower: float, upper: float, p: float, mdd: float, alpha: float = 0.05,
            meaningful: float = MEANINGFUL_DIFF, a: str = "a", b: str = "b") -> str:
    """What the H1 test supports, in words, from the one-sided test and the one-sided bounds:
    supported (p < α and the lower bound above 0); the two disagreeing; a difference bounded above
    (the upper bound below ``meaningful``); inconclusive (with the MDD)."""
    if np.isfinite(p) and p < alpha and np.isfinite(lower) and lower > 0:
        return f"supports H1 ({a} exceeds {b} by at least {lower:.3f}, one-sided 95% bound)"
    if np.isfinite(p) and p < alpha:
        return (f"is inconclusive: the one-sided test rejects (p = {p:.3f} < {alpha:g}) but the one-sided "
                "bound of the difference includes 0")
    if not np.isfinite(upper):
        return "is inconclusive (no bootstrap bound)"
    mdd_text = f"; 80% power at {mdd:.3f}" if np.isfinite(mdd) else ""
    if upper <= meaningful:
        return (f"does not support H1: {a} exceeds {b} by at most {upper:.3f} (one-sided 95% bound){mdd_text}")
    return (f"is inconclusive: {a} may exceed {b} by up to {upper:.3f} (one-sided 95% bound), more than "
            f"{meaningful:g}{mdd_text}")
