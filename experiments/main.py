"""The whole study in one command: facts → trace → edit → analyze → report (SPEC §8).

    python -m experiments.main                       # embedded SmolLM2, built-in geography facts
    python -m experiments.main --model gpt2-xl --facts counterfact.json --device cuda --preset paper

Every stage writes its results atomically into the results folder and a rerun skips finished work.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
from pathlib import Path

from causaleval.errors import CausalEvalError
from causaleval.store import atomic_write_json, package_versions
from experiments.config import PRESETS, StudyConfig, resolve
from experiments.context import StageContext

STAGES = ("facts", "trace", "edit", "support", "analyze", "report")
# Settings that change results: a results folder made with other values is not silently reused.
RESULT_KEYS = ("model", "facts", "seed", "dtype", "relations", "max_facts", "noise_draws", "partner_draws",
               "trace_components", "trace_window", "trace_estimators", "trace_layers", "heatmap_cases",
               "noise_scale_factor", "edit_layers", "edit_layer_step", "rome_context_texts", "rome_stat_tokens",
               "rome_stat_source", "rome_max_neighbours", "rome_key_mode", "analysis_window",
               "support_noise_scales", "support_draws", "support_reference_facts", "support_min_reference",
               "support_quantile")


def stage_module(name: str):
    """The module of a stage, or None while it is not built yet."""
    try:
        return importlib.import_module(f"experiments.stages.{name}")
    except ModuleNotFoundError as err:
        if err.name == f"experiments.stages.{name}":
            return None
        raise


def available_stages() -> list[str]:
    return [s for s in STAGES if stage_module(s) is not None]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m experiments.main",
        description="Does localisation inform editing? Runs the study stages "
                    f"({' → '.join(STAGES)}); stages available in this version: {', '.join(available_stages())}.",
    )
    p.add_argument("--stage", default="all", help=f"one of {', '.join(STAGES)}, or 'all' (default)")
    p.add_argument("--preset", default="default", choices=sorted(PRESETS),
                   help="default: laptop-sized study; paper: all known facts and layers; smoke: seconds, for tests")
    p.add_argument("--model", default=None, help="'smollm2' (embedded, default) or a local HF model folder / cache name")
    p.add_argument("--facts", default=None, help="local CounterFact JSON file (default: built-in geography facts)")
    p.add_argument("--out", default=None, help="results folder (default: results/<model>-<preset>)")
    p.add_argument("--device", default=None, help="cpu (default), cuda, cuda:1, ...")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--max-facts", type=int, default=None, help="number of known facts to study (default: preset)")
    p.add_argument("--relations", nargs="+", default=None, help="relation ids of the built-in facts (e.g. P36 P17)")
    p.add_argument("--edit-layers", type=int, nargs="+", default=None,
                   help="layers to edit (default: every edit_layer_step-th layer of the preset and the last)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--trust-remote-code", action="store_true", default=None,
                   help="allow a model folder's own code to run (off by default)")
    p.add_argument("--backend", default=None, choices=["local", "ray"],
                   help="where trace/edit work runs: local (default, in-process) or ray (needs pip install '.[ray]')")
    p.add_argument("--ray-address", default=None, help="address of an existing Ray cluster (default: start a local one)")
    p.add_argument("--workers", type=int, default=None, help="Ray workers (default: one per GPU, or 2 on CPU)")
    p.add_argument("--force", action="store_true", help="recompute the chosen stage(s) even if finished")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> StudyConfig:
    return resolve(args.preset, model=args.model, facts=args.facts, out=args.out, device=args.device,
                   dtype=args.dtype, seed=args.seed, max_facts=args.max_facts, relations=args.relations,
                   batch_size=args.batch_size, trust_remote_code=args.trust_remote_code, backend=args.backend,
                   edit_layers=args.edit_layers,
                   ray_address=args.ray_address, workers=args.workers)


def out_dir_for(cfg: StudyConfig) -> Path:
    if cfg.out:
        return Path(cfg.out)
    slug = Path(cfg.model).name.replace("/", "_") if cfg.model != "smollm2" else "smollm2"
    return Path("results") / f"{slug}-{cfg.preset}"


def check_compatible(out_dir: Path, cfg: StudyConfig) -> dict:
    """The existing run.json, after checking it was made with the same result-changing settings."""
    path = out_dir / "run.json"
    if not path.is_file():
        return {}
    info = json.loads(path.read_text())
    old = info.get("config", {})
    diff = {k: (old.get(k), getattr(cfg, k)) for k in RESULT_KEYS if k in old and old.get(k) != getattr(cfg, k)}
    if diff:
        raise CausalEvalError(f"{out_dir} holds results made with other settings {diff}; "
                              "choose another --out or delete that folder")
    return info


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = build_config(args)
    wanted = list(STAGES) if args.stage == "all" else [args.stage]
    unknown = [s for s in wanted if s not in STAGES]
    if unknown:
        raise CausalEvalError(f"unknown stage {unknown[0]!r}; stages are {', '.join(STAGES)}")
    missing = [s for s in wanted if stage_module(s) is None]
    if args.stage != "all" and missing:
        raise CausalEvalError(f"stage {missing[0]!r} is not built in this version; available stages: "
                              f"{', '.join(available_stages())}")
    wanted = [s for s in wanted if s not in missing]
    out_dir = out_dir_for(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = check_compatible(out_dir, cfg)
    ctx = StageContext(config=cfg, out_dir=out_dir, progress=not args.quiet)
    completed: dict = dict(info.get("completed_stages", {}))

    def save_info():
        atomic_write_json(out_dir / "run.json", {
            "config": cfg.to_dict(), "seed": cfg.seed, "packages": package_versions(),
            "model": ctx._bundle.identity if ctx._bundle is not None else info.get("model"),
            "completed_stages": completed})

    for name in wanted:
        mod = stage_module(name)
        done = name in completed and all((out_dir / o).exists() for o in mod.OUTPUTS)
        if done and not args.force:
            print(f"[{name}] already finished in {out_dir} (use --force to recompute)")
            continue
        print(f"[{name}] running → {out_dir}")
        t0 = time.time()
        mod.run(ctx)
        completed[name] = {"seconds": round(time.time() - t0, 1), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        save_info()
        print(f"[{name}] done in {time.time() - t0:.1f} s")
    if missing:
        print(f"stages not built in this version: {', '.join(missing)}")
    save_info()
    summary = out_dir / "analysis" / "summary.json"
    if args.stage == "all" and summary.is_file():
        from causaleval.analysis import headline

        print("\n" + headline(json.loads(summary.read_text())))
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(argv)
    except CausalEvalError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
