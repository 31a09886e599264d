"""Results folders: run.json provenance, corrupt part and stage files named and recomputed, the datasets cache."""

import json
import stat

import pandas as pd
import pytest

from causaleval.data.geofacts import build_facts
from causaleval.errors import ResultsError
from causaleval.model.testing import save_tiny_model
from causaleval.runs.parts import PartStore
from experiments.backends import CaseJob, run_job
from experiments.config import StudyConfig
from experiments.main import main
from experiments.stages import facts as facts_stage


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-gpt2"))


def _all_known(bundle, facts, batch_size=64, progress=True):
    """The known-facts table with every fact known (a tiny random model knows none)."""
    return pd.DataFrame([{"case_id": f.case_id, "relation_id": f.relation_id, "p_true": 0.5, "clean_top1": "x",
                          "clean_top1_id": 0, "true_first_id": 0, "known": True} for f in facts])


@pytest.fixture
def facts_run(tmp_path, model_dir, monkeypatch, capsys):
    monkeypatch.setattr(facts_stage, "known_filter", _all_known)
    facts = tmp_path / "cf.json"
    facts.write_text(json.dumps([f.to_record() for f in build_facts(seed=0, relations=["P36"])[:5]]))
    out = tmp_path / "r"
    argv = ["--model", str(model_dir), "--facts", str(facts), "--stage", "facts", "--out", str(out), "--quiet",
            "--preset", "smoke", "--set", "trace_layers=0,3", "--set", "trace_window=2", "--set", "analysis_window=3"]
    assert main(argv) == 0
    capsys.readouterr()
    return out, argv, facts


def test_run_json_provenance_and_file_modes(facts_run, model_dir):
    import hashlib

    out, argv, facts = facts_run
    info = json.loads((out / "run.json").read_text())
    assert info["argv"] == argv
    assert info["facts_sha256"] == hashlib.sha256(facts.read_bytes()).hexdigest()
    weights = (model_dir / "model.safetensors").read_bytes()
    assert info["model"]["weights_sha256"] == {"model.safetensors": hashlib.sha256(weights).hexdigest()}
    assert info["platform"]["python"] and "cpu_count" in info["devices"] and info["packages"]["torch"]
    assert "git" in info and "facts" in info["completed_stages"]
    umask_mode = 0o666 & ~_umask()
    for name in ("run.json", "facts.jsonl", "facts_filter.parquet"):
        assert stat.S_IMODE((out / name).stat().st_mode) == umask_mode


def _umask() -> int:
    import os

    current = os.umask(0)
    os.umask(current)
    return current


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_stage_output_is_named_and_recomputed(facts_run, capsys, damage):
    out, argv, _ = facts_run
    path = out / "facts_filter.parquet"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"garbage" * 10)
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"{path} is corrupt" in printed and "recomputes it" in printed
    assert len(pd.read_parquet(path)) == 5


def test_corrupt_facts_jsonl_is_named_when_not_recomputed(facts_run, capsys):
    out, argv, _ = facts_run
    (out / "facts.jsonl").write_text('{"case_id": 1, "requested_rew')
    argv = [a if a != "facts" else "trace" for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{out / 'facts.jsonl'} is corrupt" in err and "--stage facts" in err


def test_other_settings_in_the_same_folder_are_refused(facts_run, capsys):
    out, argv, _ = facts_run
    assert main(argv + ["--set", "noise_draws=9"]) == 2
    assert "other settings" in capsys.readouterr().err


def _setup(bundle, config, shared):
    return {}


def _work(state, facts):
    for f in facts:
        yield str(f.case_id), pd.DataFrame({"case_id": [f.case_id], "x": [1.0]})


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_a_corrupt_part_is_recomputed_never_read(tmp_path, damage, caplog):
    facts = build_facts(seed=0, relations=["P36"])[:3]
    store = PartStore(tmp_path / "parts")
    job = CaseJob("probe", _setup, _work)
    run_job(job, facts, store, StudyConfig(), lambda: None, progress=False)
    path = store.path(str(facts[1].case_id))
    data = path.read_bytes()
    path.write_bytes({"truncate": data[:-20], "garbage": b"PAR1" + b"x" * 50, "empty": b""}[damage])
    assert not store.is_done(str(facts[1].case_id))
    assert str(path) in caplog.text and "recomputed" in caplog.text
    keys = run_job(job, facts, store, StudyConfig(), lambda: None, progress=False)
    assert list(store.concat(keys).case_id) == [f.case_id for f in facts]


def test_a_part_that_fails_on_read_is_a_named_error(tmp_path, monkeypatch):
    store = PartStore(tmp_path)
    store.write("a", pd.DataFrame({"x": [1]}))
    monkeypatch.setattr(pd, "read_parquet", lambda *a, **k: (_ for _ in ()).throw(OSError("bad page")))
    with pytest.raises(ResultsError, match=r"a\.parquet: corrupt part file"):
        store.concat(["a"])


def test_reading_facts_writes_no_cache(tmp_path, monkeypatch):
    """Facts are read with the standard library's json (issue 34), not through a datasets cache."""
    from causaleval.data.counterfact import load_counterfact

    monkeypatch.setenv("CAUSALEVAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    facts = tmp_path / "cf.json"
    facts.write_text(json.dumps([f.to_record() for f in build_facts(seed=0, relations=["P36"])[:2]]))
    assert len(load_counterfact(facts)) == 2
    assert not (tmp_path / "cache").exists() and not (tmp_path / "hf-datasets").exists()


@pytest.mark.slow
def test_embedded_model_identity_in_run_json(tmp_path, capsys):
    """SmolLM2: run.json names the GGUF's sha256 and the dequantised weights' sha256."""
    facts = tmp_path / "cf.json"
    facts.write_text(json.dumps([f.to_record() for f in build_facts(seed=0, relations=["P36"])[:8]]))
    out = tmp_path / "r"
    assert main(["--facts", str(facts), "--stage", "facts", "--out", str(out), "--quiet"]) == 0
    model = json.loads((out / "run.json").read_text())["model"]
    assert len(model["sha256"]) == 64 and model["gguf"].endswith(".gguf")
    assert list(model["weights_sha256"]) == ["model.safetensors"] and len(model["weights_sha256"]["model.safetensors"]) == 64
