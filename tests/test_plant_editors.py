"""Planting with FT-1 and MEMIT as well as ROME (tiny models): each planter's edit takes and is undone
bitwise, the validate stage records per planting editor whether each edit took and writes each editor's
tables, ROME's tables are what a ROME-only run writes, and the accuracy metrics come per planting editor."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from causaleval.data.counterfact import Fact, write_jsonl
from causaleval.data.tokens import answer_ids
from causaleval.editing.rome import SecondMoments, default_contexts
from causaleval.groundtruth.planting import PLANT_EDITORS, make_planter
from causaleval.model.testing import isolated_cache, tiny_model
from experiments.config import resolve
from experiments.context import StageContext
from experiments.stages import validate
from experiments.stages.edit import _hparams

SUBJECTS = ("France", "Germany", "Spain", "Italy", "Poland", "Greece")
ANSWERS = ("Paris", "Berlin", "Madrid", "Rome", "Warsaw", "Athens")
# settings under which the tiny models' plantings take: ROME/MEMIT many v* steps, no clamp or penalty;
# FT-1 a loose clamp and more steps (the real model's defaults are in docs/editors.md)
STRONG = dict(rome_hparams={"v_num_grad_steps": 60, "clamp_norm_factor": 1000.0, "kl_factor": 0.0,
                            "v_weight_decay": 0.0},
              editor_hparams={"ft1": {"norm_constraint": 0.5, "lr": 0.05, "num_steps": 60},
                              "memit": {"v_num_grad_steps": 60, "clamp_norm_factor": 1000.0, "kl_factor": 0.0,
                                        "v_weight_decay": 0.0, "mom2_update_weight": 1.0, "window": 3}})


def _facts() -> list[Fact]:
    return [Fact(i, "The capital of {}", "P36", s, a, ANSWERS[(i + 2) % len(ANSWERS)])
            for i, (s, a) in enumerate(zip(SUBJECTS, ANSWERS))]


def _ctx(out, bundle, **over) -> StageContext:
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl([f.to_record() for f in _facts()], out / "facts.jsonl")
    settings = dict(validate_facts=3, validate_layers=[1, 2], validate_windows=[1, 3], noise_draws=2,
                    partner_draws=2, n_bootstrap=50, validate_permutations=99, rome_context_texts=2,
                    rome_stat_tokens=300, max_facts=None, shard_size=3, **STRONG)
    settings.update(over)
    return StageContext(config=resolve("smoke", **settings), out_dir=out, progress=False, _bundle=bundle)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    yield from isolated_cache(tmp_path / "cache", monkeypatch)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("editor", ["ft1", "memit"])
def test_planter_edit_takes_and_is_undone_bitwise(cache, family, editor):
    bundle = tiny_model(family, n_layers=4)
    c = resolve("smoke", rome_context_texts=2, rome_stat_tokens=300, **STRONG)
    hp = _hparams(bundle, c)
    stats = SecondMoments(bundle, hp, seed=0, progress=False)
    planter = make_planter(editor, bundle, hp, stats, default_contexts(bundle, hp), c.editor_hparams[editor])
    facts = _facts()[:2]
    original = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    edits = planter.compute(facts, 1)
    assert len(edits) == 2

    def p_new(fact):
        return float(validate._next_token(bundle, fact)[answer_ids(bundle.tokenizer, fact.target_new)[0]])

    before = [p_new(f) for f in facts]
    for fact, edit, b in zip(facts, edits, before):
        with planter.apply(edit):
            assert p_new(fact) > b            # the planting raises p(o_new)
        for k, v in bundle.model.state_dict().items():
            assert torch.equal(v, original[k]), k
    with pytest.raises(RuntimeError):         # restored after an exception too
        with planter.apply(edits[0]):
            raise RuntimeError("boom")
    for k, v in bundle.model.state_dict().items():
        assert torch.equal(v, original[k]), k


def test_plant_editors_listed():
    assert set(PLANT_EDITORS) == {"rome", "ft1", "memit"}
    with pytest.raises(ValueError, match="not available"):
        make_planter("ft5", None, None, None, [])


@pytest.fixture(scope="module")
def three_editor_run(tmp_path_factory, one_thread_tiny_gpt2):
    root = tmp_path_factory.mktemp("plant")
    with one_thread_tiny_gpt2(root) as (bundle, _, original):
        validate.run(_ctx(root / "all", bundle, plant_editors=["rome", "ft1", "memit"]))
        validate.run(_ctx(root / "rome", bundle))
    return root, original, bundle


@pytest.mark.slow
def test_validate_plants_with_each_editor(three_editor_run):
    root, original, bundle = three_editor_run
    for k, v in bundle.model.state_dict().items():
        assert torch.equal(v, original[k]), k
    out = root / "all" / "validate"
    took = pd.read_parquet(out / "plant_success.parquet")
    assert set(took.plant_editor) == {"rome", "ft1", "memit"}
    assert set(took.planted_layer) == {"1", "2", "all"}
    for editor, g in took.groupby("plant_editor"):
        edits = pd.read_parquet(validate.editor_dir(out, editor, "rome") / "edits.parquet")
        assert len(edits) == 3 * 2
        row = g[g.planted_layer == "all"].iloc[0]
        assert row.n_took == int(edits.success.sum()) and row.n_edits == len(edits)
        assert row.n_took > 0, editor           # the strong settings plant with every editor
        sites = pd.read_parquet(validate.editor_dir(out, editor, "rome") / "sites.parquet")
        traced = sites[sites.planted_layer >= 0][["case_id", "planted_layer"]].drop_duplicates()
        ok = edits[edits.success][["case_id", "planted_layer"]]
        assert sorted(map(tuple, traced.to_numpy())) == sorted(map(tuple, ok.to_numpy()))
        acc = pd.read_parquet(validate.editor_dir(out, editor, "rome") / "accuracy.parquet")
        assert -1 in set(acc.planted_layer) and {"hit1", "mass"} <= set(acc.columns)
    assert (out / "plant_ft1" / "summary.json").is_file() and (out / "plant_memit" / "summary.json").is_file()
    assert (root / "all" / "validate_parts_ft1").is_dir()


@pytest.mark.slow
def test_rome_tables_unchanged_by_other_planting_editors(three_editor_run):
    root = three_editor_run[0]
    for name in ("edits", "localisation", "accuracy", "paired"):
        a = pd.read_parquet(root / "all" / "validate" / f"{name}.parquet")
        b = pd.read_parquet(root / "rome" / "validate" / f"{name}.parquet")
        if name == "edits":
            a, b = a.drop(columns="seconds"), b.drop(columns="seconds")
        pd.testing.assert_frame_equal(a, b)


@pytest.fixture
def quick_calibration(monkeypatch):
    """The accuracy tables' calibration simulation at 20 draws (its size/power are tested elsewhere)."""
    import experiments.groundtruth as gt

    real = gt.paired_calibration
    monkeypatch.setattr(gt, "paired_calibration", lambda **kw: real(**{**kw, "n_sim": 20, "n_perm": 99}))


