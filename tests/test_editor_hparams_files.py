"""FT / MEMIT hyperparameter files from the command line (``--set editor_hparams.ft1=FILE``) and settings
files (``editor_hparams: {memit: FILE}``): the file's values reach the editor, a later ``--set`` name wins,
and a bad file is a one-line ConfigError before any model loads."""

from __future__ import annotations

import json

import pytest

from causaleval.errors import ConfigError
from experiments.config import load_config_file, parse_set, resolve, validate
from experiments.main import build_config, parse_args
from experiments.stages.edit import make_editor

# the MEMIT repository's hparams/MEMIT/EleutherAI_gpt-j-6B.json and an EasyEdit-style FT YAML
MEMIT_FILE = {"layers": [3, 4, 5, 6, 7, 8], "clamp_norm_factor": 0.75, "layer_selection": "all",
              "fact_token": "subject_last", "v_num_grad_steps": 25, "v_lr": 5e-1, "v_loss_layer": 27,
              "v_weight_decay": 0.5, "kl_factor": 0.0625, "mom2_adjustment": True, "mom2_update_weight": 15000,
              "rewrite_module_tmp": "transformer.h.{}.mlp.fc_out", "mom2_dataset": "wikipedia",
              "mom2_n_samples": 100000}
FT_YAML = ("alg_name: FT\nlayers: [21]\nnum_steps: 40\nlr: 1e-3\nweight_decay: 0\nkl_factor: 0\n"
           "norm_constraint: 5e-4\nrewrite_module_tmp: 'transformer.h.{}.mlp.fc_out'\n")


@pytest.fixture
def files(tmp_path):
    (tmp_path / "memit.json").write_text(json.dumps(MEMIT_FILE))
    (tmp_path / "ft.yaml").write_text(FT_YAML)
    return tmp_path


def test_set_file_loads_the_values(files):
    over = parse_set([f"editor_hparams.ft1={files / 'ft.yaml'}", f"editor_hparams.memit={files / 'memit.json'}"])
    ft1 = over["editor_hparams"]["ft1"]
    assert ft1 == {"lr": 1e-3, "num_steps": 40, "norm_constraint": 5e-4, "weight_decay": 0.0}
    memit = over["editor_hparams"]["memit"]
    assert memit["window"] == 6 and memit["v_num_grad_steps"] == 25 and memit["mom2_update_weight"] == 15000.0
    cfg = resolve("smoke", editors=["rome", "ft1", "memit"], editor_hparams=over["editor_hparams"])
    validate(cfg)
    editor = make_editor("ft1", None, cfg, None, None, [])
    assert (editor.hp.lr, editor.hp.num_steps, editor.hp.norm_constraint, editor.hp.window) == (1e-3, 40, 5e-4, 1)


def test_ft5_keeps_its_window_and_unset_values(files):
    (files / "lr.json").write_text(json.dumps({"alg_name": "FT", "lr": 2e-3}))
    over = parse_set([f"editor_hparams.ft5={files / 'lr.json'}"])["editor_hparams"]["ft5"]
    assert over == {"lr": 2e-3}          # ε stays FT-5's own (not the FT-1 default of the file reader)
    over = parse_set([f"editor_hparams.ft5={files / 'ft.yaml'}"])["editor_hparams"]["ft5"]
    assert "window" not in over          # a file's one layer does not make FT-5 tune one layer


def test_later_set_wins(files):
    over = parse_set([f"editor_hparams.ft1={files / 'ft.yaml'}", "editor_hparams.ft1.lr=7e-4"])["editor_hparams"]
    assert over["ft1"]["lr"] == 7e-4 and over["ft1"]["num_steps"] == 40


def test_settings_file_path(files):
    (files / "settings.yaml").write_text(f"editors: [memit]\neditor_hparams:\n  memit: {files / 'memit.json'}\n")
    out = load_config_file(files / "settings.yaml")
    assert out["editor_hparams"]["memit"]["window"] == 6


def test_command_line(files):
    cfg = build_config(parse_args(["--preset", "smoke", "--set", "editors=rome,ft1",
                                   "--set", f"editor_hparams.ft1={files / 'ft.yaml'}"]))
    assert cfg.editor_hparams["ft1"]["norm_constraint"] == 5e-4


@pytest.mark.parametrize("key, content, match", [
    ("ft1", None, "not found"),
    ("ft1", {"alg_name": "FT", "norm_constraint": False}, "unconstrained"),
    ("ft1", {"alg_name": "FT", "lr": -1}, "lr"),
    ("memit", {"alg_name": "ROME", "layers": [5]}, "alg_name"),
    ("memit", {"fact_token": "last"}, "fact_token"),
    ("rome", {"layers": [5]}, "--rome-hparams"),
    ("ft9", {"lr": 1e-3}, "only ft1, ft5 and memit"),
])
def test_bad_file_is_one_line_error(files, key, content, match):
    path = files / "h.json"
    if content is not None:
        path.write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=match) as err:
        parse_set([f"editor_hparams.{key}={path}"])
    assert "\n" not in str(err.value)
