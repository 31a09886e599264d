"""A paired within-unit sign-flip permutation test of a mean difference (the validate stage's comparisons).

Per unit i (a fact) the paired difference d_i = a_i − b_i of two estimators' accuracies on the same
planted edits.  Under H0 the two estimators' values are exchangeable within each unit, so the sign of
each d_i is a fair coin (Fisher 1935; Good 2005, §3.1); the statistic is |mean d| and the two-sided p
over B random sign flips is (#{|T*| > |T|} + U · (1 + #{|T*| = |T|})) / (B + 1), U ~ Uniform(0, 1):
the randomised tie-break keeps the size at α for differences that take few values (hits are 0/1),
as in :mod:`causaleval.inference.argmax`.  Its size on simulated nulls is checked in
tests/test_validate.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedResult:
    """Mean paired difference, two-sided sign-flip p, units and permutations."""

    diff: float
    p: float
    n: int
    n_perm: int


def sign_flip_test(d: np.ndarray, n_perm: int, rng: np.random.Generator) -> PairedResult:
    """Two-sided sign-flip test of H0: E[d] = 0 with d exchangeable in sign (NaN units dropped)."""
    d = np.asarray(d, dtype=float)
    d = d[np.isfinite(d)]
    n = len(d)
    if n == 0:
        return PairedResult(float("nan"), float("nan"), 0, n_perm)
    obs = abs(float(d.mean()))
    signs = np.where(rng.random((n_perm, n)) < 0.5, -1.0, 1.0)
    null = np.abs(signs @ d / n)
    tol = 1e-12 * max(1.0, obs)
    tie = np.abs(null - obs) <= tol
    p = float((np.sum(null > obs + tol) + rng.random() * (1 + np.sum(tie))) / (n_perm + 1))
    return PairedResult(float(d.mean()), min(p, 1.0), n, n_perm)
