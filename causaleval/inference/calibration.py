"""Calibration of the study's tests on studies with a known truth, with and without dependent rows.

Designs (each drawn ``reps`` times with no signal, and with a planted difference):

* ``iid`` — synthetic studies (:mod:`causaleval.inference.synthetic`: 6 edit layers of a 30-layer pretend model)
  whose rows are independent given the layer;
* ``fact effect`` — the same with a per-fact random intercept in the score (a fact's scores correlate
  ≈ 0.55 across layers, more than the committed study's rewrite scores do: the paper's
  ``\ScoreLayerCorr``) and in the effects (shared by the estimators): the dependence a fact's rows have;
* ``real table`` — a real study's (cases × layers) score and effect arrays (``--real DIR``, a results
  folder with ``analysis/joined.parquet``) with the score profiles permuted across whole facts, which
  keeps every dependence within a fact and between the estimators and breaks only the link between a
  fact's effects and its scores.  Planted: flip's within-layer standardised effect plus λ × the
  (permuted) score's, noise's left as it is.

Tests, each at α = 0.05 (one-sided where the hypothesis is directional):

* ``F-test`` — Hase et al.'s nested F-test of score ~ C(layer) × effect_flip (assumes independent rows);
* ``ΔR² permutation`` — the case-permutation test of the same added terms;
* ``r_w permutation`` — the one-sided case-permutation test of the directional r_w of flip;
* ``H1 swap (r_w)``, ``H1 swap (ΔR²)`` — the one-sided paired swap tests of flip − noise (and each
  one's paired case-bootstrap interval: its coverage of 0 under the null and of the planted
  difference's mean under the planted design);
* ``argmax`` — the tie-split argmax-hit test of flip against the case-permutation chance;
* ``H1 swap (r_w_rank)``, ``H1 swap (twoway)``, ``H1 swap (twoway_rank)``, ``H1 swap (twoway_rank_adj)``
  — the swap test on the within-fact measures of :mod:`causaleval.inference.withinfact` (the adjusted
  one with two fact-level covariates: standard normal draws per synthetic study; on the real table the
  facts' relation indicators, which stay with the effects when the scores are permuted);
* ``within-fact ρ permutation`` — the mean within-fact Spearman of flip against whole-fact
  permutations (its null mean is not 0); ``within-fact ρ swap`` — flip − noise by the swap test.

Under the null a valid test rejects in a share of studies inside the binomial Monte-Carlo band around
α; under the planted difference the share is its power.

    python -m causaleval.inference.calibration [--reps 1000] [--perm 499] [--boot 499] [--clusters 12 50]
                                     [--real paper/study] [--designs ...] [--out calibration.csv]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
from scipy import stats

from causaleval.inference.argmax import argmax_test
from causaleval.inference.directional import within_layer_r
from causaleval.inference.h1 import _design, standardise_by_layer, swap_test
from causaleval.inference.regression import case_permutation_test, f_test
from causaleval.inference.synthetic import SyntheticSpec, synthetic_arrays
from causaleval.inference.withinfact import within_fact_spearman

WITHIN_TESTS = ("H1 swap (r_w_rank)", "H1 swap (twoway)", "H1 swap (twoway_rank)", "H1 swap (twoway_rank_adj)",
                "within-fact ρ permutation", "within-fact ρ swap")
TESTS = ("F-test", "ΔR² permutation", "r_w permutation", "H1 swap (r_w)", "H1 swap (ΔR²)", "argmax") + WITHIN_TESTS
VALID = TESTS[1:]                     # the tests the study reports as evidence (the F-test is descriptive)
# H1 swap tests with a bootstrap interval: test → the measure key of causaleval.inference.h1.MEASURES
INTERVALS = {"H1 swap (r_w)": "r_w", "H1 swap (ΔR²)": "delta_r2", "H1 swap (r_w_rank)": "r_w_rank",
             "H1 swap (twoway)": "twoway", "H1 swap (twoway_rank)": "twoway_rank",
             "H1 swap (twoway_rank_adj)": "twoway_rank_adj"}
DESIGNS = ("iid", "fact effect", "real table")
Arrays = tuple[np.ndarray, dict[str, np.ndarray]]


@dataclass(frozen=True)
class CalibrationSpec:
    """Design of the calibration: replicates, permutations and bootstrap resamples per test, α, the
    planted signal of the synthetic designs and the planted loading λ of the real-table design."""

    reps: int = 1000
    n_perm: int = 499
    n_boot: int = 499
    alpha: float = 0.05
    signal: float = 0.02
    real_loading: float = 0.15
    n_layers: int = 30
    edit_layer_step: int = 6
    seed: int = 0


def real_arrays(folder: Path, score: str = "rewrite_score", variant: str = "default") -> Arrays:
    """The (cases × layers) score and effect arrays of a finished run's default analysis rows."""
    joined = pd.read_parquet(Path(folder) / "analysis" / "joined.parquet")
    if "variant" in joined.columns:
        joined = joined[joined.variant == variant]
    ests = [e for e in ("noise", "resample", "flip") if f"effect_{e}" in joined.columns]
    data = joined.dropna(subset=[score] + [f"effect_{e}" for e in ests])
    wide = lambda col: data.pivot_table(index="case_id", columns="layer", values=col).to_numpy(float)
    eff = {e: wide(f"effect_{e}") for e in ests}
    if "relation_id" in data.columns:
        rel = data.groupby("case_id").relation_id.first().sort_index().to_numpy()
        eff["covariates"] = np.column_stack([(rel == r).astype(float) for r in sorted(set(rel))[1:]])
    return wide(score), eff