@pytest.mark.slow
def test_accuracy_metrics_per_planting_editor(three_editor_run, tmp_path, quick_calibration):
    from experiments.groundtruth import accuracy

    root = three_editor_run[0]
    accuracy(root / "all" / "validate", tmp_path, n_perm=99, n_boot=50, seed=0)
    acc = pd.read_parquet(tmp_path / "accuracy.parquet")
    paired = pd.read_parquet(tmp_path / "accuracy_paired.parquet")
    rows = pd.read_parquet(tmp_path / "accuracy_rows.parquet")
    assert set(acc.plant_editor) == set(paired.plant_editor) == set(rows.plant_editor) == {"rome", "ft1", "memit"}
    # each editor's table is the one computed from its own profiles alone
    from causaleval.groundtruth.accuracy import accuracy_rows, accuracy_summary

    prof = pd.read_parquet(root / "all" / "validate" / "plant_memit" / "profiles.parquet")
    alone = accuracy_summary(accuracy_rows(prof, 4), 4, 99, 50, 0)
    got = acc[acc.plant_editor == "memit"].drop(columns="plant_editor").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, alone)


@pytest.mark.slow
def test_report_keeps_rome_main_table_and_adds_one_per_editor(three_editor_run, tmp_path, quick_calibration):
    import shutil
    from pathlib import Path

    from causaleval.reporting.groundtruth import write_groundtruth_report
    from experiments.groundtruth import accuracy

    root = three_editor_run[0]
    accuracy(root / "all" / "validate", tmp_path / "gt", n_perm=99, n_boot=50, seed=0)
    accuracy(root / "rome" / "validate", tmp_path / "gt_rome", n_perm=99, n_boot=50, seed=0)
    committed = Path(__file__).resolve().parents[1] / "paper" / "groundtruth" / "knockout.parquet"
    for d in ("gt", "gt_rome"):
        shutil.copy(committed, tmp_path / d / "knockout.parquet")
    paths = {p.name: p.read_text() for p in write_groundtruth_report(tmp_path / "gt", tmp_path / "out")}
    alone = {p.name: p.read_text() for p in write_groundtruth_report(tmp_path / "gt_rome", tmp_path / "out_rome")}
    assert paths["groundtruth_accuracy.tex"] == alone["groundtruth_accuracy.tex"]
    assert {"groundtruth_accuracy_ft1.tex", "groundtruth_accuracy_memit.tex"} <= set(paths)


@pytest.mark.slow
def test_publish_validate_copies_each_planting_editors_tables(three_editor_run, tmp_path):
    from experiments.publish import publish_validate

    root = three_editor_run[0]
    copied = {str(p.relative_to(tmp_path / "pub")) for p in publish_validate(root / "all", tmp_path / "pub")}
    assert {"plant_success.parquet", "plant_ft1/accuracy.parquet", "plant_memit/profiles.parquet"} <= copied
