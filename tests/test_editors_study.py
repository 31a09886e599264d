"""The editors' study driver (experiments.editors_study) on a tiny model and a small pretend study folder:
ROME's committed rows are kept, each other editor's rows are the edit stage's sweep, a killed run resumes
with only the missing parts, and the analysis runs per editor."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
import torch

from causaleval.data.geofacts import build_facts
from causaleval.inference.synthetic import SyntheticSpec, synthetic_tables
from causaleval.model.testing import tiny_model
from causaleval.runs.store import atomic_write_json, atomic_write_parquet
from experiments import editors_study
from experiments.config import resolve


def _study(folder, n_cases: int = 4):
    """A study folder whose case ids are built-in facts (P36), a pretend trace and ROME edits at layers 0, 2, 3."""
    spec = SyntheticSpec(n_cases=n_cases, n_layers=4, edit_layer_step=2, seed=0)
    tables = synthetic_tables(spec)
    ids = sorted(tables["edits"].case_id.unique())
    real = [f.case_id for f in build_facts(seed=0) if f.relation_id == "P36"][:len(ids)]
    mapping = dict(zip(ids, real))
    for name, frame in tables.items():
        frame = frame.assign(case_id=frame.case_id.map(mapping)) if "case_id" in frame else frame
        if name == "edits":
            frame = frame.assign(relation_id="P36")
        atomic_write_parquet(folder / f"{name}.parquet", frame)
    cfg = resolve("smoke", rome_context_texts=2, rome_stat_tokens=200, rome_batch_cases=2, rome_max_neighbours=1,
                  edit_layers=spec.edit_layers(), n_bootstrap=50)
    atomic_write_json(folder / "run.json", {"config": dataclasses.asdict(cfg), "completed_stages": []})
    return real


@pytest.mark.slow
def test_driver_edits_resumes_and_analyses(tmp_path, monkeypatch):
    monkeypatch.setenv("CAUSALEVAL_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    study = tmp_path / "study"
    study.mkdir()
    ids = _study(study)
    bundle = tiny_model("llama", n_layers=4)
    monkeypatch.setattr("causaleval.model.loading.load_model", lambda *a, **k: bundle)
    out = tmp_path / "out"
    argv = ["--study", str(study), "--out", str(out), "--editors", "ft1,memit", "--facts", "3"]
    editors_study.main(argv)
    edits = pd.read_parquet(out / "edits.parquet")
    assert set(edits.editor) == {"rome", "ft1", "memit"}
    assert (edits.groupby("editor").case_id.nunique() == 3).all() and set(edits.layer) == {0, 2, 3}
    chosen = sorted(edits.case_id.unique())
    assert set(chosen) <= set(ids)
    rome = pd.read_parquet(study / "edits.parquet")
    pd.testing.assert_frame_equal(edits[edits.editor == "rome"][list(rome.columns)].reset_index(drop=True),
                                  rome[rome.case_id.isin(chosen)].reset_index(drop=True))
    assert set(pd.read_parquet(out / "trace.parquet").case_id) == set(chosen)
    assert (out / "analysis" / "editors.parquet").is_file()
    record = json.loads((out / "editors_study.json").read_text())
    assert record["case_ids"] == chosen and set(record["seconds"]) == {"ft1", "memit"}
    # a lost part is recomputed alone, to the same rows
    gone = out / "edit_parts_ft1" / f"{chosen[1]}.parquet"
    before = pd.read_parquet(gone)
    gone.unlink()
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("edit_parts_*/*.parquet")}
    editors_study.main(argv)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    pd.testing.assert_frame_equal(pd.read_parquet(gone).drop(columns="seconds"), before.drop(columns="seconds"),
                                  rtol=1e-5, atol=1e-6)


def test_bad_editor_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    monkeypatch.setattr("causaleval.model.loading.load_model", lambda *a, **k: pytest.fail("model loaded"))
    with pytest.raises(Exception, match="unknown 'ft3'"):
        editors_study.main(["--out", str(tmp_path / "o"), "--editors", "ft1,ft3"])


@pytest.mark.slow
def test_editors_in_parallel_processes_keep_each_others_seconds(tmp_path, monkeypatch):
    """Two processes into one folder (one editor each): the seconds the other process recorded while this
    one was running survive, and a last run with every editor recomputes nothing and combines them."""
    monkeypatch.setenv("CAUSALEVAL_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    study = tmp_path / "study"
    study.mkdir()
    _study(study, n_cases=2)
    bundle = tiny_model("llama", n_layers=4)
    monkeypatch.setattr("causaleval.model.loading.load_model", lambda *a, **k: bundle)
    out = tmp_path / "out"
    base = ["--study", str(study), "--out", str(out), "--facts", "2"]
    run_editor = editors_study.run_editor

    def other_process_meanwhile(*args, **kw):   # the ft1 process records its seconds during memit's run
        spent = run_editor(*args, **kw)
        record = json.loads((out / "editors_study.json").read_text()) if (out / "editors_study.json").is_file() else {}
        record.setdefault("seconds", {})["ft1"] = 12.5
        atomic_write_json(out / "editors_study.json", record)
        return spent

    monkeypatch.setattr(editors_study, "run_editor", other_process_meanwhile)
    editors_study.main([*base, "--editors", "memit"])
    monkeypatch.setattr(editors_study, "run_editor", run_editor)
    assert set(json.loads((out / "editors_study.json").read_text())["seconds"]) == {"ft1", "memit"}
    editors_study.main([*base, "--editors", "ft1"])
    assert set(json.loads((out / "editors_study.json").read_text())["hparams"]) == {"ft1", "memit"}
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("edit_parts_*/*.parquet")}
    editors_study.main([*base, "--editors", "ft1,memit"])
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    record = json.loads((out / "editors_study.json").read_text())
    assert record["seconds"]["ft1"] > 12.5 and record["seconds"]["memit"] > 0
    assert set(pd.read_parquet(out / "edits.parquet").editor) == {"rome", "ft1", "memit"}
