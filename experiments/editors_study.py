"""The editors' study run: FT-1, FT-5 and MEMIT on the committed study's facts and edit layers, beside its
ROME edits and trace (docs/editors.md#the-editors-study-run).

    OMP_NUM_THREADS=1 nohup python -m experiments.editors_study --out results/editors-study \\
        [--facts N] [--editors ft1,ft5,memit] [--set editor_hparams.ft1.norm_constraint=…] &

* facts: ``paper/study``'s facts (rebuilt from the built-in facts with the run's seed), or a seeded subset
  of ``--facts N`` stratified over relations; layers: the study's edit layers;
* ROME: the study's committed ``edits.parquet`` rows (not recomputed); trace: its ``trace.parquet``;
* each other editor edits and scores every fact at every layer in groups of the run's ``rome_batch_cases``
  (:func:`causaleval.editing.editor.sweep`, the edit stage's code) with the run's settings; each finished
  case is kept in ``<out>/edit_parts_<editor>/<case_id>.parquet`` (written atomically), so a killed run
  resumes with only the missing (editor, case) parts;
* when every part is there: ``<out>/edits.parquet`` (column ``editor``), ``<out>/trace.parquet`` and the
  study's analysis per editor (``analyze_folder``: ``analysis/`` is ROME's, ``editors/<editor>/analysis/``
  each other editor's, ``analysis/editors.parquet`` the comparison), and ``<out>/editors_study.json``
  (facts, layers, settings, seconds per editor).

Nothing is downloaded; the model is the study's (SmolLM2, embedded).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "paper" / "study"


def study_config(study: Path = STUDY, settings: list[str] | None = None):
    """The study run's settings (its run.json), with ``--set`` overrides (e.g. editor_hparams.*)."""
    from experiments.config import load_config_file, parse_set, resolve

    values = load_config_file(study / "run.json")
    preset = values.pop("preset", "default")
    cfg = resolve(preset, **values)
    extra = parse_set(settings or [])
    if "editor_hparams" in extra:
        merged = {**cfg.editor_hparams}
        for editor, items in extra.pop("editor_hparams").items():
            merged[editor] = {**merged.get(editor, {}), **items}
        extra["editor_hparams"] = merged
    return dataclasses.replace(cfg, **extra)


def study_subset(study: Path, n: int | None, seed: int) -> list:
    """``n`` of the study's facts, stratified over relations and seeded (all when ``n`` is None), case order."""
    from causaleval.data.geofacts import build_facts
    from experiments.context import stratified_subset

    ids = {int(i) for i in pd.read_parquet(study / "edits.parquet", columns=["case_id"]).case_id}
    run = json.loads((study / "run.json").read_text())
    facts = [f for f in build_facts(seed=int(run["config"]["seed"])) if f.case_id in ids]
    if len(facts) != len(ids):
        raise SystemExit(f"{study}: {len(ids) - len(facts)} of its facts are not among the built-in facts; this "
                         "driver needs a study run on the built-in facts")
    return stratified_subset(facts, n, seed)


def study_layers(study: Path) -> list[int]:
    return sorted(int(x) for x in pd.read_parquet(study / "edits.parquet", columns=["layer"]).layer.unique())


def run_editor(bundle, cfg, name: str, facts, layers, hp, stats, contexts, out: Path) -> float:
    """Every missing (case) part of editor ``name``; returns the seconds spent."""
    from causaleval.editing.editor import sweep
    from causaleval.runs.parts import PartStore
    from experiments.backends import shards
    from experiments.stages.edit import COLUMNS, make_editor, parts_dir

    store = PartStore(out / parts_dir(name))
    todo = [f for f in facts if not store.is_done(str(f.case_id))]
    if not todo:
        return 0.0
    editor = make_editor(name, bundle, cfg, hp, stats, contexts)
    t0 = time.time()
    done = len(facts) - len(todo)
    for group in shards(todo, max(1, cfg.rome_batch_cases)):
        rows = sweep(bundle, editor, group, layers, max_neighbours=cfg.rome_max_neighbours, seed=cfg.seed)
        for fact, case_rows in zip(group, rows):
            store.write(str(fact.case_id), pd.DataFrame(case_rows)[COLUMNS])
        done += len(group)
        spent = time.time() - t0
        print(f"{name}: {done}/{len(facts)} facts, {spent / 60:.1f} min", flush=True)
    return time.time() - t0


