"""Integrity of results and caches (issue 34, part A): every file the package writes has its sha256 recorded and
checked on reuse and on read; --force recomputes parts; a recomputed stage invalidates the finished stages that
read its outputs; a truncated ROME statistics file is rebuilt; the validate stage honours trace_seed."""

import json
import types

import numpy as np
import pandas as pd
import pytest
import torch

from causaleval.data.geofacts import build_facts
from causaleval.errors import ResultsError
from causaleval.model.testing import isolated_cache, save_tiny_model, tiny_model
from causaleval.runs import manifest
from causaleval.runs.parts import PartStore
from causaleval.runs.store import (
    atomic_write_json,
    atomic_write_parquet,
    atomic_write_text,
    read_parquet_checked,
    unreadable,
)
from experiments import main as cli
from experiments.backends import CaseJob, run_job
from experiments.config import StudyConfig


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-gpt2"))


def _flip(path, where=1 / 3):
    """Change one byte: of a parquet file, the last byte of the first column's data (its footer still reads);
    of another file, the byte at fraction ``where``."""
    data = bytearray(path.read_bytes())
    i = int(len(data) * where)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        col = pq.read_metadata(path).row_group(0).column(0)
        start = col.dictionary_page_offset if col.has_dictionary_page else col.data_page_offset
        i = start + col.total_compressed_size - 1
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _frame(n=200):
    return pd.DataFrame({"case_id": np.arange(n), "rewrite_score": np.linspace(0, 1, n)})


def test_a_flipped_byte_is_named_where_the_footer_still_reads(tmp_path):
    import pyarrow.parquet as pq

    path = tmp_path / "edits.parquet"
    atomic_write_parquet(path, _frame())
    assert unreadable(path) is None
    _flip(path)
    pq.read_metadata(path)                              # the old check (footer only) passes
    assert "sha256 differs" in unreadable(path)
    with pytest.raises(ResultsError, match=r"edits\.parquet is corrupt \(sha256 differs"):
        read_parquet_checked(path)


def test_a_truncated_file_is_named_by_its_size(tmp_path):
    path = tmp_path / "s.json"
    atomic_write_json(path, {"x": list(range(100))})
    path.write_bytes(path.read_bytes()[:-10])
    assert "truncated" in unreadable(path)


def test_a_folder_written_before_checksums_is_accepted_with_a_note(tmp_path, caplog):
    path = tmp_path / "old" / "trace.parquet"
    atomic_write_parquet(path, _frame())
    (path.parent / manifest.MANIFEST).unlink()          # as written by an earlier version
    assert unreadable(path) is None and len(read_parquet_checked(path)) == 200
    assert "no checksum record" in caplog.text and "accepted unverified" in caplog.text
    assert cli.corrupt_outputs(path.parent) == {}


def test_a_part_with_a_flipped_byte_is_recomputed(tmp_path):
    store = PartStore(tmp_path / "edit_parts")
    store.write("7", _frame())
    _flip(store.path("7"))
    assert not store.is_done("7")
    with pytest.raises(ResultsError, match="corrupt part file"):
        store.read("7")


def test_a_truncated_support_table_is_found(tmp_path):
    atomic_write_parquet(tmp_path / "support" / "states.parquet", _frame())
    atomic_write_json(tmp_path / "support" / "summary.json", {"ok": 1})
    path = tmp_path / "support" / "states.parquet"
    path.write_bytes(path.read_bytes()[:100])
    found = cli.corrupt_outputs(tmp_path)
    assert list(found) == [path] and found[path][0] == "support"


# --- --force and invalidation, with stand-in stages ----------------------------------------------------------

def _count_job():
    calls = []

    def work(state, facts):
        for f in facts:
            calls.append(f.case_id)
            yield str(f.case_id), pd.DataFrame({"case_id": [f.case_id]})
    return CaseJob("probe", lambda b, c, s: {}, work), calls


def test_recompute_ignores_finished_parts(tmp_path):
    facts = build_facts(seed=0, relations=["P36"])[:3]
    job, calls = _count_job()
    run_job(job, facts, PartStore(tmp_path), StudyConfig(), lambda: None, progress=False)
    run_job(job, facts, PartStore(tmp_path), StudyConfig(), lambda: None, progress=False)
    assert len(calls) == 3                               # reused
    run_job(job, facts, PartStore(tmp_path, recompute=True), StudyConfig(), lambda: None, progress=False)
    assert len(calls) == 6                               # recomputed


def _fake_stages(monkeypatch, log):
    """Stand-ins for every stage: each records (stage, recompute) and writes its outputs (and a parquet table)."""
    def make(name, outputs):
        def run(ctx):
            log.append((name, ctx.recompute))
            for o in outputs:
                if o.endswith(".parquet"):
                    atomic_write_parquet(ctx.out_dir / o, _frame())
                else:
                    atomic_write_text(ctx.out_dir / o, json.dumps({"stage": name}) + "\n")
            if name == "support":
                atomic_write_parquet(ctx.out_dir / "support" / "states.parquet", _frame())
        return types.SimpleNamespace(NAME=name, OUTPUTS=outputs, run=run)

    real = {s: cli.stage_module(s) for s in cli.STAGES}
    fakes = {s: make(s, tuple(mod.OUTPUTS)) for s, mod in real.items()}
    monkeypatch.setattr(cli, "stage_module", lambda name: fakes.get(name))


