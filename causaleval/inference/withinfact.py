"""Measures of "a larger effect goes with a better edit" beyond the within-layer r_w: in ranks, with
the fact removed as well as the layer, and with fact-level covariates partialled out.

All take a score array ``y`` and effect arrays ``x`` shaped (..., cases, layers) (``y`` broadcasts;
NaN drops a row) and return one correlation per leading index, like
:func:`causaleval.inference.directional.within_layer_r`:

* ``r_w_rank`` — r_w of the within-layer ranks of score and effect (average ranks for ties): a rank
  version that a few failed edits at the ceiling cannot dominate;
* ``twoway`` — the Pearson correlation of the two-way residuals (fact and layer effects removed, the
  additive fixed-effects model of panel data, e.g. Wooldridge 2010, ch. 10) of the score and of the
  effect standardised within layer: within a fact, do the layers with the larger effect get the better
  edit?  Hase et al.'s (2023) practitioner question ("where should *this* fact be edited?");
* ``twoway_rank`` — the same on within-layer ranks;
* ``*_adj`` (with covariates ``z``, (cases, k)) — the same after removing, within each layer, a linear
  fit on the fact-level covariates (an intercept, log p(o_true), the TEs, relation indicators): the
  partial correlation given covariates × layer (for the two-way versions, fact effects removed as well).

Every measure is invariant to an increasing affine map of one layer's effects, so the paired swap test
of :mod:`causaleval.inference.h1` (which standardises effects within layer before swapping) leaves the
observed values unchanged.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from causaleval.inference.directional import within_layer_r

_TOL = 1e-12
_ITERATIONS = 30


def rank_within_layer(v: np.ndarray) -> np.ndarray:
    """Average ranks over cases within each layer (axis −2); NaN stays NaN."""
    v = np.asarray(v, float)
    r = stats.rankdata(np.where(np.isnan(v), np.inf, v), axis=-2, method="average")
    return np.where(np.isnan(v), np.nan, r)


def standardise_within_layer(v: np.ndarray, m: np.ndarray) -> np.ndarray:
    """(v − mean_l) / sd_l over the cases of ``m`` in each layer; 0 outside ``m`` or in a constant layer."""
    n = np.maximum(m.sum(-2, keepdims=True), 1)
    c = np.where(m, v - np.where(m, v, 0.0).sum(-2, keepdims=True) / n, 0.0)
    sd = np.sqrt((c * c).sum(-2, keepdims=True) / n)
    return np.where(sd > _TOL, c / np.where(sd > _TOL, sd, 1.0), 0.0)


def _layer_projection(v: np.ndarray, m: np.ndarray, z: np.ndarray | None) -> np.ndarray:
    """v minus its least-squares fit on [1, z] within each layer over the cases of ``m``."""
    design = (np.ones((v.shape[-2], 1)) if z is None
              else np.concatenate([np.ones(z.shape[:-1] + (1,)), z], axis=-1))
    w = design[..., :, None, :] * m[..., None]                       # (..., cases, layers, k)
    gram = np.einsum("...clk,...clj->...lkj", w, w)
    rhs = np.einsum("...clk,...cl->...lk", w, np.where(m, v, 0.0))
    beta = np.einsum("...lkj,...lj->...lk", np.linalg.pinv(gram, hermitian=True), rhs)
    return np.where(m, v - np.einsum("...clk,...lk->...cl", w, beta), 0.0)


def residualise(v: np.ndarray, m: np.ndarray, fact: bool, z: np.ndarray | None = None) -> np.ndarray:
    """Residuals of v (0 outside ``m``) after removing layer effects (and covariates × layer when ``z``
    is given) and, with ``fact``, fact effects: alternating projections (exact after one sweep when each
    fact has all layers or none; otherwise until converged, at most 30 sweeps)."""
    r = np.where(m, v, 0.0)
    n_fact = np.maximum(m.sum(-1, keepdims=True), 1)
    balanced = bool(np.all(m.all(-1) | ~m.any(-1)))      # each fact has all its layers or none
    sweeps = 1 if not fact else (2 if balanced else _ITERATIONS)
    for _ in range(sweeps):
        before = r
        if z is None:
            n_l = np.maximum(m.sum(-2, keepdims=True), 1)
            r = np.where(m, r - r.sum(-2, keepdims=True) / n_l, 0.0)
        else:
            r = _layer_projection(r, m, z)
        if fact:
            r = np.where(m, r - r.sum(-1, keepdims=True) / n_fact, 0.0)
        if np.max(np.abs(r - before), initial=0.0) < _TOL:
            break
    return r


def _corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    num = (a * b).sum((-2, -1))
    den = np.sqrt((a * a).sum((-2, -1)) * (b * b).sum((-2, -1)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > _TOL, num / np.where(den > _TOL, den, 1.0), np.nan)


def _prepared(y, x, rank: bool):
    y, x = np.broadcast_arrays(np.asarray(y, float), np.asarray(x, float))
    m = np.isfinite(x) & np.isfinite(y)
    y, x = np.where(m, y, np.nan), np.where(m, x, np.nan)
    if rank:
        y, x = rank_within_layer(y), rank_within_layer(x)
    return y, standardise_within_layer(x, m), m


def residual_r(y: np.ndarray, x: np.ndarray, rank: bool = False, fact: bool = False,
               z: np.ndarray | None = None) -> np.ndarray:
    """The correlation of score and effect after removing layer (and with ``fact``, fact) effects and,
    with ``z`` (cases, k) or (..., cases, k), the covariates within layer; ``rank``: on within-layer ranks."""
    yv, xv, m = _prepared(y, x, rank)
    if not fact and z is None:
        return within_layer_r(np.where(m, yv, np.nan), np.where(m, xv, np.nan))
    return _corr(residualise(yv, m, fact, z), residualise(xv, m, fact, z))


def r_w_rank(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """r_w on within-layer ranks of score and effect."""
    return residual_r(y, x, rank=True)


def twoway_r(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Correlation of the two-way (fact and layer) residuals of the score and the standardised effect."""
    return residual_r(y, x, fact=True)


