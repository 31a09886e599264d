"""Editing problems (docs/problems.md) on tiny models: each problem's objective moves its own probability
the intended way (erasure lowers p(o|s,r), amplification raises it, fact forcing raises p(o|s_noise,r) on
fresh noise, flip forcing raises p(o|s′,r)); flip forcing uses exactly the trace stage's partners; the
edit stage writes the problem columns, resumes per (problem, editor, case), leaves the default run
unchanged, restores weights bitwise; bad settings are refused before the model loads."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from causaleval.data.counterfact import Fact, write_jsonl
from causaleval.editing.editor import RomeEditor, sweep
from causaleval.editing.ft import FT_PRESETS, FTEditor
from causaleval.editing.memit import MemitEditor, memit_hparams_for
from causaleval.editing.noise import SubjectNoise, embeddings_plus, subject_span
from causaleval.editing.problems import (PROBLEMS, flip_partners, make_problem, parse_problems, problem_scores,
                                         request)
from causaleval.editing.rome import SecondMoments, default_contexts, hparams_for
from causaleval.errors import ConfigError
from causaleval.estimators import flip_scrubbing
from causaleval.estimators.resample_scrubbing import ScrubbingConfig, partner_specs
from causaleval.model.testing import isolated_cache, tiny_model
from causaleval.patching.estimands import SiteGrid
from experiments.config import parse_set, resolve, validate
from experiments.context import StageContext
from experiments.stages import edit

FACTS = [
    Fact(7, "The capital of {}", "P36", "France", "Paris", "Africa", paraphrase_prompts=["The capital city of France"],
         neighborhood_prompts=["The capital of Germany"]),
    Fact(8, "{} is a city in the country of", "P17", "Lyon", "France", "South America",
         paraphrase_prompts=["Lyon is located in"], neighborhood_prompts=["Paris is a city in the country of"]),
    Fact(9, "The official language of {} is", "P37", "Brazil", "Portuguese", "Spanish"),
]
# a pool with flip partners: same relation, different first answer token
POOL = [Fact(20 + i, "The capital of {}", "P36", s, o, "Atlantis", paraphrase_prompts=[f"{s}'s capital is"],
             neighborhood_prompts=[f"The capital of X{i}"])
        for i, (s, o) in enumerate([("Spain", "Madrid"), ("Italy", "Rome"), ("Chile", "Santiago"),
                                    ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Nepal", "Kathmandu")])]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    yield from isolated_cache(tmp_path, monkeypatch)


def _editors(family="gpt2"):
    """Editors whose objective dominates on a tiny random model (no KL/weight decay, larger steps): the
    tests check each problem's objective, not the published settings."""
    b = tiny_model(family)
    hp = hparams_for(family, 4, context_lengths=((4, 2), (6, 1)), stat_tokens=400, stat_seq_len=20, stat_batch=32,
                     kl_factor=0.0, v_weight_decay=0.0, clamp_norm_factor=10.0)
    stats = SecondMoments(b, hp)
    ctx = default_contexts(b, hp)
    return b, [RomeEditor(hp, stats, ctx), FTEditor("ft1", FT_PRESETS["ft1"].updated(lr=1e-2, norm_constraint=1e-2)),
               MemitEditor(memit_hparams_for(family, v_weight_decay=0.0, clamp_norm_factor=10.0, kl_factor=0.0),
                           hp, stats, ctx)]


@pytest.mark.parametrize("name", ["fact_amplification", "fact_erasure", "fact_forcing", "flip_forcing"])
def test_each_objective_moves_its_own_probability(name):
    b, editors = _editors()
    problem = make_problem(name, nu=0.5, edit_draws=4, score_draws=3)
    partner = POOL[1]
    facts = [request(f, problem, partner if name == "flip_forcing" else None) for f in FACTS]
    saved = {k: v.detach().clone() for k, v in b.model.state_dict().items()}
    # FT-1's edits move p(o*) on the scored prompts (for fact forcing: fresh noise draws) for every case;
    # ROME's and MEMIT's rank-one edits on these tiny random models move it by a few per cent either way
    # even for error injection, so for ROME the check is that each optimisation lowers its own loss (MEMIT's
    # z at the last layer of a 4-layer model does not move for some of these cases, as in error injection)
    rows = sweep(b, editors[1], facts, [1, 2], problem=problem)
    for req, case_rows in zip(facts, rows):
        for r in case_rows:
            ratio = r["p_after_new"] / r["p_before_new"]      # p(o*) on the (noised / flipped) prompt
            assert (ratio < 1 if name == "fact_erasure" else ratio > 1), (req.case_id, r["layer"], ratio)
            assert math.isfinite(r["rewrite_score"]) and r["rewrite_score"] > 0, r["rewrite_score"]
    for ed in editors[:2]:
        for e in ed.compute(b, ed.prepare(b, facts, problem=problem), 1):
            assert e.losses[-1] < e.losses[0], (ed.name, e.case_id, e.losses)
    for k, v in b.model.state_dict().items():          # sweeping never changes the weights
        assert torch.equal(v, saved[k]), k


