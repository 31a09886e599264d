"""Stage ``validate``: do the localisers find a fact where ROME planted it? (docs/estimands.md#planted-facts)

For ``validate_facts`` study facts (stratified over relations) and each planted layer l of
``validate_layers`` (default ``validate_layer_count`` layers from early to late): compute the ROME edit
of (s, r, o → o_new) at l (Meng et al. 2022), apply it, keep it when the edited model's top-1 next token
is o_new's first token (else record the failure and exclude the edit), and trace the *planted fact* —
the fact with true answer o_new — on the edited model with noise tracing, resample scrubbing and flip
scrubbing (denoising, metric p(o_new); MLP windows ``validate_windows`` at every layer, every position
from the first subject token).  Flip partners are real subjects whose true answer's first token differs
from o_new's; resample partners any other subject of the relation.  The same sites are traced once per
fact on the unedited model with the same answer, draws and partners, so the part of the effect the
edit added can be read off.  Weights are restored bitwise after each edit.

Writes ``validate/``: ``edits.parquet`` (a row per (case, planted layer): success, top-1, p(o_new)
before/after), ``sites.parquet`` (IE per estimator, case, planted layer (−1 = unedited) and site),
``cases.parquet`` (TE and exclusions per traced run), ``profiles.parquet`` (the last-subject-token
profiles), ``localisation.parquet`` (hit@1, hit@3, distance, mass, IE at l per edit, estimator and
window), ``accuracy.parquet`` (means over facts with bootstrap CIs), ``paired.parquet`` (flip − noise
and resample − noise, sign-flip test), ``argmax.parquet`` (where the argmax lands), with
``validate_components`` including ``residual`` the onset trace's ``onset_profiles``, ``onset``,
``onset_accuracy`` and ``onset_paired`` tables (causaleval.groundtruth.onset), and ``summary.json``
(written last).  Finished cases are kept in ``validate_parts/``; a rerun computes only the missing ones.

``plant_editors`` (default ``rome``; also ``ft1``, ``memit``: causaleval.groundtruth.planting) plants with
each editor in turn: the first editor's tables are the ones above, each other editor's the same tables in
``validate/plant_<editor>/`` (parts in ``validate_parts_<editor>/``), and ``plant_success.parquet`` records
per planting editor and planted layer how many edits took.  Each editor's unedited traces are its own
(identical draws and partners, so identical values; traced again so that each editor's run stands alone).
"""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pandas as pd
import torch

from causaleval.data.counterfact import Fact
from causaleval.data.known import next_token_logits
from causaleval.data.tokens import answer_ids, encode_prompt
from causaleval.editing.editor import stat_layers
from causaleval.editing.rome import SecondMoments, default_contexts
from causaleval.estimators import flip_scrubbing, noise_tracing, resample_scrubbing
from causaleval.groundtruth.onset import onset_rows, onset_tests
from causaleval.groundtruth.planted import (
    accuracy_table,
    argmax_histogram,
    localisation_rows,
    paired_tests,
)
from causaleval.groundtruth.planting import make_planter
from causaleval.patching.core import TraceTables
from causaleval.patching.estimands import SiteGrid
from causaleval.runs.parts import PartStore
from causaleval.runs.store import atomic_write_json, atomic_write_parquet
from experiments.backends import CaseJob
from experiments.config import draw_seed, editor_overrides
from experiments.context import StageContext, run_case_job, stratified_sample
from experiments.stages.edit import _hparams

NAME = "validate"
OUTPUTS = ("validate/summary.json",)
UNEDITED = -1          # planted_layer of the unedited model's traces
EDIT_COLUMNS = ["case_id", "relation_id", "planted_layer", "o_true", "o_new", "excluded", "reason", "success",
                "top1_id", "top1", "p_new_before", "p_new_after", "p_true_after", "steps", "final_loss", "seconds"]


