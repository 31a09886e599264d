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


def test_dropping_a_void_relation_from_the_tables_equals_building_without_it(tmp_path):
    import pytest

    from causaleval.errors import CausalEvalError
    from experiments.facts_tables import drop_relations, main

    # a third relation C keeps "all" from being A alone
    table = pd.concat([FILTER, pd.DataFrame({"case_id": [7, 8, 9], "relation_id": ["C"] * 3,
                                             "true_first_id": [4, 5, 5], "known": [True, True, False]})])
    without = table[table.relation_id != "B"]
    # through CSV, as the committed tables are read
    (tmp_path / "known_m.csv").write_text(known_table(table).to_csv(index=False))
    (tmp_path / "flip_pool_m.csv").write_text(flip_pool_table(table).to_csv(index=False))
    main(["--out", str(tmp_path), "--drop", "B"])
    read = lambda name: pd.read_csv(tmp_path / name, keep_default_na=False).astype(str)   # noqa: E731
    assert read("known_m.csv").equals(known_table(without).astype(str))
    assert read("flip_pool_m.csv").equals(flip_pool_table(without).astype(str))
    with pytest.raises(CausalEvalError, match="relation A has valid known facts"):
        drop_relations(known_table(table), flip_pool_table(table), ["A"])
