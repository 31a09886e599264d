"""Per-layer correlations: Fisher-z CIs and Williams' t for variance explained (|r|).

Williams (1959); Steiger (1980, eq. 7).  Comparing the variance two estimators explain means comparing
|r_a| with |r_b|: when the two correlations have opposite signs, b's effect is negated (r_b → −r_b,
r_ab → −r_ab) before the test of the dependent correlations, so a strong negative correlation is not
counted as "worse" than a weak positive one.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def fisher_ci(r: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """CI of a Pearson r from Fisher's z: tanh(atanh r ± z_{(1+level)/2} / √(n − 3)), full precision."""
    if n <= 3 or not np.isfinite(r):
        return float("nan"), float("nan")
    z = np.arctanh(np.clip(r, -1 + 1e-15, 1 - 1e-15))
    h = stats.norm.ppf((1 + level) / 2) / np.sqrt(n - 3)
    return float(np.tanh(z - h)), float(np.tanh(z + h))


def williams_t(r12: float, r13: float, r23: float, n: int) -> tuple[float, int, float]:
    """Williams' t for H0: ρ12 = ρ13 (two correlations sharing variable 1), df = n − 3, two-sided p.

    t = (r12 − r13) √[(n−1)(1+r23) / (2 (n−1)/(n−3) |R| + r̄² (1−r23)³)],
    |R| = 1 − r12² − r13² − r23² + 2 r12 r13 r23, r̄ = (r12 + r13)/2.
    Worked value (Howell, Statistical Methods for Psychology): r12=.80, r13=.72, r23=.89, n=26 → t=1.361, p=.187.
    """
    if n <= 3:
        return float("nan"), n - 3, float("nan")
    det = 1 - r12 ** 2 - r13 ** 2 - r23 ** 2 + 2 * r12 * r13 * r23
    rbar = (r12 + r13) / 2
    denom = 2 * (n - 1) / (n - 3) * det + rbar ** 2 * (1 - r23) ** 3
    if not denom > 0:
        return float("nan"), n - 3, float("nan")
    t = (r12 - r13) * np.sqrt((n - 1) * (1 + r23) / denom)
    return float(t), n - 3, float(2 * stats.t.sf(abs(t), n - 3))


def williams_abs(r_a: float, r_b: float, r_ab: float, n: int) -> tuple[float, int, float]:
    """Williams' t of |r_a| vs |r_b| (positive t: a explains more variance); signs aligned first."""
    sa = 1.0 if r_a >= 0 else -1.0
    sb = 1.0 if r_b >= 0 else -1.0
    return williams_t(abs(r_a), abs(r_b), sa * sb * r_ab, n)


def weighted_corr(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Pearson r of x and y (length n) under each row of ``weights`` (B × n)."""
    n = weights.sum(1)
    mx, my = weights @ x / n, weights @ y / n
    cxy = weights @ (x * y) / n - mx * my
    vx = weights @ (x * x) / n - mx ** 2
    vy = weights @ (y * y) / n - my ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return cxy / np.sqrt(vx * vy)
