"""The onset layer of last-token residual restoration (causaleval.groundtruth.onset): its definition on known
profiles, a tiny model whose onset is known by construction, its baselines, the size and power of its
paired test under a dependent simulated null, and the validate stage's onset tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from causaleval.data.counterfact import Fact
from causaleval.estimators import noise_tracing, resample_scrubbing
from causaleval.groundtruth.onset import (
    chance,
    onset_calibration,
    onset_layer,
    onset_rows,
    onset_summary,
    rule_scores,
)
from causaleval.model.testing import tiny_model
from causaleval.patching.estimands import SiteGrid
from experiments.config import ConfigError, resolve
from experiments.config import validate as validate_config
from experiments.stages import validate

SUBJECTS = ("France", "Germany", "Spain", "Italy", "Poland", "Greece")
ANSWERS = ("Paris", "Berlin", "Madrid", "Rome", "Warsaw", "Athens")


def _facts() -> list[Fact]:
    return [Fact(i, "The capital of {} is", "P36", s, a, ANSWERS[(i + 2) % len(ANSWERS)])
            for i, (s, a) in enumerate(zip(SUBJECTS, ANSWERS))]


def test_onset_is_the_first_layer_at_half_the_maximum():
    layers = np.arange(6)
    assert onset_layer(layers, np.array([0.0, 0.1, 0.2, 0.5, 0.9, 1.0])) == 3
    assert onset_layer(layers, np.array([0.0, 0.49, 0.2, 0.51, 0.9, 1.0])) == 3    # first crossing of 0.5
    assert onset_layer(layers, np.array([0.6, 0.1, 0.2, 0.5, 0.9, 1.0])) == 0
    assert onset_layer(layers, np.array([np.nan, 0.1, 0.2, 0.5, 0.9, 1.0])) == 3   # NaN never reaches
    assert np.isnan(onset_layer(layers, np.array([-0.1, -0.2, 0.0, 0.0, -1.0, 0.0])))   # nothing restored
    assert np.isnan(onset_layer(layers, np.full(6, np.nan)))
    assert onset_layer(np.array([2, 4, 8]), np.array([0.1, 0.3, 0.4])) == 4          # reports the layer, not the index


def test_chance_and_rule():
    c = chance(2, 5)     # U uniform on 0..4: |U − 2| ∈ {2,1,0,1,2}; U > 2 in {3, 4}
    assert c["onset_error"] == pytest.approx(6 / 5) and c["onset_after"] == pytest.approx(2 / 5)
    assert c["onset_lag"] == pytest.approx(0.0)
    r = rule_scores(pd.Series([5.0, 5.0, 7.0, np.nan]), planted=3)       # mode 5
    assert r == {"rule_onset_error": 2.0, "rule_onset_after": 1.0, "rule_onset_lag": 2.0}
    r = rule_scores(pd.Series([1.0, 5.0]), planted=3)                     # tie: 1 and 5 split
    assert r["rule_onset_error"] == 2.0 and r["rule_onset_after"] == 0.5 and r["rule_onset_lag"] == 0.0


def _profiles(onsets: dict[tuple[int, int], int], n_layers: int = 8, estimator: str = "noise") -> pd.DataFrame:
    """Step profiles: 0 before the onset, 1 from it on, per (case, planted layer)."""
    rows = []
    for (case, planted), onset in onsets.items():
        for j in range(n_layers):
            rows.append(dict(case_id=case, relation_id="P36", estimator=estimator, window=1, planted_layer=planted,
                             layer=j, ie=float(j >= onset), ie_unedited=float(j >= n_layers - 1), te=1.0))
    return pd.DataFrame(rows)


def test_onset_rows_and_summary_on_known_profiles():
    # the estimator's onset is the planted layer + 1 for every fact; the rule predicts one layer for all
    onsets = {(c, l): l + 1 for c in range(6) for l in (1, 5)}
    rows = onset_rows(_profiles(onsets))
    assert (rows.onset == rows.planted_layer + 1).all() and (rows.onset_error == 1).all()
    assert (rows.onset_after == 1).all() and (rows.onset_unedited == 7).all()
    # the other facts' onsets 2 and 6 tie as modes: l = 1 scores (1 + 5)/2 = 3, l = 5 scores (3 + 1)/2 = 2
    assert (rows.rule_onset_error == np.where(rows.planted_layer == 1, 3.0, 2.0)).all()
    s = onset_summary(rows, n_layers=8, n_perm=199, n_resamples=100).set_index("metric")
    assert s.loc["onset_error", "mean"] == 1.0 and s.loc["onset_error", "rule"] == 2.5
    # chance: E|U − 1| = 22/8 and E|U − 5| = 18/8 for U uniform on 0..7
    assert s.loc["onset_error", "minus_rule"] == -1.5 and s.loc["onset_error", "chance"] == pytest.approx(2.5)
    assert s.loc["onset_error", "p_rule"] < 0.05


def _attention_only_at(bundle, k: int):
    """Zero the attention output of every block but ``k``: the last token sees the subject only at block k."""
    for layer in range(bundle.n_layers):
        if layer != k:
            proj = bundle.model.model.layers[layer].self_attn.o_proj
            proj.weight.zero_()
            if proj.bias is not None:
                proj.bias.zero_()


@pytest.mark.parametrize("k", [1, 3])
def test_onset_is_known_by_construction(k):
    """With attention only in block k, the last (non-subject) token's residual stream is the same in the clean
    and the corrupted run before block k, and after block k nothing reads any other position: restoring it
    after block j restores nothing for j < k and the whole clean output for j ≥ k, so the onset is k."""
    bundle = tiny_model("llama", n_layers=5)
    with torch.no_grad():
        _attention_only_at(bundle, k)
    facts = _facts()
    grid = (SiteGrid("residual", 1, None, "last"),)
    nu = noise_tracing.noise_scale(bundle, facts, 3.0)
    noise = noise_tracing.trace_facts(bundle, facts, noise_tracing.NoiseTracingConfig(nu=nu, n_draws=3, seed=0,
                                                                                        grids=grid), keep_draws=False)
    resample = resample_scrubbing.trace_facts(bundle, facts, facts, resample_scrubbing.ScrubbingConfig(
        n_draws=3, seed=0, grids=grid), keep_draws=False)
    found = 0
    for tables in [*noise, *resample]:
        s = tables.sites
        s = s[(s.metric == "p") & (s.direction == "denoise")].sort_values("layer")
        assert set(s.component) == {"residual"} and s.position.nunique() == 1
        te = float(s.te.iloc[0])
        if abs(te) < 1e-6:
            continue
        early, late = s[s.layer < k], s[s.layer >= k]
        assert np.allclose(early.ie, 0.0, atol=1e-6) and np.allclose(late.ie, te, rtol=1e-4, atol=1e-7)
        if te > 0:
            assert onset_layer(s.layer.to_numpy(), s.ie.to_numpy()) == k
            found += 1
    assert found >= 2, "no traced case restored anything; the construction did not test the onset"


def test_onset_paired_test_holds_its_size_and_has_power():
    """Under a null that keeps a fact's onsets correlated across planted layers and between estimators the
    sign-flip test of onset_error rejects at ≈ 5 % (within 3 Monte-Carlo SE); a shift of 2 layers is found."""
    cal = onset_calibration(n_facts=30, n_sim=300, n_perm=199, shifts=(0.0, 2.0), seed=1).set_index("shift")
    size = cal.loc[0.0]
    assert abs(size.rejection - 0.05) <= 3 * np.sqrt(0.05 * 0.95 / 300), size
    assert cal.loc[2.0].rejection > 0.8 and cal.loc[2.0].mean_diff < 0


def test_validate_components_is_checked():
    assert resolve("smoke").validate_components == ["mlp"]
    validate_config(resolve("smoke", validate_components=["mlp", "residual"]))
    for bad in (["residual"], ["mlp", "mlp"], ["mlp", "attn"]):
        with pytest.raises(ConfigError, match="validate_components"):
            validate_config(resolve("smoke", validate_components=bad))


def test_grids_add_the_last_token_residual_stream():
    g = validate.grids([1, 5], "from_subject", ["mlp", "residual"])
    assert [(x.component, x.window, x.positions) for x in g] == [("mlp", 1, "from_subject"), ("mlp", 5, "from_subject"),
                                                                  ("residual", 1, "last")]
    assert all(x.component == "mlp" for x in validate.grids([1, 5]))


def test_onset_profiles_leave_out_prompts_ending_in_the_subject():
    rows = []
    for case, pos in ((0, 4), (1, 3)):
        for planted in (-1, 2):
            for layer in range(3):
                rows.append(dict(case_id=case, relation_id="P36", estimator="noise", window=1, planted_layer=planted,
                                 layer=layer, position=pos, direction="denoise", component="residual", ie=0.1, te=0.2))
    sites = pd.DataFrame(rows)
    prof = validate.onset_profiles_of(sites, end_pos={0: 4, 1: 3}, subject_pos={0: 2, 1: 3})
    assert set(prof.case_id) == {0} and set(prof.planted_layer) == {2} and prof.ie_unedited.notna().all()
    assert validate.onset_profiles_of(sites.assign(component="mlp"), {0: 4, 1: 3}, {0: 2, 1: 3}).empty


STRONG = dict(rome_hparams={"v_num_grad_steps": 60, "clamp_norm_factor": 1000.0, "kl_factor": 0.0,
                            "v_weight_decay": 0.0},
              editor_hparams={"ft1": {"norm_constraint": 0.5, "lr": 0.05, "num_steps": 60}})


@pytest.fixture(scope="module")
def onset_run(tmp_path_factory, one_thread_tiny_gpt2):
    """The validate stage with the onset trace, planted by ROME and FT-1, on a tiny GPT-2; its report.  (On
    the tiny random models ROME's plantings do not take on prompts with a token after the subject; FT-1's,
    which change the MLP output at every prompt token, do.)"""
    from causaleval.data.counterfact import write_jsonl
    from causaleval.reporting.validate import write_validate_report
    from experiments.context import StageContext

    root = tmp_path_factory.mktemp("onset")
    out = root / "r"
    out.mkdir()
    write_jsonl([f.to_record() for f in _facts()], out / "facts.jsonl")
    cfg = resolve("smoke", validate_facts=3, validate_layers=[1, 2], validate_windows=[1, 3], noise_draws=2,
                  partner_draws=2, n_bootstrap=50, validate_permutations=99, rome_context_texts=2,
                  rome_stat_tokens=300, max_facts=None, shard_size=3, plant_editors=["rome", "ft1"],
                  validate_components=["mlp", "residual"], **STRONG)
    with one_thread_tiny_gpt2(root) as (bundle, _, _):
        validate.run(StageContext(config=cfg, out_dir=out, progress=False, _bundle=bundle))
        paths = write_validate_report(out / "validate", root / "report")
    return out / "validate", paths


@pytest.mark.slow
def test_stage_writes_the_onset_tables_per_planting_editor(onset_run):
    folder, paths = onset_run
    took_any = 0
    for where in (folder, folder / "plant_ft1"):
        sites = pd.read_parquet(where / "sites.parquet")
        res = sites[sites.component == "residual"]
        assert set(res.window) == {1} and set(res.layer) == {0, 1, 2, 3}
        assert res.groupby("case_id").position.nunique().eq(1).all()           # the last token only
        assert set(pd.read_parquet(where / "profiles.parquet").window) <= {1, 3}  # MLP rows only, as before
        rows = pd.read_parquet(where / "onset.parquet")
        edits = pd.read_parquet(where / "edits.parquet")
        took = edits[edits.success][["case_id", "planted_layer"]].drop_duplicates()
        assert len(rows) == 3 * len(took)                                       # every estimator, every edit that took
        ok = rows.onset.notna()
        assert (rows.onset_error[ok] == (rows.onset[ok] - rows.planted_layer[ok]).abs()).all()
        acc = pd.read_parquet(where / "onset_accuracy.parquet")
        assert set(acc.metric) == {"onset_error", "onset_after", "onset_lag"} if len(took) else acc.empty
        if len(took):
            paired = pd.read_parquet(where / "onset_paired.parquet")
            assert set(zip(paired.a, paired.b)) == {("flip", "noise"), ("resample", "noise")}
        took_any += len(took)
    assert took_any, "no planting took with either editor; the onset tables were not exercised"
    names = {p.name for p in paths}
    assert {"validate.tex", "validate_ft1.tex", "validate_plant_success.tex", "validate_onset.tex"} <= names
    text = {p.name: p.read_text() for p in paths}
    assert "FT-1 planted it" in text["validate_ft1.tex"] and "ROME planted it" in text["validate.tex"]
    assert "FT-1" in text["validate_onset.tex"] and "FT-1" in text["validate_plant_success.tex"]


@pytest.mark.slow
def test_groundtruth_accuracy_writes_the_onset_tables(onset_run, tmp_path):
    from experiments import groundtruth

    folder, _ = onset_run
    groundtruth.accuracy(folder, tmp_path, n_perm=99, n_boot=50, seed=0)
    rows = pd.read_parquet(tmp_path / "onset_rows.parquet")
    per_editor = pd.concat([pd.read_parquet(w / "onset.parquet").assign(plant_editor=e)
                            for e, w in (("rome", folder), ("ft1", folder / "plant_ft1"))], ignore_index=True)
    assert len(rows) == len(per_editor) and set(rows.plant_editor) == set(per_editor.plant_editor)
    summary = pd.read_parquet(tmp_path / "onset.parquet")
    assert set(summary.metric) == {"onset_error", "onset_after", "onset_lag"}
    assert set(pd.read_parquet(tmp_path / "onset_calibration.parquet")["shift"]) == {0.0, 1.0, 2.0}


@pytest.mark.slow
def test_groundtruth_report_renders_the_onset_table(onset_run, tmp_path):
    import shutil

    from causaleval.reporting.groundtruth import write_groundtruth_report
    from experiments import groundtruth

    folder, _ = onset_run
    committed = Path(__file__).resolve().parents[1] / "paper" / "groundtruth" / "knockout.parquet"
    if not committed.is_file():
        pytest.skip("the committed knockout table (which the report needs beside the accuracy tables) is absent")
    groundtruth.accuracy(folder, tmp_path / "gt", n_perm=99, n_boot=50, seed=0)
    shutil.copy(committed, tmp_path / "gt" / "knockout.parquet")
    paths = write_groundtruth_report(tmp_path / "gt", tmp_path / "out")
    onset = [p for p in paths if p.name == "groundtruth_onset.tex"]
    assert onset and "tab:gt-onset" in onset[0].read_text() and "FT-1" in onset[0].read_text()