def test_requests_target_the_right_answer_and_prompt():
    f = FACTS[0]
    for name in ("fact_amplification", "fact_erasure", "fact_forcing"):
        r = request(f, make_problem(name, nu=1.0))
        assert (r.text, r.target_new, r.target_true) == (f.text, f.target_true, f.target_new)
    assert request(f, make_problem("error_injection")) is f
    r = request(f, make_problem("flip_forcing"), POOL[1])
    assert (r.subject, r.text, r.target_new, r.target_true) == ("Italy", "The capital of Italy", "Paris", "Rome")
    assert r.paraphrase_prompts == POOL[1].paraphrase_prompts and r.extra["partner_case"] == POOL[1].case_id
    with pytest.raises(ValueError, match="partner"):
        request(f, make_problem("flip_forcing"))


def test_fact_forcing_noise_is_fresh_seeded_and_only_on_the_subject():
    b = tiny_model("gpt2")
    noise = SubjectNoise(0.7, seed=3)
    span = subject_span(b.tokenizer, "The capital city of France", "France")
    assert span is not None and subject_span(b.tokenizer, "The capital of Germany", "France") is None
    a = noise.tensor([span, None], [("score", 0, 7, 0), ("score", 0, 7, 1)], 12, 4)
    again = noise.tensor([span], [("score", 0, 7, 0)], 12, 4)
    other_draw = noise.tensor([span], [("score", 1, 7, 0)], 12, 4)
    assert torch.equal(a[:1], again) and not torch.equal(again, other_draw)
    assert a[1].abs().sum() == 0
    s, e = span
    assert a[0, s:e].abs().min() > 0 and a[0, :s].abs().sum() == 0 and a[0, e:].abs().sum() == 0
    ids = b.tokenizer(["The capital city of France"], return_tensors="pt")["input_ids"]
    clean = b.model(ids).logits
    with embeddings_plus(b, noise.tensor([span], [("x",)], ids.shape[1], b.model.config.hidden_size)):
        noised = b.model(ids).logits
    assert torch.equal(b.model(ids).logits, clean) and not torch.allclose(noised, clean)
    with pytest.raises(ValueError, match="subject noise"):
        with embeddings_plus(b, torch.zeros(2, 3, b.model.config.hidden_size)):
            b.model(ids)


def test_flip_forcing_uses_exactly_the_trace_stages_partners():
    b = tiny_model("gpt2")
    fact = POOL[0]
    for n_draws, seed in ((2, 0), (3, 5), (10, 1)):
        config = ScrubbingConfig(n_draws=n_draws, seed=seed, directions=flip_scrubbing.DIRECTIONS,
                                 grids=(SiteGrid("mlp", window=1, layers=(1,), positions="subject_last"),))
        partners = flip_scrubbing.flip_set(b, fact, POOL)
        specs = partner_specs(b, fact, partners, flip_scrubbing.flip_support(b, fact, POOL), flip_scrubbing.NAME,
                              config, prefer_same_length=True)
        traced = [(d.index, d.partner_case) for d in specs[0].draws]
        ours = [(k, p.case_id) for k, p in flip_partners(b, fact, POOL, n_draws, seed)]
        assert ours == traced and len(ours) == min(n_draws, len(partners))
        # and the trace stage's draws table numbers its draws the same way
        tables = flip_scrubbing.trace_facts(b, [fact], POOL, config)[0]
        assert sorted(tables.draws.draw.unique().tolist()) == [k for k, _ in ours]
    assert flip_partners(b, FACTS[2], POOL, 3, 0) == []          # no partner of its relation: no edit


def test_erasure_scores_are_the_share_erased():
    kind = ["prompt", "paraphrase", "neighborhood"]
    before = np.array([[0.4, 0.1], [0.2, 0.1], [0.3, 0.2]])
    after = np.array([[0.1, 0.3], [0.15, 0.05], [0.3, 0.2]])
    sc = problem_scores(make_problem("fact_erasure"), kind, before, after)
    assert sc.rewrite_score == pytest.approx(0.75) and sc.paraphrase_score == pytest.approx(0.25)
    assert sc.es == 1.0 and sc.ps == 0.0 and sc.neighborhood_score == pytest.approx(1.0)
    up = problem_scores(make_problem("fact_amplification"), kind, after, before)
    assert up.rewrite_score == pytest.approx((0.4 - 0.1) / 0.9)


