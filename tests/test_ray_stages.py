"""The trace and edit stages give the same results on the local and the Ray backend."""

import dataclasses

import pandas as pd
import pytest
import torch

from causaleval.data.counterfact import write_jsonl
from causaleval.data.geofacts import build_facts
from causaleval.model.loading import load_model
from causaleval.model.testing import tiny_model
from experiments.config import resolve
from experiments.context import StageContext
from experiments.stages import edit, trace

ray = pytest.importorskip("ray", reason="the Ray backend is an optional extra: pip install '.[ray]'")


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray-stages")
    folder = root / "tiny-llama"
    b = tiny_model("llama")
    b.model.save_pretrained(folder)
    b.tokenizer.save_pretrained(folder)
    facts = [f for f in build_facts(seed=0) if f.relation_id == "P30"][:8]
    return root, str(folder), facts


def _run(root, folder, facts, backend, monkeypatch):
    out = root / backend
    out.mkdir()
    write_jsonl([f.to_record() for f in facts], out / "facts.jsonl")
    cfg = resolve("smoke", model=folder, edit_layers=[0, 3], analysis_window=3, trace_window=3, noise_draws=2,
                  partner_draws=2, n_bootstrap=50, heatmap_cases=1, rome_context_texts=2, rome_stat_tokens=200,
                  backend=backend, workers=2, shard_size=2)
    cfg = dataclasses.replace(cfg, trace_layers=None, max_facts=None)
    ctx = StageContext(config=cfg, out_dir=out, progress=False, _bundle=load_model(folder))
    ctx.__dict__["study_facts"] = facts[:4]
    trace.run(ctx)
    edit.run(ctx)
    return pd.read_parquet(out / "trace.parquet"), pd.read_parquet(out / "edits.parquet")


@pytest.mark.slow
def test_same_seed_same_results_local_and_ray(setting, monkeypatch):
    root, folder, facts = setting
    cache = str(root / "cache")
    monkeypatch.setenv("CAUSALEVAL_CACHE", cache)
    torch.set_num_threads(1)
    local_trace, local_edits = _run(root, folder, facts, "local", monkeypatch)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": {"CAUSALEVAL_CACHE": cache, "OMP_NUM_THREADS": "1"}})
    try:
        ray_trace, ray_edits = _run(root, folder, facts, "ray", monkeypatch)
    finally:
        ray.shutdown()
    keys = ["estimator", "direction", "metric", "case_id", "component", "window", "layer", "position"]
    a, b = (t.sort_values(keys).reset_index(drop=True) for t in (local_trace, ray_trace))
    assert len(a) > 100
    pd.testing.assert_frame_equal(a, b, rtol=1e-5, atol=1e-6)
    cols = [c for c in local_edits.columns if c != "seconds"]
    a, b = (t.sort_values(["case_id", "layer"]).reset_index(drop=True)[cols] for t in (local_edits, ray_edits))
    assert len(a) == 8
    pd.testing.assert_frame_equal(a, b, rtol=1e-4, atol=1e-6)
