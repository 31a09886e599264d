"""The whole study in one command: facts → trace → edit → analyze → report (docs/design.md#stages).

    python -m experiments.main                       # embedded SmolLM2, built-in geography facts
    python -m experiments.main --model gpt2-xl --facts counterfact.json --device cuda --preset paper

Every stage writes its results atomically into the results folder and a rerun skips finished work.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import sys
import time
from pathlib import Path

from causaleval.errors import CausalEvalError, ConfigError, ResultsError
from causaleval.runs import manifest
from causaleval.runs.locks import FileLock
from causaleval.runs.store import atomic_write_json, file_sha256, provenance, remove_stale_temps, unreadable
from experiments import config as config_mod
from experiments.config import PRESETS, StudyConfig, resolve
from experiments.context import StageContext, edit_layers_for

STAGES = ("facts", "trace", "edit", "validate", "control", "support", "analyze", "report")
ON_REQUEST = ("control",)   # run only with --stage NAME, not by --stage all (docs/groundtruth.md#positive-control)
# Settings that do not change results; every other setting (also one added later) must match to reuse a folder.
NOT_RESULT_KEYS = ("out", "preset", "device", "trust_remote_code", "backend", "ray_address", "workers",
                   "shard_size", "rome_batch_cases", "trace_batch_cases", "plan")


def result_keys(cfg: StudyConfig) -> list[str]:
    return [k for k in cfg.to_dict() if k not in NOT_RESULT_KEYS and not k.endswith("batch_size")]


def merged_from_path(out_dir: Path, stage: str) -> Path:
    """Where a stage merged from separate runs (experiments.merge_edits) lists them; run.json copies it."""
    return Path(out_dir) / f"{stage}_merged_from.json"


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


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the settings list of the epilog as written."""


def _per_preset(key: str) -> str:
    values = {name: resolve(name).to_dict()[key] for name in PRESETS}
    if len(set(map(json.dumps, values.values()))) == 1:
        return json.dumps(next(iter(values.values())))
    return ", ".join(f"{name}: {json.dumps(v)}" for name, v in values.items())