def validate_layers_for(config, n_layers: int) -> list[int]:
    """``validate_layers``, or ``validate_layer_count`` layers evenly spaced from 0.1·L to 0.8·L (rounded;
    SmolLM2, L = 30, 4 layers: 3, 10, 17, 24), at most L − 2: the last block's MLP at the subject
    cannot reach the last position."""
    if config.validate_layers is not None:
        return sorted({int(x) for x in config.validate_layers})
    k = config.validate_layer_count
    grid = np.linspace(0.1 * n_layers, 0.8 * n_layers, k) if k > 1 else np.array([0.45 * n_layers])
    return sorted({max(0, min(n_layers - 2, int(round(x)))) for x in grid})   # the last MLP cannot reach the readout


def validate_facts(ctx: StageContext) -> list[Fact]:
    """``validate_facts`` of the study facts, stratified over relations (all when None), in case order."""
    facts = ctx.study_facts
    n = ctx.config.validate_facts
    if n is not None and n < len(facts):
        chosen = set(stratified_sample([f.relation_id for f in facts], n, ctx.config.seed))
        facts = [f for i, f in enumerate(facts) if i in chosen]
    return facts


def planted_fact(fact: Fact) -> Fact:
    """The fact ROME plants: true answer o_new (the estimators trace ``target_true``), new answer o."""
    return dataclasses.replace(fact, target_true=fact.target_new, target_new=fact.target_true)


def grids(windows, positions: str = "from_subject", components=("mlp",)) -> tuple[SiteGrid, ...]:
    """MLP windows ``windows`` at every layer, at ``positions`` (``from_subject`` or ``subject_last``); with
    ``residual`` in ``components`` also the residual stream at the last token, window 1, every layer (the
    onset trace, causaleval.groundtruth.onset)."""
    mlp = tuple(SiteGrid("mlp", int(w), None, positions) for w in windows)
    return mlp + ((SiteGrid("residual", 1, None, "last"),) if "residual" in components else ())


def trace_planted(state: dict, facts: list[Fact]) -> list[TraceTables]:
    """Every estimator on ``facts`` (planted facts) with the current weights; p(o) rows only, per case.  Noise
    draws and partners are seeded by ``trace_seed`` (``seed`` when null), as in the trace stage."""
    c, bundle, g = state["config"], state["bundle"], state["grids"]
    out: list[list[TraceTables]] = [[] for _ in facts]
    for est in state["estimators"]:
        if est == "noise":
            cfg = noise_tracing.NoiseTracingConfig(nu=state["nu"], n_draws=c.noise_draws, seed=draw_seed(c), grids=g)
            tables = noise_tracing.trace_facts(bundle, facts, cfg, keep_draws=False)
        else:
            cfg = resample_scrubbing.ScrubbingConfig(n_draws=c.partner_draws, seed=draw_seed(c), grids=g)
            mod = resample_scrubbing if est == "resample" else flip_scrubbing
            tables = mod.trace_facts(bundle, facts, state["pool"], cfg, keep_draws=False)
        for k, t in enumerate(tables):
            out[k].append(t)
    return [TraceTables.concat(t) for t in out]


def _tagged(frame: pd.DataFrame, layer: int) -> pd.DataFrame:
    if frame.empty:
        return frame
    return frame[frame.metric == "p"].assign(planted_layer=layer)


def _next_token(bundle, fact: Fact) -> torch.Tensor:
    ids = list(encode_prompt(bundle.tokenizer, fact.prompt, fact.subject, fact.case_id).input_ids)
    return next_token_logits(bundle, [ids])[0].softmax(-1)


def _setup(bundle, config, shared: dict) -> dict:
    """Per worker: ROME hyperparameters, C at the layers the planting editor needs (cached), context texts,
    the planter."""
    hp = _hparams(bundle, config)
    stats = SecondMoments(bundle, hp, seed=config.seed, progress=False)
    stats.ensure(shared.get("stat_layers", shared["layers"]))
    contexts = default_contexts(bundle, hp, seed=config.seed)
    editor = shared.get("plant_editor", "rome")
    overrides = editor_overrides(getattr(config, "editor_hparams", {}) or {}).get(editor, {})
    return dict(shared, bundle=bundle, config=config, hp=hp, stats=stats, grids=grids(config.validate_windows, config.validate_positions,
                                                                     getattr(config, "validate_components", ["mlp"])),
                contexts=contexts, planter=make_planter(editor, bundle, hp, stats, contexts, overrides))


