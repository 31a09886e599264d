"""Stage ``edit``: edit every studied fact at every edit layer with each configured editor and score it
(docs/design.md#rome, docs/editors.md).

``editors`` (default ``rome``; also ``ft1``, ``ft5``, ``memit``: ``--set editors=rome,ft1,ft5,memit``).
Writes ``edits.parquet``, one row per (case_id, layer, editor): case_id, relation_id, layer, rewrite_score,
paraphrase_score, neighborhood_score, es, ps, ns, es_magnitude, ps_magnitude, ns_magnitude,
p_before_new, p_after_new, p_before_true, p_after_true, steps, final_loss, seconds, editor (a table
without ``editor``, from before it existed, is all ROME);
``edit_summary.parquet`` (per-layer means and S) and ``edit_provenance.json`` (hyperparameters,
context texts, statistics provenance, one-off seconds).  Cases are edited in groups of
``rome_batch_cases`` (one batched v* optimisation and one batched scoring pass per layer; results equal
the one-at-a-time run); each finished case is kept in ``edit_parts/<case_id>.parquet`` so that an
interrupted run resumes with only the missing cases.  Other editors keep their parts in
``edit_parts_<editor>/`` (resumable per editor and case) and use the same groups of cases.

``edit_problems`` (default ``error_injection``; docs/problems.md): each further problem runs every editor
on the problem's requests, its parts in ``edit_parts_<problem>_<editor>/``; ``edits.parquet`` then gains
``problem``, ``draw`` and ``partner_case`` (flip forcing: the trace stage's flip draw k and partner s′ of
each edit, −1 otherwise).  With the default alone the outputs are exactly what they always were (a
table without ``problem`` reads as error injection).
"""

from __future__ import annotations

import time

import pandas as pd

from causaleval.editing.editor import parse_editors, stat_layers, sweep
from causaleval.editing.problems import DEFAULT_PROBLEMS, PROBLEM_HPARAMS, flip_partners, make_problem, parse_problems, request
from causaleval.editing.rome import SecondMoments, default_contexts, hparams_for, sweep_cases
from causaleval.editing.rome.hparams import RomeHyperParams
from causaleval.editing.scores import summarise
from causaleval.runs.parts import PartStore
from causaleval.runs.store import atomic_write_json, atomic_write_parquet
from experiments.backends import CaseJob, shards
from experiments.context import StageContext, run_case_job

NAME = "edit"
OUTPUTS = ("edits.parquet",)
COLUMNS = ["case_id", "relation_id", "layer", "rewrite_score", "paraphrase_score", "neighborhood_score", "es", "ps",
           "ns", "es_magnitude", "ps_magnitude", "ns_magnitude", "p_before_new", "p_after_new", "p_before_true",
           "p_after_true", "steps", "final_loss", "seconds"]
PROBLEM_COLUMNS = COLUMNS + ["problem", "draw", "partner_case"]


