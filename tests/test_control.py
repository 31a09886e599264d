"""The control stage (positive control for the H1 pipeline) on a tiny model: plantings are checked and
traced, the re-edits are scored at every edit layer on the planted model, weights come back bitwise,
and the study's analysis runs on the result; the helpers' contracts."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from causaleval.analysis.spec import AnalysisSpec
from causaleval.data.counterfact import Fact, write_jsonl
from causaleval.groundtruth.control import (
    control_layers_for,
    reedit_fact,
    split_unit,
    third_answer,
    unit_id,
)
from causaleval.groundtruth.planting import PLANT_EDITORS, make_planter
from experiments.config import ConfigError, resolve
from experiments.config import validate as check
from experiments.context import StageContext
from experiments.stages import control

SUBJECTS = ("France", "Germany", "Spain", "Italy", "Poland", "Greece")
ANSWERS = ("Paris", "Berlin", "Madrid", "Rome", "Warsaw", "Athens")


def _facts() -> list[Fact]:
    return [Fact(i, "The capital of {}", "P36", s, a, ANSWERS[(i + 2) % len(ANSWERS)], neighborhood_prompts=["x"])
            for i, (s, a) in enumerate(zip(SUBJECTS, ANSWERS))]


def _ctx(out, bundle, **over) -> StageContext:
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl([f.to_record() for f in _facts()], out / "facts.jsonl")
    settings = dict(control_facts=3, control_layers=[1, 2], edit_layers=[0, 1, 2, 3], noise_draws=2,
                    partner_draws=2, n_bootstrap=50, rome_context_texts=2, rome_stat_tokens=300, max_facts=None,
                    shard_size=1, analysis_window=1,
                    rome_hparams={"v_num_grad_steps": 60, "clamp_norm_factor": 1000.0, "kl_factor": 0.0,
                                  "v_weight_decay": 0.0})
    settings.update(over)
    return StageContext(config=resolve("smoke", **settings), out_dir=out, progress=False, _bundle=bundle)


@pytest.fixture(scope="module")
def run_once(tmp_path_factory, one_thread_tiny_gpt2):
    root = tmp_path_factory.mktemp("control")
    with one_thread_tiny_gpt2(root) as (bundle, mp, original):
        # the tiny model's p(o_new) is ≈ 0.005 after planting: no TE floor, small resamples
        mp.setattr(control, "spec_from_config", lambda c: AnalysisSpec(
            window=c.analysis_window, n_bootstrap=50, n_permutations=99, power_reps=20, te_floor=0.0))
        control.run(_ctx(root / "r", bundle))
    return root / "r", original, bundle


def test_stage_plants_traces_reedits_and_restores(run_once):
    folder, original, bundle = run_once
    for k, v in bundle.model.state_dict().items():
        assert torch.equal(v, original[k]), k
    out = folder / "control"
    plants = pd.read_parquet(out / "plantings.parquet")
    assert len(plants) == 3 * 2 and set(plants.planted_layer) == {1, 2} and set(plants.plant_editor) == {"rome"}
    assert plants.success.any()
    assert (plants.o3 != plants.o_new).all() and (plants.o3 != plants.o_true).all()
    edits = pd.read_parquet(out / "edits.parquet")
    trace = pd.read_parquet(out / "trace.parquet")
    ok = plants[plants.success]
    # every successful planting: re-edited at every edit layer and traced at the analysis sites
    assert set(edits.case_id) == set(ok.unit) == set(trace.case_id)
    assert all(sorted(g.layer) == [0, 1, 2, 3] for _, g in edits.groupby("case_id"))
    assert set(trace.estimator) == {"noise", "resample", "flip"} and set(trace.window) == {1}
    assert set(trace.layer) == {0, 1, 2, 3} and set(trace.direction) == {"denoise"}
    assert edits.rewrite_score.between(0, 1).all()
    assert edits.neighborhood_score.isna().all()       # neighbours of o say nothing about o_new → o₃
    head = pd.read_parquet(out / "headline.parquet")
    assert ok.unit.nunique() >= 3
    assert {"estimator", "h1"} <= set(head.kind) and (head.measure == "r_w").all()
    assert set(head[head.kind == "estimator"].estimator) == {"noise", "resample", "flip"}
    assert head.value.between(-1, 1).all()


def test_helpers():
    assert split_unit(unit_id(17, 8)) == (17, 8)
    assert control_layers_for(None, [0, 4, 8, 12, 16, 20, 24, 28, 29], 30) == [8, 16]
    assert control_layers_for([5, 2, 5], [0, 4], 30) == [2, 5]
    f = _facts()[0]
    first = lambda s: s[0]
    o3 = third_answer(f, _facts(), first, seed=0)
    assert o3 is not None and o3[0] not in {f.target_true[0], f.target_new[0]}
    assert o3 == third_answer(f, _facts(), first, seed=0)
    assert third_answer(f, [f], first) is None
    re = reedit_fact(f, o3, 8)
    assert (re.target_true, re.target_new, re.case_id, re.neighborhood_prompts) == (f.target_new, o3, 8, [])


def test_plant_editors_are_checked():
    check(resolve("smoke"))
    assert PLANT_EDITORS == ("rome", "ft1", "memit")
    check(dataclasses.replace(resolve("smoke"), plant_editors=["rome", "ft1", "memit"]))
    for bad in (["ft5"], [], ["rome", "rome"]):
        with pytest.raises(ConfigError, match="plant_editors"):
            check(dataclasses.replace(resolve("smoke"), plant_editors=bad))
    with pytest.raises(ValueError, match="not available"):
        make_planter("ft5", None, None, None, [])


def test_partial_finish_rebuilds_the_tables_from_finished_parts(run_once, tmp_path, monkeypatch):
    import json
    import shutil

    from experiments.groundtruth import finish_partial

    folder, _, bundle = run_once
    run = tmp_path / "stopped"
    shutil.copytree(folder / "control_parts", run / "control_parts")
    (run / "run.json").write_text(json.dumps({"config": _ctx(tmp_path / "c", bundle).config.to_dict(),
                                              "model": {"n_layers": bundle.n_layers}}))
    monkeypatch.setattr(control, "spec_from_config", lambda c: AnalysisSpec(
        window=c.analysis_window, n_bootstrap=50, n_permutations=99, power_reps=20, te_floor=0.0))
    summary = finish_partial(run)
    assert summary["partial"] and summary["n_facts_finished"] == 3 and summary["planted_layers"] == [1, 2]
    for name in ("edits", "trace", "headline"):
        pd.testing.assert_frame_equal(pd.read_parquet(run / "control" / f"{name}.parquet"),
                                      pd.read_parquet(folder / "control" / f"{name}.parquet"))
