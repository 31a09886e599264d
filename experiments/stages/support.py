"""Stage ``support``: where do the three estimators' corrupted runs land? (answer and state level,
and whether another noise scale ν rescues noise tracing).

Per study case, every corrupted draw of noise tracing at ν = f × σ_emb for each f of
``support_noise_scales`` (draws keyed (seed, case, draw) as in the trace stage), of resample
scrubbing and of flip scrubbing (partners as in the trace stage), plus the clean prompt itself:

* the top-1 next token classified as the clean answer / another answer of the relation / off-task,
  and the probability mass on the relation's answer set;
* the Mahalanobis distance of the residual state at the last subject token, per layer, from the
  clean states of held-out real subjects (known facts outside the study set and, when at least
  ``support_min_reference`` remain, never drawn as a flip or resample partner of a study case; when
  fewer than ``support_min_reference`` remain even with partners kept, two-fold cross-fitting over all
  known facts), its mid-rank percentile among the distances of a disjoint held-out calibration half
  (the arm's mean percentile is its AUROC against real states) and whether it lies beyond their 99th
  percentile; massive states (:data:`causaleval.support.MASSIVE_FACTOR`) are left out of the reference
  and counted as their own category.  A partner draw whose partner subject is in its reference
  (``partner_in_reference``) is left out of the state summaries: its state is (nearly) a reference state.

When the results folder holds ``edits.parquet`` and ``trace.parquet``, noise tracing is retraced on the
analysis site set at each ν and the analysis (Hase et al. 2023 regressions, H1) rerun with the trace
stage's resample and flip rows, giving ΔR²_noise(ν) and ΔR²_flip − ΔR²_noise(ν).

Writes ``support/{answers,states,answers_summary,states_summary,reference,calibration,noise_scale}.parquet``,
``support/summary.json`` (last: the stage's marker), ``tables/support_*.tex`` (with the macros of
``support_numbers.tex``) and ``figures/support_*.{pdf,png}`` in the results folder.  Per-case work is
kept in ``support_parts/`` and a killed run resumes with the missing cases.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from causaleval.analysis import AnalysisError, analyze
from causaleval.analysis.editors import primary_edits
from causaleval.data.tokens import answer_ids, encode_prompt
from causaleval.estimators import flip_scrubbing, noise_tracing, resample_scrubbing
from causaleval.inference.h1 import PRIMARY
from causaleval.patching.core import Draw
from causaleval.runs.parts import PartStore
from causaleval.runs.store import atomic_write_json, atomic_write_parquet, read_parquet_checked
from causaleval.support import (MASSIVE_FACTOR, RealStates, answer_rows, answer_set, clean_states, corrupted_runs, peak,
                                split_reference)
from causaleval.support.report import summarise_answers, summarise_states, write_support_report
from experiments.backends import CaseJob
from experiments.config import draw_seed
from experiments.context import StageContext, run_case_job
from experiments.stages.analyze import spec_from_config
from experiments.stages.trace import site_grids

NAME = "support"
OUTPUTS = ("support/summary.json",)


def arm_name(estimator: str, factor: float | None = None) -> str:
    return f"noise@{factor:g}" if estimator == "noise" else estimator


def case_draws(bundle, fact, pool, sigma: float, factors, n_draws: int, seed: int) -> dict[str, list[Draw]]:
    """The corrupted draws of every arm for one case, and the clean prompt as the arm ``clean``."""
    enc = encode_prompt(bundle.tokenizer, fact.prompt, fact.subject, fact.case_id)
    arms = {"clean": [Draw(index=0, encoded=enc)]}
    for f in factors:
        cfg = noise_tracing.NoiseTracingConfig(nu=f * sigma, n_draws=n_draws, seed=seed)
        arms[arm_name("noise", f)] = noise_tracing.make_draws(bundle, enc, fact.case_id, cfg)
    partners = {"resample": (resample_scrubbing.candidates(fact, pool), False),
                "flip": (flip_scrubbing.flip_set(bundle, fact, pool), True)}
    for name, (cands, same_len) in partners.items():
        if cands:
            arms[name] = resample_scrubbing.partner_draws(bundle, fact, cands, n_draws, seed, name, same_len)
    return arms


def measure_case(bundle, fact, pool, sigma, factors, n_draws, seed, reference: RealStates,
                 reference_subjects: frozenset = frozenset()):
    """(answers, states) rows of one case: a row per draw, and a row per draw and layer.

    ``reference_subjects``: the (relation, subject) pairs of the reference's facts; a partner draw whose
    partner is one of them is flagged ``partner_in_reference``."""
    arms = case_draws(bundle, fact, pool, sigma, factors, n_draws, seed)
    answer = answer_ids(bundle.tokenizer, fact.target_true)[0]
    answers = answer_set(bundle.tokenizer, pool, fact.relation_id)
    a_rows, s_rows = [], []
    for arm, draws in arms.items():
        runs = corrupted_runs(bundle, draws)
        head = dict(arm=arm, estimator=arm.split("@")[0],
                    nu_factor=float(arm.split("@")[1]) if "@" in arm else np.nan,
                    case_id=fact.case_id, relation_id=fact.relation_id)
        a_rows.append(answer_rows(runs, answer, answers, draws).assign(**head))
        dist = reference.distance(runs.states)
        n, n_layers = dist.shape
        in_ref = [d.partner_subject is not None and (fact.relation_id, d.partner_subject) in reference_subjects
                  for d in draws]
        s_rows.append(pd.DataFrame(dict(**head, draw=np.repeat([d.index for d in draws], n_layers),
                                        layer=np.tile(np.arange(n_layers), n), distance=dist.reshape(-1),
                                        beyond=(dist > reference.threshold[None]).reshape(-1),
                                        percentile=reference.percentile(dist).reshape(-1),
                                        peak=peak(runs.states).reshape(-1),
                                        massive=reference.massive(runs.states).reshape(-1),
                                        partner_in_reference=np.repeat(in_ref, n_layers))))
    return pd.concat(a_rows, ignore_index=True), pd.concat(s_rows, ignore_index=True)


def partner_subjects(ctx: StageContext) -> set[tuple[str, str]]:
    """(relation, subject) of every partner drawn for a study case: resample and flip partners of this
    stage (``support_draws``) and of the trace stage (``partner_draws``), seeded as there."""
    cfg, bundle, pool = ctx.config, ctx.bundle, ctx.known_facts
    drawn = set()
    for fact in ctx.study_facts:
        for tag, cands, same_len in [("resample", resample_scrubbing.candidates(fact, pool), False),
                                     ("flip", flip_scrubbing.flip_set(bundle, fact, pool), True)]:
            for n in {cfg.support_draws, cfg.partner_draws}:
                drawn.update((fact.relation_id, d.partner_subject) for d in
                             resample_scrubbing.partner_draws(bundle, fact, cands, n, draw_seed(cfg), tag, same_len))
    return drawn


def held_out(ctx: StageContext) -> tuple[list, str]:
    """Known facts outside the study set and never drawn as a study case's partner, when at least
    ``support_min_reference`` remain; else those outside the study set (partners kept: their draws are
    flagged ``partner_in_reference`` and left out of the state summaries), and a note saying so."""
    study = ctx.study_facts
    taken = {(f.relation_id, f.subject) for f in study}
    held = [f for f in ctx.known_facts if (f.relation_id, f.subject) not in taken]
    drawn = partner_subjects(ctx)
    free = [f for f in held if (f.relation_id, f.subject) not in drawn]
    if len(free) >= ctx.config.support_min_reference:
        return free, f"{len(held) - len(free)} held-out subjects drawn as partners left out of the reference"
    return held, (f"only {len(free)} of {len(held)} held-out subjects are never drawn as a partner "
                  f"(< support_min_reference = {ctx.config.support_min_reference}): partners kept in the "
                  "reference, their partner draws left out of the state summaries")


def reference_folds(ctx: StageContext, held: list | None = None) -> list[tuple[set[int], list]]:
    """(study case ids served, reference facts) per fold: one fold of held-out known facts
    (:func:`held_out`, or ``held`` when given) when enough remain, else two-fold cross-fitting over all
    known facts."""
    cfg = ctx.config
    study = ctx.study_facts
    held = held_out(ctx)[0] if held is None else held
    if cfg.support_reference_facts is not None and len(held) > cfg.support_reference_facts:
        order = np.random.default_rng(cfg.seed + 1).permutation(len(held))[:cfg.support_reference_facts]
        held = [held[i] for i in sorted(order)]
    if len(held) >= cfg.support_min_reference:
        return [({f.case_id for f in study}, held)]
    a, b = split_reference(ctx.known_facts, cfg.seed + 2)
    in_a = {(f.relation_id, f.subject) for f in a}
    ids_a = {f.case_id for f in study if (f.relation_id, f.subject) in in_a}
    return [(ids_a, b), ({f.case_id for f in study} - ids_a, a)]


def fit_references(ctx: StageContext, folds=None) -> tuple[list[RealStates], pd.DataFrame, pd.DataFrame]:
    """The fitted reference of each fold; a row per (fold, layer) with its size, massive limit and the
    massive fit and calibration states left out, shrinkage (and that of the fit keeping massive states,
    ``shrinkage_with_massive``), τ_l, the calibration share beyond τ_l and the share of the served study
    cases' clean states beyond it; and the ordinary calibration distances (fold, layer, distance)."""
    bundle, cfg = ctx.bundle, ctx.config
    models, rows, cal_rows = [], [], []
    by_id = {f.case_id: f for f in ctx.study_facts}
    for k, (ids, facts) in enumerate(reference_folds(ctx) if folds is None else folds):
        fit, cal = split_reference(facts, cfg.seed)
        fit_states, cal_states = clean_states(bundle, fit), clean_states(bundle, cal)
        model = RealStates.fit(fit_states, cal_states, cfg.support_quantile)
        unguarded = RealStates.fit(fit_states, cal_states, cfg.support_quantile, massive_factor=np.inf)
        study_states = clean_states(bundle, [by_id[i] for i in sorted(ids)])
        cal_d = model.calibration_distance
        cal_beyond = np.nanmean(np.where(np.isfinite(cal_d), cal_d > model.threshold, np.nan), axis=0)
        study_beyond = ((model.distance(study_states) > model.threshold).mean(0) if len(study_states)
                        else np.full(bundle.n_layers, np.nan))
        study_massive = (model.massive(study_states).mean(0) if len(study_states)
                         else np.full(bundle.n_layers, np.nan))
        models.append(model)
        for l in range(bundle.n_layers):
            rows.append(dict(fold=k, layer=l, n_fit=model.n_fit, n_calibration=model.n_calibration,
                             n_study=len(ids), massive_limit=float(model.massive_limit[l]),
                             n_massive_fit=int(model.n_massive_fit[l]),
                             n_massive_calibration=int((~np.isfinite(cal_d[:, l])).sum()),
                             shrinkage=float(model.shrinkage[l]),
                             shrinkage_with_massive=float(unguarded.shrinkage[l]),
                             threshold=float(model.threshold[l]), calibration_beyond=float(cal_beyond[l]),
                             study_clean_beyond=float(study_beyond[l]), study_clean_massive=float(study_massive[l])))
            ok = np.isfinite(cal_d[:, l])
            cal_rows.append(pd.DataFrame(dict(fold=k, layer=l, distance=cal_d[ok, l])))
    return models, pd.DataFrame(rows), pd.concat(cal_rows, ignore_index=True)


