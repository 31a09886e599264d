"""Stage ``control``: a positive control for the H1 pipeline (docs/groundtruth.md#positive-control).

For ``control_facts`` study facts (stratified over relations), each planting editor of ``plant_editors``
and each planted layer l of ``control_layers``: plant (s, r, o → o_new) at l; keep the planting when the
planted model's top-1 next token is o_new's first token; trace the planted fact (answer o_new) on the
planted model with the study's estimators at the analysis sites (MLP window ``analysis_window`` at the
edit layers, every position from the first subject token, denoising, metric p); then, on the planted
model, ROME-edit the planted fact o_new → o₃ (a third answer of the relation) at every edit layer and
score it as the edit stage does.  Each (fact, planted layer) is one case (unit id case_id·1000 + l) of
the study's analysis, run per planting editor.

Writes ``control/``: ``plantings.parquet`` (a row per fact × editor × layer: success, top-1, p(o_new)),
``trace.parquet`` and ``edits.parquet`` (the analysis's inputs, in the trace and edit stages' schemas,
with column ``plant_editor``), ``headline.parquet`` (:func:`causaleval.groundtruth.control.control_table`
per editor) and ``summary.json`` (written last).  Finished facts are kept in ``control_parts/``.
"""

from __future__ import annotations

import dataclasses
import json
import time

import pandas as pd

from causaleval.analysis.study import analyze
from causaleval.data.counterfact import Fact
from causaleval.data.tokens import answer_ids
from causaleval.editing.rome import SecondMoments, default_contexts, sweep_cases
from causaleval.estimators import noise_tracing
from causaleval.groundtruth.control import (
    control_layers_for,
    control_table,
    reedit_fact,
    third_answer,
    unit_id,
)
from causaleval.groundtruth.planting import make_planter, planted_fact
from causaleval.inference.h1 import PRIMARY
from causaleval.patching.estimands import SiteGrid
from causaleval.runs.parts import PartStore
from causaleval.runs.store import atomic_write_json, atomic_write_parquet
from experiments.backends import CaseJob
from experiments.config import editor_overrides
from experiments.context import StageContext, run_case_job, stratified_sample
from experiments.stages.analyze import spec_from_config
from experiments.stages.edit import COLUMNS as EDIT_COLUMNS
from experiments.stages.edit import _hparams
from experiments.stages.validate import _next_token, trace_planted

NAME = "control"
OUTPUTS = ("control/summary.json",)
PLANT_COLUMNS = ["case_id", "relation_id", "plant_editor", "planted_layer", "unit", "o_true", "o_new", "o3",
                 "success", "reason", "top1", "p_new_after", "seconds"]


def control_facts(ctx: StageContext) -> list[Fact]:
    """``control_facts`` of the study facts, stratified over relations (all when None), in case order."""
    facts, n = ctx.study_facts, ctx.config.control_facts
    if n is not None and n < len(facts):
        chosen = set(stratified_sample([f.relation_id for f in facts], n, ctx.config.seed))
        facts = [f for i, f in enumerate(facts) if i in chosen]
    return facts


def _setup(bundle, config, shared: dict) -> dict:
    hp = _hparams(bundle, config)
    stats = SecondMoments(bundle, hp, seed=config.seed, progress=False)
    stats.ensure(sorted(set(shared["layers"]) | set(shared["edit_layers"])))
    grid = SiteGrid("mlp", int(config.analysis_window), tuple(shared["edit_layers"]), "from_subject")
    return dict(shared, bundle=bundle, config=config, hp=hp, stats=stats, grids=(grid,),
                contexts=default_contexts(bundle, hp, seed=config.seed))


