"""ΔR² of ``score ~ C(layer) × effect`` over ``score ~ C(layer)`` (Hase et al. 2023), vectorised.

With a free intercept and slope per layer, the residual sum of squares of the full model is the sum
over layers of simple-regression residuals, so only per-layer moments are needed: many refits (case
permutations, bootstrap weights, simulated effects) cost one pass of array arithmetic each.

* :func:`delta_r2_many` — R²(layer) and R²(both) for a batch of effect arrays (any case pairing);
* :func:`weighted_r2` — the same for many case weightings (cluster-bootstrap multiplicities);
* :func:`signed_r2_parts` — ΔR² split into the layers whose slope is positive and negative;
* :func:`f_test` — the nested F-test of the added terms (Hase et al.'s; it assumes independent rows,
  and a fact's rows across layers are correlated, so it over-rejects here: descriptive only);
* :func:`case_permutation_test` — the cluster-aware test: whole cases' effect profiles are permuted
  across cases (rows of one case stay together), exact under the null that a case's effect profile is
  independent of its score profile, whatever the dependence between the layers of one case.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import stats

_TOL = 1e-12


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def delta_r2_many(y: np.ndarray, x: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """R²(score ~ C(layer)) and R²(score ~ C(layer) × effect) for each effect array in ``x``.

    ``y``: (cases × layers), ``x``: (..., cases × layers); NaN in either drops the row.  Returns two
    arrays of shape ``x.shape[:-2]`` (identical to OLS; tested against statsmodels)."""
    r2l, r2b, _, _ = signed_r2_parts(y, x, chunk)
    return r2l, r2b


def signed_r2_parts(y: np.ndarray, x: np.ndarray, chunk: int = 256
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """R²(layer), R²(both), and ΔR² split by the sign of each layer's slope: (…, ΔR²₊, ΔR²₋) with
    ΔR² = ΔR²₊ + ΔR²₋; ΔR²₊ is what the layers where a larger effect predicts a *better* edit add."""
    x = np.asarray(x, dtype=float)
    lead = x.shape[:-2]
    flat = x.reshape((-1,) + x.shape[-2:])
    y = np.asarray(y, dtype=float)
    y = y - np.nanmean(y)
    out_l, out_b = np.empty(len(flat)), np.empty(len(flat))
    out_pos, out_neg = np.empty(len(flat)), np.empty(len(flat))
    for s in _chunks(len(flat), chunk):
        xb = flat[s]
        m = np.isfinite(xb) & np.isfinite(y)
        xv = np.where(m, xb - np.nanmean(np.where(m, xb, np.nan), axis=(-2, -1), keepdims=True), 0.0)
        yv = np.where(m, y, 0.0)
        n = m.sum(-2).astype(float)
        sy, sx = yv.sum(-2), xv.sum(-2)
        syy, sxx, sxy = (yv * yv).sum(-2), (xv * xv).sum(-2), (xv * yv).sum(-2)
        safe = np.where(n > 0, n, 1.0)
        ss_layer = syy - sy ** 2 / safe
        vxx = sxx - sx ** 2 / safe
        cxy = sxy - sx * sy / safe
        ok = vxx > _TOL * np.maximum(sxx, 1e-300)
        gain = np.where(ok, cxy ** 2 / np.where(ok, vxx, 1.0), 0.0)
        sst = syy.sum(-1) - sy.sum(-1) ** 2 / n.sum(-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out_l[s] = 1.0 - ss_layer.sum(-1) / sst
            out_b[s] = 1.0 - (ss_layer - gain).sum(-1) / sst
            out_pos[s] = np.where(cxy > 0, gain, 0.0).sum(-1) / sst
            out_neg[s] = np.where(cxy < 0, gain, 0.0).sum(-1) / sst
    return out_l.reshape(lead), out_b.reshape(lead), out_pos.reshape(lead), out_neg.reshape(lead)


def delta_r2(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """ΔR² = R²(both) − R²(layer) for each effect array in ``x`` (see :func:`delta_r2_many`)."""
    r2l, r2b = delta_r2_many(y, x)
    return r2b - r2l


def weighted_r2(y: np.ndarray, x: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """R²(score ~ C(layer)) and R²(score ~ C(layer) × effect) for many case-weightings at once.

    ``y``, ``x``: (cases × layers) with NaN for missing rows; ``weights``: (B × cases), e.g. the
    multiplicities of a cluster bootstrap (identical to OLS on the duplicated rows)."""
    mask = ~(np.isnan(y) | np.isnan(x))
    y = np.where(mask, y - np.nanmean(y), 0.0)
    x = np.where(mask, x - np.nanmean(x), 0.0)
    m = mask.astype(float)
    n = weights @ m
    sy, sx = weights @ y, weights @ x
    syy, sxx, sxy = weights @ (y * y), weights @ (x * x), weights @ (x * y)
    with np.errstate(invalid="ignore", divide="ignore"):
        safe_n = np.where(n > 0, n, 1.0)
        ss_layer = syy - sy ** 2 / safe_n
        vxx = sxx - sx ** 2 / safe_n
        cxy = sxy - sx * sy / safe_n
        gain = np.where(vxx > _TOL * np.maximum(sxx, 1e-300), cxy ** 2 / np.where(vxx > 0, vxx, 1.0), 0.0)
        total_n = n.sum(1)
        sst = syy.sum(1) - sy.sum(1) ** 2 / total_n
        r2_layer = 1.0 - ss_layer.sum(1) / sst
        r2_both = 1.0 - (ss_layer - gain).sum(1) / sst
    return r2_layer, r2_both


def f_test(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Nested F-test of ``C(layer) × effect`` against ``C(layer)`` for each effect array in ``x``.

    F = ((R²_both − R²_layer)/q) / ((1 − R²_both)/(N − L − q)), q = layers whose effect varies (one
    slope each), N rows, L layers.  Returns (F, p, q, df_resid)."""
    x = np.asarray(x, dtype=float)
    r2l, r2b = delta_r2_many(y, x)
    m = np.isfinite(x) & np.isfinite(y)
    xm = np.where(m, x, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        spread = np.nanmax(xm, axis=-2) - np.nanmin(xm, axis=-2)
    n_layer = m.sum(-2)
    q = np.sum((n_layer >= 2) & (spread > 0), axis=-1).astype(float)
    n_rows = m.sum((-2, -1)).astype(float)
    df = n_rows - np.sum(n_layer > 0, axis=-1) - q
    with np.errstate(invalid="ignore", divide="ignore"):
        f = ((r2b - r2l) / q) / ((1 - r2b) / df)
    p = stats.f.sf(f, q, df)
    return f, p, q, df


def case_permutations(n_cases: int, n_perm: int, rng: np.random.Generator) -> np.ndarray:
    """(n_perm × n_cases) random permutations of the case indices."""
    return rng.permuted(np.tile(np.arange(n_cases), (n_perm, 1)), axis=1)


@dataclass(frozen=True)
class PermutationResult:
    """A statistic, its one-sided case-permutation p-value and the permutation null's mean (the value
    expected with no signal on this design) and 95 % quantile."""

    observed: float
    p: float
    null_mean: float
    null_q95: float
    n_perm: int

    def __iter__(self):          # obs, p = case_permutation_test(...)
        return iter((self.observed, self.p))

    def __getitem__(self, i: int) -> float:
        return (self.observed, self.p)[i]


def case_permutation_test(y: np.ndarray, x: np.ndarray, n_perm: int, rng: np.random.Generator,
                          statistic: Callable[[np.ndarray, np.ndarray], np.ndarray] = None) -> PermutationResult:
    """A statistic (default ΔR²) and its case-permutation p-value: p = (1 + #{T* ≥ T}) / (B + 1), where T*
    pairs case π(c)'s effect profile with case c's score profile (rows of one case stay together, so
    the test is exact whatever the dependence between the layers of one case)."""
    statistic = delta_r2 if statistic is None else statistic
    obs = float(statistic(y, x))
    perm = case_permutations(x.shape[0], n_perm, rng)
    null = statistic(y, x[perm])
    return PermutationResult(obs, float((1 + np.sum(null >= obs - 1e-12)) / (n_perm + 1)),
                             float(np.nanmean(null)), float(np.nanquantile(null, 0.95)), n_perm)
