"""The positive control's one command (experiments.control_study): both stages get the committed study's
settings (10 noise draws, 10 partners, 9 edit layers, MLP window 5, 4 ROME context texts) with the control's
facts and three planting editors, so the folder stays one resumable run."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments import control_study
from experiments import main as main_mod
from experiments.context import edit_layers_for

STUDY = Path(__file__).resolve().parents[1] / "paper" / "study" / "run.json"


@pytest.mark.skipif(not STUDY.is_file(), reason="the committed study's run.json is not in this checkout")
def test_both_stages_get_the_study_settings(tmp_path):
    args = control_study.stage_args(tmp_path / "out", 20, control_study.EDITORS, STUDY, ["seed=0"])
    configs = [main_mod.build_config(main_mod.parse_args([*args, "--stage", s])) for s in ("facts", "control")]
    assert configs[0].to_dict() == configs[1].to_dict()
    cfg = configs[1]
    assert (cfg.noise_draws, cfg.partner_draws, cfg.analysis_window, cfg.rome_context_texts) == (10, 10, 5, 4)
    assert edit_layers_for(cfg, 30) == [0, 4, 8, 12, 16, 20, 24, 28, 29]
    assert cfg.plant_editors == ["rome", "ft1", "memit"] and cfg.control_facts == 20
    assert main_mod.out_dir_for(cfg) == tmp_path / "out"


def test_a_missing_study_config_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        control_study.main(["--out", str(tmp_path / "o"), "--config", str(tmp_path / "missing.json"), "--estimate"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --config") and "file not found" in err and len(err.splitlines()) == 1
