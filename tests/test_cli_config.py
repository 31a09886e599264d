"""Configuration without editing code: --set, --config, --rome-hparams, --print-config, --help; run.json
provenance and file permissions."""

import json
import os
import stat

import pandas as pd
import pytest

from causaleval.editing.rome.hparams import RomeHyperParams, import_rome_hparams
from causaleval.runs.store import atomic_write_json, atomic_write_parquet, provenance
from experiments.config import HELP, StudyConfig, parse_set, resolve
from experiments.main import build_parser, main, parse_args

# The original ROME repository's hparams/ROME/gpt2-xl.json (Meng et al. 2022).
ROME_GPT2_XL = {
    "layers": [17], "fact_token": "subject_last", "v_num_grad_steps": 20, "v_lr": 5e-1, "v_loss_layer": 47,
    "v_weight_decay": 0.5, "clamp_norm_factor": 4, "kl_factor": 0.0625, "mom2_adjustment": True,
    "context_template_length_params": [[5, 10], [10, 10]], "rewrite_module_tmp": "transformer.h.{}.mlp.c_proj",
    "layer_module_tmp": "transformer.h.{}", "mlp_module_tmp": "transformer.h.{}.mlp",
    "attn_module_tmp": "transformer.h.{}.attn", "ln_f_module": "transformer.ln_f", "lm_head_module": "transformer.wte",
    "mom2_dataset": "wikipedia", "mom2_n_samples": 100000, "mom2_dtype": "float32"}
# EasyEdit's hparams/ROME/llama3.2-1b.yaml (its numbers written as YAML strings such as 5e-1).
EASYEDIT_LLAMA = """alg_name: "ROME"
model_name: "meta-llama/Llama-3.2-1B-Instruct"
stats_dir: "./data/stats"
device: 0
layers: [5]
fact_token: "subject_last"
v_num_grad_steps: 25
v_lr: 5e-1
v_loss_layer: 27
v_weight_decay: 1e-3
clamp_norm_factor: 4
kl_factor: 0.0625
mom2_adjustment: false
context_template_length_params: [[5, 10], [10, 10]]
rewrite_module_tmp: "model.layers.{}.mlp.down_proj"
mom2_dataset: "wikipedia"
mom2_n_samples: 100000
mom2_dtype: "float32"
model_parallel: false
fp16: true
"""


def _printed(capsys, *argv) -> dict:
    assert main(["--print-config", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_print_config_applies_typed_settings(capsys, tmp_path):
    cfg = _printed(capsys, "--preset", "smoke", "--set", "noise_draws=5", "--set", "trace_estimators=noise,flip",
                   "--set", "edit_layers=[0, 6]", "--set", "heatmap_cases=null", "--set", "noise_scale_factor=2",
                   "--set", "rome_hparams.v_lr=0.25", "--out", str(tmp_path / "r"))
    assert cfg["noise_draws"] == 5 and cfg["trace_estimators"] == ["noise", "flip"] and cfg["edit_layers"] == [0, 6]
    assert cfg["heatmap_cases"] is None and cfg["noise_scale_factor"] == 2.0
    assert cfg["rome_hparams"] == {"v_lr": 0.25} and cfg["preset"] == "smoke" and cfg["n_bootstrap"] == 200
    assert not (tmp_path / "r").exists()   # printing the config creates nothing


def test_precedence_preset_file_flags_set(capsys, tmp_path):
    (tmp_path / "c.yaml").write_text("preset: smoke\nnoise_draws: 7\nmax_facts: 4\nseed: 3\n")
    cfg = _printed(capsys, "--config", str(tmp_path / "c.yaml"), "--max-facts", "5", "--set", "seed=9")
    assert cfg["preset"] == "smoke" and cfg["n_bootstrap"] == 200     # the file's preset
    assert cfg["noise_draws"] == 7                                       # the file over the preset
    assert cfg["max_facts"] == 5                                         # a flag over the file
    assert cfg["seed"] == 9                                              # --set over the file
    cfg = _printed(capsys, "--config", str(tmp_path / "c.yaml"), "--set", "max_facts=2", "--max-facts", "5")
    assert cfg["max_facts"] == 2                                         # --set over a flag


def test_a_run_json_reproduces_its_config(capsys, tmp_path):
    original = resolve("smoke", noise_draws=4, relations=["P36"])
    (tmp_path / "run.json").write_text(json.dumps({"config": original.to_dict(), "completed_stages": {}}))
    cfg = _printed(capsys, "--config", str(tmp_path / "run.json"))
    assert cfg == json.loads(json.dumps(original.to_dict()))


def test_json_config_file(capsys, tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"trace_components": ["mlp"], "rome_key_mode": "bare",
                                                 "rome_hparams": {"kl_factor": 0.1}}))
    cfg = _printed(capsys, "--config", str(tmp_path / "c.json"))
    assert cfg["trace_components"] == ["mlp"] and cfg["rome_key_mode"] == "bare"
    assert cfg["rome_hparams"] == {"kl_factor": 0.1}


def test_parse_set_types():
    assert parse_set(["trace_layers=0,10", "max_facts=none", "trust_remote_code=true", "rome_stat_source=model"]) == {
        "trace_layers": [0, 10], "max_facts": None, "trust_remote_code": True, "rome_stat_source": "model"}
    assert parse_set(["relations=P36"]) == {"relations": ["P36"]}


