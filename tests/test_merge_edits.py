"""Splitting the edit stage over disjoint layer sets and merging gives the rows of one run."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from causaleval.data.counterfact import Fact, write_jsonl
from causaleval.errors import ResultsError
from causaleval.model.testing import tiny_model
from experiments.config import resolve
from experiments.context import StageContext
from experiments.merge_edits import merge_edits
from experiments.stages import edit


def _folder(path, facts, bundle, **overrides):
    path.mkdir()
    write_jsonl([f.to_record() for f in facts], path / "facts.jsonl")
    cfg = resolve("smoke", rome_context_texts=2, rome_stat_tokens=200, rome_max_neighbours=1, **overrides)
    (path / "run.json").write_text(json.dumps({"config": cfg.to_dict(), "model": {"n_layers": bundle.n_layers}}))
    return StageContext(config=cfg, out_dir=path, progress=False, _bundle=bundle)


def test_split_layers_merge_to_the_single_run(tmp_path, monkeypatch):
    monkeypatch.setenv("CAUSALEVAL_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    bundle = tiny_model("llama")
    subjects = ["France", "Germany"]
    facts = [Fact(i, "The capital of {}", "P36", s, "Paris", "Africa", paraphrase_prompts=[f"The capital city of {s}"],
                  neighborhood_prompts=[f"The capital of {o}" for o in subjects if o != s])
             for i, s in enumerate(subjects, 1)]
    whole = _folder(tmp_path / "whole", facts, bundle, edit_layers=[0, 2, 3])
    edit.run(whole)
    for name, layers in (("a", [0, 3]), ("b", [2])):
        edit.run(_folder(tmp_path / name, facts, bundle, edit_layers=layers))
    target = _folder(tmp_path / "target", facts, bundle, edit_layers=[0, 2, 3])
    written = merge_edits(target.out_dir, [tmp_path / "a", tmp_path / "b"])
    assert sorted(p.name for p in written) == ["1.parquet", "2.parquet"]
    record = json.loads((target.out_dir / "edit_merged_from.json").read_text())
    assert [r["layers"] for r in record] == [[0, 3], [2]] and all(r["edit_seconds"] > 0 for r in record)
    edit.run(target)                      # every part is done: only assembles
    got = pd.read_parquet(target.out_dir / "edits.parquet").drop(columns="seconds")
    want = pd.read_parquet(whole.out_dir / "edits.parquet").drop(columns="seconds")
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-5, atol=1e-6)

    with pytest.raises(ResultsError, match="layer 0 is edited in both"):
        merge_edits(target.out_dir, [tmp_path / "a", tmp_path / "whole"])
    with pytest.raises(ResultsError, match=r"configured for \[0, 2, 3\]"):
        merge_edits(target.out_dir, [tmp_path / "a"])
    other = _folder(tmp_path / "other", facts, bundle, edit_layers=[2], seed=1)
    edit.run(other)
    with pytest.raises(ResultsError, match="other settings"):
        merge_edits(target.out_dir, [tmp_path / "a", other.out_dir])
    write_jsonl([facts[0].to_record()], tmp_path / "b" / "facts.jsonl")
    with pytest.raises(ResultsError, match="did not study the same facts"):
        merge_edits(target.out_dir, [tmp_path / "a", tmp_path / "b"])
