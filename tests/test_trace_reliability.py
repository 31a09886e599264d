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


def test_projected_draws_reach_the_target_by_spearman_brown():
    """The prophecy inverted: lengthening the draws by length_factor(ρ, t) gives reliability t, and a
    measure already above the target needs fewer draws than it has."""
    import numpy as np

    from causaleval.inference.reliability import length_factor, spearman_brown
    from experiments.trace_reliability import with_projection

    rho = np.array([0.5, 0.783, 0.95])
    k = length_factor(rho, 0.9)
    np.testing.assert_allclose(spearman_brown(rho, k), 0.9)
    table = with_projection(pd.DataFrame({"reliability": rho, "ci_low": rho - 0.1, "ci_high": rho + 0.02}), 9.0, 0.9)
    assert table.draws_for_target.iloc[2] < 9 < table.draws_for_target.iloc[1]
    assert (table.draws_for_target_low < table.draws_for_target).all()
    assert (table.draws_for_target < table.draws_for_target_high).all()