def synthetic_studies(spec: SyntheticSpec, reps: int, seed: int) -> Iterator[Arrays]:
    y, eff = synthetic_arrays(spec, reps=reps, seed=seed)
    for r in range(reps):
        yield y[r], {e: v[r] for e, v in eff.items()}


def permuted_studies(y: np.ndarray, eff: dict[str, np.ndarray], reps: int, seed: int,
                     loading: float = 0.0) -> Iterator[Arrays]:
    """Whole-fact permutations of a real table; with ``loading`` > 0, flip's effect also carries the
    permuted score's within-layer variation (a planted positive r_w and ΔR² for flip only)."""
    rng = np.random.default_rng(seed)
    for _ in range(reps):
        yp = y[rng.permutation(y.shape[0])]
        out = dict(eff)
        if loading:
            out["flip"] = standardise_by_layer(eff["flip"]) + loading * _design(yp)
        if "covariates" in eff:
            out["covariates"] = eff["covariates"]
        yield yp, out


def _spearman_swap_p(y: np.ndarray, xa: np.ndarray, xb: np.ndarray, n_perm: int, rng: np.random.Generator) -> float:
    from causaleval.analysis.within_case import swap_spearman
    return swap_spearman(y, xa, xb, n_perm, rng)[1]


def p_values(y: np.ndarray, eff: dict[str, np.ndarray], cal: CalibrationSpec, rng: np.random.Generator,
             tests: tuple[str, ...] = TESTS) -> dict:
    """The p-value of each of ``tests`` on one study, and each H1 interval (``<measure>_diff``, ``_low``,
    ``_high``)."""
    xf, xn = eff["flip"], eff["noise"]
    out = {}
    first = ("H1 swap (r_w)", "H1 swap (ΔR²)")       # the random streams of the committed table's order
    for t in [t for t in first if t in tests] + [t for t in tests if t not in first]:
        if t in INTERVALS:
            m = INTERVALS[t]
            z = None
            if m.endswith("_adj"):
                z = eff.get("covariates")
                z = rng.standard_normal((y.shape[0], 2)) if z is None else z
            h = swap_test(y, xf, xn, cal.n_perm, rng, measure=m, n_boot=cal.n_boot, z=z)
            out.update({t: h.p_one_sided, f"{m}_diff": h.diff, f"{m}_low": h.ci_low, f"{m}_high": h.ci_high})
        elif t == "F-test":
            out[t] = float(f_test(y, xf)[1])
        elif t == "ΔR² permutation":
            out[t] = case_permutation_test(y, xf, cal.n_perm, rng).p
        elif t == "r_w permutation":
            out[t] = case_permutation_test(y, xf, cal.n_perm, rng, statistic=within_layer_r).p
        elif t == "argmax":
            out[t] = argmax_test(xf, y, cal.n_perm, rng).p
        elif t == "within-fact ρ permutation":
            out[t] = case_permutation_test(y, xf, cal.n_perm, rng, statistic=within_fact_spearman).p
        elif t == "within-fact ρ swap":
            out[t] = _spearman_swap_p(y, xf, xn, cal.n_perm, rng)
        else:
            raise ValueError(f"unknown calibration test {t!r}: choose from {TESTS}")
    return out


