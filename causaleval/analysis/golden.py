"""The practitioner's question, "at which layer should I edit this fact?" (Hase et al. 2023 ask it of
causal tracing): the edit success when each fact is edited at the edit layer its localiser ranks first,
against the single best ("golden") edit layer chosen on *other* facts (K-fold cross-fitted), with the
per-fact best layer as the ceiling and a uniformly random edit layer as the floor.

Per fact f with outcome y_f(l): localiser = mean of y_f over the layers where the effect is largest
(ties split); golden = y_f(l*), l* = argmax_l mean_{g ∉ fold(f)} y_g(l); ceiling = max_l y_f(l);
random = mean_l y_f(l).  Differences are paired by fact, with case-bootstrap percentile CIs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from causaleval.inference.directional import resample_cases


def localiser_choice(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Per fact, the mean outcome over the layers where the effect ``x`` is largest (ties split)."""
    top = x == np.nanmax(x, axis=1, keepdims=True)
    return np.nanmean(np.where(top, y, np.nan), axis=1)


def golden_choice(y: np.ndarray, folds: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per fact, the outcome at the layer best on average over the other folds' facts, and that layer's index."""
    fold = rng.permutation(np.arange(y.shape[0]) % folds)
    out, best = np.empty(y.shape[0]), np.empty(y.shape[0], int)
    for k in range(folds):
        held = fold == k
        best[held] = int(np.nanargmax(np.nanmean(y[~held], axis=0)))
        out[held] = y[held, best[held][0]]
    return out, best


def golden_table(y: np.ndarray, xs: dict[str, np.ndarray], layers: list, outcome: str, folds: int = 10,
                 n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Per estimator: mean outcome at the localiser's layer, the golden layer's, the ceiling and the
    random layer, and the paired differences localiser − golden and ceiling − localiser with CIs."""
    rng = np.random.default_rng(seed)
    complete = np.isfinite(y).all(1) & np.all([np.isfinite(x).all(1) for x in xs.values()], axis=0)
    y = y[complete]
    gold, best = golden_choice(y, folds, rng)
    ceiling, random = y.max(1), y.mean(1)
    idx = resample_cases(y.shape[0], n_boot, rng)
    q = (1 - level) / 2
    ci = lambda d: tuple(float(v) for v in np.quantile(d[idx].mean(1), [q, 1 - q]))
    rows = []
    for e, x in xs.items():
        loc = localiser_choice(y, x[complete])
        row = dict(outcome=outcome, estimator=e, n_cases=int(y.shape[0]), n_layers=len(layers), folds=folds,
                   localiser=float(loc.mean()), golden=float(gold.mean()), ceiling=float(ceiling.mean()),
                   random=float(random.mean()),
                   golden_layer=int(pd.Series(np.asarray(layers)[best]).mode()[0]))
        for name, d in (("localiser_minus_golden", loc - gold), ("ceiling_minus_localiser", ceiling - loc),
                        ("localiser_minus_random", loc - random)):
            lo, hi = ci(d)
            row.update({name: float(d.mean()), f"{name}_ci_low": lo, f"{name}_ci_high": hi})
        rows.append(row)
    return pd.DataFrame(rows)
