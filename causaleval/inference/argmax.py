"""Does a case's effect peak at the layer where its edit works best? Hits against a permutation chance.

A case's hit is the probability that a uniformly random tie-break of its effect's argmax set A and of
its score's argmax set S picks the same layer: |A ∩ S| / (|A| |S|) (ties split fairly, not to the
first layer).  Chance is not 1/L: both argmax distributions concentrate on a few layers.  The chance
level pairs case c's score profile with case π(c)'s effect profile for a random permutation π: its
expectation is the mean of the (cases × cases) hit matrix, and the one-sided p-value is
(#{hit rate* > hit rate} + U · (1 + #{hit rate* = hit rate})) / (B + 1) over B random permutations,
U ~ Uniform(0, 1): hit rates of a few cases take few values, and this randomised tie-break makes the
test's size exactly α instead of far below it (Lehmann & Romano 2005, §3.2; the usual
(1 + #{≥}) / (B + 1) rejects in ≈ 0.5 % of null studies at α = 0.05 with 12 cases).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from causaleval.inference.regression import case_permutations


def argmax_sets(profiles: np.ndarray, rtol: float = 1e-9) -> np.ndarray:
    """Boolean (cases × layers): the layers within ``rtol`` of each row's maximum."""
    top = np.nanmax(profiles, axis=1, keepdims=True)
    return np.nan_to_num(profiles, nan=-np.inf) >= top - rtol * np.maximum(1.0, np.abs(top))


def hit_matrix(effect: np.ndarray, score: np.ndarray) -> np.ndarray:
    """H[i, j]: tie-split hit of case i's effect profile against case j's score profile."""
    a, s = argmax_sets(effect).astype(float), argmax_sets(score).astype(float)
    return (a @ s.T) / np.outer(a.sum(1), s.sum(1))


@dataclass(frozen=True)
class ArgmaxResult:
    """Hit rate (mean tie-split hit over cases), the permutation chance level and the one-sided p."""

    hits: np.ndarray
    hit_rate: float
    chance: float
    p: float
    n_perm: int


def argmax_test(effect: np.ndarray, score: np.ndarray, n_perm: int, rng: np.random.Generator) -> ArgmaxResult:
    """The argmax-hit test on complete (cases × layers) profiles (see module docstring)."""
    h = hit_matrix(effect, score)
    hits = np.diag(h).copy()
    obs = float(hits.mean())
    perm = case_permutations(len(hits), n_perm, rng)
    null = h[perm, np.arange(len(hits))[None, :]].mean(1)
    tie = np.abs(null - obs) <= 1e-12
    p = float((np.sum(null > obs + 1e-12) + rng.random() * (1 + np.sum(tie))) / (n_perm + 1))
    return ArgmaxResult(hits, obs, float(h.mean()), p, n_perm)
