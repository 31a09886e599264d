"""Calibration of the study's tests on synthetic studies (causaleval.calibration).

Under no signal, each test at α = 0.05 must reject in a share of replicate studies inside the 99 %
binomial Monte-Carlo band of a valid level-α test, at 12 and at 50 clusters; with a planted
difference, power must rise with the number of clusters.  (The full table with more replicates:
``python -m causaleval.calibration``.)
"""

import numpy as np
import pytest

from causaleval.calibration import TESTS, CalibrationSpec, calibration_table, mc_band
from causaleval.inference.h1 import minimum_detectable_difference
from causaleval.synthetic import SyntheticSpec, synthetic_arrays

CAL = CalibrationSpec(reps=240, n_perm=99, signal=0.02, seed=3)


@pytest.fixture(scope="module")
def table():
    return calibration_table((12, 50), CAL).set_index(["test", "n_clusters"])


@pytest.mark.parametrize("n", [12, 50])
@pytest.mark.parametrize("test", TESTS)
def test_size_under_the_null_is_alpha(table, test, n):
    lo, hi = mc_band(CAL.reps, CAL.alpha, level=0.99)
    rate = table.loc[(test, n), "null_rate"]
    assert lo <= rate <= hi, f"{test} at {n} clusters rejects {rate:.3f} of null studies (band [{lo:.3f}, {hi:.3f}])"


@pytest.mark.parametrize("test", TESTS)
def test_power_rises_with_clusters(table, test):
    assert table.loc[(test, 50), "power"] > table.loc[(test, 12), "power"]
    assert table.loc[(test, 50), "power"] > 2 * CAL.alpha


def test_h1_ci_has_at_least_nominal_coverage(table):
    lo, _ = mc_band(CAL.reps, 0.95, level=0.99)
    for n in (12, 50):
        assert table.loc[("H1 swap", n), "ci_coverage_null"] >= lo
        assert table.loc[("H1 swap", n), "ci_coverage_planted"] >= lo


def test_minimum_detectable_difference_shrinks_with_n():
    small = synthetic_arrays(SyntheticSpec.null(n_cases=12, n_layers=30, edit_layer_step=6), seed=1)[0][0]
    large = synthetic_arrays(SyntheticSpec.null(n_cases=50, n_layers=30, edit_layer_step=6), seed=1)[0][0]
    a, b = minimum_detectable_difference(small, reps=200), minimum_detectable_difference(large, reps=200)
    assert 0 < b.mdd < a.mdd
    assert np.all(np.diff(a.power_curve) > -0.1)   # power increases with the planted loading
