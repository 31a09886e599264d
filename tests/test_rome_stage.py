"""The edit stage on a tiny model: output contract, resume."""

from __future__ import annotations

import pandas as pd
import torch

from causaleval.data.counterfact import Fact, write_jsonl
from causaleval.model.testing import tiny_model
from experiments.config import resolve
from experiments.context import StageContext
from experiments.stages import edit

CONTRACT = ["case_id", "relation_id", "layer", "rewrite_score", "paraphrase_score", "neighborhood_score", "es", "ps",
            "ns", "es_magnitude", "p_before_new", "p_after_new", "p_before_true", "p_after_true", "steps",
            "final_loss", "seconds"]


def test_edit_stage_writes_contract_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("CAUSALEVAL_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    facts = [Fact(i, "The capital of {}", "P36", s, "Paris", "Africa", paraphrase_prompts=[f"The capital city of {s}"],
                  neighborhood_prompts=([] if i == 1 else ["The capital of Spain"]))
             for i, s in ((1, "France"), (2, "Germany"))]
    write_jsonl([f.to_record() for f in facts], tmp_path / "facts.jsonl")
    cfg = resolve("smoke", edit_layers=[0, 3], rome_context_texts=2, rome_stat_tokens=200)
    ctx = StageContext(config=cfg, out_dir=tmp_path, progress=False, _bundle=tiny_model("llama"))
    edit.run(ctx)
    df = pd.read_parquet(tmp_path / "edits.parquet")
    assert set(CONTRACT) <= set(df.columns) and len(df) == 4
    assert df.case_id.dtype.kind == "i" and df.layer.dtype.kind == "i" and df.steps.dtype.kind == "i"
    assert df[df.case_id == 1].ns.isna().all() and df[df.case_id == 2].ns.notna().all()
    assert df[["es", "ps"]].isin([0.0, 1.0]).all().all()
    # resume: a finished case is read back, not recomputed
    part = tmp_path / "edit_parts" / "1.parquet"
    stamp = part.stat().st_mtime_ns
    (tmp_path / "edits.parquet").unlink()
    edit.run(ctx)
    assert part.stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "edits.parquet"), df)


def test_edit_stage_batched_equals_one_at_a_time(tmp_path, monkeypatch):
    """Groups of cases (rome_batch_cases) give the rows of the one-at-a-time run, a part per case."""
    monkeypatch.setenv("CAUSALEVAL_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    subjects = ["France", "Germany", "Spain"]
    facts = [Fact(i, "The capital of {}", "P36", s, "Paris", "Africa", paraphrase_prompts=[f"The capital city of {s}"],
                  neighborhood_prompts=[f"The capital of {o}" for o in subjects if o != s])
             for i, s in enumerate(subjects, 1)]
    frames = {}
    for batch in (1, 2):
        out = tmp_path / f"b{batch}"
        out.mkdir()
        write_jsonl([f.to_record() for f in facts], out / "facts.jsonl")
        cfg = resolve("smoke", edit_layers=[0, 2], rome_context_texts=2, rome_stat_tokens=200, rome_batch_cases=batch,
                      rome_max_neighbours=1)
        edit.run(StageContext(config=cfg, out_dir=out, progress=False, _bundle=tiny_model("gpt2")))
        assert sorted(p.name for p in (out / "edit_parts").glob("*.parquet")) == ["1.parquet", "2.parquet", "3.parquet"]
        frames[batch] = pd.read_parquet(out / "edits.parquet").drop(columns="seconds")
    assert (frames[1].groupby("case_id").size() == 2).all()
    # tiny models' losses are O(100) (weight decay over a tiny ‖v₀‖): equal to float32 resolution there
    pd.testing.assert_frame_equal(frames[2], frames[1], rtol=1e-6, atol=1e-5)