def build_parser() -> argparse.ArgumentParser:
    d = StudyConfig()
    p = argparse.ArgumentParser(
        prog="python -m experiments.main", formatter_class=_Formatter,
        description="Does localisation inform editing? Runs the study stages "
                    f"({' → '.join(STAGES)}); stages available in this version: {', '.join(available_stages())}.\n"
                    "Settings come from the preset, then --config, then the flags below, then --set.",
        epilog="settings for --set KEY=VALUE and --config (shown with the values of --preset default):\n"
               + config_mod.describe(resolve("default"))
               + "\n\nLists take a,b,c or [a, b, c]; null means none/all; rome_hparams.NAME=VALUE sets one ROME "
                 "hyperparameter; editor_hparams.ft1=FILE reads FT/MEMIT hyperparameters from the original "
                 "repositories' JSON or EasyEdit's YAML (docs/editors.md).\nExamples:\n  python -m experiments.main --preset smoke --set noise_draws=5 "
                 "--set trace_estimators=noise,flip --print-config")
    p.add_argument("--stage", default="all", help=f"one of {', '.join(STAGES)}, or 'all' (default: all)")
    p.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="default: laptop-sized study; paper: all known facts and layers; smoke: seconds, for tests "
                        "(default: default, or the preset named in --config)")
    p.add_argument("--config", metavar="FILE", default=None,
                   help="YAML or JSON file of settings (KEY: VALUE, see below), or the run.json of an earlier run")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="settings",
                   help="set one setting (repeatable), e.g. --set noise_draws=5 --set edit_layers=0,6,12")
    p.add_argument("--rome-hparams", metavar="FILE", default=None,
                   help="import ROME hyperparameters from the ROME repository's hparams/ROME/*.json or EasyEdit's "
                        "hparams/ROME/*.yaml")
    p.add_argument("--print-config", action="store_true", help="print the resolved settings as JSON and exit")
    p.add_argument("--model", default=None,
                   help=f"'smollm2' or 'gemma3-270m' (embedded) or a local HF model folder / cache name (default: {d.model})")
    p.add_argument("--facts", default=None,
                   help="local CounterFact JSON file (default: built-in geography facts)")
    p.add_argument("--out", default=None, help="results folder (default: results/<model>-<preset>)")
    p.add_argument("--device", default=None, help=f"cpu, cuda, cuda:N or mps (default: {d.device})")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help=f"dtype of the model weights (default: {d.dtype})")
    p.add_argument("--seed", type=int, default=None,
                   help=f"seed of the fact sample, noise draws, partners and ROME context texts (default: {d.seed})")
    p.add_argument("--max-facts", type=int, default=None,
                   help=f"number of known facts to study, ≥ 1 (default: the preset's; {_per_preset('max_facts')}; "
                        "null = all)")
    p.add_argument("--relations", nargs="+", default=None,
                   help="relation ids to keep, e.g. P36 P17: of the built-in facts, or of --facts records "
                        "(their relation_id); for the built-in facts also the sets geo (the default), more, all")
    p.add_argument("--edit-layers", type=int, nargs="+", default=None,
                   help="layers to edit (default: every edit_layer_step-th layer and the last; edit_layer_step "
                        f"{_per_preset('edit_layer_step')})")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"prompts per forward pass in the facts filter; speed only, ≥ 1 (default: {d.batch_size})")
    p.add_argument("--trust-remote-code", action="store_true", default=None,
                   help="allow a model folder's own code to run (default: off)")
    p.add_argument("--backend", default=None, choices=["local", "ray"],
                   help="where trace/edit work runs: local (in-process) or ray (needs pip install '.[ray]') "
                        f"(default: {d.backend})")
    p.add_argument("--ray-address", default=None, help="address of an existing Ray cluster (default: start a local one)")
    p.add_argument("--workers", type=int, default=None, help="Ray workers (default: one per GPU, or 2 on CPU)")
    p.add_argument("--plan", default=None, metavar="FILE",
                   help="analysis plan (e.g. paper/plan.yaml): a confirmatory run; analyze labels its result "
                        "confirmatory or exploratory (docs/confirmatory.md)")
    p.add_argument("--force", action="store_true", help="recompute the chosen stage(s) even if finished")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def rome_settings(path: str) -> dict:
    """Study settings from a ROME/EasyEdit hparams file: its statistics size and context texts map to the
    study's own settings, the other shared hyperparameters go to ``rome_hparams``; ``layers`` is not used
    (the study edits every layer of edit_layers)."""
    from causaleval.editing.rome.hparams import import_rome_hparams
    from experiments.stages.edit import context_lengths

    config_mod.check_path("--rome-hparams", path)
    imported = import_rome_hparams(path)
    rest = dict(imported.overrides)
    out: dict = {}
    rest.pop("layer", None)
    for key, setting in config_mod.ROME_STUDY_SETTINGS.items():
        if key in rest:
            out[setting] = rest.pop(key)
    lengths = rest.get("context_lengths")
    if lengths is not None:
        n = sum(k for _, k in lengths)
        if context_lengths(n) == tuple(lengths):
            out["rome_context_texts"] = n
            rest.pop("context_lengths")
        else:
            rest["context_lengths"] = [list(x) for x in lengths]
    out["rome_hparams"] = rest
    used = sorted(k for k in out if k != "rome_hparams") + sorted(f"rome_hparams.{k}" for k in rest)
    unused = sorted(imported.not_used) + (["layers"] if "layer" in imported.overrides else [])
    print(f"--rome-hparams {path}: using {', '.join(used) or 'nothing'}; "
          f"not used: {', '.join(unused) or 'nothing'}", file=sys.stderr)
    for key, why in imported.differs.items():
        print(f"--rome-hparams {path}: {key} = {why}", file=sys.stderr)
    return out


