"""Data safety of a results folder and of settings files (issue 34, part A): a model folder's own code runs only
with the command-line flag; a results folder holding the user's own files loses none of them."""

import json

import pytest

from causaleval.model.testing import save_tiny_model
from experiments.main import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-gpt2"))


def _printed_config(capsys, argv):
    assert main([*argv, "--print-config"]) == 0
    out = capsys.readouterr()
    return json.loads(out.out), out.err


# --- trust_remote_code only from the flag ----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["yaml", "json", "run.json"])
def test_trust_remote_code_in_a_config_file_is_ignored_with_a_warning(tmp_path, capsys, kind):
    if kind == "yaml":
        path = tmp_path / "c.yaml"
        path.write_text("trust_remote_code: yes\nmax_facts: 3\n")
    else:
        path = tmp_path / ("run.json" if kind == "run.json" else "c.json")
        settings = {"trust_remote_code": True, "max_facts": 3}
        path.write_text(json.dumps({"config": settings, "completed_stages": {}} if kind == "run.json" else settings))
    cfg, err = _printed_config(capsys, ["--config", str(path)])
    assert cfg["trust_remote_code"] is False and cfg["max_facts"] == 3
    assert "trust_remote_code is ignored in a settings file" in err and "--trust-remote-code" in err


def test_trust_remote_code_from_the_flag_still_works(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("trust_remote_code: no\n")
    cfg, err = _printed_config(capsys, ["--config", str(path), "--trust-remote-code"])
    assert cfg["trust_remote_code"] is True and "ignored" not in err


def test_trust_remote_code_by_set_is_refused(capsys):
    assert main(["--set", "trust_remote_code=true", "--print-config"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--set trust_remote_code" in err[0] and "--trust-remote-code" in err[0]


# --- the user's own files in --out --------------------------------------------------------------------------

def _facts_file(tmp_path, n=3):
    from causaleval.data.geofacts import build_facts

    path = tmp_path / "cf.json"
    path.write_text(json.dumps([f.to_record() for f in build_facts(seed=0, relations=["P36"])[:n]]))
    return path


def _argv(model_dir, facts, out, stage="facts"):
    return ["--model", str(model_dir), "--facts", str(facts), "--stage", stage, "--out", str(out), "--quiet",
            "--preset", "smoke", "--set", "trace_layers=0,3", "--set", "trace_window=2", "--set", "analysis_window=3"]


USER_FILES = {"factsheet.json": '{"mine": 1}', "edit_log.jsonl": '{"edit": 1}\n', "analysis/notes.json": '{"n": 2}',
              ".thesis.tmp-backup": "draft", "sub/.draft.tmp-1": "draft"}


def _user_folder(out, files=USER_FILES):
    for rel, text in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)


def _intact(out, files=USER_FILES):
    return {rel: (out / rel).read_text() if (out / rel).is_file() else None for rel in files} == files


@pytest.mark.parametrize("garbage", [False, True], ids=["readable", "unreadable"])
def test_user_files_survive_a_run_that_fails_validation(tmp_path, model_dir, capsys, garbage):
    out = tmp_path / "mine"
    files = dict(USER_FILES, **({"edit_log.jsonl": "not json at all", "analysis/notes.json": "{"} if garbage else {}))
    _user_folder(out, files)
    argv = _argv(model_dir, _facts_file(tmp_path), out, stage="all") + ["--max-facts", "50"]   # 3 facts: refused
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert ("no record of writing it" in err) if garbage else ("max_facts" in err or "max-facts" in err), err
    assert _intact(out, files)


def test_user_files_survive_a_finished_run(tmp_path, model_dir, monkeypatch, capsys):
    import pandas as pd

    from experiments.stages import facts as facts_stage

    monkeypatch.setattr(facts_stage, "known_filter", lambda bundle, facts, **k: pd.DataFrame(
        [{"case_id": f.case_id, "relation_id": f.relation_id, "p_true": 0.5, "clean_top1": "x", "clean_top1_id": 0,
          "true_first_id": 0, "known": True} for f in facts]))
    out = tmp_path / "mine"
    _user_folder(out)
    assert main(_argv(model_dir, _facts_file(tmp_path), out)) == 0
    assert main(_argv(model_dir, _facts_file(tmp_path), out)) == 0      # a rerun (stale-temp cleanup) too
    assert _intact(out) and (out / "facts.jsonl").is_file()


def test_a_run_never_replaces_a_file_it_did_not_write(tmp_path, model_dir, capsys):
    out = tmp_path / "mine"
    _user_folder(out, {"facts.jsonl": '{"my": "facts"}\n'})
    assert main(_argv(model_dir, _facts_file(tmp_path), out)) == 2
    err = capsys.readouterr().err
    assert "facts.jsonl, which causaleval did not write" in err and len(err.strip().splitlines()) == 1
    assert (out / "facts.jsonl").read_text() == '{"my": "facts"}\n'


def test_stale_temps_removed_are_only_the_recorded_ones(tmp_path):
    from causaleval.runs import manifest
    from causaleval.runs.store import atomic_write_json, remove_stale_temps

    atomic_write_json(tmp_path / "a.json", {"x": 1})
    killed = tmp_path / ".b.json.tmp-abc123"          # a writer killed after creating its temporary file
    killed.write_text("half")
    manifest.note_temp(killed)
    mine = tmp_path / ".c.json.tmp-keepme"            # looks like one, but the package never wrote it
    mine.write_text("user")
    assert remove_stale_temps(tmp_path) == [killed]
    assert mine.is_file() and not killed.exists() and (tmp_path / "a.json").is_file()


def test_a_folder_written_before_the_manifest_is_resumed(tmp_path, model_dir, monkeypatch, capsys):
    """A run started by an earlier version (no manifest, no invalidated_stages) resumes with the new code."""
    import pandas as pd

    from causaleval.runs import manifest
    from experiments.stages import facts as facts_stage

    monkeypatch.setattr(facts_stage, "known_filter", lambda bundle, facts, **k: pd.DataFrame(
        [{"case_id": f.case_id, "relation_id": f.relation_id, "p_true": 0.5, "clean_top1": "x", "clean_top1_id": 0,
          "true_first_id": 0, "known": True} for f in facts]))
    out = tmp_path / "old"
    argv = _argv(model_dir, _facts_file(tmp_path), out)
    assert main(argv) == 0
    for m in out.rglob(manifest.MANIFEST):
        m.unlink()
    info = json.loads((out / "run.json").read_text())
    info.pop("invalidated_stages")
    (out / "run.json").write_text(json.dumps(info))
    (out / ".facts.jsonl.tmp-old123").write_text("half")      # an old killed writer's temporary file
    capsys.readouterr()
    assert main(argv) == 0
    assert "[facts] already finished" in capsys.readouterr().out
    assert (out / ".facts.jsonl.tmp-old123").is_file()       # not recorded: left alone
    assert main([*argv, "--force"]) == 0                      # recomputed over the unrecorded outputs
    assert manifest.is_recorded(out / "facts.jsonl")