def _work(state: dict, facts):
    """Per fact: plant, check, trace and re-edit at every edit layer, per editor and planted layer."""
    bundle, hp, c, tok = state["bundle"], state["hp"], state["config"], state["bundle"].tokenizer
    first = lambda text: answer_ids(tok, text)[0]
    for fact in facts:
        plants, traces, edits = [], [], []
        o3 = third_answer(fact, state["pool"], first, seed=c.seed)
        for editor in c.plant_editors:
            planter = make_planter(editor, bundle, hp, state["stats"], state["contexts"],
                                   editor_overrides(getattr(c, "editor_hparams", {}) or {}).get(editor, {}))
            for layer in state["layers"]:
                t0 = time.perf_counter()
                head = dict(case_id=int(fact.case_id), relation_id=str(fact.relation_id), plant_editor=editor,
                            planted_layer=int(layer), unit=unit_id(fact.case_id, layer), o_true=fact.target_true,
                            o_new=fact.target_new, o3=o3)
                if o3 is None or first(fact.target_new) == first(fact.target_true):
                    plants.append(dict(head, success=False, reason="no answer with a distinct first token"))
                    continue
                edit = planter.compute([fact], layer)[0]
                with planter.apply(edit):
                    p = _next_token(bundle, fact)
                    top = int(p.argmax())
                    ok = top == first(fact.target_new)
                    row = dict(head, success=ok, reason="" if ok else "planted model's top-1 is not o_new's first token",
                               top1=tok.decode([top]), p_new_after=float(p[first(fact.target_new)]))
                    if ok:
                        traced = dataclasses.replace(planted_fact(fact), case_id=unit_id(fact.case_id, layer))
                        t = trace_planted(state, [traced])[0]
                        traces.append(t.sites[t.sites.metric == "p"].assign(plant_editor=editor))
                        re = reedit_fact(fact, o3, layer)
                        rows = sweep_cases(bundle, [re], state["edit_layers"], hp, state["stats"], state["contexts"],
                                           max_neighbours=c.rome_max_neighbours, seed=c.seed)[0]
                        edits.append(pd.DataFrame(rows)[EDIT_COLUMNS].assign(plant_editor=editor))
                plants.append(dict(row, seconds=time.perf_counter() - t0))
        yield f"{fact.case_id}_plant", pd.DataFrame(plants, columns=PLANT_COLUMNS)
        yield f"{fact.case_id}_trace", _concat(traces)
        yield f"{fact.case_id}_edits", _concat(edits)          # last: marks the fact finished


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def run(ctx: StageContext) -> None:
    cfg, bundle = ctx.config, ctx.bundle
    t0 = time.time()
    facts = control_facts(ctx)
    edit_layers = ctx.edit_layers()
    layers = control_layers_for(cfg.control_layers, edit_layers, bundle.n_layers)
    hp = _hparams(bundle, cfg)
    stats = SecondMoments(bundle, hp, seed=cfg.seed, progress=ctx.progress)
    stats.ensure(sorted(set(layers) | set(edit_layers)))
    for layer in sorted(set(layers) | set(edit_layers)):
        stats.inverse(layer)
    default_contexts(bundle, hp, seed=cfg.seed)
    nu = noise_tracing.noise_scale(bundle, ctx.known_facts, cfg.noise_scale_factor)
    shared = {"layers": layers, "edit_layers": edit_layers, "nu": nu, "pool": ctx.known_facts,
              "estimators": list(cfg.trace_estimators)}
    job = CaseJob(f"control ({len(facts)} facts × {len(layers)} planted layers × {len(edit_layers)} re-edits)",
                  _setup, _work, shared=shared, key=lambda f: f"{f.case_id}_edits")
    keys = run_case_job(ctx, job, facts, "control_parts", shard_size=1)
    summary = finish(ctx.out_dir, cfg, [k.removesuffix("_edits") for k in keys],
                     dict(n_facts=len(facts), planted_layers=layers, edit_layers=edit_layers, nu=nu))
    summary["seconds"] = round(time.time() - t0, 1)
    atomic_write_json(ctx.out_dir / "control" / "summary.json", summary)      # written last: the stage's marker


def finish(out_dir, cfg, ids: list[str], design: dict) -> dict:
    """Gather the parts of the facts ``ids`` (case ids) into ``control/`` and run the study's analysis
    per planting editor; returns the summary (the caller writes it).  Also usable on the finished facts
    of an interrupted run."""
    store = PartStore(out_dir / "control_parts")
    plants = store.concat([f"{i}_plant" for i in ids])
    trace = store.concat([f"{i}_trace" for i in ids])
    edits = store.concat([f"{i}_edits" for i in ids])
    out = out_dir / "control"
    heads = []
    for editor in cfg.plant_editors:
        t = trace[trace.plant_editor == editor].drop(columns="plant_editor") if len(trace) else trace
        e = edits[edits.plant_editor == editor].drop(columns="plant_editor") if len(edits) else edits
        if t.empty or e.empty or e.case_id.nunique() < 3:
            continue
        result = analyze(t, e, spec_from_config(cfg))
        heads.append(control_table(result, PRIMARY).assign(plant_editor=editor))
    headline = _concat(heads)
    for name, frame in (("plantings", plants), ("trace", trace), ("edits", edits), ("headline", headline)):
        atomic_write_parquet(out / f"{name}.parquet", frame)
    print(headline.to_string(index=False) if len(headline) else
          "control: no analysis (fewer than 3 planted units, or all below the TE floor)")
    return {**design, "n_facts_finished": len(ids), "plant_editors": list(cfg.plant_editors),
            "n_plantings": len(plants), "n_planted": int(plants.success.sum()) if len(plants) else 0,
            "measure": PRIMARY, "headline": json.loads(headline.to_json(orient="records")) if len(headline) else [],
            "noise_draws": cfg.noise_draws, "partner_draws": cfg.partner_draws,
            "rome_context_texts": cfg.rome_context_texts}
