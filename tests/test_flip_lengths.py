"""Same-length flip pools (experiments.flip_lengths): the partners flip scrubbing draws first."""

from causaleval.data.counterfact import Fact
from causaleval.data.tokens import encode_prompt
from causaleval.model.testing import tiny_tokenizer
from experiments.flip_lengths import same_length_pools, same_length_table

CAPITALS = [("France", "Paris"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Spain", "Madrid"),
            ("United Arab Emirates", "Abu Dhabi"), ("Chad", "N'Djamena"), ("Mali", "Paris")]


def test_same_length_pool_counts_flip_partners_with_the_cases_token_count():
    tok = tiny_tokenizer()
    facts = [Fact(i, "The capital of {} is", "P36", s, " " + o, " Rome") for i, (s, o) in enumerate(CAPITALS)]
    pools = same_length_pools(tok, facts).set_index("case_id")
    length = {f.case_id: encode_prompt(tok, f.prompt, f.subject).length for f in facts}
    first = {f.case_id: tok(f.target_true, add_special_tokens=False).input_ids[0] for f in facts}
    for f in facts:
        flips = [g for g in facts if g.subject != f.subject and first[g.case_id] != first[f.case_id]]
        assert pools.loc[f.case_id, "flip_pool"] == len(flips)
        assert pools.loc[f.case_id, "same_length"] == sum(length[g.case_id] == length[f.case_id] for g in flips)
    assert pools.loc[0, "flip_pool"] == len(facts) - 2          # Mali shares France's answer: not a flip
    assert (pools.same_length <= pools.flip_pool).all() and pools.same_length.max() > 0
    table = same_length_table(pools.reset_index())
    assert list(table.relation_id) == ["P36", "all"] and table.known.tolist() == [7, 7]
    assert table.share_ge_10.tolist() == [0.0, 0.0]
