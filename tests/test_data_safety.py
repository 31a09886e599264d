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
