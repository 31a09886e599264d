"""Known-facts and flip-pool tables (experiments.facts_tables) on a small filter table."""

import pandas as pd

from experiments.facts_tables import flip_pool_sizes, flip_pool_table, known_table

# relation A: answers start with tokens 1, 1, 2, 3 (one unknown); relation B: every answer starts with token 9
FILTER = pd.DataFrame({
    "case_id": [0, 1, 2, 3, 4, 5, 6],
    "relation_id": ["A", "A", "A", "A", "B", "B", "B"],
    "true_first_id": [1, 1, 2, 3, 9, 9, 9],
    "known": [True, True, True, False, True, True, False],
})


def test_known_table_counts_and_flags_void_relations():
    t = known_table(FILTER).set_index("relation_id")
    assert t.loc["A", ["built", "known", "answer_tokens", "known_valid"]].tolist() == [4, 3, 3, 3]
    assert t.loc["B", ["built", "known", "answer_tokens", "known_valid"]].tolist() == [3, 2, 1, 0]
    assert t.loc["all", ["built", "known", "known_valid"]].tolist() == [7, 5, 3]
    assert t.loc["A", "share"] == 0.75


def test_flip_pool_is_known_partners_with_another_answer_token():
    sizes = flip_pool_sizes(FILTER).set_index("case_id").flip_pool
    assert sizes.to_dict() == {0: 1, 1: 1, 2: 2, 4: 0, 5: 0}   # unknown case 3 is no partner
    t = flip_pool_table(FILTER).set_index("relation_id")
    assert t.loc["A", ["known", "pool_min", "pool_max"]].tolist() == [3, 1, 2]
    assert t.loc["all", "known"] == 3          # the void relation B is left out of "all"