def context_lengths(n: int) -> tuple[tuple[int, int], ...]:
    """N context texts split as in the original: half of 5 tokens, half of 10 tokens."""
    return tuple((length, k) for length, k in ((5, n - n // 2), (10, n // 2)) if k > 0)


def hparams_from_config(ctx: StageContext) -> RomeHyperParams:
    return _hparams(ctx.bundle, ctx.config)


def _hparams(bundle, c) -> RomeHyperParams:
    settings = dict(context_lengths=context_lengths(c.rome_context_texts), stat_tokens=c.rome_stat_tokens,
                    stat_source=c.rome_stat_source, key_mode=c.rome_key_mode)
    settings.update(getattr(c, "rome_hparams", {}) or {})     # e.g. v_lr, kl_factor (--set rome_hparams.v_lr=…)
    if "context_lengths" in settings:
        settings["context_lengths"] = tuple(tuple(x) for x in settings["context_lengths"])
    return hparams_for(bundle.family.name, bundle.n_layers, **settings)


def parts_dir(editor: str, problem: str = "error_injection") -> str:
    """ROME's parts stay where they always were (runs in progress resume); the others beside them."""
    if problem != "error_injection":
        return f"edit_parts_{problem}_{editor}"
    return "edit_parts" if editor == "rome" else f"edit_parts_{editor}"


def make_editor(name: str, bundle, config, hp: RomeHyperParams, stats, contexts, problem: str = "error_injection"):
    """The editor ``name`` with the study's settings (``editor_hparams.<name>`` overrides), and the
    problem's own changes (:data:`~causaleval.editing.problems.PROBLEM_HPARAMS`) for a problem other
    than error injection."""
    from causaleval.editing.editor import RomeEditor
    from causaleval.editing.ft import FT_PRESETS, FTEditor
    from causaleval.editing.memit import MemitEditor, memit_hparams_of

    from experiments.config import editor_overrides

    extra = editor_overrides(getattr(config, "editor_hparams", {}) or {}).get(name, {})
    by_problem = PROBLEM_HPARAMS.get((problem, name), {})
    if name == "rome":
        return RomeEditor(hp.updated(**by_problem) if by_problem else hp, stats, contexts)
    extra = {**extra, **by_problem}
    if name in FT_PRESETS:
        return FTEditor(name, FT_PRESETS[name].updated(**extra))
    return MemitEditor(memit_hparams_of(bundle, **extra), hp, stats, contexts)


def _setup(bundle, config, shared: dict) -> dict:
    """Per worker: hyperparameters, C⁻¹ and context texts (read from the cache the driver filled)."""
    hp = _hparams(bundle, config)
    stats = SecondMoments(bundle, hp, seed=config.seed, progress=False)
    stats.ensure(shared.get("stat_layers", shared["layers"]))
    contexts = default_contexts(bundle, hp, seed=config.seed)
    editor = shared.get("editor", "rome")
    name = shared.get("problem", "error_injection")
    problem = None if name == "error_injection" else make_problem(name, nu=shared.get("nu"), seed=shared.get("seed", 0))
    return {"bundle": bundle, "config": config, "hp": hp, "stats": stats, "layers": shared["layers"],
            "contexts": contexts, "editor": editor, "problem": problem, "pool": shared.get("known_facts"),
            "impl": None if editor == "rome" and problem is None
            else make_editor(editor, bundle, config, hp, stats, contexts, name)}


def _work(state: dict, facts):
    """Groups of ``rome_batch_cases`` cases, optimised and scored together at each layer; a part per case."""
    c = state["config"]
    if state["problem"] is not None:
        yield from _problem_work(state, facts)
        return
    for group in shards(list(facts), max(1, c.rome_batch_cases)):
        if state["impl"] is None:      # ROME: its own sweep (equal to the editor interface's, tested)
            rows = sweep_cases(state["bundle"], group, state["layers"], state["hp"], state["stats"],
                               state["contexts"], max_neighbours=c.rome_max_neighbours, seed=c.seed)
        else:
            rows = sweep(state["bundle"], state["impl"], group, state["layers"], max_neighbours=c.rome_max_neighbours,
                         seed=c.seed)
        for fact, case_rows in zip(group, rows):
            yield str(fact.case_id), pd.DataFrame(case_rows)[COLUMNS]


def _problem_work(state: dict, facts):
    """A further problem: each fact's requests (flip forcing: one per flip partner draw), edited and scored
    in groups of ``rome_batch_cases`` requests; a part per fact with all its requests' rows."""
    from experiments.config import draw_seed

    c, problem = state["config"], state["problem"]
    for fact in facts:
        if problem.subject == "partner":
            pairs = flip_partners(state["bundle"], fact, state["pool"], c.partner_draws, draw_seed(c))
            reqs = [(k, p.case_id, request(fact, problem, p)) for k, p in pairs]
        else:
            reqs = [(-1, -1, request(fact, problem))]
        rows = []
        for group in shards(reqs, max(1, c.rome_batch_cases)):
            swept = sweep(state["bundle"], state["impl"], [r for _, _, r in group], state["layers"],
                          max_neighbours=c.rome_max_neighbours, seed=c.seed, problem=problem)
            for (k, partner, _), req_rows in zip(group, swept):
                rows += [{**r, "problem": problem.name, "draw": int(k), "partner_case": int(partner)} for r in req_rows]
        frame = pd.DataFrame(rows, columns=PROBLEM_COLUMNS)
        yield str(fact.case_id), frame.astype({"draw": "int64", "partner_case": "int64"})



def run(ctx: StageContext) -> None:
    cfg, bundle = ctx.config, ctx.bundle
    layers = ctx.edit_layers()
    editors = parse_editors(getattr(cfg, "editors", ["rome"]))
    problems = parse_problems(getattr(cfg, "edit_problems", list(DEFAULT_PROBLEMS)))
    hp = hparams_from_config(ctx)
    t0 = time.time()
    stats = SecondMoments(bundle, hp, seed=cfg.seed, progress=ctx.progress)
    needed = stat_layers(editors, layers, bundle.n_layers)
    stats.ensure(needed)
    for layer in layers:
        stats.inverse(layer)
    contexts = default_contexts(bundle, hp, seed=cfg.seed)
    one_off = time.time() - t0
    provenance = {"hparams": hp.to_dict(), "layers": layers, "contexts": contexts,
                  "statistics": {str(l): stats.provenance[l] for l in needed},
                  "statistics_computed_seconds": round(stats.one_off_seconds, 1),
                  "setup_seconds": round(one_off, 1)}
    if editors != ["rome"]:
        provenance["editors"] = {e: hp.to_dict() if e == "rome" else
                                 make_editor(e, bundle, cfg, hp, stats, contexts).hp.to_dict() for e in editors}
    extra_problems = [p for p in problems if p != "error_injection"]
    nu = _noise_scale(ctx) if "fact_forcing" in problems else None
    if extra_problems:
        provenance["problems"] = {p: {"editors": {e: make_editor(e, bundle, cfg, hp, stats, contexts, p).hp.to_dict()
                                                  for e in editors},
                                      **({"nu": nu, "edit_draws": make_problem(p, nu).edit_draws,
                                          "score_draws": make_problem(p, nu).score_draws} if p == "fact_forcing" else {})}
                                  for p in extra_problems}
    atomic_write_json(ctx.out_dir / "edit_provenance.json", provenance)
    frames = []
    for editor in (editors if "error_injection" in problems else []):
        label = "ROME" if editor == "rome" else editor.upper()
        job = CaseJob(f"{label} edits ({len(layers)} layers)", _setup, _work,
                      shared={"layers": layers, "editor": editor, "stat_layers": needed},
                      batch=max(1, cfg.rome_batch_cases))
        keys = run_case_job(ctx, job, ctx.study_facts, parts_dir(editor))
        store = PartStore(ctx.out_dir / parts_dir(editor))          # parts verified against their checksums
        frames += [store.read(k).assign(editor=editor) for k in keys]
    if problems != list(DEFAULT_PROBLEMS):
        frames = [f.assign(problem="error_injection", draw=-1, partner_case=-1) for f in frames]
    from experiments.config import draw_seed

    for problem in extra_problems:
        for editor in editors:
            job = CaseJob(f"{problem} × {editor} edits ({len(layers)} layers)", _setup, _work,
                          shared={"layers": layers, "editor": editor, "stat_layers": needed, "problem": problem,
                                  "nu": nu, "seed": draw_seed(cfg), "known_facts": ctx.known_facts},
                          batch=max(1, cfg.rome_batch_cases))
            keys = run_case_job(ctx, job, ctx.study_facts, parts_dir(editor, problem))
            store = PartStore(ctx.out_dir / parts_dir(editor, problem))
            frames += [store.read(k).assign(editor=editor) for k in keys]
    edits = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS + ["editor"])
    if problems != list(DEFAULT_PROBLEMS):
        summary = summarise(edits, by=["problem", "editor", "layer"])
    else:
        summary = summarise(edits) if editors == ["rome"] else summarise(edits, by=["editor", "layer"])
    atomic_write_parquet(ctx.out_dir / "edit_summary.parquet", summary)
    atomic_write_parquet(ctx.out_dir / "edits.parquet", edits)
    print(f"editing setup (statistics, context texts): {one_off:.1f} s; edits: {edits.seconds.sum():.1f} s "
          f"for {len(edits)} (case, layer, editor) rows")
    print(summary.round(3).to_string(index=False))


def _noise_scale(ctx: StageContext) -> float:
    """ν of the trace stage (its trace_meta.json when present, else computed as the trace stage does)."""
    import json

    from causaleval.estimators import noise_tracing

    meta = ctx.out_dir / "trace_meta.json"
    if meta.is_file():
        nu = json.loads(meta.read_text(encoding="utf-8")).get("nu")
        if nu is not None:
            return float(nu)
    return float(noise_tracing.noise_scale(ctx.bundle, ctx.known_facts, ctx.config.noise_scale_factor))