def _work(state: dict, facts):
    """Per shard: unedited traces of the planted facts, then at each planted layer the shard's edits
    (v* optimised together), each applied, checked, traced and restored in turn.  Per case three parts:
    edits, cases and sites (sites last: it marks the case finished)."""
    bundle, tok = state["bundle"], state["bundle"].tokenizer
    facts = list(facts)
    edits: list[list[dict]] = [[] for _ in facts]
    cases: list[list[pd.DataFrame]] = [[] for _ in facts]
    sites: list[list[pd.DataFrame]] = [[] for _ in facts]
    firsts = [(answer_ids(tok, f.target_true)[0], answer_ids(tok, f.target_new)[0]) for f in facts]
    usable = [k for k, (o, o_new) in enumerate(firsts) if o != o_new]
    head = lambda k: dict(case_id=int(facts[k].case_id), relation_id=str(facts[k].relation_id),  # noqa: E731
                          o_true=facts[k].target_true, o_new=facts[k].target_new)
    for k in set(range(len(facts))) - set(usable):
        for layer in state["layers"]:
            edits[k].append(dict(head(k), planted_layer=layer, excluded=True, success=False,
                                 reason="o_new's first token is the true answer's"))
    if usable:
        t0 = time.perf_counter()
        kept = [facts[k] for k in usable]
        for k, t in zip(usable, trace_planted(state, [planted_fact(f) for f in kept])):
            cases[k].append(_tagged(t.cases, UNEDITED))
            sites[k].append(_tagged(t.sites, UNEDITED))
        before = {k: float(_next_token(bundle, facts[k])[firsts[k][1]]) for k in usable}
        shared = (time.perf_counter() - t0) / len(usable) / len(state["layers"])
        planter = state["planter"]
        for layer in state["layers"]:
            t1 = time.perf_counter()
            results = planter.compute(kept, layer)          # the shard's edits, optimised together
            per_edit = (time.perf_counter() - t1) / len(usable)
            for k, res in zip(usable, results):
                t2 = time.perf_counter()
                with planter.apply(res):
                    p = _next_token(bundle, facts[k])
                    top = int(p.argmax())
                    ok = top == firsts[k][1]
                    if ok:
                        t = trace_planted(state, [planted_fact(facts[k])])[0]
                        cases[k].append(_tagged(t.cases, layer))
                        sites[k].append(_tagged(t.sites, layer))
                edits[k].append(dict(head(k), planted_layer=layer, excluded=not ok, success=ok,
                                     reason="" if ok else "edited model's top-1 is not o_new's first token",
                                     top1_id=top, top1=tok.decode([top]), p_new_before=before[k],
                                     p_new_after=float(p[firsts[k][1]]), p_true_after=float(p[firsts[k][0]]),
                                     steps=int(res.steps), final_loss=float(res.final_loss),
                                     seconds=shared + per_edit + time.perf_counter() - t2))
    for k, f in enumerate(facts):
        yield f"{f.case_id}_edits", pd.DataFrame(edits[k], columns=EDIT_COLUMNS)
        yield f"{f.case_id}_cases", _concat(cases[k])
        yield f"{f.case_id}_sites", _concat(sites[k])


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def subject_last(bundle, facts: list[Fact]) -> dict[int, int]:
    """case_id → the position of the subject's last token in the case's prompt."""
    return {int(f.case_id): encode_prompt(bundle.tokenizer, f.prompt, f.subject, f.case_id).position("subject_last")
            for f in facts}


