"""Property-based probes (issue 34): random JSON shapes fed to the facts reader and random values fed to
the settings layer either succeed or end in one line (a DataError / exit 2), never a traceback or crash."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from causaleval.data.counterfact import load_counterfact
from causaleval.data.geofacts import build_facts
from causaleval.errors import DataError
from experiments.config import field_types
from experiments.main import main

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
BASE = [f.to_record() for f in build_facts(seed=0, relations=["P36"])[:2]]
# paths into a record whose value the fuzzer replaces
FIELDS = [("case_id",), ("requested_rewrite",), ("requested_rewrite", "prompt"), ("requested_rewrite", "subject"),
          ("requested_rewrite", "relation_id"), ("requested_rewrite", "target_true"),
          ("requested_rewrite", "target_true", "str"), ("requested_rewrite", "target_new", "str"),
          ("paraphrase_prompts",), ("neighborhood_prompts",)]
SLOW = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _read(path) -> None:
    try:
        facts = load_counterfact(path)
    except DataError as err:
        assert "\n" not in str(err) and str(path) in str(err), str(err)
        return
    for f in facts:       # accepted: every fact is usable text
        assert isinstance(f.subject, str) and f.subject.strip() and f.prompt.count("{}") == 1
        assert isinstance(f.relation_id, str) and f.target_new.strip() != f.target_true.strip()


@SLOW
@given(doc=JSON)
def test_any_json_document_is_read_or_refused_in_one_line(doc, tmp_path_factory):
    path = tmp_path_factory.mktemp("facts") / "cf.json"
    path.write_text(json.dumps(doc, allow_nan=True))
    _read(path)


@SLOW
@given(field=st.sampled_from(FIELDS), value=JSON | st.text(), lines=st.booleans())
def test_a_record_with_any_value_in_any_field_is_read_or_refused_in_one_line(field, value, lines, tmp_path_factory):
    recs = json.loads(json.dumps(BASE))
    obj = recs[0]
    for key in field[:-1]:
        obj = obj[key]
    obj[field[-1]] = value
    path = tmp_path_factory.mktemp("facts") / ("cf.jsonl" if lines else "cf.json")
    path.write_text("\n".join(json.dumps(r) for r in recs) if lines else json.dumps(recs))
    _read(path)


SETTINGS = sorted(set(field_types()) - {"out", "trust_remote_code"})
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


@settings(max_examples=200, deadline=None)
@given(key=st.sampled_from(SETTINGS), value=TEXT | JSON.map(json.dumps))
def test_any_setting_value_is_accepted_or_refused_in_one_line(key, value):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["--preset", "smoke", "--print-config", "--set", f"{key}={value}", "--out", "/tmp/fuzz-unused"])
    assert code in (0, 2)
    if code == 2:
        text = err.getvalue().strip()
        assert text.startswith("error: ") and len(text.splitlines()) == 1, text


@pytest.mark.parametrize("doc", [None, [None], [[]], [1.5], ["x"], {"case_id": 0}])
def test_known_crashers_are_refused(doc, tmp_path):
    path = tmp_path / "cf.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError):
        load_counterfact(path)