def build_config(args: argparse.Namespace) -> StudyConfig:
    """Preset, then --config, then --rome-hparams, then the flags, then --set (later wins)."""
    from_file = config_mod.load_config_file(args.config) if args.config else {}
    if from_file.pop("trust_remote_code", None):      # a shared file (a run.json) must not run a model's code
        print(f"warning: --config {args.config}: trust_remote_code is ignored in a settings file; pass "
              "--trust-remote-code on the command line to let the model folder's code run", file=sys.stderr)
    from_rome = rome_settings(args.rome_hparams) if args.rome_hparams else {}
    flags = dict(model=args.model, facts=args.facts, out=args.out, device=args.device, dtype=args.dtype,
                 seed=args.seed, max_facts=args.max_facts, relations=args.relations, batch_size=args.batch_size,
                 trust_remote_code=args.trust_remote_code, backend=args.backend, edit_layers=args.edit_layers,
                 ray_address=args.ray_address, workers=args.workers, plan=args.plan)
    from_set = config_mod.parse_set(args.settings)
    if "trust_remote_code" in from_set:
        raise ConfigError("--set trust_remote_code: a model folder's code runs only with the flag "
                          "--trust-remote-code (or the API argument trust_remote_code=True)")
    preset = args.preset or from_set.get("preset") or from_file.get("preset") or "default"
    cfg = resolve(preset)
    for layer in (from_file, from_rome, flags):
        cfg = dataclasses.replace(cfg, **{k: v for k, v in layer.items() if v is not None})
    cfg = dataclasses.replace(cfg, **from_set)
    rome = {**from_file.get("rome_hparams", {}), **from_rome.get("rome_hparams", {}), **from_set.get("rome_hparams", {})}
    cfg = dataclasses.replace(cfg, preset=preset, rome_hparams=rome)
    if cfg.plan and cfg.exclude_facts_from is None:       # the plan's fact set: held out from its exploratory run
        from experiments.confirm import plan_exclusions

        cfg = dataclasses.replace(cfg, exclude_facts_from=plan_exclusions(cfg.plan, cfg.model))
    return cfg


def out_dir_for(cfg: StudyConfig) -> Path:
    if cfg.out:
        return Path(cfg.out)
    slug = Path(cfg.model).name.replace("/", "_") if cfg.model != "smollm2" else "smollm2"
    return Path("results") / f"{slug}-{cfg.preset}"


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def check_compatible(out_dir: Path, cfg: StudyConfig) -> dict:
    """The existing run.json, after checking it was made with the same result-changing settings."""
    path = out_dir / "run.json"
    if not path.is_file():
        return {}
    why = unreadable(path)
    if why is not None:
        raise ResultsError(f"{path} is corrupt ({why}): the settings of the results in {out_dir} are unknown; "
                           "delete that folder (or run.json, if you know the results match) or choose another --out")
    info = json.loads(path.read_text(encoding="utf-8"))
    old = info.get("config", {}) if isinstance(info, dict) else {}
    new = _jsonable(cfg.to_dict())
    diff = {k: (old.get(k), new[k]) for k in result_keys(cfg) if k in old and old.get(k) != new[k]}
    if diff:
        raise ResultsError(f"{out_dir} holds results made with other settings {diff}; "
                           "choose another --out or delete that folder")
    return info


# which stage writes a file (by its path in the results folder)
OWNERS = (("facts", "facts"), ("trace", "trace"), ("edit", "edit"), ("validate/", "validate"), ("support/", "support"),
          ("analysis/", "analyze"), ("withinfact/", "analyze"))
PARTS = {"trace": "trace_parts", "edit": "edit_parts", "validate": "validate_parts", "support": "support_parts"}
# the stages whose outputs a stage reads (docs/design.md#stages): recomputing one invalidates the finished
# stages that depend on it, directly or not
DEPENDS = {"facts": (), "trace": ("facts",), "edit": ("facts",), "validate": ("facts",),
           "support": ("facts", "trace", "edit"), "analyze": ("trace", "edit"),
           "report": ("analyze", "trace", "support", "validate")}


def dependents(stage: str) -> list[str]:
    """The stages that read ``stage``'s outputs, directly or through another stage, in run order."""
    found: set[str] = set()
    grew = True
    while grew:
        grew = False
        for name, needs in DEPENDS.items():
            if name not in found and (stage in needs or found & set(needs)):
                found.add(name)
                grew = True
    return [s for s in STAGES if s in found]


def corrupt_outputs(out_dir: Path) -> dict[Path, tuple[str, str]]:
    """Stage outputs (parquet, JSON, JSON lines) in a results folder that cannot be used — their bytes differ
    from the checksum recorded when they were written, or they do not read: path → (stage, why)."""
    found = {}
    for path in sorted(out_dir.rglob("*")):
        rel = path.relative_to(out_dir).as_posix()
        if not path.is_file() or path.suffix not in (".parquet", ".json", ".jsonl") or rel == "run.json" \
                or path.name.startswith("."):
            continue
        if rel.startswith(tuple(f"{p}/" for p in PARTS.values())):
            continue      # parts: the part store itself names and recomputes a corrupt one
        owner = next((stage for prefix, stage in OWNERS if rel.startswith(prefix)), None)
        why = unreadable(path) if owner else None
        if why is not None:
            found[path] = (owner, why)
    return found