def profiles_of(sites: pd.DataFrame, last_pos: dict[int, int], component: str = "mlp") -> pd.DataFrame:
    """Profiles of ``component`` at position ``last_pos`` (by default the MLP at the subject's last token) of
    the edited model with the unedited model's IE at the same site (sites without a ``component`` column are
    MLP sites)."""
    cols = ["case_id", "relation_id", "estimator", "window", "planted_layer", "layer", "ie", "ie_unedited", "te"]
    if sites.empty:
        return pd.DataFrame(columns=cols + ["te_unedited"])
    at = sites.case_id.map(last_pos)
    of_component = (sites.component if "component" in sites else "mlp") == component
    last = sites[(sites.position == at) & (sites.direction == "denoise") & of_component]
    key = ["case_id", "estimator", "window", "layer"]
    base = last[last.planted_layer == UNEDITED][key + ["ie", "te"]].rename(
        columns={"ie": "ie_unedited", "te": "te_unedited"})
    edited = last[last.planted_layer != UNEDITED]
    return edited.merge(base, on=key, how="left")[cols + ["te_unedited"]]


def last_token(bundle, facts: list[Fact]) -> dict[int, int]:
    """case_id → the position of the prompt's last token."""
    return {int(f.case_id): encode_prompt(bundle.tokenizer, f.prompt, f.subject, f.case_id).length - 1 for f in facts}


def onset_profiles_of(sites: pd.DataFrame, end_pos: dict[int, int], subject_pos: dict[int, int]) -> pd.DataFrame:
    """The residual-stream profiles at the last token (the onset trace), edited with the unedited model's IE
    at the same site; empty when the residual stream was not traced (``validate_components``).  Prompts
    whose last token is the subject's (``end_pos`` = ``subject_pos``) are left out: there the last token's
    residual stream is the subject's own and restoring it at layer 0 already restores the answer."""
    after = {c for c, q in end_pos.items() if q != subject_pos.get(c)}
    return profiles_of(sites[sites.case_id.isin(after)], end_pos, component="residual")


def parts_dir(editor: str) -> str:
    """ROME's parts stay where they always were (runs in progress resume); the other planting editors' beside."""
    return "validate_parts" if editor == "rome" else f"validate_parts_{editor}"


def editor_dir(out, editor: str, first: str):
    """The first planting editor's tables in ``validate/`` (ROME's by default, as before); the others' in
    ``validate/plant_<editor>/``."""
    return out if editor == first else out / f"plant_{editor}"



