"""The confirmatory study's machinery on tiny synthetic folders: the plan file and its checks, the refusal
of overlapping facts, the label (confirmatory only for a committed, unchanged plan, held-out facts and
planned settings), the plan's sha256 and commit in summary.json and run.json, the MDD command."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from causaleval.analysis import AnalysisSpec
from causaleval.analysis.plan import PlanError, load_plan
from causaleval.inference.synthetic import SyntheticSpec, write_synthetic_results
from causaleval.runs.store import atomic_write_json, atomic_write_parquet
from experiments.confirm import CONFIRMATORY, EXPLORATORY, plan_provenance
from experiments.stages.analyze import PLAN_RECORD, analyze_folder, plan_headline, spec_from_config

ROOT = Path(__file__).resolve().parents[1]
SPEC = dict(n_cases=14, n_layers=12, edit_layer_step=4)      # edit layers 0, 4, 8, 11
LAYERS = [0, 4, 8, 11]


def synthetic_run(folder: Path, first_case: int, data_seed: int, **config) -> Path:
    """A synthetic results folder whose case ids start at ``first_case`` and whose run.json records
    ``config`` (held-out runs: exclude_facts_from, draws, seeds, finished stages)."""
    write_synthetic_results(folder, SyntheticSpec(seed=data_seed, **SPEC), n_bootstrap=99)
    for name in ("trace", "edits"):
        t = pd.read_parquet(folder / f"{name}.parquet")
        t["case_id"] = t.case_id - 1000 + first_case
        atomic_write_parquet(folder / f"{name}.parquet", t)
    info = json.loads((folder / "run.json").read_text())
    info["config"].update(seed=0, trace_seed=None, max_facts=None, **config)
    info["completed_stages"] = {s: {"seconds": 1.0} for s in ("facts", "trace", "edit", "support")}
    atomic_write_json(folder / "run.json", info)
    return folder


def plan_dict(exploratory: str, **model) -> dict:
    plan = yaml.safe_load((ROOT / "paper" / "plan.yaml").read_text())
    # the labelling tests use r_w (no fact-level covariates needed); the covariate measure has its own test
    plan["primary"].update(measure="r_w", n_permutations=99, n_bootstrap=99, power_reps=50)
    plan["secondary"]["measures"] = ["delta_r2"]
    plan["power"]["table"] = "mdd.csv"
    design = dict(exploratory=exploratory, n_facts=None, edit_layers=LAYERS, noise_draws=10, partner_draws=5,
                  seed=0, trace_seed=None, stages=["facts", "trace", "edit", "support"], results="held",
                  publish="pub")
    plan["models"] = {"synthetic": {**design, **model}}
    return plan


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def study(tmp_path, monkeypatch):
    """A git repository holding a committed plan, an exploratory run and a held-out run of other facts."""
    monkeypatch.chdir(tmp_path)
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "user.email", "t@example.org")
    git(tmp_path, "config", "user.name", "t")
    synthetic_run(tmp_path / "explore", 1000, data_seed=0)
    synthetic_run(tmp_path / "held", 5000, data_seed=1, exclude_facts_from=["explore"])
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(plan_dict("explore"), sort_keys=False))
    git(tmp_path, "add", "plan.yaml")
    git(tmp_path, "commit", "-q", "-m", "plan")
    return tmp_path


def analyze(folder: Path, plan: Path) -> dict:
    info = json.loads((folder / "run.json").read_text())
    from experiments.config import StudyConfig

    spec = spec_from_config(StudyConfig(n_bootstrap=99))
    return analyze_folder(folder, spec, load_plan(plan), info["config"]["model"])


# ---------------------------------------------------------------------------------------------------
# the plan file


def test_committed_plan_loads_and_names_a_registered_measure():
    from causaleval.inference.h1 import MEASURES

    plan = load_plan(ROOT / "paper" / "plan.yaml")
    assert plan.primary.measure in MEASURES
    assert plan.primary.direction == "greater" and plan.primary.a == "flip" and plan.primary.b == "noise"
    assert set(plan.models) == {"smollm2", "gemma3-270m"}
    assert plan.models["smollm2"].exploratory == "paper/study"
    assert plan.spec().te_floor == plan.exclusions.te_floor


@pytest.mark.parametrize("edit, words", [
    (lambda p: p["primary"].update(measure="r_w_typo"), "primary.measure 'r_w_typo' is not a measure"),
    (lambda p: p["primary"].update(alpha=0.9), "primary.alpha 0.9 is outside"),
    (lambda p: p["primary"].update(direction="two-sided"), "primary.direction 'two-sided' is not one of greater"),
    (lambda p: p["primary"].pop("margin_reason"), "primary.margin_reason is missing"),
    (lambda p: p["primary"].update(wording="{estimator} wins"), "primary.wording has a placeholder"),
    (lambda p: p["primary"].update(b="flip"), "primary.b 'flip' equals a"),
    (lambda p: p.pop("question"), "question is missing"),
    (lambda p: p.update(extra=1), "extra is not a plan field"),
    (lambda p: p["secondary"].update(measures=["nope"]), "secondary.measures 'nope' is not a measure"),
    (lambda p: p["exclusions"].update(te_floor="high"), "exclusions.te_floor 'high' is not a float"),
    (lambda p: p["models"]["synthetic"].update(noise_draws=0), "models.synthetic.noise_draws 0 is outside"),
    (lambda p: p["models"]["synthetic"].update(edit_layers=[1, 1]), "models.synthetic.edit_layers"),
    (lambda p: p["models"]["synthetic"].update(stages=["trace"]), "must include facts"),
    (lambda p: p.update(version=2), "version 2 is not supported"),
])
def test_every_bad_field_is_one_line_naming_it(tmp_path, edit, words):
    plan = plan_dict("explore")
    edit(plan)
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    with pytest.raises(PlanError) as err:
        load_plan(path)
    msg = str(err.value)
    assert words in msg and "\n" not in msg and str(path) in msg


def test_missing_plan_file_and_unknown_model_are_clear(tmp_path):
    with pytest.raises(PlanError, match="file not found"):
        load_plan(tmp_path / "nope.yaml")
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan_dict("explore")))
    with pytest.raises(PlanError, match="models has no entry 'gpt2'"):
        load_plan(path).model("gpt2")


# ---------------------------------------------------------------------------------------------------
# provenance and the label


def test_provenance_records_sha_and_commit_and_sees_edits(study):
    plan = study / "plan.yaml"
    prov = plan_provenance(plan)
    head = git(study, "rev-parse", "HEAD").strip()
    assert prov["committed"] and prov["commit"] == head and prov["added_in"] == head
    assert prov["sha256"] == prov["committed_sha256"]
    plan.write_text(plan.read_text() + "# changed after the commit\n")
    prov = plan_provenance(plan)
    assert not prov["committed"] and any("uncommitted" in p for p in prov["problems"])
    assert prov["sha256"] != prov["committed_sha256"]


def test_uncommitted_plan_is_not_confirmatory(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text("x: 1\n")
    git(tmp_path, "init", "-q")
    prov = plan_provenance(path)
    assert not prov["committed"] and "never been committed" in prov["problems"][0]


def test_planned_analysis_of_held_out_facts_is_confirmatory(study):
    summary = analyze(study / "held", study / "plan.yaml")
    rec = summary["plan"]
    assert rec["label"] == CONFIRMATORY and rec["reasons"] == []
    assert rec["plan"]["sha256"] == plan_provenance(study / "plan.yaml")["sha256"]
    assert rec["plan"]["commit"] == git(study, "rev-parse", "HEAD").strip()
    p = rec["primary"]
    assert p["measure"] == "r_w" and p["n_cases"] >= 3 and p["layers"] == LAYERS
    assert p["ci_low"] <= p["diff"] <= p["ci_high"] and 0 < p["p_one_sided"] <= 1
    assert json.loads((study / "held" / PLAN_RECORD).read_text())["label"] == CONFIRMATORY
    assert plan_headline(summary).startswith("[CONFIRMATORY] Planned primary test")


def test_modified_plan_makes_the_analysis_exploratory(study):
    plan = study / "plan.yaml"
    plan.write_text(plan.read_text().replace("alpha: 0.05", "alpha: 0.1"))
    rec = analyze(study / "held", plan)["plan"]
    assert rec["label"] == EXPLORATORY
    assert any("uncommitted changes" in r for r in rec["reasons"])
    assert any("differs from the version committed" in r for r in rec["reasons"])


@pytest.mark.parametrize("change, words", [
    (dict(noise_draws=3), "noise_draws is 3, the plan says 10"),
    (dict(seed=7), "seed is 7"),
    (dict(exclude_facts_from=None), "does not name the plan's exploratory run"),
    (dict(max_facts=10), "max_facts is 10"),
])
def test_settings_unlike_the_plan_make_it_exploratory(study, change, words):
    info = json.loads((study / "held" / "run.json").read_text())
    info["config"].update(change)
    atomic_write_json(study / "held" / "run.json", info)
    rec = analyze(study / "held", study / "plan.yaml")["plan"]
    assert rec["label"] == EXPLORATORY and any(words in r for r in rec["reasons"]), rec["reasons"]


def test_other_edit_layers_or_unfinished_stages_make_it_exploratory(study):
    edits = pd.read_parquet(study / "held" / "edits.parquet")
    atomic_write_parquet(study / "held" / "edits.parquet", edits[edits.layer != 11])
    info = json.loads((study / "held" / "run.json").read_text())
    del info["completed_stages"]["support"]
    atomic_write_json(study / "held" / "run.json", info)
    reasons = analyze(study / "held", study / "plan.yaml")["plan"]["reasons"]
    assert any("edit layers are [0, 4, 8]" in r for r in reasons)
    assert any("planned stages not finished: support" in r for r in reasons)


def test_overlapping_facts_are_refused(study):
    edits = pd.read_parquet(study / "held" / "edits.parquet")
    edits.loc[edits.case_id == 5000, "case_id"] = 1003          # one fact the exploratory run studied
    atomic_write_parquet(study / "held" / "edits.parquet", edits)
    with pytest.raises(PlanError) as err:
        analyze(study / "held", study / "plan.yaml")
    assert "1 of its studied facts were studied by the exploratory run" in str(err.value)
    assert "\n" not in str(err.value) and not (study / "held" / "analysis" / "summary.json").exists()


def test_analysis_without_plan_drops_an_old_plan_record(study):
    analyze(study / "held", study / "plan.yaml")
    summary = analyze_folder(study / "held", AnalysisSpec(n_bootstrap=60, n_permutations=99, power_reps=50))
    assert "plan" not in summary and not (study / "held" / PLAN_RECORD).exists()


def test_run_json_carries_the_plan_record(study):
    from experiments.main import plan_entry

    analyze(study / "held", study / "plan.yaml")
    entry = plan_entry(study / "held")["plan"]
    assert entry["label"] == CONFIRMATORY and len(entry["plan"]["sha256"]) == 64 and entry["plan"]["commit"]


# ---------------------------------------------------------------------------------------------------
# the run-level checks (before any model loads)


def test_confirmatory_config_must_hold_out_the_exploratory_facts(study):
    from causaleval.errors import ConfigError
    from experiments.config import StudyConfig, check_plan

    cfg = StudyConfig(model="synthetic", plan=str(study / "plan.yaml"), exclude_facts_from=None)
    with pytest.raises(ConfigError, match="a confirmatory run studies held-out facts only; set exclude_facts_from"):
        check_plan(cfg)
    check_plan(StudyConfig(model="synthetic", plan=str(study / "plan.yaml"), exclude_facts_from=["explore"]))


def test_plan_fills_exclude_facts_from_and_refuses_an_overlapping_folder(study):
    from causaleval.errors import ConfigError
    from experiments.confirm import refuse_planned_overlap
    from experiments.main import build_config, parse_args

    cfg = build_config(parse_args(["--model", "synthetic", "--plan", str(study / "plan.yaml")]))
    assert cfg.exclude_facts_from == ["explore"]
    refuse_planned_overlap(study / "held", cfg)                    # held-out: fine
    with pytest.raises(ConfigError, match="cannot be confirmatory"):
        refuse_planned_overlap(study / "explore", cfg)


# ---------------------------------------------------------------------------------------------------
# the minimum detectable difference of the design, before the run


def test_plan_power_writes_the_mdd_of_the_design(study):
    from experiments.plan_power import main as plan_power

    analyze_folder(study / "explore", AnalysisSpec(n_bootstrap=60, n_permutations=99, power_reps=50))  # template
    known = pd.DataFrame({"case_id": list(range(1000, 1014)) + list(range(2000, 2030)), "known": True})
    atomic_write_parquet(study / "explore" / "facts_filter.parquet", known)
    assert plan_power(["--plan", str(study / "plan.yaml")]) == 0
    table = pd.read_csv(study / "mdd.csv")
    primary = table[table.role == "primary"].iloc[0]
    assert primary.measure == "r_w" and primary.n_facts_planned == 30     # 44 known − 14 studied
    assert 0 < primary.mdd < 1 and primary.plan_sha256 == plan_provenance(study / "plan.yaml")["sha256"]
    assert set(table.role) == {"primary", "secondary"}


# ---------------------------------------------------------------------------------------------------
# the report: the primary result in the plan's words, everything else secondary


def test_report_writes_the_primary_result_as_planned(study, tmp_path):
    from causaleval.reporting.confirmatory import macro_tag, write_confirm_report

    assert macro_tag("gemma3-270m") == "GemmaThreeTwoSevenZeroM" and macro_tag("smollm2") == "SmollmTwo"
    rec = analyze(study / "held", study / "plan.yaml")["plan"]
    pd.DataFrame([dict(model="synthetic", role="primary", measure="r_w", mdd=0.0625)]).to_csv(study / "mdd.csv")
    paths = write_confirm_report(study / "held", tmp_path / "paper")
    numbers = (tmp_path / "paper" / "tables" / "confirm_synthetic_numbers.tex").read_text()
    assert r"\newcommand{\ConfirmSyntheticLabel}{confirmatory}" in numbers
    assert r"\newcommand{\ConfirmSyntheticSentence}{Planned primary test: on held-out facts, flip" in numbers
    assert r"\newcommand{\ConfirmSyntheticPlannedMDD}{0.062}" in numbers          # the pre-run table's
    assert rf"\newcommand{{\ConfirmSyntheticPlanSha}}{{{rec['plan']['sha256'][:12]}}}" in numbers
    table = (tmp_path / "paper" / "tables" / "confirm_synthetic.tex").read_text()
    assert "Primary (as planned)" in table and "Secondary" in table and len(paths) == 2
    assert table.index("Primary (as planned)") < table.index("Secondary")


# ---------------------------------------------------------------------------------------------------
# end to end through the study command: --plan on the analyze stage of a held-out run


def test_study_command_with_plan_records_it_in_run_json(tmp_path, monkeypatch):
    from causaleval.model.testing import save_tiny_model
    from experiments.main import main

    monkeypatch.chdir(tmp_path)
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "user.email", "t@example.org")
    git(tmp_path, "config", "user.name", "t")
    model = str(save_tiny_model(tmp_path / "tiny"))                  # 4 layers: only its config is read
    spec = dict(n_cases=12, n_layers=4, edit_layer_step=1)
    for name, first, seed, extra in (("explore", 1000, 0, {}), ("held", 5000, 1, {"exclude_facts_from": ["explore"]})):
        write_synthetic_results(tmp_path / name, SyntheticSpec(seed=seed, **spec), n_bootstrap=60)
        for table in ("trace", "edits"):
            t = pd.read_parquet(tmp_path / name / f"{table}.parquet")
            t["case_id"] = t.case_id - 1000 + first
            atomic_write_parquet(tmp_path / name / f"{table}.parquet", t)
        info = json.loads((tmp_path / name / "run.json").read_text())
        info["config"].update(model=model, preset="default", seed=0, trace_seed=None, max_facts=None, trace_window=2,
                              analysis_window=3, noise_draws=10, partner_draws=5, edit_layers=[0, 1, 2, 3], **extra)
        info["completed_stages"] = {s: {"seconds": 1.0} for s in ("facts", "trace", "edit", "support")}
        atomic_write_json(tmp_path / name / "run.json", info)
    plan = plan_dict("explore", edit_layers=[0, 1, 2, 3])
    plan["models"] = {"tiny": plan["models"]["synthetic"]}
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
    git(tmp_path, "add", "plan.yaml")
    git(tmp_path, "commit", "-q", "-m", "plan")
    args = ["--config", "held/run.json", "--out", "held", "--stage", "analyze", "--plan", "plan.yaml", "--quiet",
            "--set", "max_facts=null"]             # --config skips the file's nulls (the preset's value wins)
    assert main(args) == 0
    info = json.loads((tmp_path / "held" / "run.json").read_text())
    assert info["plan"]["label"] == CONFIRMATORY
    assert info["plan"]["plan"]["commit"] == git(tmp_path, "rev-parse", "HEAD").strip()
    assert info["plan"]["plan"]["sha256"] == plan_provenance(tmp_path / "plan.yaml")["sha256"]
    summary = json.loads((tmp_path / "held" / "analysis" / "summary.json").read_text())
    assert summary["plan"]["plan"]["sha256"] == info["plan"]["plan"]["sha256"]
    # the exploratory folder itself, analysed as confirmatory: refused in one line, nothing written
    bad = ["--config", "explore/run.json", "--out", "explore", "--stage", "analyze", "--plan", "plan.yaml",
           "--set", "exclude_facts_from=explore", "--set", "max_facts=null", "--quiet"]
    assert main(bad) == 2
    assert not (tmp_path / "explore" / "analysis").exists()


def test_committed_mdd_table_was_computed_from_the_committed_plan():
    """The pre-run MDD table must be regenerated whenever the plan changes (python -m experiments.plan_power)."""
    from causaleval.runs.store import file_sha256

    plan = load_plan(ROOT / "paper" / "plan.yaml")
    table = pd.read_csv(ROOT / plan.mdd_table)
    assert set(table.plan_sha256) == {file_sha256(ROOT / "paper" / "plan.yaml")}, \
        "paper/plan.yaml changed since its MDD table was written: rerun python -m experiments.plan_power"
    primary = table[table.role == "primary"]
    assert set(primary.model) == set(plan.models) and (primary.measure == plan.primary.measure).all()
    assert primary.mdd.notna().all()


def test_a_covariate_primary_measure_gets_the_facts_covariates(study):
    from causaleval.analysis.confirmatory import covariate_measures

    facts = pd.DataFrame({"case_id": range(5000, 5014), "known": True, "p_true": 0.3 + 0.04 * pd.Series(range(14))})
    atomic_write_parquet(study / "held" / "facts_filter.parquet", facts)
    plan = plan_dict("explore")
    plan["primary"]["measure"] = min(covariate_measures())
    (study / "plan.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
    git(study, "commit", "-q", "-am", "covariate plan")
    rec = analyze(study / "held", study / "plan.yaml")["plan"]
    p = rec["primary"]
    assert rec["label"] == CONFIRMATORY and p["measure"] == plan["primary"]["measure"]
    assert p["ci_low"] <= p["diff"] <= p["ci_high"] and 0 < p["p_one_sided"] <= 1


def test_the_planned_mdd_of_a_covariate_measure_uses_the_covariates():
    """The MDD of a covariate measure is simulated with the covariates partialled out (not left empty)."""
    from causaleval.analysis.confirmatory import planned_mdd

    rng = np.random.default_rng(0)
    y = rng.normal(size=(60, 6)) + rng.normal(size=(60, 1))
    z = rng.normal(size=(60, 2))
    mdd = planned_mdd(y, "twoway_rank_adj", 0.05, 0.8, 60, 0, z)
    assert np.isfinite(mdd) and 0 < mdd < 1
    with pytest.raises(ValueError, match="needs the fact-level covariates"):
        planned_mdd(y, "twoway_rank_adj", 0.05, 0.8, 60, 0, None)


@pytest.mark.parametrize("args, words", [
    (["--plan", "nope.yaml"], "--plan nope.yaml: file not found"),
    (["--plan", "paper/plan.yaml", "--model", "gpt2"], "models has no entry 'gpt2'"),
    (["--plan", "paper/plan.yaml", "--set", "exclude_facts_from=paper/replication/gemma3-270m"],
     "a confirmatory run studies held-out facts only; set exclude_facts_from: [paper/study]"),
])
def test_study_command_refuses_a_bad_plan_before_the_model_loads(args, words, capsys, monkeypatch):
    from experiments.main import main

    monkeypatch.chdir(ROOT)
    assert main([*args, "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1


def test_study_command_fills_the_held_out_facts_from_the_plan(capsys, monkeypatch):
    from experiments.main import main

    monkeypatch.chdir(ROOT)
    assert main(["--plan", "paper/plan.yaml", "--model", "gemma3-270m", "--print-config"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["exclude_facts_from"] == ["paper/replication/gemma3-270m"] and cfg["plan"] == "paper/plan.yaml"


def test_readme_answer_puts_the_planned_result_first_and_labels_the_rest_exploratory(study):
    from experiments import docs_pages
    from experiments.config import StudyConfig

    rec = analyze(study / "held", study / "plan.yaml")["plan"]
    analyze_folder(study / "explore", spec_from_config(StudyConfig(n_bootstrap=99)))
    block = docs_pages.answer_block(docs_pages.Sources(study / "explore", confirm=(study / "held",)))
    lines = block.splitlines()[1:-1]
    assert f"held-out facts, {rec['label']}; plan sha256 {rec['plan']['sha256'][:12]}" in lines[0]
    assert f"on {rec['primary']['n_cases']} facts" in lines[0] and rec["primary"]["verdict"] in lines[0]
    assert "exploratory" in lines[1] and len(lines) == 2
    with pytest.raises(Exception, match="no plan record"):
        docs_pages.confirm_line(study / "explore")


def _record(model, diff, low, high, verdict):
    return {"model": model, "primary": dict(diff=diff, ci_low=low, ci_high=high, verdict=verdict)}


def test_across_models_sentence_reads_verdicts_signs_and_intervals(tmp_path):
    from causaleval.reporting.confirmatory import confirm_across, write_confirm_across

    no, yes = "does not support H1: …", "supports H1 (flip exceeds noise by at least 0.010, one-sided 95% bound)"
    same = confirm_across([_record("smollm2", 0.03, -0.02, 0.08, no), _record("gemma3-270m", 0.01, -0.03, 0.05, no)])
    assert same.startswith("The two planned runs give the same answer: neither supports H1")
    assert "same sign (positive)" in same and "no interval excludes 0" in same
    split = confirm_across([_record("smollm2", 0.09, 0.02, 0.15, yes), _record("gemma3-270m", -0.04, -0.09, 0.01, no)])
    assert "disagree: H1 is supported on SmolLM2-135M and not on Gemma 3 270M" in split
    assert "differ in sign (SmolLM2-135M positive, Gemma 3 270M negative)" in split
    assert "of the intervals, only SmolLM2-135M's lies above 0" in split
    apart = confirm_across([_record("smollm2", 0.09, 0.02, 0.15, yes), _record("gemma3-270m", -0.04, -0.09, -0.01, no)])
    assert "of the intervals, SmolLM2-135M's lies above 0 and Gemma 3 270M's lies below 0" in apart
    # written only with two planned runs; a stale sentence is removed when one is left
    for name, rec in [("a", _record("smollm2", 0.03, -0.02, 0.08, no)), ("b", _record("gemma3-270m", 0.01, -0.03, 0.05, no))]:
        (tmp_path / name / "analysis").mkdir(parents=True)
        (tmp_path / name / "analysis" / "confirmatory.json").write_text(json.dumps(rec))
    out = write_confirm_across([tmp_path / "a", tmp_path / "b"], tmp_path / "paper")
    assert out and r"\newcommand{\ConfirmAcross}{The two planned runs" in out[0].read_text()
    assert write_confirm_across([tmp_path / "a"], tmp_path / "paper") == [] and not out[0].exists()


def test_planned_runs_are_reported_main_model_first(tmp_path):
    from experiments.docs_pages import main_model_first

    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "run.json").write_text(json.dumps({"config": {"model": "smollm2"}}))
    folders = [tmp_path / "confirm" / n for n in ("smollm2", "gemma3-270m", "a-model")]
    assert [d.name for d in main_model_first(folders, tmp_path / "study")] == ["smollm2", "a-model", "gemma3-270m"]
    assert [d.name for d in main_model_first(folders, tmp_path / "none")] == ["a-model", "gemma3-270m", "smollm2"]