def foreign_outputs(out_dir: Path, stages: list[str]) -> list[Path]:
    """Files at the paths ``stages`` write that the package has no record of writing, in a folder that is no
    results folder yet (no run.json): a run would replace them."""
    if (out_dir / "run.json").is_file():
        return []
    return [out_dir / o for s in stages for o in stage_module(s).OUTPUTS
            if (out_dir / o).is_file() and not manifest.is_recorded(out_dir / o)]


def validate_inputs(cfg: StudyConfig, ctx: StageContext, need_facts: bool) -> None:
    """Everything that can be checked before the model loads: settings, device, model files and depth, facts."""
    from causaleval.model.loading import model_config

    n_layers = int(model_config(cfg.model, cfg.trust_remote_code).num_hidden_layers)
    config_mod.validate_layers(cfg, n_layers)
    config_mod.validate_layers(dataclasses.replace(cfg, edit_layers=edit_layers_for(cfg, n_layers)), n_layers)
    if need_facts:
        # reads and checks --facts (or builds the built-in facts) now
        source = f"{cfg.facts}" if cfg.facts else "the built-in geography facts"
        if cfg.relations:
            source += f" with --relations {' '.join(cfg.relations)}"
        config_mod.validate_facts(cfg, len(ctx.source_facts), source)