def run(ctx: StageContext) -> None:
    cfg, bundle = ctx.config, ctx.bundle
    t0 = time.time()
    facts = validate_facts(ctx)
    layers = validate_layers_for(cfg, bundle.n_layers)
    editors = list(getattr(cfg, "plant_editors", ["rome"]) or ["rome"])
    hp = _hparams(bundle, cfg)
    stats = SecondMoments(bundle, hp, seed=cfg.seed, progress=ctx.progress)
    needed = stat_layers(editors, layers, bundle.n_layers)
    stats.ensure(needed)
    for layer in layers:
        stats.inverse(layer)
    default_contexts(bundle, hp, seed=cfg.seed)          # computed (and cached) once, before the workers
    nu = noise_tracing.noise_scale(bundle, ctx.known_facts, cfg.noise_scale_factor)
    setup_seconds = time.time() - t0
    out = ctx.out_dir / "validate"
    last_pos = subject_last(bundle, facts)
    end_pos = last_token(bundle, facts)
    took = []
    for editor in editors:
        t1 = time.time()
        shared = {"layers": layers, "nu": nu, "pool": ctx.known_facts, "estimators": list(cfg.trace_estimators),
                  "plant_editor": editor, "stat_layers": needed}
        label = "" if editor == "rome" else f", planted with {editor}"
        job = CaseJob(f"validate ({len(facts)} facts × {len(layers)} planted layers{label})", _setup, _work,
                      shared=shared, key=lambda f: f"{f.case_id}_sites")
        keys = run_case_job(ctx, job, facts, parts_dir(editor))
        store = PartStore(ctx.out_dir / parts_dir(editor))
        ids = [k.removesuffix("_sites") for k in keys]
        edits = store.concat([f"{i}_edits" for i in ids])
        cases = store.concat([f"{i}_cases" for i in ids])
        sites = store.concat([f"{i}_sites" for i in ids])
        profiles = profiles_of(sites, last_pos)
        rows = localisation_rows(profiles)
        accuracy = accuracy_table(rows, cfg.n_bootstrap, cfg.seed)
        paired = paired_tests(rows, n_perm=cfg.validate_permutations, n_resamples=cfg.n_bootstrap, seed=cfg.seed)
        hist = argmax_histogram(rows)
        where = editor_dir(out, editor, editors[0])
        tables = [("edits", edits), ("cases", cases), ("sites", sites), ("profiles", profiles),
                  ("localisation", rows), ("accuracy", accuracy), ("paired", paired), ("argmax", hist)]
        onset = onset_tables(onset_profiles_of(sites, end_pos, last_pos), cfg, bundle.n_layers)
        tables += list(onset.items())
        for name, frame in tables:
            atomic_write_parquet(where / f"{name}.parquet", frame)
        summary = summarise(edits, accuracy, paired, hist, facts, layers, cfg, bundle.n_layers)
        summary["onset"] = _records(onset["onset_accuracy"]) if onset else None
        summary.update(nu=nu, plant_editor=editor, setup_seconds=round(setup_seconds, 1),
                       seconds=round(time.time() - (t0 if editor == editors[0] else t1), 1),
                       edit_trace_seconds=round(float(edits.seconds.sum()) if len(edits) else 0.0, 1))
        took.append(plant_success(edits, editor))
        if editor != editors[0]:
            atomic_write_json(where / "summary.json", summary)
        else:
            first = summary
        print(report(summary))
    first.update(plant_editors=editors, plant_editor_dirs={e: str(editor_dir(out, e, editors[0]).relative_to(out))
                                                           for e in editors})
    atomic_write_parquet(out / "plant_success.parquet", pd.concat(took, ignore_index=True))
    atomic_write_json(out / "summary.json", first)        # written last: the stage's marker


def onset_tables(profiles: pd.DataFrame, cfg, n_layers: int) -> dict[str, pd.DataFrame]:
    """The onset trace's tables (docs/groundtruth.md#onset): ``onset_profiles``, ``onset`` (a row per edit and
    estimator), ``onset_accuracy`` (means with CIs, chance, rule) and ``onset_paired`` (flip/resample − noise);
    none when the residual stream was not traced, empty ones when no planted edit took."""
    if "residual" not in getattr(cfg, "validate_components", ["mlp"]):
        return {}
    rows = onset_rows(profiles)
    if rows.empty:
        return {"onset_profiles": profiles, "onset": rows, "onset_accuracy": pd.DataFrame(),
                "onset_paired": pd.DataFrame()}
    summary, paired = onset_tests(rows, n_layers, cfg.validate_permutations, cfg.n_bootstrap, cfg.seed)
    return {"onset_profiles": profiles, "onset": rows, "onset_accuracy": summary, "onset_paired": paired}


def plant_success(edits: pd.DataFrame, editor: str) -> pd.DataFrame:
    """Per planted layer (and ``all``): planting editor, edits attempted (o_new's first token distinct from
    o's), edits that took (the edited model's top-1 is o_new's first token), their share and mean p(o_new)."""
    cols = ["plant_editor", "planted_layer", "n_edits", "n_took", "took", "p_new_after"]
    if edits.empty:
        return pd.DataFrame(columns=cols)
    tried = edits[edits.reason != "o_new's first token is the true answer's"]
    rows = []
    for layer, g in [*tried.groupby("planted_layer"), ("all", tried)]:
        rows.append(dict(plant_editor=editor, planted_layer=str(layer), n_edits=len(g), n_took=int(g.success.sum()),
                         took=float(g.success.mean()) if len(g) else float("nan"),
                         p_new_after=float(g.p_new_after.mean()) if len(g) else float("nan")))
    return pd.DataFrame(rows, columns=cols)


