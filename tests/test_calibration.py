"""Calibration of the study's tests (causaleval.inference.calibration), with independent and with dependent rows.

Under no signal, each test the study reports as evidence must reject at α = 0.05 in a share of replicate
studies inside the 99 % binomial Monte-Carlo band of a valid level-α test: on synthetic studies with
independent rows and with a per-fact random effect (a fact's rows correlated across layers), at 12 and
50 clusters, and on the committed real study with its score profiles permuted across whole facts.  With
a planted difference, power must rise with the number of clusters, and each H1 interval must cover the
truth in at least the nominal share of studies.  (The full table: ``python -m causaleval.inference.calibration
--real paper/study``.)
"""

from pathlib import Path

import numpy as np
import pytest

from causaleval.inference.calibration import (
    VALID,
    WITHIN_TESTS,
    CalibrationSpec,
    calibration_table,
    mc_band,
    real_arrays,
)
from causaleval.inference.h1 import minimum_detectable_difference
from causaleval.inference.synthetic import SyntheticSpec, synthetic_arrays

CAL = CalibrationSpec(reps=200, n_perm=99, n_boot=99, signal=0.02, seed=3)
STUDY = Path(__file__).resolve().parents[1] / "paper" / "study"
SYNTHETIC = ("iid", "fact effect")
BASE_TESTS = tuple(t for t in VALID if t not in WITHIN_TESTS)


@pytest.fixture(scope="module")
def table():
    real = real_arrays(STUDY)
    return calibration_table((12, 50), CAL, SYNTHETIC + ("real table",), real, ("F-test",) + BASE_TESTS).set_index(
        ["design", "test", "n_clusters"])


def _cells(table):
    return sorted({(d, n) for d, _, n in table.index})


pytestmark = pytest.mark.slow


@pytest.mark.parametrize("test", BASE_TESTS)
def test_size_under_the_null_is_alpha(table, test):
    lo, hi = mc_band(CAL.reps, CAL.alpha, level=0.99)
    for design, n in _cells(table):
        rate = table.loc[(design, test, n), "null_rate"]
        assert lo <= rate <= hi, (f"{test} ({design}, {n} clusters) rejects {rate:.3f} of null studies "
                                  f"(band [{lo:.3f}, {hi:.3f}])")


@pytest.mark.parametrize("test", BASE_TESTS)
def test_power_rises_with_clusters(table, test):
    for design in SYNTHETIC:
        assert table.loc[(design, test, 50), "power"] > table.loc[(design, test, 12), "power"]
        assert table.loc[(design, test, 50), "power"] > 2 * CAL.alpha


def test_planted_difference_on_the_real_table_is_detected(table):
    n = table.xs("real table").index.get_level_values("n_clusters")[0]
    for test in ("r_w permutation", "H1 swap (r_w)"):
        assert table.loc[("real table", test, n), "power"] > 0.5


@pytest.mark.parametrize("test", ["H1 swap (r_w)", "H1 swap (ΔR²)"])
def test_h1_interval_has_at_least_nominal_coverage(table, test):
    """Nominal coverage from 50 facts on; with 12 facts the percentile bootstrap of the r_w difference
    under-covers (≈ 0.88 in the 300-study calibration), which docs/calibration.md and the paper state."""
    lo, _ = mc_band(CAL.reps, 0.95, level=0.99)
    for design, n in _cells(table):
        floor = lo if n >= 50 else 0.82
        assert table.loc[(design, test, n), "ci_coverage_null"] >= floor, (design, n)
        assert table.loc[(design, test, n), "ci_coverage_planted"] >= floor, (design, n)


def test_the_dependent_design_has_correlated_rows():
    spec = SyntheticSpec.dependent(SyntheticSpec.null(n_cases=400, n_layers=30, edit_layer_step=6))
    y = synthetic_arrays(spec, seed=2)[0][0]
    resid = y - y.mean(0)
    r = np.corrcoef(resid[:, 1], resid[:, 2])[0, 1]
    assert 0.4 < r < 0.7


def test_minimum_detectable_difference_shrinks_with_n():
    small = synthetic_arrays(SyntheticSpec.null(n_cases=12, n_layers=30, edit_layer_step=6), seed=1)[0][0]
    large = synthetic_arrays(SyntheticSpec.null(n_cases=50, n_layers=30, edit_layer_step=6), seed=1)[0][0]
    for measure in ("delta_r2", "r_w"):
        a = minimum_detectable_difference(small, reps=200, measure=measure)
        b = minimum_detectable_difference(large, reps=200, measure=measure)
        assert 0 < b.mdd < a.mdd
        assert np.all(np.diff(a.power_curve) > -0.1)   # power increases with the planted loading


def test_within_fact_tests_have_size_alpha_and_power_with_dependent_rows():
    """The within-fact H1 measures and the within-fact Spearman tests on the per-fact random-effect
    design (50 facts): size inside the 99 % band, and power against the planted difference (committed
    table: ``--designs "fact effect" --clusters 50 --tests ...``, rows in paper/study/calibration.csv)."""
    cal = CalibrationSpec(reps=100, n_perm=49, n_boot=49, signal=0.02, seed=5)
    t = calibration_table((50,), cal, ("fact effect",), None, WITHIN_TESTS).set_index("test")
    lo, hi = mc_band(cal.reps, cal.alpha, level=0.99)
    for test in WITHIN_TESTS:
        assert lo <= t.loc[test, "null_rate"] <= hi, test
        assert t.loc[test, "power"] > 0.5, test
