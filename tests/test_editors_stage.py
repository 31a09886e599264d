"""The edit stage with several editors (tiny model): an editor column, ROME's rows unchanged, parts resumable
per editor and case; analyze per editor on a synthetic results folder; the editors' table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from causaleval.analysis import AnalysisSpec
from causaleval.analysis.editors import comparison, editor_names, primary_edits
from causaleval.data.counterfact import Fact, write_jsonl
from causaleval.errors import ConfigError
from causaleval.model.testing import tiny_model
from causaleval.runs.store import atomic_write_parquet
from experiments.config import parse_set, resolve, validate
from experiments.context import StageContext
from experiments.stages import edit
from experiments.stages.analyze import analyze_folder


def _facts(tmp_path):
    subjects = ["France", "Germany", "Spain"]
    facts = [Fact(i, "The capital of {}", "P36", s, "Paris", "Africa", paraphrase_prompts=[f"The capital city of {s}"],
                  neighborhood_prompts=[f"The capital of {o}" for o in subjects if o != s])
             for i, s in enumerate(subjects, 1)]
    write_jsonl([f.to_record() for f in facts], tmp_path / "facts.jsonl")


def test_edit_stage_with_editors_resumes_per_editor(tmp_path, monkeypatch):
    monkeypatch.setenv("CAUSALEVAL_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    common = dict(edit_layers=[0, 3], rome_context_texts=2, rome_stat_tokens=200, rome_batch_cases=2,
                  rome_max_neighbours=1)
    bundle = tiny_model("llama")
    only = tmp_path / "rome"
    only.mkdir()
    _facts(only)
    edit.run(StageContext(config=resolve("smoke", **common), out_dir=only, progress=False, _bundle=bundle))
    _facts(tmp_path)
    editors = ["rome", "ft1", "ft5", "memit"]
    cfg = resolve("smoke", editors=editors, **common)
    ctx = StageContext(config=cfg, out_dir=tmp_path, progress=False, _bundle=bundle)
    edit.run(ctx)
    df = pd.read_parquet(tmp_path / "edits.parquet")
    assert editor_names(df) == editors and len(df) == 3 * 2 * 4
    assert (df.groupby(["editor", "case_id"]).size() == 2).all()
    # ROME's rows are those of a ROME-only run
    rome_only = pd.read_parquet(only / "edits.parquet")
    pd.testing.assert_frame_equal(primary_edits(df).drop(columns="seconds"),
                                  rome_only.drop(columns=["seconds", "editor"]), rtol=1e-6, atol=1e-5)
    for e in editors:
        assert sorted(p.name for p in (tmp_path / edit.parts_dir(e)).glob("*.parquet")) == \
            ["1.parquet", "2.parquet", "3.parquet"]
    summary = pd.read_parquet(tmp_path / "edit_summary.parquet")
    assert set(summary.editor) == set(editors)
    prov = json.loads((tmp_path / "edit_provenance.json").read_text())
    from causaleval.editing.ft import FT_PRESETS

    assert prov["editors"]["ft5"]["norm_constraint"] == FT_PRESETS["ft5"].norm_constraint
    # resume: only the missing part of one editor is recomputed
    gone = tmp_path / "edit_parts_ft5" / "2.parquet"
    gone.unlink()
    stamps = {p: p.stat().st_mtime_ns for e in editors for p in (tmp_path / edit.parts_dir(e)).glob("*.parquet")}
    edit.run(ctx)
    assert gone.is_file()
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    again = pd.read_parquet(tmp_path / "edits.parquet")
    pd.testing.assert_frame_equal(again.drop(columns="seconds"), df.drop(columns="seconds"), rtol=1e-5, atol=1e-5)


def test_editors_settings_are_checked_before_the_model_loads():
    assert parse_set(["editors=rome,ft1"])["editors"] == ["rome", "ft1"]
    over = parse_set(["editor_hparams.ft5.norm_constraint=2e-5", "editor_hparams.memit.window=3"])["editor_hparams"]
    assert over == {"ft5": {"norm_constraint": 2e-5}, "memit": {"window": 3}}
    with pytest.raises(ConfigError, match="window"):
        parse_set(["editor_hparams.memit.window=2.5"])
    validate(resolve("smoke", editors=["ft5"], editor_hparams=over))
    for editors, hparams, match in ((["rome", "ft9"], {}, "ft9"), (["ft1"], {"ft1": {"lr": -1.0}}, "lr"),
                                    (["memit"], {"memit": {"nonsense": 1}}, "unknown"),
                                    (["rome"], {"rome": {"v_lr": 1.0}}, "rome_hparams")):
        with pytest.raises(ConfigError, match=match):
            validate(resolve("smoke", editors=editors, editor_hparams=hparams))


def test_analyze_per_editor_and_table(tmp_path, twin_synthetic_runs):
    """ROME's analysis is unchanged by other editors' rows; each editor gets its own tests and a row in the
    comparison; the report writes tables/editors.tex."""
    plain, multi, edits, ft, rng = twin_synthetic_runs
    atomic_write_parquet(multi / "edits.parquet", pd.concat([edits.assign(editor="rome"), ft.assign(editor="ft1")]))
    a = AnalysisSpec(window=5, n_bootstrap=50, seed=0)
    a = a.__class__(**{**a.__dict__, "n_permutations": 99, "power_reps": 20})
    s_plain = analyze_folder(plain, a)
    s_multi = analyze_folder(multi, a)
    assert s_multi["variants"]["default"]["h1"] == s_plain["variants"]["default"]["h1"]
    table = pd.read_parquet(multi / "analysis" / "editors.parquet")
    assert list(dict.fromkeys(table.editor)) == ["rome", "ft1"]
    ft_summary = json.loads((multi / "editors" / "ft1" / "analysis" / "summary.json").read_text())
    got = table[table.editor == "ft1"].h1_diff.iloc[0]
    assert got == ft_summary["variants"]["default"]["h1"]["rewrite_score"]["flip-noise"]["diff"]
    assert table[table.editor == "rome"].h1_diff.iloc[0] == \
        s_plain["variants"]["default"]["h1"]["rewrite_score"]["flip-noise"]["diff"]
    means = ft.groupby("layer").rewrite_score.mean()
    np.testing.assert_allclose(table[table.editor == "ft1"].set_index("layer").rewrite_score, means)
    from causaleval.reporting.editors import write_editors_report

    path, numbers = write_editors_report(multi, tmp_path / "out")
    text = path.read_text()
    assert "FT-1" in text and "ROME" in text and r"\label{tab:editors}" in text
    assert rf"\newcommand{{\EditorsFtOneHOne}}{{{got:.3f}}}" in numbers.read_text()
    assert write_editors_report(plain, tmp_path / "none") == []


def test_comparison_reads_old_tables_as_rome():
    edits = pd.DataFrame({"case_id": [1, 1], "layer": [0, 1], "rewrite_score": [0.5, 0.7],
                          "paraphrase_score": [0.1, 0.2], "neighborhood_score": [0.9, 0.8], "es": [1.0, 1.0]})
    t = comparison(edits, {"rome": {}})
    assert list(t.editor) == ["rome", "rome"] and t.h1_diff.isna().all()
    assert primary_edits(edits) is edits