def rejections(studies: Iterator[Arrays], cal: CalibrationSpec, seed: int,
               tests: tuple[str, ...] = TESTS) -> pd.DataFrame:
    """One row per replicate study: each test's p-value and each H1 interval."""
    rng = np.random.default_rng([seed, 1])
    return pd.DataFrame([p_values(y, eff, cal, rng, tests) for y, eff in studies])


def mc_band(reps: int, alpha: float, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` range of the rejection rate of a valid level-α test over ``reps`` studies."""
    lo, hi = stats.binom.ppf([(1 - level) / 2, (1 + level) / 2], reps, alpha)
    return float(lo / reps), float(hi / reps)


def _studies(design: str, n: int, cal: CalibrationSpec, planted: bool, seed: int, real: Arrays | None):
    if design == "real table":
        return permuted_studies(*real, cal.reps, seed, cal.real_loading if planted else 0.0)
    common = dict(n_cases=n, n_layers=cal.n_layers, edit_layer_step=cal.edit_layer_step)
    spec = SyntheticSpec.planted(signal=cal.signal, **common) if planted else SyntheticSpec.null(**common)
    if design == "fact effect":
        spec = SyntheticSpec.dependent(spec)
    return synthetic_studies(spec, cal.reps, seed)


def calibration_table(clusters: tuple[int, ...] = (12, 50), cal: CalibrationSpec = CalibrationSpec(),
                      designs: tuple[str, ...] = ("iid", "fact effect"), real: Arrays | None = None,
                      tests: tuple[str, ...] = TESTS) -> pd.DataFrame:
    """Per design × number of clusters × test: the rejection rate under the null with its Monte-Carlo
    band, the power under the planted difference, and for the H1 tests the interval's coverage (of 0
    under the null; of the mean planted difference under the planted design).  The real-table design
    has the real table's number of facts."""
    out = []
    lo, hi = mc_band(cal.reps, cal.alpha)
    for d_i, design in enumerate(designs):
        sizes = (real[0].shape[0],) if design == "real table" else clusters
        for k, n in enumerate(sizes):
            base = cal.seed + 1000 * k + 100_000 * d_i
            null = rejections(_studies(design, n, cal, False, base, real), cal, base, tests)
            alt = rejections(_studies(design, n, cal, True, base + 1, real), cal, base + 1, tests)
            for t in tests:
                row = dict(design=design, test=t, n_clusters=n, null_rate=float(np.mean(null[t] < cal.alpha)),
                           band_low=lo, band_high=hi, power=float(np.mean(alt[t] < cal.alpha)), reps=cal.reps,
                           n_perm=cal.n_perm)
                key = INTERVALS.get(t)
                if key:
                    truth = alt[f"{key}_diff"].mean()
                    row.update(ci_coverage_null=float(np.mean((null[f"{key}_low"] <= 0) & (0 <= null[f"{key}_high"]))),
                               ci_coverage_planted=float(np.mean((alt[f"{key}_low"] <= truth)
                                                                 & (truth <= alt[f"{key}_high"]))),
                               planted_diff=float(truth))
                out.append(row)
    return pd.DataFrame(out)


DESIGN_LABELS = {"iid": "independent rows", "fact effect": "per-fact random effect",
                 "real table": "real table, whole facts permuted"}


def calibration_tex(table: pd.DataFrame) -> str:
    """The calibration table as a booktabs LaTeX table: per design and number of facts, each test's
    rejection rate under the null and its power, and the H1 intervals' coverage."""
    from causaleval.reporting.tables import booktabs, num, tex_escape

    keys = {"r_w_rank": "$r_w$ ranks", "twoway_rank_adj": "two-way ranks adj.", "twoway_rank": "two-way ranks",
            "twoway": "two-way", "r_w": "$r_w$", "ΔR²": r"$\Delta R^2$", "ρ": r"$\rho$"}

    def label(test: str) -> str:
        """The test's name in LaTeX: measure keys and symbols as math, the rest escaped."""
        for i, k in enumerate(keys):
            test = test.replace(k, f"@{i}@")
        test = tex_escape(test)
        for i, v in enumerate(keys.values()):
            test = test.replace(f"@{i}@", v)
        return test

    body: list = []
    for (design, n, _), g in table.groupby(["design", "n_clusters", "reps"], sort=False):
        r = g.iloc[0]
        body.append(f"{DESIGN_LABELS.get(design, design)}, {int(n)} facts ({int(r.reps)} studies; valid-test "
                    f"band [{r.band_low:.3f}, {r.band_high:.3f}])")
        for row in g.itertuples():
            cov = getattr(row, "ci_coverage_null", float("nan"))
            body.append([label(row.test) + (" (descriptive)" if row.test == "F-test" else ""),
                         num(row.null_rate), num(row.power),
                         num(cov) if cov == cov else "--",
                         num(row.ci_coverage_planted) if cov == cov else "--"])
    caption = (r"Calibration of every test at $\alpha = 0.05$: the share of simulated null studies in which "
               r"it rejects (a valid test stays inside the 95\% Monte-Carlo band) and of planted-difference "
               r"studies (power; synthetic: the edit score follows a latent locus that flip's effect carries "
               r"and noise's does not; real table: flip's effect plus a share of the permuted score's "
               r"within-layer variation). For the H1 tests, the coverage of their paired-bootstrap 95\% "
               r"interval: of 0 under the null and of the mean planted difference under the planted design. "
               r"The nested $F$-test assumes independent rows.")
    header = ["Test", "Null rate", "Power", "Cover. (null)", "Cover. (planted)"]
    return booktabs(header, body, caption, "tab:calibration", align="lrrrr", size=r"\scriptsize")   # ~50 rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--perm", type=int, default=499)
    ap.add_argument("--boot", type=int, default=499)
    ap.add_argument("--clusters", type=int, nargs="+", default=[12, 50])
    ap.add_argument("--signal", type=float, default=0.02)
    ap.add_argument("--real", type=Path, default=None, help="a finished results folder (e.g. paper/study)")
    ap.add_argument("--real-loading", type=float, default=0.15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--designs", nargs="+", default=None, choices=DESIGNS,
                    help="designs to run (default: iid and fact effect, and real table with --real)")
    ap.add_argument("--tests", nargs="+", default=None, choices=TESTS, help="tests to run (default: all)")
    ap.add_argument("--out", type=Path, default=None, help="also write the table as CSV (replacing an existing "
                                                          "file's rows of the same design and test)")
    a = ap.parse_args(argv)
    cal = CalibrationSpec(reps=a.reps, n_perm=a.perm, n_boot=a.boot, signal=a.signal, seed=a.seed,
                          real_loading=a.real_loading)
    real = real_arrays(a.real) if a.real else None
    designs = tuple(a.designs) if a.designs else ("iid", "fact effect") + (("real table",) if real else ())
    if "real table" in designs and real is None:
        ap.error("the real-table design needs --real DIR")
    tests = tuple(a.tests) if a.tests else TESTS
    table = calibration_table(tuple(a.clusters), cal, designs, real, tests)
    if a.out:
        if a.out.is_file():
            old = pd.read_csv(a.out)
            table = pd.concat([old[~(old.design.isin(designs) & old.test.isin(tests))], table], ignore_index=True)
        table.to_csv(a.out, index=False)
    with pd.option_context("display.width", 220, "display.max_columns", 20, "display.precision", 3):
        print(f"Calibration at α = {cal.alpha}: {cal.reps} studies per cell, {cal.n_perm} permutations and "
              f"{cal.n_boot} bootstrap resamples per test; planted signal {cal.signal} (synthetic), loading "
              f"{cal.real_loading} (real table); band = 95% Monte-Carlo range of a valid test")
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