def test_every_setting_and_flag_has_help_and_a_default_shown(capsys):
    assert set(HELP) == set(StudyConfig.__dataclass_fields__), "every StudyConfig field needs a HELP line"
    for action in build_parser()._actions:
        assert action.help, f"{action.option_strings} has no help text"
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = capsys.readouterr().out
    assert "(default: float32)" in text and "(default: 0)" in text and "(default: 64)" in text
    assert "default: 48, study: 200, paper: null, smoke: 6" in " ".join(text.split())   # --max-facts per preset
    assert "n_bootstrap = 1000" in text and 'rome_key_mode = "mixed"' in text


def test_rome_json_importer_maps_the_shared_settings(tmp_path):
    path = tmp_path / "gpt2-xl.json"
    path.write_text(json.dumps(ROME_GPT2_XL))
    imp = import_rome_hparams(path)
    assert imp.overrides == {"layer": 17, "v_num_grad_steps": 20, "v_lr": 0.5, "v_weight_decay": 0.5,
                             "clamp_norm_factor": 4.0, "kl_factor": 0.0625, "context_lengths": ((5, 10), (10, 10)),
                             "stat_tokens": 100000}
    assert {"v_loss_layer", "rewrite_module_tmp", "mom2_dataset", "mom2_dtype"} <= set(imp.not_used)
    assert imp.differs == {}
    hp = imp.hparams()
    assert isinstance(hp, RomeHyperParams) and hp.n_context == 20 and hp.layer_for(48) == 17


def test_easyedit_yaml_importer(tmp_path):
    path = tmp_path / "llama3.2-1b.yaml"
    path.write_text(EASYEDIT_LLAMA)
    imp = import_rome_hparams(path)
    assert imp.overrides["v_lr"] == 0.5 and imp.overrides["v_weight_decay"] == 0.001
    assert imp.overrides["v_num_grad_steps"] == 25 and imp.overrides["layer"] == 5
    assert {"alg_name", "model_name", "device", "fp16", "model_parallel", "stats_dir"} <= set(imp.not_used)
    assert "mom2_adjustment" in imp.differs


def test_rome_hparams_flag_sets_study_settings(capsys, tmp_path):
    path = tmp_path / "gpt2-xl.json"
    path.write_text(json.dumps(dict(ROME_GPT2_XL, v_lr=0.3, kl_factor=0.1)))
    assert main(["--print-config", "--rome-hparams", str(path), "--set", "rome_hparams.kl_factor=0.2"]) == 0
    captured = capsys.readouterr()
    cfg = json.loads(captured.out)
    assert cfg["rome_context_texts"] == 20 and cfg["rome_stat_tokens"] == 100000
    assert cfg["rome_hparams"] == {"v_num_grad_steps": 20, "v_lr": 0.3, "v_weight_decay": 0.5,
                                   "clamp_norm_factor": 4.0, "kl_factor": 0.2}     # --set wins over the file
    assert "not used" in captured.err and "layers" in captured.err


def test_rome_hparams_reach_the_edit_stage():
    from causaleval.model.testing import tiny_model
    from experiments.stages.edit import _hparams

    cfg = resolve("smoke", rome_context_texts=2, rome_hparams={"v_lr": 0.125, "kl_factor": 0.5})
    hp = _hparams(tiny_model("gpt2"), cfg)
    assert hp.v_lr == 0.125 and hp.kl_factor == 0.5 and hp.n_context == 2


def test_result_files_are_group_readable(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        atomic_write_parquet(tmp_path / "b.parquet", pd.DataFrame({"x": [1]}))
    finally:
        os.umask(old)
    for name in ("a.json", "b.parquet"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644
    old = os.umask(0o077)
    try:
        atomic_write_json(tmp_path / "c.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "c.json").stat().st_mode) == 0o600


def test_provenance_records_git_argv_platform_and_facts_hash(tmp_path):
    import hashlib

    facts = tmp_path / "cf.json"
    facts.write_text("[]")
    info = provenance(["--preset", "smoke"], facts)
    assert info["argv"] == ["--preset", "smoke"]
    assert info["facts_sha256"] == hashlib.sha256(b"[]").hexdigest()
    assert info["platform"]["python"] and info["devices"]["cpu_count"] >= 1
    assert info["packages"]["transformers"]
    if info["git"]:   # in a git checkout: a 40-hex commit and a dirty flag
        assert len(info["git"]["commit"]) == 40 and isinstance(info["git"]["dirty"], bool)
    from causaleval.runs.store import git_state

    assert git_state(tmp_path) == {}      # not a checkout: tolerated


def test_the_rules_table_covers_new_settings_without_a_rule():
    """A float setting without a rule must still be finite; an int one is only type-checked; a rule whose setting
    does not exist (yet) is ignored."""
    from dataclasses import dataclass, fields

    from causaleval.errors import ConfigError
    from experiments.config import RULES, check_rules

    @dataclass
    class Newer(StudyConfig):
        new_scale: float = float("nan")
        new_count: int = -5

    with pytest.raises(ConfigError, match="new_scale nan: must be a finite number"):
        check_rules(Newer())
    check_rules(Newer(new_scale=1.0))
    # rules written ahead for settings another branch adds; any other unknown name is a typo
    assert set(RULES) - {f.name for f in fields(StudyConfig)} <= {"trace_seed", "support_retrace_draws"}
