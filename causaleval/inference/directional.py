"""A sign-aware measure of "the effect predicts edit success": the within-layer correlation r_w.

Hase et al.'s ΔR² (2023) adds a free slope per layer, so a larger effect that predicts a *worse* edit
raises it as much as one that predicts a better edit, and it is positive with no signal at all.  The
directional measure keeps the sign: with the score centred within layer, ỹ = y − ȳ_l, and the effect
standardised within layer, x̃ = (x − x̄_l) / s_l(x),

    r_w = Σ_{c,l} ỹ x̃ / √(Σ ỹ² · Σ x̃²) = Σ_l n_l s_l(y) r_l / √(N · Σ_l n_l s_l(y)²),

the within-layer correlations r_l averaged with weights n_l · s_l(y) (layers where the score varies
more count more; a layer where it is constant counts nothing).  r_w > 0: a larger effect goes with a
better edit at the same layer.  With no signal its expectation is 0; it does not change under any
increasing affine map of one layer's effects (estimators whose scale differs by layer compare fairly),
and it is the correlation of a common-slope fixed-effects model, score ~ C(layer) + x̃.
"""

from __future__ import annotations

import numpy as np

_TOL = 1e-12


def _centre(v: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(v − its mean over cases within layer, 0 where missing; the count per layer)."""
    n = m.sum(-2, keepdims=True)
    safe = np.maximum(n, 1)
    mean = np.where(m, v, 0.0).sum(-2, keepdims=True) / safe
    return np.where(m, v - mean, 0.0), safe


def within_layer_r(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """r_w of the module docstring for each effect array in ``x`` (..., cases, layers); ``y`` broadcasts
    against ``x`` (one score array, or one per resample).  NaN in either drops the row."""
    y, x = np.broadcast_arrays(np.asarray(y, float), np.asarray(x, float))
    m = np.isfinite(x) & np.isfinite(y)
    xc, n = _centre(x, m)
    yc, _ = _centre(y, m)
    sd = np.sqrt((xc * xc).sum(-2, keepdims=True) / n)
    z = np.where(sd > _TOL, xc / np.where(sd > _TOL, sd, 1.0), 0.0)
    num = (z * yc).sum((-2, -1))
    den = np.sqrt((z * z).sum((-2, -1)) * (yc * yc).sum((-2, -1)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def resample_cases(n_cases: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(B × cases) case indices of a cluster bootstrap (cases drawn with replacement)."""
    return rng.integers(0, n_cases, size=(n_boot, n_cases))