def _remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` and its sub-folders when no file was written in them."""
    if folder.is_dir() and not any(p.is_file() for p in folder.rglob("*")):
        for sub in sorted((p for p in folder.rglob("*")), key=lambda p: len(p.parts), reverse=True):
            sub.rmdir()
        folder.rmdir()


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = build_config(args)
    config_mod.validate(cfg)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2, ensure_ascii=False))
        return 0
    wanted = [s for s in STAGES if s not in ON_REQUEST] if args.stage == "all" else [args.stage]
    unknown = [s for s in wanted if s not in STAGES]
    if unknown:
        raise ConfigError(f"--stage: unknown stage {unknown[0]!r}; stages are {', '.join(STAGES)} or all")
    missing = [s for s in wanted if stage_module(s) is None]
    if args.stage != "all" and missing:
        raise ConfigError(f"--stage {missing[0]!r} is not built in this version; available stages: "
                          f"{', '.join(available_stages())}")
    wanted = [s for s in wanted if s not in missing]
    out_dir = out_dir_for(cfg)
    config_mod.check_out(str(out_dir))
    # the outermost folder this run creates: removed again if the run fails before writing a file
    created = next((p for p in reversed((out_dir.absolute(), *out_dir.absolute().parents)) if not p.exists()), None)
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(out_dir / LOCK_FILE)
    try:
        if not lock.acquire(blocking=False, info=run_info(argv)):
            raise ResultsError(f"--out {out_dir}: another run is writing this folder ({describe_run(lock.holder())}); "
                               "wait for it to finish, or choose another --out")
        return _run_locked(args, argv, cfg, wanted, missing, out_dir)
    except BaseException:
        lock.release()
        if created is not None:
            _remove_if_empty(created)
        raise
    finally:
        lock.release()


LOCK_FILE = ".causaleval.lock"


def run_info(argv: list[str] | None) -> dict:
    """Who holds a results folder: written into its lock file."""
    import os
    import platform

    return {"pid": os.getpid(), "host": platform.node(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "argv": ["python", "-m", "experiments.main", *(sys.argv[1:] if argv is None else argv)]}


def describe_run(info: dict) -> str:
    if not info:
        return "its details are not written yet"
    argv = " ".join(map(str, info.get("argv", [])))
    argv = argv if len(argv) <= 300 else argv[:297] + "..."
    return f"PID {info.get('pid')} on {info.get('host')}, started {info.get('started')}: {argv}"


def plan_entry(out_dir: Path) -> dict:
    """run.json's ``plan``: the label, reasons, plan sha256 and commit of the folder's planned analysis
    (analysis/confirmatory.json, written by analyze with --plan; its primary result is in summary.json);
    empty without one."""
    from experiments.stages.analyze import PLAN_RECORD

    path = out_dir / PLAN_RECORD
    if path.is_file():
        rec = json.loads(path.read_text(encoding="utf-8"))
        return {"plan": {k: rec.get(k) for k in ("label", "reasons", "model", "plan", "checked_at")}}
    return {}


def _run_locked(args: argparse.Namespace, argv: list[str] | None, cfg: StudyConfig, wanted: list[str],
                missing: list[str], out_dir: Path) -> int:
    """The stages, run while this process holds the results folder's lock."""
    info = check_compatible(out_dir, cfg)
    if cfg.plan:                                  # a confirmatory run: no fact of the exploratory run
        from experiments.confirm import refuse_planned_overlap

        refuse_planned_overlap(out_dir, cfg)
    completed: dict = dict(info.get("completed_stages", {}))
    invalidated: list = list(info.get("invalidated_stages", []))     # finished parts to recompute
    foreign = foreign_outputs(out_dir, wanted)
    if foreign:
        raise ResultsError(f"--out {out_dir} holds {', '.join(p.name for p in foreign[:3])}, which causaleval did not "
                           "write; a run would replace it: choose another --out (an empty or new folder)")
    corrupt = corrupt_outputs(out_dir)
    for path, (owner, why) in corrupt.items():
        if not manifest.is_recorded(path):       # not the package's own file (or written before checksums were)
            raise ResultsError(f"{path} cannot be read ({why}) and causaleval has no record of writing it, so it is "
                               f"left as it is: move or delete it, or choose another --out")
        if owner not in wanted:
            raise ResultsError(f"{path} is corrupt ({why}); recompute it with --stage {owner} --force "
                               f"--out {out_dir}, or delete it")
        completed.pop(owner, None)

    def is_done(name: str) -> bool:
        return name in completed and all((out_dir / o).exists() for o in stage_module(name).OUTPUTS)

    ctx = StageContext(config=cfg, out_dir=out_dir, progress=not args.quiet)
    # every input is checked before anything in the folder is deleted
    validate_inputs(cfg, ctx, need_facts="facts" in wanted and (args.force or not is_done("facts")))
    remove_stale_temps(out_dir)      # a killed run's recorded temporary files (no other writer: we hold the lock)
    facts_file = cfg.facts if cfg.facts else None
    extra = provenance(argv if argv is not None else sys.argv[1:], facts_file)

    def save_info():
        known = out_dir / "facts.jsonl"
        atomic_write_json(out_dir / "run.json", {
            "config": cfg.to_dict(), "seed": cfg.seed, **extra,
            "known_facts_sha256": file_sha256(known) if known.is_file() else None,
            "model": ctx._bundle.identity if ctx._bundle is not None else info.get("model"),
            "completed_stages": completed, "invalidated_stages": invalidated, **plan_entry(out_dir)})

    for path, (owner, why) in corrupt.items():
        print(f"[{owner}] {path} is corrupt ({why}); deleting it, the {owner} stage recomputes it")
        path.unlink()
    if corrupt:
        save_info()        # the stages that lost an output are no longer finished, even if this run stops early
    for name in wanted:
        mod = stage_module(name)
        if is_done(name) and not args.force:
            print(f"[{name}] already finished in {out_dir} (use --force to recompute)")
            continue
        print(f"[{name}] running → {out_dir}")
        t0 = time.time()
        ctx.recompute = args.force or name in invalidated
        for later in dependents(name):           # their inputs change: they are no longer finished
            if later in completed:
                completed.pop(later)
                invalidated += [later] if later not in invalidated else []
                print(f"[{name}] the finished {later} stage reads its outputs; it is recomputed when it runs next")
        mod.run(ctx)
        if name in invalidated:
            invalidated.remove(name)
        completed[name] = {"seconds": round(time.time() - t0, 1),
                           "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        merged = merged_from_path(out_dir, name)      # written by experiments.merge_edits
        if merged.is_file():
            completed[name]["merged_from"] = json.loads(merged.read_text(encoding="utf-8"))
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
    except OSError as err:
        if err.filename is None:      # not about a path the user gave
            raise
        # a path the file system refuses (too long, not permitted, virtual, read-only): one line, not a traceback
        print(f"error: {str(err.filename)[:200]}: {err.strerror or err}; check the paths given to --model, --facts, "
              "--out, --config and --rome-hparams", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
