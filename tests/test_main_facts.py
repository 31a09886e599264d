"""The main command: help, errors, and the facts stage end to end on the embedded SmolLM2 (slow)."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from experiments.main import main


def test_help_lists_stages(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "facts" in out and "--model" in out and "--facts" in out


def test_unknown_stage_is_a_clear_error(tmp_path, capsys):
    assert main(["--stage", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown stage 'nope'" in capsys.readouterr().err


def test_bad_counterfact_file_is_a_clear_error_without_traceback(tmp_path):
    bad = tmp_path / "cf.json"
    bad.write_text("not json")
    proc = subprocess.run([sys.executable, "-m", "experiments.main", "--stage", "facts", "--facts", str(bad),
                           "--model", "gpt2-not-here", "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "error:" in proc.stderr


@pytest.mark.slow
def test_facts_stage_on_smollm2(tmp_path):
    out = tmp_path / "run"
    args = ["--stage", "facts", "--out", str(out), "--relations", "P36", "P30", "--quiet"]
    assert main(args) == 0
    records = [json.loads(line) for line in (out / "facts.jsonl").read_text().splitlines()]
    table = pd.read_parquet(out / "facts_filter.parquet")
    assert len(records) == int(table.known.sum()) > 50
    assert {r["requested_rewrite"]["relation_id"] for r in records} == {"P36", "P30"}
    assert all(0 < r["p_true"] <= 1 for r in records)
    info = json.loads((out / "run.json").read_text())
    assert info["config"]["relations"] == ["P36", "P30"] and info["seed"] == 0
    assert info["model"]["family"] == "llama" and info["model"]["n_layers"] == 30
    assert info["packages"]["torch"] and "facts" in info["completed_stages"]
    # a rerun reuses the finished stage
    before = (out / "facts.jsonl").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "facts.jsonl").stat().st_mtime_ns == before
