"""The three estimators through the trace stage on a tiny model: the output contract, exclusions,
resuming, figures."""

import dataclasses

import pandas as pd
import pytest

from causaleval.data.counterfact import Fact, write_jsonl
from causaleval.data.geofacts import build_facts
from causaleval.errors import SiteError
from experiments.config import resolve
from experiments.context import StageContext
from experiments.stages import trace as trace_stage

SITE_COLUMNS = ["estimator", "direction", "metric", "case_id", "relation_id", "component", "window", "layer",
                "position", "role", "ie", "te", "ie_norm", "n_draws", "support_size"]


def _facts():
    pool = [f for f in build_facts(seed=0) if f.relation_id == "P36"][:12]
    lonely = dataclasses.replace(pool[0], case_id=99_999, relation_id="P_lonely")
    return pool[:2] + [lonely] + pool[2:]


def _ctx(tmp_path, bundle, **over):
    facts = _facts()
    write_jsonl([f.to_record() for f in facts], tmp_path / "facts.jsonl")
    settings = dict(analysis_window=3, trace_window=3, edit_layers=[0, 2, 3], noise_draws=2, partner_draws=2,
                    n_bootstrap=50, heatmap_cases=1)
    settings.update(over)
    cfg = resolve("smoke", **settings)
    cfg = dataclasses.replace(cfg, trace_layers=None, max_facts=None)
    ctx = StageContext(config=cfg, out_dir=tmp_path, progress=False, _bundle=bundle)
    ctx.__dict__["study_facts"] = facts[:3]
    return ctx


def test_trace_stage_writes_the_contract(tmp_path, tiny_llama):
    ctx = _ctx(tmp_path, tiny_llama)
    trace_stage.run(ctx)
    sites = pd.read_parquet(tmp_path / "trace.parquet")
    assert list(sites.columns) == SITE_COLUMNS
    assert set(sites.estimator) == {"noise", "resample", "flip"}
    assert set(sites[sites.estimator == "flip"].direction) == {"denoise", "noise"}
    assert set(sites[sites.estimator == "flip"].metric) == {"p", "ld"}
    assert set(sites[sites.estimator != "flip"].metric) == {"p"}
    # the analysis set: MLP window 3 at every edit layer, every position from the subject on, every estimator
    ana = sites[(sites.component == "mlp") & (sites.window == 3) & (sites.direction == "denoise") & (sites.metric == "p")]
    for est in ("noise", "resample", "flip"):
        for cid in (f.case_id for f in _facts()[:2]):
            g = ana[(ana.estimator == est) & (ana.case_id == cid)]
            assert set(g.layer) >= {0, 2, 3}   # the heatmap case has every layer
            assert g.groupby("layer").position.nunique().min() >= 2
    # a case whose relation has no other subject is excluded and counted, not traced
    cases = pd.read_parquet(tmp_path / "trace_cases.parquet")
    lonely = cases[(cases.case_id == 99_999) & (cases.estimator != "noise")]
    assert lonely.excluded.all() and set(lonely.estimator) == {"resample", "flip"} and (lonely.support_size == 0).all()
    assert not cases[(cases.case_id != 99_999) | (cases.estimator == "noise")].excluded.any()
    assert (sites[sites.estimator == "flip"].support_size > 0).all()
    summary = pd.read_parquet(tmp_path / "trace_summary.parquet")
    assert {"estimate", "ci_low", "ci_high", "n_cases", "role"} <= set(summary.columns)
    ok = summary.dropna(subset=["ci_low"])
    assert ((ok.ci_low <= ok.estimate + 1e-12) & (ok.estimate <= ok.ci_high + 1e-12)).all()
    draws = pd.read_parquet(tmp_path / "trace_draws.parquet")
    assert set(draws.component) == {"mlp"} and len(draws)
    for est in ("noise", "resample", "flip"):
        assert (tmp_path / "figures" / f"trace_{est}_residual.png").is_file()
    # the heatmap set only for the first case
    assert sites[sites.component == "residual"].case_id.nunique() == 1


def test_trace_stage_resumes_from_finished_parts(tmp_path, tiny_llama):
    ctx = _ctx(tmp_path, tiny_llama, trace_estimators=["noise"])
    trace_stage.run(ctx)
    first = pd.read_parquet(tmp_path / "trace.parquet")
    part = tmp_path / "trace_parts" / f"noise_{_facts()[0].case_id}_sites.parquet"
    stamp = part.stat().st_mtime_ns
    (tmp_path / "trace.parquet").unlink()
    trace_stage.run(ctx)
    assert part.stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(first, pd.read_parquet(tmp_path / "trace.parquet"))


def test_window_larger_than_the_model_is_a_clear_error(tmp_path, tiny_llama):
    ctx = _ctx(tmp_path, tiny_llama, trace_estimators=["noise"], analysis_window=9)
    with pytest.raises(SiteError, match="window 9"):
        trace_stage.run(ctx)


def test_unknown_estimator_is_an_error(tmp_path, tiny_llama):
    with pytest.raises(ValueError, match="estimator"):
        trace_stage.run(_ctx(tmp_path, tiny_llama, trace_estimators=["gradient"]))


def test_fact_dataclass_round_trip_keeps_relation():
    f = _facts()[2]
    assert isinstance(f, Fact) and f.relation_id == "P_lonely"


def test_trace_seed_redraws_noise_and_partners_on_the_same_facts(tmp_path, tiny_llama):
    """``trace_seed`` (a test–retest of the localisers) changes the draws, not the facts; null keeps ``seed``."""
    runs = {}
    for name, over in {"same": {}, "explicit": {"trace_seed": 0}, "other": {"trace_seed": 7}}.items():
        out = tmp_path / name
        out.mkdir()
        ctx = _ctx(out, tiny_llama, trace_estimators=["noise", "resample"], heatmap_cases=0, **over)
        trace_stage.run(ctx)
        runs[name] = pd.read_parquet(out / "trace_draws.parquet")
    a, b, c = runs["same"], runs["explicit"], runs["other"]
    pd.testing.assert_frame_equal(a, b)
    assert set(a.case_id) == set(c.case_id) and len(a) == len(c)
    noise_a, noise_c = (r[r.estimator == "noise"].value.to_numpy() for r in (a, c))
    assert not (abs(noise_a - noise_c) < 1e-12).all()
    assert {"value", "te"} <= set(a.columns) and a.te.notna().all()
