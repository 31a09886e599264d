"""Calibration of the study's tests on synthetic studies with a known truth.

For each number of clusters (cases), ``reps`` independent synthetic studies (6 edit layers of a
30-layer pretend model, as the default study) are drawn with no signal (:meth:`SyntheticSpec.null`:
the score does not follow any estimator's effect) and with a planted difference
(:meth:`SyntheticSpec.planted`: flip's effect carries the locus the score follows, noise's does not).
Each test is run on each study at α = 0.05:

* ``F-test``: the nested F-test of score ~ C(layer) × effect_flip against score ~ C(layer);
* ``cluster permutation``: the case-permutation test of the same added terms;
* ``H1 swap``: the one-sided paired swap test of ΔR²_flip − ΔR²_noise > 0 (and its CI's coverage);
* ``argmax``: the tie-split argmax-hit test of flip against the case-permutation chance.

Under the null a valid test rejects in a share of studies inside the binomial Monte-Carlo band around
α; under the planted difference the share is the test's power.  ``--reference`` adds the two tests
the study used before, for comparison: the cluster-robust (sandwich, by case) Wald χ² test of the
added terms and the one-sided paired cluster-bootstrap p of H1.

    python -m causaleval.calibration [--reps 1000] [--perm 499] [--clusters 8 12 50] [--signal 0.02] [--reference]
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from causaleval.inference.argmax import argmax_test
from causaleval.inference.h1 import swap_test
from causaleval.inference.regression import case_permutation_test, f_test, weighted_r2
from causaleval.synthetic import SyntheticSpec, synthetic_arrays

TESTS = ("F-test", "cluster permutation", "H1 swap", "argmax")
REFERENCE = ("cluster Wald (former)", "H1 cluster bootstrap (former)")


@dataclass(frozen=True)
class CalibrationSpec:
    """Design of the calibration: replicates, permutations per test, α and the planted signal."""

    reps: int = 1000
    n_perm: int = 499
    alpha: float = 0.05
    signal: float = 0.02
    n_layers: int = 30
    edit_layer_step: int = 6
    seed: int = 0
    reference: bool = False


def cluster_wald_p(y: np.ndarray, x: np.ndarray) -> float:
    """The former test: statsmodels OLS score ~ C(layer) × effect with covariance clustered by case,
    χ² Wald test of the added terms (effect and its layer interactions)."""
    import statsmodels.formula.api as smf
    c, l = np.indices(y.shape)
    d = pd.DataFrame(dict(score=y.ravel(), effect=x.ravel(), layer=l.ravel(), case=c.ravel())).dropna()
    fit = smf.ols("score ~ C(layer) * effect", d).fit(cov_type="cluster", cov_kwds={"groups": d.case.to_numpy()})
    names = list(fit.params.index)
    added = [i for i, n in enumerate(names) if "effect" in n]
    r = np.zeros((len(added), len(names)))
    r[np.arange(len(added)), added] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(np.squeeze(fit.wald_test(r, use_f=False, scalar=True).pvalue))


def cluster_bootstrap_h1_p(y: np.ndarray, xa: np.ndarray, xb: np.ndarray, n_boot: int,
                           rng: np.random.Generator) -> float:
    """The former H1 test: one-sided p = (1 + #{diff* ≤ 0}) / (B + 1) over a paired case bootstrap."""
    n = y.shape[0]
    w = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
    la, ba = weighted_r2(y, xa, w)
    lb, bb = weighted_r2(y, xb, w)
    d = (ba - la) - (bb - lb)
    d = d[np.isfinite(d)]
    return float((1 + np.sum(d <= 0)) / (d.size + 1))


def rejections(spec: SyntheticSpec, cal: CalibrationSpec, seed: int) -> pd.DataFrame:
    """One row per replicate study: each test's p-value, and H1's difference and CI."""
    y, eff = synthetic_arrays(spec, reps=cal.reps, seed=seed)
    rng = np.random.default_rng([seed, 1])
    rows = []
    for r in range(cal.reps):
        yr, xf, xn = y[r], eff["flip"][r], eff["noise"][r]
        h1 = swap_test(yr, xf, xn, cal.n_perm, rng)
        rows.append({"F-test": float(f_test(yr, xf)[1]),
                     "cluster permutation": case_permutation_test(yr, xf, cal.n_perm, rng)[1],
                     "H1 swap": h1.p_one_sided, "argmax": argmax_test(xf, yr, cal.n_perm, rng).p,
                     "h1_diff": h1.diff, "h1_low": h1.ci_low, "h1_high": h1.ci_high})
        if cal.reference:
            rows[-1].update({REFERENCE[0]: cluster_wald_p(yr, xf),
                             REFERENCE[1]: cluster_bootstrap_h1_p(yr, xf, xn, cal.n_perm, rng)})
    return pd.DataFrame(rows)


def mc_band(reps: int, alpha: float, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` range of the rejection rate of a valid level-α test over ``reps`` studies."""
    lo, hi = stats.binom.ppf([(1 - level) / 2, (1 + level) / 2], reps, alpha)
    return float(lo / reps), float(hi / reps)


def calibration_table(clusters: tuple[int, ...] = (12, 50), cal: CalibrationSpec = CalibrationSpec()) -> pd.DataFrame:
    """Per test × number of clusters: rejection rate under the null with its Monte-Carlo band, power
    under the planted difference, and the H1 CI's coverage (of 0 under the null; of the mean simulated
    difference under the planted one)."""
    out = []
    for k, n in enumerate(clusters):
        common = dict(n_cases=n, n_layers=cal.n_layers, edit_layer_step=cal.edit_layer_step)
        null = rejections(SyntheticSpec.null(**common), cal, seed=cal.seed + 1000 * k)
        alt = rejections(SyntheticSpec.planted(signal=cal.signal, **common), cal, seed=cal.seed + 1000 * k + 1)
        lo, hi = mc_band(cal.reps, cal.alpha)
        truth = alt.h1_diff.mean()
        for t in TESTS + (REFERENCE if cal.reference else ()):
            row = dict(test=t, n_clusters=n, null_rate=float(np.mean(null[t] < cal.alpha)), band_low=lo,
                       band_high=hi, power=float(np.mean(alt[t] < cal.alpha)), reps=cal.reps, n_perm=cal.n_perm)
            if t == "H1 swap":
                row.update(ci_coverage_null=float(np.mean((null.h1_low <= 0) & (0 <= null.h1_high))),
                           ci_coverage_planted=float(np.mean((alt.h1_low <= truth) & (truth <= alt.h1_high))),
                           planted_diff=float(truth))
            out.append(row)
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--perm", type=int, default=499)
    ap.add_argument("--clusters", type=int, nargs="+", default=[12, 50])
    ap.add_argument("--signal", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference", action="store_true", help="add the former Wald and bootstrap tests")
    a = ap.parse_args(argv)
    cal = CalibrationSpec(reps=a.reps, n_perm=a.perm, signal=a.signal, seed=a.seed, reference=a.reference)
    table = calibration_table(tuple(a.clusters), cal)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 3):
        print(f"Calibration at α = {cal.alpha}: {cal.reps} synthetic studies per cell, {cal.n_perm} permutations "
              f"per test, {len(SyntheticSpec(n_layers=cal.n_layers, edit_layer_step=cal.edit_layer_step).edit_layers())}"
              f" edit layers; planted signal {cal.signal}; band = 95% Monte-Carlo range of a valid test")
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
