"""The side-by-side replication table reads each model's own run and states agreement honestly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from causaleval.reporting.replication import replication_verdict, study_facts, write_replication

STUDY = Path(__file__).resolve().parents[1] / "paper" / "study"


def _second_model(tmp_path: Path, verdict: str, diff: float) -> Path:
    """A copy of the committed study's summary relabelled as Gemma, with its H1 verdict and difference set."""
    folder = tmp_path / "gemma3-270m"
    (folder / "analysis").mkdir(parents=True)
    summary = json.loads((STUDY / "analysis" / "summary.json").read_text())
    summary["model"] = {**summary["model"], "name": "gemma3-270m", "n_layers": 18, "n_params": 268_098_176}
    h1 = summary["variants"]["default"]["h1"]["rewrite_score"]["flip-noise"]
    h1.update(verdict=verdict, diff=diff)
    (folder / "analysis" / "summary.json").write_text(json.dumps(summary))
    return folder


@pytest.mark.skipif(not (STUDY / "analysis" / "summary.json").is_file(), reason="no committed study in paper/study")
def test_table_has_one_column_per_model_and_each_models_numbers(tmp_path):
    other = _second_model(tmp_path, "supports H1 (flip exceeds noise by at least 0.010, one-sided 95% bound)", 0.123)
    paths = write_replication([STUDY, other], tmp_path / "out")
    table = paths[0].read_text()
    assert "SmolLM2-135M & Gemma 3 270M" in table
    assert "0.123 [" in table and "-0.027 [" in table       # each model's own H1 difference
    assert "18, 268M" in table and "30, 135M" in table
    numbers = paths[1].read_text()
    assert r"\RepSecondHOneDiff}{0.123}" in numbers and r"\RepMainHOneDiff}{-0.027}" in numbers
    assert "The models disagree" in numbers                  # SmolLM2 does not support H1, this copy does


@pytest.mark.skipif(not (STUDY / "analysis" / "summary.json").is_file(), reason="no committed study in paper/study")
def test_verdict_agrees_only_when_both_tests_read_the_same(tmp_path):
    same = study_facts(_second_model(tmp_path, "does not support H1: flip exceeds noise by at most 0.05", -0.01))
    smol = study_facts(STUDY)
    assert "replicates" in replication_verdict([smol, same])
    inconclusive = dict(same, h1={"flip-noise": {"verdict": "is inconclusive (no bootstrap bound)"}})
    assert "disagree" in replication_verdict([smol, inconclusive])


def test_fewer_than_two_studies_write_nothing(tmp_path):
    assert write_replication([tmp_path / "missing"], tmp_path) == []
    with pytest.raises(FileNotFoundError, match="no analysis/summary.json"):
        study_facts(tmp_path)


def test_paper_names_a_replication_folder_without_a_finished_run(tmp_path, capsys):
    from experiments import paper

    assert paper.main(["--results", str(STUDY), "--paper", str(tmp_path / "p"),
                       "--replication", str(tmp_path / "nothing")]) == 2
    assert "--replication" in capsys.readouterr().err


@pytest.mark.skipif(not (STUDY / "analysis" / "summary.json").is_file(), reason="no committed study in paper/study")
def test_a_merged_edit_stage_counts_its_source_runs_time(tmp_path):
    other = _second_model(tmp_path, "does not support H1: flip exceeds noise by at most 0.05", -0.01)
    (other / "run.json").write_text(json.dumps({"completed_stages": {
        "trace": {"seconds": 600.0},
        "edit": {"seconds": 60.0, "merged_from": [{"folder": "a", "layers": [0], "seconds": 600.0, "edit_seconds": 1200.0},
                                                   {"folder": "b", "layers": [2], "seconds": 1800.0}]}}}))
    facts = study_facts(other)
    assert facts["seconds"]["edit"] == 3060.0 and facts["split"] == {"edit": 2}
    table = write_replication([STUDY, other], tmp_path / "out")[0].read_text()
    assert "51 (edits' compute time, 2 parallel runs)" in table and "not run" in table      # Gemma copy has no support stage


def test_within_fact_verdict_says_which_swap_tests_reject():
    """Each model's reading of flip − noise within fact comes from its two one-sided swap tests; a sign
    difference with one significant model is not called a reversal."""
    from causaleval.reporting.replication import within_fact_verdict

    def study(name, diff, p_up, p_low):
        return {"name": name, "within": {"mean_rho": diff, "p_perm": p_up, "p_perm_lower": p_low}}

    smol, gemma = study("smollm2", 0.06, 0.11, 0.89), study("gemma3-270m", -0.13, 1.0, 0.0005)
    text = within_fact_verdict([smol, gemma])
    assert "on SmolLM2-135M, neither estimator" in text and "on Gemma 3 270M, noise tracing follows" in text
    assert "only Gemma 3 270M is distinguishable" in text and "no reversal" in text
    both = within_fact_verdict([study("smollm2", 0.06, 0.01, 0.99), gemma])
    assert "disagree in direction, each significantly" in both
    assert "agree in sign" in within_fact_verdict([study("smollm2", -0.02, 0.7, 0.3), gemma])
    assert "not in every model" in within_fact_verdict([smol, {"name": "x", "within": {}}])