def twoway_rank(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """:func:`twoway_r` on within-layer ranks."""
    return residual_r(y, x, rank=True, fact=True)


def r_w_adj(y: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """r_w with the covariates ``z`` partialled out within layer."""
    return residual_r(y, x, z=z)


def r_w_rank_adj(y: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """:func:`r_w_rank` with the covariates ``z`` partialled out within layer (from the ranks)."""
    return residual_r(y, x, rank=True, z=z)


def twoway_rank_adj(y: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """:func:`twoway_rank` with the covariates ``z`` × layer removed as well."""
    return residual_r(y, x, rank=True, fact=True, z=z)


def within_fact_spearman(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The mean over facts of the Spearman correlation across layers of the fact's score and effect
    profiles, each centred by its layer mean over facts (facts with a missing row or a flat profile
    left out): the within-case table's statistic, vectorised over leading dims of ``x``."""
    y, x = np.broadcast_arrays(np.asarray(y, float), np.asarray(x, float))
    ok = np.isfinite(y).all(-1) & np.isfinite(x).all(-1)
    yc = y - np.nanmean(np.where(ok[..., None], y, np.nan), -2, keepdims=True)
    xc = x - np.nanmean(np.where(ok[..., None], x, np.nan), -2, keepdims=True)
    ry = stats.rankdata(np.where(ok[..., None], yc, 0.0), axis=-1)
    rx = stats.rankdata(np.where(ok[..., None], xc, 0.0), axis=-1)
    ry, rx = ry - ry.mean(-1, keepdims=True), rx - rx.mean(-1, keepdims=True)
    den = np.sqrt((ry * ry).sum(-1) * (rx * rx).sum(-1))
    good = ok & (den > _TOL)
    rho = np.where(good, (ry * rx).sum(-1) / np.where(good, den, 1.0), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return rho.sum(-1) / good.sum(-1)