def summarise(edits: pd.DataFrame, accuracy: pd.DataFrame, paired: pd.DataFrame, hist: pd.DataFrame,
              facts: list[Fact], layers: list[int], cfg, n_layers: int) -> dict:
    """The stage's summary.json: design, counts, edit success per layer, accuracy, paired tests, misses."""
    ok = edits[edits.success.astype(bool)] if len(edits) else edits
    success = (edits.groupby("planted_layer").success.mean().to_dict() if len(edits) else {})
    misses = hist[hist.miss.astype(bool)] if len(hist) else hist
    top_misses = (misses.groupby(["estimator", "window", "argmax_layer"], as_index=False).edits.sum()
                  .sort_values(["estimator", "window", "edits"], ascending=[True, True, False])
                  .groupby(["estimator", "window"]).head(3)) if len(misses) else misses
    return {
        "n_layers": n_layers, "planted_layers": layers, "windows": list(cfg.validate_windows),
        "estimators": list(cfg.trace_estimators), "n_facts": len(facts),
        "relations": {str(k): int(v) for k, v in
                      pd.Series([f.relation_id for f in facts], dtype=str).value_counts().sort_index().items()},
        "n_edits": int(len(edits)), "n_success": int(len(ok)),
        "n_facts_success": int(ok.case_id.nunique()) if len(ok) else 0,
        "n_excluded_same_token": int((edits.reason == "o_new's first token is the true answer's").sum())
        if len(edits) else 0,
        "success_rate": {str(k): float(v) for k, v in success.items()},
        "noise_draws": cfg.noise_draws, "partner_draws": cfg.partner_draws, "seed": cfg.seed,
        "chance_hit1": 1.0 / n_layers, "n_bootstrap": cfg.n_bootstrap, "n_permutations": cfg.validate_permutations,
        "accuracy": _records(accuracy), "paired": _records(paired), "top_misses": _records(top_misses),
    }


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows as plain JSON values (NaN → null, numpy scalars → Python numbers)."""
    return json.loads(frame.to_json(orient="records")) if len(frame) else []


def _f(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def report(s: dict) -> str:
    lines = [f"validate: {s['n_facts']} facts × {len(s['planted_layers'])} planted layers {s['planted_layers']}: "
             f"{s['n_success']} of {s['n_edits']} edits answer o_new (success per layer: "
             + ", ".join(f"{k}: {v:.2f}" for k, v in s["success_rate"].items()) + ")"]
    for r in s["accuracy"]:
        if r["planted_layer"] == UNEDITED:
            lines.append(f"  {r['estimator']:8s} window {r['window']}: hit@1 {_f(r['hit1'])} "
                         f"[{_f(r['hit1_low'])}, {_f(r['hit1_high'])}], hit@3 {_f(r['hit3'])}, "
                         f"|argmax − l| {_f(r['distance'], 2)}, added IE at l {_f(r['added'], 4)} "
                         f"({r['n_facts']} facts, {r['n_edits']} edits)")
    for r in s.get("onset") or []:
        if r["metric"] == "onset_error":
            lines.append(f"  {r['estimator']:8s} onset: |onset − l| {_f(r['mean'], 2)} [{_f(r['ci_low'], 2)}, "
                         f"{_f(r['ci_high'], 2)}] layers (chance {_f(r['chance'], 2)}, rule {_f(r['rule'], 2)}; "
                         f"{r['n_facts']} facts, {r['n_undefined']} undefined)")
    for r in s["paired"]:
        if r["metric"] == "hit1":
            lines.append(f"  {r['a']} − {r['b']} window {r['window']}: hit@1 {_f(r['diff'])}, sign-flip p = "
                         f"{_f(r['p'])} ({r['n_facts']} facts)")
    return "\n".join(lines)
