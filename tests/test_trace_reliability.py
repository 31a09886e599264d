"""Split-half reliability from a trace run alone equals the analyze stage's (causaleval.analysis.trace_reliability)."""

import numpy as np
import pandas as pd
import pytest

from causaleval.analysis import AnalysisSpec, analyze
from causaleval.analysis.trace_reliability import trace_reliability
from causaleval.inference.synthetic import SyntheticSpec, synthetic_tables


def _draws(trace: pd.DataFrame, n_draws: int, sd: float, seed: int = 0) -> pd.DataFrame:
    """Per-draw rows whose mean over draws is the trace table's IE."""
    rng = np.random.default_rng(seed)
    sel = trace[(trace.component == "mlp") & (trace.window == 5)].reset_index(drop=True)
    eps = rng.standard_normal((len(sel), n_draws)) * sd
    eps -= eps.mean(1, keepdims=True)
    keys = ["estimator", "direction", "metric", "case_id", "component", "window", "layer", "position"]
    return pd.DataFrame({**{k: np.repeat(sel[k].to_numpy(), n_draws) for k in keys},
                         "draw": np.tile(np.arange(n_draws), len(sel)),
                         "value": (sel.ie.to_numpy()[:, None] + eps).ravel(),
                         "te": np.repeat(sel.te.to_numpy(), n_draws)})


@pytest.mark.parametrize("sd", [0.02, 0.1])
def test_equals_the_analysis_reliability_on_the_edit_layers(sd):
    tables = synthetic_tables(SyntheticSpec(n_cases=30, n_layers=10, seed=3))
    spec = AnalysisSpec(n_bootstrap=100, n_permutations=99, power_reps=20, seed=1, scores=("rewrite_score",))
    draws = _draws(tables["trace"], 10, sd)
    layers = sorted(set(tables["edits"].layer))
    ours = trace_reliability(tables["trace"], draws, spec, layers).set_index(["estimator", "layer"])
    theirs = analyze(tables["trace"], tables["edits"], spec, draws).reliability.set_index(["estimator", "layer"])
    cols = ["reliability", "ci_low", "ci_high", "n_cases"]
    pd.testing.assert_frame_equal(ours[cols], theirs.loc[ours.index, cols])
    assert (ours.loc[ours.index.get_level_values("layer") == -1, "reliability"] < 1).all()