def _setup(bundle, config, shared: dict) -> dict:
    return dict(shared, bundle=bundle)


def _work(state: dict, facts):
    for fact in facts:
        fold = state["fold_of"][fact.case_id]
        answers, states = measure_case(state["bundle"], fact, state["pool"], state["sigma"], state["factors"],
                                       state["n_draws"], state["seed"], state["references"][fold],
                                       state["subjects"][fold])
        states["fold"] = fold
        yield f"{fact.case_id}_answers", answers
        yield f"{fact.case_id}_states", states   # last: marks the case finished


def _retrace_work(state: dict, facts):
    """Noise tracing of the analysis set at one ν, ``trace_batch_cases`` cases at a time (as the trace stage)."""
    cfg = noise_tracing.NoiseTracingConfig(nu=state["nu"], n_draws=state["n_draws"], seed=state["seed"],
                                           grids=state["grids"])
    facts = list(facts)
    for lo in range(0, len(facts), state["batch"]):
        group = facts[lo:lo + state["batch"]]
        for fact, tables in zip(group, noise_tracing.trace_facts(state["bundle"], group, cfg, keep_draws=False)):
            yield state["key"](fact), tables.sites


def noise_scale_analysis(ctx: StageContext, sigma: float) -> tuple[pd.DataFrame, str]:
    """ΔR²_noise and ΔR²_flip − ΔR²_noise per noise factor (rows), or an empty frame and why.

    Noise tracing of the analysis set is retraced at each factor, except at the trace stage's own
    (``noise_scale_factor``), whose noise rows are taken from ``trace.parquet`` as they are."""
    out, cfg = ctx.out_dir, ctx.config
    if not (out / "trace.parquet").is_file():
        return pd.DataFrame(), "no trace.parquet and edits.parquet in the results folder: run the trace and edit stages"
    have_edits = (out / "edits.parquet").is_file()
    edits = primary_edits(read_parquet_checked(out / "edits.parquet")) if have_edits else None   # ROME's rows
    trace = read_parquet_checked(out / "trace.parquet")
    others = trace[trace.estimator != "noise"]
    grids = site_grids(ctx, False)
    edited = None if edits is None else set(edits.case_id)
    facts = [f for f in ctx.study_facts if edited is None or f.case_id in edited]
    spec = spec_from_config(cfg)
    batch = max(1, int(cfg.trace_batch_cases or 1))
    retraced = {}
    retrace_draws = cfg.noise_draws if cfg.support_retrace_draws is None else cfg.support_retrace_draws
    for f in cfg.support_noise_scales:   # the retraces need no edits: done (and kept as parts) first
        if f == cfg.noise_scale_factor and retrace_draws == cfg.noise_draws and "noise" in set(trace.estimator):
            retraced[f] = None           # the trace stage's own scale: its noise rows are reused, not retraced
            continue
        key = lambda fact, f=f: f"nu{f:g}_{fact.case_id}_sites"
        job = CaseJob(f"support retrace ν={f:g}σ", _setup, _retrace_work, key=key,
                      shared=dict(nu=f * sigma, n_draws=retrace_draws, seed=draw_seed(cfg), grids=grids, key=key,
                                  batch=batch))
        retraced[f] = run_case_job(ctx, job, facts, "support_parts", shard_size=batch)
    if not have_edits:
        return pd.DataFrame(), "no edits.parquet in the results folder: run the edit stage, then this stage again"
    rows = []
    for f, keys in retraced.items():
        noise = trace[trace.estimator == "noise"] if keys is None else PartStore(out / "support_parts").concat(keys)
        try:
            res = analyze(pd.concat([others, noise], ignore_index=True), edits, spec)
        except AnalysisError as err:
            return pd.DataFrame(rows), f"analysis failed at ν = {f:g}σ: {err}"
        r2 = res.r2[res.r2.estimator == "noise"] if not res.r2.empty else res.r2
        h1 = (res.h1[(res.h1.a == "flip") & (res.h1.b == "noise") & (res.h1.measure == PRIMARY)]
              if not res.h1.empty else res.h1)
        for _, r in r2.iterrows():
            h = h1[h1.score == r.score]
            rows.append(dict(nu_factor=f, nu=f * sigma, score=r.score, delta_r2=r.delta_r2, r_w=r.r_w,
                             p_r_w=r.p_r_w, delta_null_mean=r.delta_null_mean,
                             delta_ci_low=r.get("delta_ci_low", np.nan), delta_ci_high=r.get("delta_ci_high", np.nan),
                             r2_layer=r.get("r2_layer", np.nan), n_cases=r.get("n_cases", np.nan),
                             n_rows=r.get("n_rows", np.nan),
                             h1_diff=h["diff"].iloc[0] if len(h) else np.nan,
                             h1_ci_low=h["ci_low"].iloc[0] if len(h) else np.nan,
                             h1_ci_high=h["ci_high"].iloc[0] if len(h) else np.nan,
                             h1_p=h["p_one_sided"].iloc[0] if len(h) and "p_one_sided" in h else np.nan))
    if not rows:
        return pd.DataFrame(), ("the analysis kept no noise-tracing rows at any ν: " + "; ".join(res.notes)
                                if res.notes else "the analysis kept no noise-tracing rows at any ν")
    return pd.DataFrame(rows), ""