def test_problem_settings_refused_before_the_model_loads():
    assert parse_problems("error_injection, flip_forcing") == ["error_injection", "flip_forcing"]
    assert parse_set(["edit_problems=fact_forcing,fact_erasure"])["edit_problems"] == ["fact_forcing", "fact_erasure"]
    validate(resolve("smoke", edit_problems=list(PROBLEMS)))
    for bad, match in (("bogus", "unknown 'bogus'"), ("", "none given"), ("fact_erasure,fact_erasure", "twice")):
        with pytest.raises(ConfigError, match=match):
            validate(resolve("smoke", edit_problems=bad.split(",") if bad else []))
    with pytest.raises(ConfigError, match="noise scale"):
        make_problem("fact_forcing", nu=None)


def _write_facts(folder):
    write_jsonl([f.to_record() for f in POOL[:4]], folder / "facts.jsonl")


@pytest.mark.slow
def test_edit_stage_problems_columns_resume_and_default_unchanged(tmp_path):
    torch.set_num_threads(1)
    common = dict(edit_layers=[0, 3], rome_context_texts=2, rome_stat_tokens=200, rome_batch_cases=2,
                  rome_max_neighbours=1, partner_draws=2)
    bundle = tiny_model("llama")
    plain = tmp_path / "plain"
    plain.mkdir()
    _write_facts(plain)
    edit.run(StageContext(config=resolve("smoke", **common), out_dir=plain, progress=False, _bundle=bundle))
    default = pd.read_parquet(plain / "edits.parquet")
    assert "problem" not in default and list(default.columns) == edit.COLUMNS + ["editor"]
    run = tmp_path / "problems"
    run.mkdir()
    _write_facts(run)
    problems = ["error_injection", "fact_forcing", "flip_forcing", "fact_erasure"]
    cfg = resolve("smoke", editors=["rome", "ft1"], edit_problems=problems, **common)
    ctx = StageContext(config=cfg, out_dir=run, progress=False, _bundle=bundle)
    saved = {k: v.detach().clone() for k, v in bundle.model.state_dict().items()}
    edit.run(ctx)
    for k, v in bundle.model.state_dict().items():
        assert torch.equal(v, saved[k]), k
    df = pd.read_parquet(run / "edits.parquet")
    assert set(df.problem) == set(problems) and set(df.editor) == {"rome", "ft1"}
    # error injection's ROME rows are the default run's rows
    ei = df[(df.problem == "error_injection") & (df.editor == "rome")].drop(columns=["problem", "draw", "partner_case",
                                                                                    "seconds", "editor"])
    pd.testing.assert_frame_equal(ei.reset_index(drop=True), default.drop(columns=["seconds", "editor"]),
                                  rtol=1e-6, atol=1e-6)
    flips = df[df.problem == "flip_forcing"]
    for case, g in flips.groupby("case_id"):
        fact = next(f for f in POOL if f.case_id == case)
        want = [(k, p.case_id) for k, p in flip_partners(bundle, fact, POOL[:4], 2, cfg.seed)]
        got = sorted(set(zip(g.draw, g.partner_case)))
        assert got == sorted(want) and len(g) == len(want) * 2 * 2     # draws × layers × editors
    assert (df[df.problem != "flip_forcing"].draw == -1).all()
    # resume: one missing part of one (problem, editor) is recomputed, nothing else
    gone = run / edit.parts_dir("ft1", "fact_forcing") / "21.parquet"
    gone.unlink()
    parts = [p for d in run.glob("edit_parts*") for p in d.glob("*.parquet")]
    stamps = {p: p.stat().st_mtime_ns for p in parts}
    edit.run(ctx)
    assert gone.is_file() and all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    again = pd.read_parquet(run / "edits.parquet")
    pd.testing.assert_frame_equal(again.drop(columns="seconds"), df.drop(columns="seconds"), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_grid_driver_cells_on_their_facts_and_assembly(tmp_path):
    """experiments.problem_grid: each cell runs on its own facts (all or the seeded subset), resumes from its
    parts, and edits.parquet is assembled from every cell's parts."""
    from experiments.context import stratified_subset as subset
    from experiments.problem_grid import assemble, run_cell

    torch.set_num_threads(1)
    _write_facts(tmp_path)
    cfg = resolve("smoke", edit_layers=[1], rome_context_texts=2, rome_stat_tokens=200, rome_batch_cases=2,
                  rome_max_neighbours=1, partner_draws=2)
    ctx = StageContext(config=cfg, out_dir=tmp_path, progress=False, _bundle=tiny_model("llama"))
    facts = ctx.known_facts
    small = subset(facts, 2, 0)
    assert small == subset(facts, 2, 0) and len(small) == 2 and subset(facts, 9, 0) == facts
    cells = [("error_injection", "rome"), ("flip_forcing", "ft1"), ("fact_erasure", "rome")]
    for (problem, editor), chosen in zip(cells, (facts, facts, small)):
        t = run_cell(ctx, problem, editor, chosen)
        assert t["n_facts"] == len(chosen) and t["cpu_s"] > 0 and t["wall_s"] > 0
    stamps = {p: p.stat().st_mtime_ns for d in tmp_path.glob("edit_parts*") for p in d.glob("*.parquet")}
    run_cell(ctx, "fact_erasure", "rome", small)                          # finished: nothing recomputed
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    edits = assemble(tmp_path, cells + [("fact_forcing", "memit")])      # a cell never run is skipped
    n = edits.groupby(["problem", "editor"]).case_id.nunique().to_dict()
    assert n == {("error_injection", "rome"): 4, ("flip_forcing", "ft1"): 4, ("fact_erasure", "rome"): 2}
    assert (edits[edits.problem == "flip_forcing"].draw >= 0).all()


def test_grid_reuses_error_injection_edits_of_the_study_and_an_editors_study(tmp_path):
    """ROME's error-injection parts come from the study's committed edits, FT-1's from a finished editors'
    study of the same study, layers and hyperparameters (the facts it has); the seconds are prorated; an
    editors' study of other layers or other hyperparameters is refused."""
    import json
    import re

    from causaleval.runs.parts import PartStore
    from causaleval.runs.store import atomic_write_json
    from experiments.problem_grid import reuse_error_injection

    out, study, eds = tmp_path / "grid", tmp_path / "study", tmp_path / "editors"
    for d in (out, study, eds):
        d.mkdir()
    _write_facts(out)
    cfg = resolve("smoke", edit_layers=[1], rome_context_texts=2, rome_stat_tokens=200)
    ctx = StageContext(config=cfg, out_dir=out, progress=False, _bundle=tiny_model("llama"))
    facts = ctx.known_facts
    rng = np.random.default_rng(0)
    rows = pd.DataFrame([{c: (f.case_id if c == "case_id" else f.relation_id if c == "relation_id" else 1
                              if c == "layer" else rng.random()) for c in edit.COLUMNS} for f in facts])
    rows.to_parquet(study / "edits.parquet")
    atomic_write_json(study / "run.json", {"completed_stages": {"edit": {"seconds": 100.0}}})
    ft1 = PartStore(eds / "edit_parts_ft1")
    for f in facts[:2]:
        ft1.write(str(f.case_id), rows[rows.case_id == f.case_id].assign(rewrite_score=0.5).reset_index(drop=True))
    record = {"study": str(study), "layers": [1], "case_ids": [int(f.case_id) for f in facts],
              "seconds": {"ft1": 40.0}, "hparams": {"ft1": FT_PRESETS["ft1"].to_dict()}}
    atomic_write_json(eds / "editors_study.json", record)
    cells = [("error_injection", "rome"), ("error_injection", "ft1"), ("fact_forcing", "rome")]
    reused = reuse_error_injection(ctx, study, cells, {c: facts for c in cells}, eds)
    assert reused["error_injection:rome"] == {"from": str(study / "edits.parquet"), "n_facts": 4, "wall_s": 100.0}
    assert reused["error_injection:ft1"]["n_facts"] == 2 and reused["error_injection:ft1"]["wall_s"] == 20.0
    assert "fact_forcing:rome" not in reused and not (out / "edit_parts_fact_forcing_rome").exists()
    rome = PartStore(out / "edit_parts")
    for f in facts:
        pd.testing.assert_frame_equal(rome.read(str(f.case_id)), rows[rows.case_id == f.case_id].reset_index(drop=True))
    got = PartStore(out / "edit_parts_ft1")
    assert [got.is_done(str(f.case_id)) for f in facts] == [True, True, False, False]
    assert (got.read(str(facts[0].case_id)).rewrite_score == 0.5).all()
    from causaleval.runs.store import file_sha256

    moved = {**record, "study": "/elsewhere/study", "study_edits_sha256": file_sha256(study / "edits.parquet")}
    atomic_write_json(eds / "editors_study.json", moved)          # the same study, found by its edits
    assert reuse_error_injection(ctx, study, cells, {c: facts for c in cells}, eds) == reused
    for change, words in [({"layers": [0, 1]}, "at layers [0, 1]"), ({"study_edits_sha256": "0" * 64}, "of the same study"),
                          ({"hparams": {"ft1": {**FT_PRESETS["ft1"].to_dict(), "lr": 1.0}}}, "hyperparameters differ")]:
        atomic_write_json(eds / "editors_study.json", {**record, **change})
        with pytest.raises(ConfigError, match=re.escape(words)):
            reuse_error_injection(ctx, study, cells, {c: facts for c in cells}, eds)
    (eds / "editors_study.json").write_text(json.dumps({"seconds": {}}))
    with pytest.raises(ConfigError, match="not a finished editors' study"):
        reuse_error_injection(ctx, study, cells, {c: facts for c in cells}, eds)
