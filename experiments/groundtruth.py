"""The ground-truth tables for the paper (docs/groundtruth.md), from committed results and a control run.

    python -m experiments.groundtruth accuracy   # paper/validate/profiles.parquet → paper/groundtruth/accuracy*.parquet
    python -m experiments.groundtruth knockout   # paper/study/{trace,edits}.parquet → paper/groundtruth/knockout*.parquet
    python -m experiments.groundtruth control --run OUT   # OUT/control/ → paper/groundtruth/control_*.parquet

Each writes atomically; ``summary.json`` in paper/groundtruth records what each table came from.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from causaleval.errors import CausalEvalError
from causaleval.groundtruth.accuracy import (
    accuracy_rows,
    accuracy_summary,
    paired_accuracy,
    paired_calibration,
)
from causaleval.groundtruth.knockout import knockout_rows, knockout_table
from causaleval.runs.store import atomic_write_json, atomic_write_parquet

OUT = Path("paper/groundtruth")


def _need(path: Path, what: str) -> Path:
    if not path.is_file():
        raise CausalEvalError(f"{path} is missing: {what}")
    return path


def _note(out: Path, key: str, info: dict) -> None:
    path = out / "summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else {}
    summary[key] = info
    atomic_write_json(path, summary)


def validate_profiles(validate: Path) -> list[tuple[str, pd.DataFrame]]:
    """(planting editor, profiles) of a validate folder: its own (the first planting editor's, ROME's in a run
    from before planting editors existed) and each ``plant_<editor>/`` folder's."""
    summary = json.loads(_need(validate / "summary.json", "the validate folder lacks summary.json").read_text())
    first = summary.get("plant_editor", "rome")
    out = [(first, pd.read_parquet(_need(validate / "profiles.parquet", "pass the validate stage's folder "
                                                                          "(--validate)")))]
    for editor, where in summary.get("plant_editor_dirs", {}).items():
        if editor != first:
            out.append((editor, pd.read_parquet(_need(validate / where / "profiles.parquet",
                                                      f"the validate folder lacks {where}/profiles.parquet"))))
    return out


def accuracy(validate: Path, out: Path, n_perm: int, n_boot: int, seed: int) -> None:
    """The accuracy tables per planting editor (column ``plant_editor``)."""
    t0 = time.time()
    n_layers = int(json.loads(_need(validate / "summary.json", "the validate folder lacks summary.json")
                              .read_text())["n_layers"])
    all_rows, summaries, paired = [], [], []
    for editor, prof in validate_profiles(validate):
        rows = accuracy_rows(prof, n_layers)
        if rows.empty:
            continue
        all_rows.append(rows.assign(plant_editor=editor))
        summaries.append(accuracy_summary(rows, n_layers, n_perm, n_boot, seed).assign(plant_editor=editor))
        paired.append(paired_accuracy(rows, n_perm=n_perm, n_resamples=n_boot, seed=seed).assign(plant_editor=editor))
    if not all_rows:
        raise CausalEvalError(f"{validate}: no planted edit took with any planting editor; nothing to score")
    rows = pd.concat(all_rows, ignore_index=True)
    atomic_write_parquet(out / "accuracy_rows.parquet", rows.drop(columns="argmax"))
    atomic_write_parquet(out / "accuracy.parquet", pd.concat(summaries, ignore_index=True))
    atomic_write_parquet(out / "accuracy_paired.parquet", pd.concat(paired, ignore_index=True))
    first = all_rows[0]
    n_facts = int(first.case_id.nunique())
    n_planted = int(first.groupby("case_id").planted_layer.nunique().median())
    calib = paired_calibration(n_facts=n_facts, n_layers=n_planted, n_sim=1000, n_perm=999, seed=seed)
    atomic_write_parquet(out / "accuracy_calibration.parquet", calib)
    _note(out, "accuracy", dict(source=str(validate / "profiles.parquet"), n_layers=n_layers, n_facts=n_facts,
                                plant_editors=[e for e, _ in validate_profiles(validate)],
                                n_perm=n_perm, n_bootstrap=n_boot, seed=seed, primary="rr, window 5, flip - noise",
                                seconds=round(time.time() - t0, 1)))
    onset(validate, out, n_layers, n_perm, n_boot, seed)


