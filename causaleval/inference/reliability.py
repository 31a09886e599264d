"""Reliability of a localisation effect: how much of its variation across cases, within a layer, is
signal rather than draw-to-draw noise?

Split-half: the draws of each case are split into two halves (even and odd draw indices), the effect
is computed from each half by the same rule as from all draws, and the two are correlated within
layer, pooled over layers (both standardised within layer, so each row counts once):
r_half = Σ z₁ z₂ / √(Σ z₁² Σ z₂²).  The Spearman–Brown formula (Spearman 1910; Brown 1910),
ρ = k r / (1 + (k − 1) r) with k = 2, gives the reliability of the effect from all the draws.  An
observed correlation with a score is attenuated by √ρ (Spearman 1904): r_true ≈ r_obs / √ρ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from causaleval.inference.directional import resample_cases, within_layer_r
from causaleval.inference.h1 import standardise_by_layer


def spearman_brown(r, factor: float = 2.0):
    """Reliability of a measure ``factor`` times as long as one with reliability ``r``."""
    r = np.asarray(r, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return factor * r / (1 + (factor - 1) * r)


def length_factor(reliability, target: float):
    """Spearman–Brown prophecy inverted: by what factor the number of draws must grow for a measure of
    ``reliability`` to reach ``target``, k = target (1 − ρ) / (ρ (1 − target))."""
    rho = np.asarray(reliability, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return target * (1 - rho) / (rho * (1 - target))


def half_correlation(h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
    """The pooled within-layer correlation of two half-effects (..., cases, layers)."""
    return within_layer_r(standardise_by_layer(h1), h2)


@dataclass(frozen=True)
class Reliability:
    """Split-half correlation, its Spearman–Brown reliability and a case-bootstrap percentile CI."""

    r_half: float
    reliability: float
    ci_low: float
    ci_high: float
    n_cases: int
    n_boot: int


def split_half(h1: np.ndarray, h2: np.ndarray, n_boot: int, rng: np.random.Generator,
               level: float = 0.95) -> Reliability:
    """Split-half reliability of an effect from its two half-effects (cases × layers)."""
    r = float(half_correlation(h1, h2))
    idx = resample_cases(h1.shape[0], n_boot, rng)
    boot = spearman_brown(half_correlation(h1[idx], h2[idx]))
    boot = boot[np.isfinite(boot)]
    a = (1 - level) / 2
    lo, hi = np.quantile(boot, [a, 1 - a]) if boot.size else (np.nan, np.nan)
    n = int(np.sum(np.isfinite(h1).any(1) & np.isfinite(h2).any(1)))
    return Reliability(r, float(spearman_brown(r)), float(lo), float(hi), n, n_boot)
