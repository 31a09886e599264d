"""Edit scores (docs/design.md#edit-scores) on hand-computed probabilities and on a tiny model."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from causaleval.data.counterfact import Fact
from causaleval.data.tokens import answer_ids
from causaleval.editing.scores import build_probes, edit_scores, harmonic_mean, prepare_probes, probs_after, summarise
from causaleval.model.testing import tiny_model

KIND = ["prompt", "paraphrase", "paraphrase", "neighborhood"]


def test_scores_match_the_formulas():
    before = np.array([[0.2, 0.6], [0.1, 0.5], [0.3, 0.3], [0.05, 0.8]])
    after = np.array([[0.6, 0.1], [0.4, 0.45], [0.2, 0.5], [0.1, 0.7]])
    s = edit_scores(KIND, before, after)
    assert s.rewrite_score == pytest.approx((0.6 - 0.2) / 0.8)
    assert s.paraphrase_score == pytest.approx(((0.4 - 0.1) / 0.9 + (0.2 - 0.3) / 0.7) / 2)
    assert s.neighborhood_score == pytest.approx(1 - 0.05 / (0.5 + 0.45))   # on p(new | s*)
    assert (s.es, s.ps, s.ns) == (1.0, 0.0, 1.0)
    assert s.es_magnitude == pytest.approx(0.5)
    assert s.ns_magnitude == pytest.approx(0.6)
    assert (s.p_before_new, s.p_after_new, s.p_before_true, s.p_after_true) == (0.2, 0.6, 0.6, 0.1)


def test_neighbourhood_score_reads_the_new_target():
    """Hase et al. (2023, §3.4): the score measures how far p(new | s*) moves; p(true | s*) does not enter."""
    kind = ["prompt", "neighborhood"]
    before = np.array([[0.1, 0.8], [0.1, 0.8]])
    only_true_moves = edit_scores(kind, before, np.array([[0.9, 0.05], [0.1, 0.3]]))
    assert only_true_moves.neighborhood_score == 1.0
    assert only_true_moves.ns == 1.0   # CounterFact's NS = [p(true) > p(new)] is unchanged
    new_moves = edit_scores(kind, before, np.array([[0.9, 0.05], [0.5, 0.3]]))
    assert new_moves.neighborhood_score == pytest.approx(1 - 0.4 / 0.9)
    assert new_moves.ns == 0.0


def test_no_neighbours_gives_nan():
    s = edit_scores(["prompt", "paraphrase"], np.array([[0.1, 0.9], [0.1, 0.9]]), np.array([[0.9, 0.1], [0.2, 0.8]]))
    assert math.isnan(s.neighborhood_score) and math.isnan(s.ns)
    assert s.ps == 0.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 0.99), st.floats(0, 1)), min_size=4, max_size=4),
       st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=4, max_size=4))
def test_score_ranges(before, after):
    s = edit_scores(KIND, np.array(before), np.array(after))
    for v in (s.es, s.ps, s.ns):
        assert 0.0 <= v <= 1.0
    assert s.rewrite_score <= 1.0 + 1e-12 and s.neighborhood_score <= 1.0 + 1e-12
    assert s.neighborhood_score >= -1.0 - 1e-12


def test_summary_harmonic_mean():
    df = pd.DataFrame({"layer": [0, 0, 1], "es": [1.0, 1.0, 0.5], "ps": [0.5, 0.5, 0.5], "ns": [1.0, np.nan, 0.0],
                       "rewrite_score": [0.5, 0.7, 0.1]})
    out = summarise(df).set_index("layer")
    assert out.loc[0, "S"] == pytest.approx(3 / (1 / 1 + 1 / 0.5 + 1 / 1))
    assert out.loc[1, "S"] == 0.0
    assert harmonic_mean([]) != harmonic_mean([])  # NaN


def test_probe_probabilities_are_full_string_teacher_forced():
    b = tiny_model("llama")
    fact = Fact(1, "The capital of {} is", "P36", "France", "Paris", "Africa",
                paraphrase_prompts=["France's capital city is"], neighborhood_prompts=["The capital of Germany is"])
    probes = build_probes(b, fact)
    # " Africa" is one token: its sequence is a prefix of the " Paris" one, so each prompt runs once
    assert probes.input_ids.shape[0] == 3
    prep = prepare_probes(b, fact)
    tok = b.tokenizer
    for i, text in enumerate([fact.text] + fact.paraphrase_prompts + fact.neighborhood_prompts):
        for t, target in enumerate([fact.target_new, fact.target_true]):
            p_ids, a_ids = tok(text)["input_ids"], answer_ids(tok, target)
            with torch.no_grad():
                logp = torch.log_softmax(b.model(torch.tensor([p_ids + a_ids])).logits[0].double(), -1)
            want = math.exp(sum(float(logp[len(p_ids) - 1 + j, a]) for j, a in enumerate(a_ids)))
            assert prep.before[i, t] == pytest.approx(want, rel=1e-4)
    np.testing.assert_allclose(probs_after(b, prep, 2), prep.before, rtol=1e-5)


def test_neighbour_cap_is_seeded():
    b = tiny_model("gpt2")
    fact = Fact(1, "The capital of {} is", "P36", "France", "Paris", "Africa",
                neighborhood_prompts=[f"The capital of X{i} is" for i in range(6)])
    a = build_probes(b, fact, max_neighbours=2, seed=1)
    assert a.kind.count("neighborhood") == 2
    assert torch.equal(a.input_ids, build_probes(b, fact, max_neighbours=2, seed=1).input_ids)