def test_force_recomputes_parts_and_invalidates_dependents(tmp_path, model_dir, monkeypatch, capsys):
    log = []
    _fake_stages(monkeypatch, log)
    out = tmp_path / "r"
    base = ["--model", str(model_dir), "--out", str(out), "--quiet", "--preset", "smoke", "--set", "trace_layers=0,3",
            "--set", "trace_window=2", "--set", "analysis_window=3"]
    for stage in ("facts", "trace", "edit", "support", "analyze"):
        assert cli.main([*base, "--stage", stage]) == 0
    assert log == [(s, False) for s in ("facts", "trace", "edit", "support", "analyze")]
    log.clear()
    assert cli.main([*base, "--stage", "trace", "--force"]) == 0
    assert log == [("trace", True)]
    info = json.loads((out / "run.json").read_text())
    assert set(info["completed_stages"]) == {"facts", "trace", "edit"}
    assert info["invalidated_stages"] == ["support", "analyze"]
    log.clear()
    for stage in ("edit", "support", "analyze", "support"):
        assert cli.main([*base, "--stage", stage]) == 0
    assert log == [("support", True), ("analyze", True)]  # edit finished and untouched; support then done
    assert json.loads((out / "run.json").read_text())["invalidated_stages"] == []
    # a truncated support table is named, deleted and recomputed (analyze does not read it: still finished)
    log.clear()
    states = out / "support" / "states.parquet"
    states.write_bytes(states.read_bytes()[:50])
    assert cli.main([*base, "--stage", "support"]) == 0
    assert f"{states} is corrupt" in capsys.readouterr().out and log == [("support", False)]
    assert len(pd.read_parquet(states)) == 200
    assert "analyze" in json.loads((out / "run.json").read_text())["completed_stages"]


def test_dependency_order():
    assert cli.dependents("facts") == ["trace", "edit", "validate", "support", "analyze", "report"]
    assert cli.dependents("edit") == ["support", "analyze", "report"]
    assert cli.dependents("validate") == ["report"] and cli.dependents("report") == []


# --- ROME statistics cache and the validate stage's seed ------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_rome_statistics_file_is_rebuilt(tmp_path, monkeypatch, damage):
    from causaleval.editing.rome import SecondMoments, hparams_for

    gen = isolated_cache(tmp_path, monkeypatch)
    next(gen)
    b = tiny_model("gpt2")
    hp = hparams_for("gpt2", 4, context_lengths=((4, 2),), stat_tokens=200, stat_seq_len=20, stat_batch=32)
    first = SecondMoments(b, hp, seed=1)
    first.ensure([1])
    path = first._layer_path(1)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    else:
        _flip(path, 0.7)
    again = SecondMoments(b, hp, seed=1)
    again.ensure([1])                                    # was: ValueError on every later run (truncate)
    assert torch.equal(again.get(1), first.get(1)) and again.one_off_seconds > 0
    assert unreadable(path) is None
    torch.set_num_threads(torch.get_num_threads())


def test_validate_stage_draws_are_seeded_by_trace_seed(monkeypatch):
    from experiments.stages import validate

    seen = []

    def fake(bundle, facts, *rest, keep_draws=False):
        seen.append(rest[-1].seed)
        return []

    for mod in (validate.noise_tracing, validate.resample_scrubbing, validate.flip_scrubbing):
        monkeypatch.setattr(mod, "trace_facts", fake)
    config = StudyConfig(seed=1, trace_seed=77)
    state = {"config": config, "bundle": None, "grids": (), "nu": 0.1, "pool": [],
             "estimators": ["noise", "resample", "flip"]}
    validate.trace_planted(state, [])
    assert seen == [77, 77, 77]


def test_a_stage_output_with_a_flipped_byte_is_named_and_recomputed(tmp_path, model_dir, monkeypatch, capsys):
    from experiments.stages import facts as facts_stage

    monkeypatch.setattr(facts_stage, "known_filter", lambda bundle, facts, **k: pd.DataFrame(
        [{"case_id": f.case_id, "relation_id": f.relation_id, "p_true": 0.5, "clean_top1": "x", "clean_top1_id": 0,
          "true_first_id": 0, "known": True} for f in facts]))
    facts = tmp_path / "cf.json"
    facts.write_text(json.dumps([f.to_record() for f in build_facts(seed=0, relations=["P36"])[:5]]))
    argv = ["--model", str(model_dir), "--facts", str(facts), "--stage", "facts", "--out", str(tmp_path / "r"),
            "--quiet", "--preset", "smoke", "--set", "trace_layers=0,3", "--set", "trace_window=2",
            "--set", "analysis_window=3"]
    assert cli.main(argv) == 0
    path = tmp_path / "r" / "facts_filter.parquet"
    before = pd.read_parquet(path)
    _flip(path)
    import pyarrow.parquet as pq

    pq.read_metadata(path)                              # the old check (footer only) passes
    capsys.readouterr()
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert f"{path} is corrupt (sha256 differs" in printed and "recomputes it" in printed
    pd.testing.assert_frame_equal(pd.read_parquet(path), before)


def test_the_analysis_never_reads_an_unverified_table(tmp_path):
    from experiments.stages.analyze import analyze_folder, spec_from_config

    atomic_write_parquet(tmp_path / "trace.parquet", _frame())
    atomic_write_parquet(tmp_path / "edits.parquet", _frame())
    _flip(tmp_path / "edits.parquet")
    with pytest.raises(ResultsError, match=r"edits\.parquet is corrupt \(sha256 differs"):
        analyze_folder(tmp_path, spec_from_config(StudyConfig()))


def test_a_writer_killed_between_record_and_rename_leaves_a_valid_file(tmp_path):
    path = tmp_path / "run.json"
    atomic_write_json(path, {"v": 1})
    manifest.record(path, "0" * 64, 3)             # the next write's record; killed before its rename
    assert unreadable(path) is None                # the previous, complete file is still accepted
    path.write_text('{"v": 2}')                     # anything else is not
    assert "sha256 differs" in unreadable(path) or "bytes where" in unreadable(path)