def run(ctx: StageContext) -> None:
    t0 = time.time()
    cfg, bundle, out = ctx.config, ctx.bundle, ctx.out_dir
    facts = ctx.study_facts
    sigma = noise_tracing.noise_scale(bundle, ctx.known_facts, 1.0)
    held, partner_note = held_out(ctx)
    folds = reference_folds(ctx, held)
    references, reference, calibration = fit_references(ctx, folds)
    fold_of = {cid: k for k, (ids, _) in enumerate(folds) for cid in ids}
    subjects = [frozenset((f.relation_id, f.subject) for f in ref) for _, ref in folds]
    shared = dict(pool=ctx.known_facts, sigma=sigma, factors=tuple(cfg.support_noise_scales),
                  n_draws=cfg.support_draws, seed=draw_seed(cfg), references=references, fold_of=fold_of,
                  subjects=subjects)
    job = CaseJob("support", _setup, _work, shared=shared, key=lambda f: f"{f.case_id}_states")
    keys = run_case_job(ctx, job, facts, "support_parts")
    store = PartStore(out / "support_parts")
    states = store.concat(keys)
    answers = store.concat([k.removesuffix("_states") + "_answers" for k in keys])
    a_sum = summarise_answers(answers, cfg.n_bootstrap, cfg.seed)
    s_sum = summarise_states(states, calibration, cfg.n_bootstrap, cfg.seed)
    scale, scale_note = noise_scale_analysis(ctx, sigma)
    folder = out / "support"
    for name, frame in [("answers", answers), ("states", states), ("answers_summary", a_sum),
                        ("states_summary", s_sum), ("reference", reference), ("calibration", calibration),
                        ("noise_scale", scale)]:
        atomic_write_parquet(folder / f"{name}.parquet", frame)
    summary = dict(n_cases=len(facts), sigma_emb=sigma, noise_factors=list(cfg.support_noise_scales),
                   draws_per_arm=cfg.support_draws, quantile=cfg.support_quantile,
                   reference_folds=len(folds), reference_fit=[m.n_fit for m in references],
                   reference_calibration=[m.n_calibration for m in references],
                   study_clean_beyond_mean=float(reference.study_clean_beyond.mean()),
                   massive_factor=MASSIVE_FACTOR, reference_partners=partner_note,
                   shrinkage_max=float(reference.shrinkage.max()),
                   shrinkage_with_massive_max=float(reference.shrinkage_with_massive.max()),
                   auroc_mean_over_layers={a: float(g.auroc.mean()) for a, g in s_sum.groupby("arm", sort=False)},
                   massive_max_over_layers={a: float(g.share_massive.max()) for a, g in s_sum.groupby("arm", sort=False)},
                   noise_scale_note=scale_note, seconds=round(time.time() - t0, 1))
    write_support_report(a_sum, s_sum, scale, reference, summary, out)
    atomic_write_json(folder / "summary.json", summary)   # written last: the stage's marker
    print(_report(a_sum, s_sum, scale, summary))