def onset(validate: Path, out: Path, n_layers: int, n_perm: int, n_boot: int, seed: int) -> None:
    """The onset tables per planting editor (docs/groundtruth.md#onset), from each editor folder's
    ``onset_profiles.parquet``; nothing when the validate run did not trace the residual stream."""
    from causaleval.groundtruth.onset import PRIMARY, onset_calibration, onset_rows, onset_tests
    from causaleval.reporting.planting import editor_folders

    t0 = time.time()
    rows, summaries, paired = [], [], []
    for editor, where in editor_folders(validate):
        if not (where / "onset_profiles.parquet").is_file():
            continue
        r = onset_rows(pd.read_parquet(where / "onset_profiles.parquet"))
        if r.empty:
            continue
        summary, pairs = onset_tests(r, n_layers, n_perm, n_boot, seed)
        rows.append(r.assign(plant_editor=editor))
        summaries.append(summary.assign(plant_editor=editor))
        paired.append(pairs.assign(plant_editor=editor))
    if not rows:
        return
    atomic_write_parquet(out / "onset_rows.parquet", pd.concat(rows, ignore_index=True))
    atomic_write_parquet(out / "onset.parquet", pd.concat(summaries, ignore_index=True))
    atomic_write_parquet(out / "onset_paired.parquet", pd.concat(paired, ignore_index=True))
    first = rows[0]
    planted = sorted(int(x) for x in first.planted_layer.unique())
    calib = onset_calibration(n_facts=int(first.case_id.nunique()), planted=planted, n_layers=n_layers, seed=seed)
    atomic_write_parquet(out / "onset_calibration.parquet", calib)
    _note(out, "onset", dict(source=str(validate), plant_editors=[r.plant_editor.iloc[0] for r in rows],
                             primary=f"{PRIMARY}, flip - noise", n_perm=n_perm, n_bootstrap=n_boot, seed=seed,
                             seconds=round(time.time() - t0, 1)))


def knockout(study: Path, out: Path, n_perm: int, n_boot: int, seed: int, window: int) -> None:
    t0 = time.time()
    trace = pd.read_parquet(_need(study / "trace.parquet", "pass the study's folder (--study)"))
    edits = pd.read_parquet(_need(study / "edits.parquet", "pass the study's folder (--study)"))
    rows, tables = [], []
    for min_layer in (0, 1):
        r = knockout_rows(trace, edits, window=window, min_layer=min_layer).assign(min_layer=min_layer)
        rows.append(r)
        tables.append(knockout_table(r, n_perm, n_boot, seed).assign(min_layer=min_layer))
    atomic_write_parquet(out / "knockout_rows.parquet", pd.concat(rows, ignore_index=True))
    atomic_write_parquet(out / "knockout.parquet", pd.concat(tables, ignore_index=True))
    _note(out, "knockout", dict(source=str(study), window=window, n_facts=int(rows[0].case_id.nunique()),
                                n_perm=n_perm, n_bootstrap=n_boot, seed=seed, seconds=round(time.time() - t0, 1)))


def control(run: Path, out: Path, partial: bool = False) -> None:
    folder = run / "control"
    if partial:
        summary = finish_partial(run)
    else:
        summary = json.loads(_need(folder / "summary.json", "run the control stage into --run first (or pass "
                                                            "--partial for the finished facts of a stopped run)").read_text())
    for name in ("headline", "plantings", "edits", "trace"):
        atomic_write_parquet(out / f"control_{name}.parquet", pd.read_parquet(folder / f"{name}.parquet"))
    _note(out, "control", {k: v for k, v in summary.items() if k != "headline"})


def finish_partial(run: Path) -> dict:
    """The control stage's tables from the facts an interrupted run finished (``control_parts``); the
    summary says how many (``n_facts_finished`` of ``n_facts``) and is marked ``partial``."""
    from dataclasses import fields

    from experiments.config import StudyConfig
    from experiments.stages.control import finish

    info = json.loads(_need(run / "run.json", "--run is not a results folder").read_text())
    known = {f.name for f in fields(StudyConfig)}
    cfg = StudyConfig(**{k: v for k, v in info["config"].items() if k in known})
    ids = sorted(p.name.removesuffix("_edits.parquet") for p in (run / "control_parts").glob("*_edits.parquet"))
    if not ids:
        raise CausalEvalError(f"{run}/control_parts has no finished fact yet")
    from causaleval.groundtruth.control import control_layers_for
    from experiments.context import edit_layers_for

    n_layers = int(info["model"]["n_layers"])
    edit_layers = edit_layers_for(cfg, n_layers)
    design = dict(partial=True, n_facts=cfg.control_facts, edit_layers=edit_layers,
                  planted_layers=control_layers_for(cfg.control_layers, edit_layers, n_layers))
    return finish(run, cfg, ids, design)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.groundtruth", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["accuracy", "knockout", "control"])
    p.add_argument("--validate", type=Path, default=Path("paper/validate"))
    p.add_argument("--study", type=Path, default=Path("paper/study"))
    p.add_argument("--run", type=Path, help="results folder of a control stage run (control)")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--perm", type=int, default=9999)
    p.add_argument("--boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--window", type=int, default=5)
    p.add_argument("--partial", action="store_true", help="control: use the facts a stopped run finished")
    a = p.parse_args(argv)
    if a.what == "accuracy":
        accuracy(a.validate, a.out, a.perm, a.boot, a.seed)
    elif a.what == "knockout":
        knockout(a.study, a.out, a.perm, a.boot, a.seed, a.window)
    else:
        if a.run is None:
            p.error("control: pass --run, the results folder of a control stage run")
        control(a.run, a.out, a.partial)


if __name__ == "__main__":
    main()