def assemble(out: Path, study: Path, facts, editors: list[str]) -> pd.DataFrame:
    """ROME's committed rows of ``facts`` and every editor's parts → ``edits.parquet``; the study's trace
    of ``facts`` → ``trace.parquet``."""
    from causaleval.runs.parts import PartStore
    from causaleval.runs.store import atomic_write_parquet
    from experiments.stages.edit import parts_dir

    ids = {int(f.case_id) for f in facts}
    rome = pd.read_parquet(study / "edits.parquet")
    rome = rome[rome.case_id.isin(ids)].assign(editor="rome") if "editor" not in rome else \
        rome[rome.case_id.isin(ids) & (rome.editor == "rome")]
    frames = [rome]
    for name in editors:
        store = PartStore(out / parts_dir(name))
        frames += [store.read(str(f.case_id)).assign(editor=name) for f in facts]
    edits = pd.concat(frames, ignore_index=True)
    trace = pd.read_parquet(study / "trace.parquet")
    atomic_write_parquet(out / "trace.parquet", trace[trace.case_id.isin(ids)].reset_index(drop=True))
    atomic_write_parquet(out / "edits.parquet", edits)
    return edits


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m experiments.editors_study", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="results folder (created; rerun with the same to resume)")
    ap.add_argument("--facts", type=int, default=None, help="a seeded, relation-stratified subset of N study facts "
                                                            "(default: all)")
    ap.add_argument("--editors", default="ft1,ft5,memit", help="editors besides ROME (default: ft1,ft5,memit)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the subset (default 0)")
    ap.add_argument("--study", default=str(STUDY), help="the committed study run (default: paper/study)")
    ap.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="settings",
                    help="override a study setting, e.g. --set editor_hparams.ft1.norm_constraint=5e-3")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    a = ap.parse_args(argv)

    from causaleval.editing.editor import parse_editors
    from experiments.config import check_editors

    study, out = Path(a.study), Path(a.out)
    editors = [e for e in parse_editors(a.editors) if e != "rome"]       # names checked before the model loads
    cfg = study_config(study, a.settings)
    check_editors(editors, cfg.editor_hparams)
    facts = study_subset(study, a.facts, a.seed)
    layers = study_layers(study)
    out.mkdir(parents=True, exist_ok=True)

    import torch

    from causaleval.editing.rome import SecondMoments, default_contexts
    from causaleval.model.loading import load_model
    from causaleval.runs.store import atomic_write_json
    from experiments.stages.analyze import analyze_folder, spec_from_config
    from causaleval.editing.editor import stat_layers
    from experiments.stages.edit import _hparams, make_editor

    if a.threads:
        torch.set_num_threads(a.threads)
    bundle = load_model(cfg.model, device=cfg.device)
    hp = _hparams(bundle, cfg)
    stats = SecondMoments(bundle, hp, seed=cfg.seed, progress=True)
    stats.ensure(stat_layers(editors, layers, bundle.n_layers))
    contexts = default_contexts(bundle, hp, seed=cfg.seed)
    record_path = out / "editors_study.json"
    read_record = lambda: json.loads(record_path.read_text()) if record_path.is_file() else {"seconds": {}}
    print(f"editors study: {len(facts)} facts × {len(layers)} layers {layers}, editors {', '.join(editors)}; "
          f"out {out}", flush=True)
    for name in editors:
        spent = run_editor(bundle, cfg, name, facts, layers, hp, stats, contexts, out)
        record = read_record()   # re-read: another process may be running other editors into the same folder
        record["seconds"][name] = round(record["seconds"].get(name, 0.0) + spent, 1)
        atomic_write_json(record_path, record)
    edits = assemble(out, study, facts, editors)
    from causaleval.runs.store import file_sha256

    record = read_record()   # the seconds another process wrote since are kept
    record.update(study=str(study), study_edits_sha256=file_sha256(study / "edits.parquet"), n_facts=len(facts),
                  subset_seed=a.seed if a.facts else None,
                  case_ids=sorted(int(f.case_id) for f in facts), layers=layers, editors=["rome", *editors],
                  hparams={**record.get("hparams", {}),     # every editor's parts, also another process's
                           **{n: make_editor(n, bundle, cfg, hp, stats, contexts).hp.to_dict() for n in editors}},
                  n_rows=len(edits))
    atomic_write_json(record_path, record)
    atomic_write_json(out / "run.json", {"config": {k: v for k, v in json.loads(
        (study / "run.json").read_text())["config"].items()}, "editors_study": True})
    analyze_folder(out, spec_from_config(cfg))
    print(f"editors study finished: {out / 'analysis' / 'editors.parquet'}")


if __name__ == "__main__":
    main()
