"""Stage ``trace``: noise tracing, resample scrubbing and flip scrubbing of the study facts (docs/estimands.md).

Site sets per case:
* the *analysis set* every case gets: MLP windows of ``analysis_window`` layers centred at each layer of
  ``ctx.edit_layers()``, at every position (positions before the subject cost nothing: their effect is
  exactly 0 and is filled in without a forward pass);
* the *heatmap set* the first ``heatmap_cases`` cases get: each of ``trace_components`` (residual:
  window 1; mlp/attn: ``trace_window``) at ``trace_layers`` (default every layer), every position.

Writes (results folder): ``trace.parquet`` (a row per estimator, direction, metric, case and site),
``trace_draws.parquet`` (per-draw values of the analysis set), ``trace_cases.parquet`` (TE, clean and
corrupted metric, support size, exclusions), ``trace_summary.parquet`` (mean over cases with a
bootstrap CI per estimator, direction, metric, component, window, layer and role), ``trace_meta.json``
(ν, the estimands as text, counts) and ``figures/trace_<estimator>_<component>.png``.  Finished cases
are kept in ``trace_parts/`` and skipped on a rerun.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd

from causaleval.estimators import flip_scrubbing, noise_tracing, resample_scrubbing
from causaleval.inference.bootstrap import summarise_by
from causaleval.patching.core import TraceTables
from causaleval.patching.estimands import SiteGrid
from causaleval.reporting.heatmaps import trace_heatmaps
from causaleval.runs.parts import PartStore
from causaleval.runs.store import atomic_write_json, atomic_write_parquet
from experiments.backends import CaseJob
from experiments.config import draw_seed
from experiments.context import StageContext, run_case_job

NAME = "trace"
OUTPUTS = ("trace.parquet", "trace_summary.parquet")
ESTIMATORS = ("noise", "resample", "flip")


def site_grids(ctx: StageContext, heatmap: bool) -> tuple[SiteGrid, ...]:
    """The analysis set, plus the heatmap set when ``heatmap``; grids of one (component, window) merged."""
    cfg = ctx.config
    grids = {("mlp", cfg.analysis_window): SiteGrid("mlp", cfg.analysis_window, tuple(ctx.edit_layers()))}
    if heatmap:
        layers = None if cfg.trace_layers is None else tuple(cfg.trace_layers)
        for comp in cfg.trace_components:
            window = 1 if comp == "residual" else cfg.trace_window
            old = grids.get((comp, window))
            if old is not None and layers is not None:
                layers = tuple(sorted(set(layers) | set(old.layers or ())))
            grids[(comp, window)] = SiteGrid(comp, window, layers)
    return tuple(grids.values())


def _keep_draws(draws: pd.DataFrame, ctx: StageContext) -> pd.DataFrame:
    if draws.empty:
        return draws
    return draws[(draws.component == "mlp") & (draws.window == ctx.config.analysis_window)]


def _trace_many(ctx: StageContext, estimator: str, facts: list, heatmap: bool, nu: float) -> list[TraceTables]:
    """One estimator on several cases traced together (same site grids); a TraceTables per case."""
    cfg, bundle = ctx.config, ctx.bundle
    grids = site_grids(ctx, heatmap)
    seed = draw_seed(cfg)
    if estimator == "noise":
        c = noise_tracing.NoiseTracingConfig(nu=nu, n_draws=cfg.noise_draws, seed=seed, grids=grids)
        return noise_tracing.trace_facts(bundle, facts, c)
    pool = ctx.known_facts
    if estimator == "resample":
        c = resample_scrubbing.ScrubbingConfig(n_draws=cfg.partner_draws, seed=seed, grids=grids)
        return resample_scrubbing.trace_facts(bundle, facts, pool, c)
    c = resample_scrubbing.ScrubbingConfig(n_draws=cfg.partner_draws, seed=seed, grids=grids,
                                           directions=flip_scrubbing.DIRECTIONS)
    return flip_scrubbing.trace_facts(bundle, facts, pool, c)


@dataclass
class _WorkerContext:
    """What tracing one case needs: the parts of a StageContext a Ray worker can rebuild."""

    config: object
    bundle: object
    known_facts: list
    layers: list

    def edit_layers(self) -> list:
        return self.layers


def _setup(bundle, config, shared: dict) -> dict:
    return dict(shared, ctx=_WorkerContext(config, bundle, shared["known_facts"], shared["edit_layers"]))


def _work(state: dict, facts):
    """Per case: the draws, cases and sites tables; ``sites`` comes last and marks the part finished.
    Cases are traced ``trace_batch_cases`` at a time (heatmap cases apart, since their sites differ)."""
    est, ctx = state["estimator"], state["ctx"]
    size = max(1, int(getattr(ctx.config, "trace_batch_cases", 1) or 1))
    heat = [f for f in facts if f.case_id in state["heat_ids"]]
    rest = [f for f in facts if f.case_id not in state["heat_ids"]]
    for group, heatmap in ((heat, True), (rest, False)):
        for lo in range(0, len(group), size):
            batch = group[lo:lo + size]
            for fact, tables in zip(batch, _trace_many(ctx, est, batch, heatmap, state["nu"])):
                name = f"{est}_{fact.case_id}"
                yield f"{name}_draws", _keep_draws(tables.draws, ctx)
                yield f"{name}_cases", tables.cases
                yield f"{name}_sites", tables.sites


def _read_parts(parts_dir, names) -> TraceTables:
    store = PartStore(parts_dir)
    return TraceTables(*(store.concat([f"{n}_{kind}" for n in names]) for kind in ("sites", "draws", "cases")))


def summarise(sites: pd.DataFrame, n_resamples: int, seed: int) -> pd.DataFrame:
    """Per (estimator, direction, metric, component, window, layer, role): the mean over cases of the
    case's mean IE over positions of that role, with a bootstrap CI resampling cases, and the
    normalised effect as a ratio of means."""
    keys = ["estimator", "direction", "metric", "component", "window", "layer", "role"]
    per_case = sites.groupby(keys + ["case_id"], as_index=False).agg(ie=("ie", "mean"), te=("te", "first"))
    return summarise_by(per_case, keys, value="ie", total="te", n_resamples=n_resamples, seed=seed)


def run(ctx: StageContext) -> None:
    cfg = ctx.config
    unknown = [e for e in cfg.trace_estimators if e not in ESTIMATORS]
    if unknown:
        raise ValueError(f"unknown estimator {unknown[0]!r} in trace_estimators; choose from {ESTIMATORS}")
    t0 = time.time()
    facts = ctx.study_facts
    bundle = ctx.bundle
    nu = noise_tracing.noise_scale(bundle, ctx.known_facts, cfg.noise_scale_factor)
    n_heat = len(facts) if cfg.heatmap_cases is None else min(cfg.heatmap_cases, len(facts))
    heat_ids = {f.case_id for f in facts[:n_heat]}
    parts_dir = ctx.out_dir / "trace_parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    shared = {"nu": nu, "heat_ids": heat_ids, "known_facts": ctx.known_facts, "edit_layers": ctx.edit_layers()}
    names = []
    for est in cfg.trace_estimators:
        job = CaseJob(f"trace {est}", _setup, _work, shared=dict(shared, estimator=est),
                      key=lambda f, est=est: f"{est}_{f.case_id}_sites")
        names += [k.removesuffix("_sites") for k in run_case_job(ctx, job, facts, "trace_parts",
                                                                    shard_size=cfg.trace_batch_cases)]
    tables = _read_parts(parts_dir, names)
    summary = summarise(tables.sites, cfg.n_bootstrap, cfg.seed)
    atomic_write_parquet(ctx.out_dir / "trace_draws.parquet", tables.draws)
    atomic_write_parquet(ctx.out_dir / "trace_cases.parquet", tables.cases)
    atomic_write_parquet(ctx.out_dir / "trace_summary.parquet", summary)
    figures = trace_heatmaps(tables.sites, ctx.out_dir / "figures")
    sc = resample_scrubbing.ScrubbingConfig(n_draws=cfg.partner_draws, grids=site_grids(ctx, True))
    estimands = {
        "noise": str(noise_tracing.estimand(noise_tracing.NoiseTracingConfig(nu=nu, n_draws=cfg.noise_draws,
                                                                            grids=site_grids(ctx, True)))),
        "resample": str(resample_scrubbing.estimand(sc)),
        "flip_denoise": str(flip_scrubbing.estimand(sc, "denoise")),
        "flip_noise": str(flip_scrubbing.estimand(sc, "noise")),
    }
    cases = tables.cases
    excluded = (cases[cases.excluded].drop_duplicates(["estimator", "case_id"]).groupby("estimator").size().to_dict()
                if len(cases) else {})
    atomic_write_json(ctx.out_dir / "trace_meta.json", {
        "nu": nu, "noise_scale_factor": cfg.noise_scale_factor, "n_cases": len(facts), "heatmap_cases": n_heat,
        "edit_layers": ctx.edit_layers(), "excluded": excluded, "estimands": estimands,
        "figures": [str(f.relative_to(ctx.out_dir)) for f in figures], "seconds": round(time.time() - t0, 1)})
    atomic_write_parquet(ctx.out_dir / "trace.parquet", tables.sites)   # written last: the stage's marker
    print(_report(tables, excluded))


def _report(tables: TraceTables, excluded: dict) -> str:
    s = tables.sites
    if s.empty:
        return "trace: no sites traced"
    d = s[(s.direction == "denoise") & (s.metric == "p") & (s.component == "mlp")]
    lines = [f"trace: {s.case_id.nunique()} cases; excluded per estimator: {excluded or 'none'}"]
    for (est, w), g in d.groupby(["estimator", "window"]):
        m = g.groupby(["layer", "role"]).ie.mean()
        (layer, role), v = m.idxmax(), m.max()
        lines.append(f"  {est} MLP window {w}: peak mean IE {v:.4f} at layer {layer}, {role}")
    return "\n".join(lines)


