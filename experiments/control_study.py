"""The positive control at the study's settings, in one command (docs/groundtruth.md#control-at-study-settings).

    python -m experiments.control_study --out OUT              # facts, then control; resumable (rerun to go on)
    python -m experiments.control_study --out OUT --estimate   # time one fact, print the CPU-hour estimate

Settings: the committed study's (``paper/study/run.json``: 10 noise draws, 10 partners, the 9 edit layers
0, 4, …, 28, 29, MLP window 5, 4 ROME context texts), ``control_facts`` facts (default 20) and the planting
editors ``rome,ft1,memit``.  The facts and control stages run with the same settings, so the folder stays one
run; finished facts are kept in ``OUT/control_parts`` and a rerun computes only the missing ones.

``--estimate`` runs the facts stage, then times the control work of the first control fact (process CPU
time; run it niced with OMP_NUM_THREADS=1) at ``--estimate-layers`` planted layers and ``--estimate-editors``
planting editors (default: all) and prints CPU hours for the whole run, each planting costing the timed
plantings' mean; when everything was timed the fact's parts are kept, so the full run resumes after it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from causaleval.errors import CausalEvalError

STUDY_CONFIG = Path("paper/study/run.json")
EDITORS = "rome,ft1,memit"


def stage_args(out: Path, n_facts: int, editors: str, config: Path, extra: list[str]) -> list[str]:
    """The settings both stages get: the study's, the control's facts and planting editors, then ``extra``."""
    sets = [f"control_facts={n_facts}", f"plant_editors={editors}", *extra]
    return ["--config", str(config), "--out", str(out), *[a for s in sets for a in ("--set", s)]]


def estimate(args: list[str], layers: list[int] | None, editors: list[str] | None = None) -> dict:
    """CPU seconds of the control stage's setup and of its first fact at ``layers`` (None: all planted layers)
    planted by ``editors`` (None: all planting editors), and the projected CPU hours for every fact, planted
    layer and planting editor (each planting costing what the timed ones cost on average)."""
    import dataclasses

    from causaleval.editing.rome import SecondMoments
    from causaleval.estimators import noise_tracing
    from causaleval.groundtruth.control import control_layers_for
    from causaleval.runs.parts import PartStore
    from experiments import main as main_mod
    from experiments.context import StageContext
    from experiments.stages import control
    from experiments.stages.edit import _hparams

    cfg = main_mod.build_config(main_mod.parse_args([*args, "--stage", "control"]))
    out = main_mod.out_dir_for(cfg)
    ctx = StageContext(config=cfg, out_dir=out, progress=False)
    c0, w0 = time.process_time(), time.time()
    bundle = ctx.bundle
    edit_layers = ctx.edit_layers()
    planted = control_layers_for(cfg.control_layers, edit_layers, bundle.n_layers)
    timed = sorted(set(layers)) if layers else planted
    hp = _hparams(bundle, cfg)
    stats = SecondMoments(bundle, hp, seed=cfg.seed, progress=False)
    stats.ensure(sorted(set(planted) | set(edit_layers)))    # every planted layer's statistics: the full setup
    nu = noise_tracing.noise_scale(bundle, ctx.known_facts, cfg.noise_scale_factor)
    shared = {"layers": timed, "edit_layers": edit_layers, "nu": nu, "pool": ctx.known_facts,
              "estimators": list(cfg.trace_estimators)}
    timed_editors = list(editors or cfg.plant_editors)
    state = control._setup(bundle, dataclasses.replace(cfg, plant_editors=timed_editors), shared)
    setup_cpu, setup_wall = time.process_time() - c0, time.time() - w0
    fact = control.control_facts(ctx)[0]
    c1, w1 = time.process_time(), time.time()
    parts = list(control._work(state, [fact]))
    fact_cpu, fact_wall = time.process_time() - c1, time.time() - w1
    whole = timed == planted and timed_editors == list(cfg.plant_editors)
    if whole:                               # the whole fact: keep it, the full run resumes after it
        store = PartStore(out / "control_parts")
        for key, frame in parts:
            store.write(key, frame)
    plants = dict(parts)[f"{fact.case_id}_plant"]
    n_facts = len(control.control_facts(ctx))
    per_planting = fact_cpu / max(1, len(timed_editors) * len(timed))
    total = setup_cpu + per_planting * n_facts * len(cfg.plant_editors) * len(planted)
    return dict(case_id=int(fact.case_id), plant_editors=list(cfg.plant_editors), timed_editors=timed_editors,
                timed_layers=timed,
                planted_layers=planted, edit_layers=edit_layers, n_facts=n_facts, noise_draws=cfg.noise_draws,
                partner_draws=cfg.partner_draws, analysis_window=cfg.analysis_window,
                rome_context_texts=cfg.rome_context_texts, setup_cpu_s=round(setup_cpu, 1),
                setup_wall_s=round(setup_wall, 1), fact_cpu_s=round(fact_cpu, 1), fact_wall_s=round(fact_wall, 1),
                cpu_s_per_planting=round(per_planting, 1), plantings_took=int(plants.success.sum()),
                plantings=len(plants), kept_parts=whole, cpu_hours_total=round(total / 3600, 2))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.control_study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="results folder (created; rerun to resume)")
    p.add_argument("--facts", type=int, default=20, help="control_facts: study facts planted and re-edited")
    p.add_argument("--editors", default=EDITORS, help="planting editors (default rome,ft1,memit)")
    p.add_argument("--config", type=Path, default=STUDY_CONFIG, help="the study's run.json (its settings)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any further setting")
    p.add_argument("--estimate", action="store_true", help="time one fact and print the CPU-hour estimate")
    p.add_argument("--estimate-layers", type=int, nargs="+", help="planted layers to time (default: all)")
    p.add_argument("--estimate-editors", help="planting editors to time, e.g. rome (default: all)")
    a = p.parse_args(argv)
    from experiments import main as main_mod

    args = stage_args(a.out, a.facts, a.editors, a.config, a.set)
    for stage in ("facts", "control"):
        if stage == "control" and a.estimate:
            editors = a.estimate_editors.split(",") if a.estimate_editors else None
            try:
                print(json.dumps(estimate(args, a.estimate_layers, editors), indent=1))
            except CausalEvalError as err:
                print(f"error: {err}", file=sys.stderr)
                raise SystemExit(2) from None
            return
        rc = main_mod.main([*args, "--stage", stage])      # one-line errors, as the CLI
        if rc:
            raise SystemExit(rc)


if __name__ == "__main__":
    main()
