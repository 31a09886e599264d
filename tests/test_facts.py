"""Facts: the geography builder, the CounterFact loader and its errors, the known-facts filter (docs/design.md#facts)."""

import json

import pytest

from causaleval.data.counterfact import Fact, load_counterfact
from causaleval.data.geofacts import RELATIONS, build_facts
from causaleval.data.known import known_filter
from causaleval.errors import DataError


@pytest.fixture(scope="module")
def facts():
    return build_facts(seed=0)


def test_builder_is_deterministic(facts):
    again = build_facts(seed=0)
    assert [f.to_record() for f in facts] == [f.to_record() for f in again]
    other = build_facts(seed=1)
    assert [f.target_new for f in facts] != [f.target_new for f in other]


def test_builder_covers_relations_and_schema(facts):
    rels = {f.relation_id for f in facts}
    assert len(rels) >= 5
    for rid in rels:
        assert len(RELATIONS[rid].templates) >= 4  # prompt + at least 3 paraphrases
    ids = [f.case_id for f in facts]
    assert len(set(ids)) == len(ids)
    by_rel_answer = {(f.relation_id, f.subject): f.target_true for f in facts}
    for f in facts:
        assert "{}" in f.prompt and f.target_new != f.target_true
        assert len(f.paraphrase_prompts) >= 3 and all(f.subject in p for p in f.paraphrase_prompts)
        # a round trip through the CounterFact record schema is lossless
        assert Fact.from_record(f.to_record()).to_record() == f.to_record()
    # neighbourhood prompts: other subjects of the same relation with the same true answer
    sample = [f for f in facts if f.neighborhood_prompts][:50]
    assert sample
    subjects = {(f.relation_id, f.subject) for f in facts}
    for f in sample:
        for prompt in f.neighborhood_prompts:
            mates = [s for (r, s) in subjects if r == f.relation_id and f.prompt.replace("{}", s) == prompt]
            assert mates and all(s != f.subject and by_rel_answer[(f.relation_id, s)] == f.target_true for s in mates)


def _record(**override):
    rec = {"case_id": 3, "requested_rewrite": {"prompt": "The capital of {} is", "relation_id": "P36",
                                               "subject": "France", "target_true": {"str": "Paris"},
                                               "target_new": {"str": "Rome"}},
           "paraphrase_prompts": ["France's capital city is"], "neighborhood_prompts": []}
    rec.update(override)
    return rec


def test_counterfact_loader_reads_json_and_jsonl(tmp_path):
    recs = [_record(), _record(case_id=4)]
    (tmp_path / "cf.json").write_text(json.dumps(recs))
    (tmp_path / "cf.jsonl").write_text("\n".join(json.dumps(r) for r in recs))
    for name in ("cf.json", "cf.jsonl"):
        facts = load_counterfact(tmp_path / name)
        assert [f.case_id for f in facts] == [3, 4]
        assert facts[0].subject == "France" and facts[0].target_new == "Rome"
        assert facts[0].text == "The capital of France is"


def test_counterfact_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_counterfact(tmp_path / "nope.json")


def test_counterfact_not_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("this is not json")
    with pytest.raises(DataError, match="bad.json.*not JSON"):
        load_counterfact(path)
    path.write_text("[{\"case_id\": 1,")
    with pytest.raises(DataError, match="bad.json.*not valid JSON"):
        load_counterfact(path)


def test_counterfact_empty(tmp_path):
    path = tmp_path / "empty.json"
    path.write_text("[]")
    with pytest.raises(DataError, match="no records"):
        load_counterfact(path)


def test_counterfact_missing_field_names_file_case_and_field(tmp_path):
    rec = _record(case_id=11)
    del rec["requested_rewrite"]["target_new"]
    path = tmp_path / "cf.json"
    path.write_text(json.dumps([_record(), rec]))
    with pytest.raises(DataError, match=r"cf\.json, case_id 11: missing field 'requested_rewrite\.target_new'"):
        load_counterfact(path)


def test_counterfact_subject_absent_from_prompt(tmp_path):
    rec = _record(case_id=12)
    rec["requested_rewrite"]["prompt"] = "The capital of France is"
    path = tmp_path / "cf.json"
    path.write_text(json.dumps([rec]))
    with pytest.raises(DataError, match=r"case_id 12: field 'requested_rewrite\.prompt'.*no '\{\}'"):
        load_counterfact(path)


def test_known_filter_marks_top1(tiny_gpt2, facts):
    subset = facts[:20]
    table = known_filter(tiny_gpt2, subset, batch_size=7, progress=False)
    assert list(table.case_id) == [f.case_id for f in subset]
    assert ((table.p_true >= 0) & (table.p_true <= 1)).all()
    assert (table.known == (table.clean_top1_id == table.true_first_id)).all()
    # batching does not change the result
    again = known_filter(tiny_gpt2, subset, batch_size=64, progress=False)
    assert (abs(again.p_true.to_numpy() - table.p_true.to_numpy()) < 1e-5).all()


def test_exclude_facts_from_leaves_out_the_named_runs_cases(tmp_path):
    """A held-out sample: the cases of the named folder's trace are not studied; the pool is untouched."""
    import pandas as pd

    from causaleval.errors import ConfigError
    from experiments.config import resolve, validate
    from experiments.context import StageContext

    facts = build_facts(seed=0)
    first = tmp_path / "first"
    first.mkdir()
    pd.DataFrame({"case_id": [f.case_id for f in facts[:5]]}).to_parquet(first / "trace_cases.parquet")
    cfg = resolve("smoke", max_facts=None, exclude_facts_from=[str(first)])
    validate(cfg)
    ctx = StageContext(cfg, tmp_path / "run")
    ctx.__dict__["known_facts"] = facts[:8]
    studied = [f.case_id for f in ctx.study_facts]
    assert studied == [f.case_id for f in facts[5:8]]
    assert len(ctx.known_facts) == 8          # partners, ν and the support reference still see every fact
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="exclude_facts_from.*holds neither trace_cases.parquet"):
        validate(resolve("smoke", exclude_facts_from=[str(empty)]))
    with pytest.raises(ConfigError, match="exclude_facts_from.*is not a results folder"):
        validate(resolve("smoke", exclude_facts_from=[str(tmp_path / "nope")]))
