"""Backends: local and Ray give the same parts; a killed worker or a killed run loses nothing."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pandas as pd
import pytest
import torch

from causaleval.data.geofacts import build_facts
from causaleval.data.tokens import answer_ids, encode_prompt
from causaleval.model.loading import load_model
from causaleval.model.testing import tiny_model
from causaleval.runs.manifest import MANIFEST
from causaleval.runs.parts import PartStore
from experiments.backends import CaseJob, run_job
from experiments.config import StudyConfig


def _setup(bundle, config, shared):
    return {"bundle": bundle, "delay": shared.get("delay", 0.0)}


def _work(state, facts):
    """Per case: the model's probability of the true answer's first token, plus the worker's pid."""
    b = state["bundle"]
    for f in facts:
        enc = encode_prompt(b.tokenizer, f.prompt, f.subject, f.case_id)
        with torch.no_grad():
            logits = b.model(torch.tensor([enc.input_ids])).logits[0, -1]
        p = float(logits.softmax(-1)[answer_ids(b.tokenizer, f.target_true)[0]])
        time.sleep(state["delay"])
        yield str(f.case_id), pd.DataFrame([{"case_id": f.case_id, "p": p, "pid": os.getpid()}])


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    b = tiny_model("gpt2")
    b.model.save_pretrained(folder)
    b.tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray", reason="the Ray backend is an optional extra: pip install '.[ray]'")
    # Ray workers cannot import this test module: ship its functions by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


FACTS = build_facts(seed=0, relations=["P36"])[:12]


def _local(saved_tiny, tmp_path):
    cfg = StudyConfig(model=saved_tiny)
    store = PartStore(tmp_path / "local")
    keys = run_job(CaseJob("probe", _setup, _work), FACTS, store, cfg, lambda: load_model(saved_tiny), progress=False)
    return store.concat(keys)


@pytest.mark.slow
def test_ray_matches_local(saved_tiny, tmp_path, ray_session):
    local = _local(saved_tiny, tmp_path)
    cfg = StudyConfig(model=saved_tiny)
    store = PartStore(tmp_path / "ray")
    keys = run_job(CaseJob("probe", _setup, _work), FACTS, store, cfg, None, backend="ray", progress=False,
                   workers=2, shard_size=3)
    remote = store.concat(keys)
    assert list(remote.case_id) == [f.case_id for f in FACTS]
    assert remote.pid.nunique() == 2  # two workers shared the shards
    pd.testing.assert_series_equal(remote.p, local.p)


@pytest.mark.slow
def test_killed_worker_is_replaced_and_nothing_lost(saved_tiny, tmp_path, ray_session):
    local = _local(saved_tiny, tmp_path)
    cfg = StudyConfig(model=saved_tiny)
    store = PartStore(tmp_path / "ray")
    killed = []

    def kill_one(actors):
        def killer():
            pid = ray_session.get(actors[0].pid.remote())
            while not any(store.folder.glob("*.parquet")):  # mid-stage: after the first part lands
                time.sleep(0.05)
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        threading.Thread(target=killer, daemon=True).start()

    job = CaseJob("probe", _setup, _work, shared={"delay": 0.3})
    keys = run_job(job, FACTS, store, cfg, None, backend="ray", progress=False, workers=2, shard_size=2,
                   on_started=kill_one)
    assert killed, "the worker was not killed"
    result = store.concat(keys)
    assert sorted(result.case_id) == sorted(f.case_id for f in FACTS)  # none lost, none duplicated
    assert len(list(store.folder.glob("*.parquet"))) == len(FACTS)
    pd.testing.assert_series_equal(result.sort_values("case_id").p.reset_index(drop=True),
                                   local.sort_values("case_id").p.reset_index(drop=True))


@pytest.mark.slow
def test_sigkilled_run_resumes_only_missing_parts(saved_tiny, tmp_path):
    out = tmp_path / "parts"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_backends import _setup, _work, FACTS
        from causaleval.model.loading import load_model
        from causaleval.runs.parts import PartStore
        from experiments.backends import CaseJob, run_job
        from experiments.config import StudyConfig
        delay = float(sys.argv[1])
        run_job(CaseJob("probe", _setup, _work, shared={{"delay": delay}}), FACTS, PartStore({str(out)!r}),
                StudyConfig(model={saved_tiny!r}), lambda: load_model({saved_tiny!r}), progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script, "0.5"])
    deadline = time.time() + 120
    while len(list(out.glob("*.parquet"))) < 3 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    assert 3 <= len(first) < len(FACTS)
    assert not [p for p in out.glob(".*") if p.name != MANIFEST], "a partial file was left behind"
    subprocess.run([sys.executable, "-c", script, "0"], check=True)
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    assert len(after) == len(FACTS)
    assert all(after[name] == mtime for name, mtime in first.items())  # finished parts were not recomputed