def _report(a_sum: pd.DataFrame, s_sum: pd.DataFrame, scale: pd.DataFrame, summary: dict) -> str:
    lines = [f"support: {summary['n_cases']} cases, σ_emb = {summary['sigma_emb']:.4f}, "
             f"{summary['draws_per_arm']} draws per arm; clean study states beyond τ: "
             f"{summary['study_clean_beyond_mean']:.3f} (≈ {1 - summary['quantile']:.2f} expected)"]
    for arm, g in a_sum.groupby("arm", sort=False):
        v = g.set_index("quantity")
        share = s_sum[s_sum.arm == arm].estimate
        lines.append(f"  {arm:>10}: clean {v.estimate.get('share_clean', np.nan):.3f}  "
                     f"flip {v.estimate.get('share_relation', np.nan):.3f}  off {v.estimate.get('share_off', np.nan):.3f}"
                     f"  p(answer set) {v.estimate.get('p_answer_set', np.nan):.3f}  "
                     f"beyond τ (mean over layers) {share.mean():.3f}  AUROC {summary['auroc_mean_over_layers'].get(arm, np.nan):.3f}"
                     f"  massive (max over layers) {summary['massive_max_over_layers'].get(arm, np.nan):.3f}")
    if len(scale):
        for _, r in scale[scale.score == "rewrite_score"].iterrows():
            lines.append(f"  ν = {r.nu_factor:g}σ: ΔR²_noise {r.delta_r2:.4f} [{r.delta_ci_low:.4f}, "
                         f"{r.delta_ci_high:.4f}]  H1 diff {r.h1_diff:.4f} [{r.h1_ci_low:.4f}, {r.h1_ci_high:.4f}]")
    elif summary["noise_scale_note"]:
        lines.append(f"  ΔR²_noise(ν): {summary['noise_scale_note']}")
    return "\n".join(lines)
