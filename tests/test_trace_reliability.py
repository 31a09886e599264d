"""Split-half reliability from a trace run alone equals the analyze stage's (causaleval.analysis.trace_reliability)."""

import pandas as pd
import pytest

from causaleval.analysis import AnalysisSpec, analyze
from causaleval.analysis.trace_reliability import trace_reliability
from causaleval.inference.synthetic import SyntheticSpec, draws_around, synthetic_tables


@pytest.mark.parametrize("sd", [0.02, 0.1])
def test_equals_the_analysis_reliability_on_the_edit_layers(sd):
    tables = synthetic_tables(SyntheticSpec(n_cases=30, n_layers=10, seed=3))
    spec = AnalysisSpec(n_bootstrap=100, n_permutations=99, power_reps=20, seed=1, scores=("rewrite_score",))
    draws = draws_around(tables["trace"], 10, sd)
    layers = sorted(set(tables["edits"].layer))
    ours = trace_reliability(tables["trace"], draws, spec, layers).set_index(["estimator", "layer"])
    theirs = analyze(tables["trace"], tables["edits"], spec, draws).reliability.set_index(["estimator", "layer"])
    cols = ["reliability", "ci_low", "ci_high", "n_cases"]
    pd.testing.assert_frame_equal(ours[cols], theirs.loc[ours.index, cols])
    assert (ours.loc[ours.index.get_level_values("layer") == -1, "reliability"] < 1).all()
