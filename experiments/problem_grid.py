"""The editing problems × editors grid on a finished study's facts and edit layers (docs/problems.md),
resumable; and a timing mode that measures each cell's wall and CPU time on a few facts.

    # the grid: Error Injection, Fact Forcing, Flip Forcing × ROME and FT-1 on every study fact; the other
    # cells (Fact Erasure, Fact Amplification × all four editors; the three above × FT-5 and MEMIT) on a
    # seeded subset of --subset facts (stratified by relation); then analyze and report
    python -m experiments.problem_grid --study paper/study --out results/problem-grid --subset 100

    # timing: each cell alone on the first --facts study facts at --layers, CPU seconds and wall seconds
    python -m experiments.problem_grid --study paper/study --out /tmp/grid-timing --timing --facts 4 --layers 8,16,24

The out folder gets the study's trace tables and run settings (``trace.parquet``, ``trace_meta.json``,
``run.json``; ``trace_draws.parquet`` when the study folder has it, which the per-draw Flip Forcing
pairing needs) and the known facts (``facts.jsonl`` from ``--facts-from`` or the facts stage).  The
study's facts are checked to be those of its ``edits.parquet``.  Each cell runs the edit stage with that
cell's problem and editor; its finished cases stay in ``edit_parts_<problem>_<editor>/`` (error
injection: ``edit_parts``/``edit_parts_<editor>``), so an interrupted run resumes where it stopped.
Error injection needs no new edits where they exist: ROME's are the study's committed edits (the rows its
analysis and the editors' study use), written as finished parts; with ``--editors-from DIR`` (a finished
``experiments.editors_study`` of the same study, layers and hyperparameters) FT-1's, FT-5's and MEMIT's
finished parts are copied from it.  The record gives such a cell ``reused_from`` and ``reused_wall_s``, the
source's seconds for the reused facts.
``edits.parquet`` is assembled from the cells' parts, then ``analyze`` and ``report`` run.
``problem_grid.json`` (the run record, written after every cell) holds per cell its facts, layers and the
wall and CPU seconds spent on it, summed over resumed runs; ``python -m experiments.publish --problems``
copies it with the grid.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import pandas as pd

from causaleval.analysis.editors import editor_names

from causaleval.errors import ConfigError
from experiments.context import stratified_subset

ALL_FACT_CELLS = [(p, e) for p in ("error_injection", "fact_forcing", "flip_forcing") for e in ("rome", "ft1")]
SUBSET_CELLS = ([(p, e) for p in ("error_injection", "fact_forcing", "flip_forcing") for e in ("ft5", "memit")]
                + [(p, e) for p in ("fact_erasure", "fact_amplification") for e in ("rome", "ft1", "ft5", "memit")])
COPIED = ("trace.parquet", "trace_meta.json", "run.json", "trace_draws.parquet", "trace_cases.parquet",
          "facts_filter.parquet")


def _context(study: Path, out: Path, facts_from: Path | None, overrides: dict):
    from experiments.config import load_config_file, resolve, validate
    from experiments.context import StageContext

    out.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        if (study / name).is_file() and not (out / name).is_file():
            shutil.copyfile(study / name, out / name)
    settings = load_config_file(study / "run.json")
    settings = {k: v for k, v in settings.items() if k not in ("out", "preset")}
    cfg = resolve(load_config_file(study / "run.json").get("preset", "study"), **{**settings, **overrides,
                                                                                 "out": str(out)})
    validate(cfg)
    if not (out / "facts.jsonl").is_file():
        if facts_from is not None:
            shutil.copyfile(facts_from / "facts.jsonl", out / "facts.jsonl")
        else:
            from experiments.stages import facts as facts_stage

            facts_stage.run(StageContext(config=cfg, out_dir=out))
    return StageContext(config=cfg, out_dir=out)


def study_facts(ctx, study: Path) -> list:
    """The study's facts, checked against its edits.parquet."""
    facts = ctx.study_facts
    want = set(pd.read_parquet(study / "edits.parquet", columns=["case_id"]).case_id.astype(int))
    got = {int(f.case_id) for f in facts}
    if got != want:
        raise ConfigError(f"the known facts in {ctx.out_dir / 'facts.jsonl'} give {len(got)} study facts, "
                          f"{len(got & want)} of the {len(want)} in {study / 'edits.parquet'}; pass --facts-from "
                          "the study's own results folder (its facts.jsonl)")
    return facts


def run_cell(ctx, problem: str, editor: str, facts: list, layers: list[int] | None = None) -> dict:
    """The edit stage for one (problem, editor) on ``facts``; returns wall and CPU seconds."""
    from dataclasses import replace

    from experiments.stages import edit

    cfg = ctx.config.updated(edit_problems=[problem], editors=[editor],
                             **({"edit_layers": layers} if layers is not None else {}))
    cell = replace(ctx, config=cfg)
    cell.__dict__["study_facts"] = list(facts)        # this cell's facts (cached_property slot)
    cell.__dict__["known_facts"] = ctx.known_facts
    w0, c0 = time.perf_counter(), time.process_time()
    edit.run(cell)
    return {"problem": problem, "editor": editor, "n_facts": len(facts), "n_layers": len(cell.edit_layers()),
            "wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0}


RECORD = "problem_grid.json"


def record_cell(out: Path, timing: dict, reused: dict | None = None, **info) -> dict:
    """Add one finished cell's seconds (``run_cell``'s result) to ``out/problem_grid.json``: per cell
    ``problem:editor`` its facts, layers and the wall and CPU seconds summed over resumed runs; for a cell
    whose edits were reused (``reuse_error_injection``), ``reused_from`` and ``reused_wall_s``, the source's
    seconds for them (set, not summed)."""
    import json

    from causaleval.runs.store import atomic_write_json

    path = out / RECORD
    record = json.loads(path.read_text()) if path.is_file() else {"cells": {}}
    record.update(info)
    key = f"{timing['problem']}:{timing['editor']}"
    old = record["cells"].get(key, {})
    record["cells"][key] = {**{k: timing[k] for k in ("problem", "editor", "n_facts", "n_layers")},
                            **{k: round(old.get(k, 0.0) + timing[k], 1) for k in ("wall_s", "cpu_s")}}
    if reused:
        record["cells"][key].update(reused_from=reused["from"], reused_wall_s=reused["wall_s"])
    atomic_write_json(path, record)
    return record


def _plain(x):
    import json

    return json.loads(json.dumps(x))


def reuse_error_injection(ctx, study: Path, cells: list[tuple[str, str]], facts_of: dict,
                          editors_from: Path | None = None) -> dict[str, dict]:
    """Write the finished error-injection parts that need no recomputation into the grid's folder: ROME's from
    ``study/edits.parquet``; another editor's from the finished editors' study ``editors_from`` when it was
    run on the same study, at the grid's layers, with the hyperparameters the grid would use (else refused
    with a one-line error).  ``facts_of[(problem, editor)]``: the cell's facts.  Returns per reused cell
    ``{"from", "n_facts", "wall_s"}`` (the source's seconds, prorated to the reused facts)."""
    import json

    from causaleval.runs.parts import PartStore
    from experiments.stages import edit

    out, layers = ctx.out_dir, sorted(ctx.edit_layers())
    reused = {}
    for problem, editor in cells:
        if problem != "error_injection":
            continue
        facts = facts_of[(problem, editor)]
        store = PartStore(out / edit.parts_dir(editor))
        if editor == "rome":
            rows = pd.read_parquet(study / "edits.parquet")
            rows = rows[rows.editor == "rome"] if "editor" in rows else rows
            n_source, source = rows.case_id.nunique(), study / "edits.parquet"
            run = json.loads((study / "run.json").read_text())
            seconds = float(run.get("completed_stages", {}).get("edit", {}).get("seconds", float("nan")))
            read = lambda cid, rows=rows: rows[rows.case_id == cid][edit.COLUMNS].reset_index(drop=True)
            have = set(int(c) for c in rows.case_id)
        elif editors_from is not None:
            record = _editors_record(editors_from, study, editor, layers)
            if record is None:
                continue
            src = PartStore(editors_from / edit.parts_dir(editor))
            have = {int(f.case_id) for f in facts if src.is_done(str(f.case_id))}
            hp = _plain(edit.make_editor(editor, ctx.bundle, ctx.config, edit._hparams(ctx.bundle, ctx.config),
                                         None, None).hp.to_dict())
            if _plain(record["hparams"][editor]) != hp:
                raise ConfigError(f"--editors-from {editors_from}: its {editor} hyperparameters differ from the "
                                  "grid's (the study's settings); rerun the editors' study without --set, or leave "
                                  "--editors-from out")
            n_source, source = len(record["case_ids"]), editors_from / edit.parts_dir(editor)
            seconds = float(record["seconds"].get(editor, float("nan")))
            read = lambda cid, src=src: src.read(str(cid))
        else:
            continue
        todo = [f for f in facts if int(f.case_id) in have and not store.is_done(str(f.case_id))]
        for f in todo:
            store.write(str(f.case_id), read(int(f.case_id)))
        n = sum(int(f.case_id) in have for f in facts)
        if n:
            reused[f"{problem}:{editor}"] = {"from": str(source), "n_facts": n,
                                             "wall_s": round(seconds * n / n_source, 1)}
            print(f"{problem} × {editor}: {n} of {len(facts)} facts' edits reused from {source} "
                  f"({len(todo)} written now)", flush=True)
    return reused


def _editors_record(folder: Path, study: Path, editor: str, layers: list[int]) -> dict | None:
    """A finished editors' study's record when it ran ``editor`` on ``study`` at ``layers`` (None when it did
    not run that editor); a folder of another study or other layers is refused."""
    import json

    from causaleval.runs.store import file_sha256

    path = folder / "editors_study.json"
    record = json.loads(path.read_text()) if path.is_file() else {}
    if "hparams" not in record:
        raise ConfigError(f"--editors-from {folder}: not a finished editors' study (no editors_study.json with its "
                          f"hyperparameters); run python -m experiments.editors_study --out {folder} to the end")
    same = (record["study_edits_sha256"] == file_sha256(study / "edits.parquet") if "study_edits_sha256" in record
            else Path(record["study"]).resolve() == study.resolve())     # the same study, wherever it lies now
    if not same or sorted(record["layers"]) != layers:
        raise ConfigError(f"--editors-from {folder}: it edited {record['study']} at layers {record['layers']}, the "
                          f"grid {study} at {layers}; pass an editors' study of the same study")
    return record if editor in record["hparams"] else None


def assemble(out: Path, cells: list[tuple[str, str]]) -> pd.DataFrame:
    """edits.parquet from every cell's finished parts (verified against their checksums)."""
    from causaleval.runs.parts import PartStore
    from causaleval.runs.store import atomic_write_parquet
    from experiments.stages import edit

    frames = []
    for problem, editor in cells:
        folder = out / edit.parts_dir(editor, problem)
        if not folder.is_dir():
            continue
        store = PartStore(folder)
        for path in sorted(folder.glob("*.parquet")):
            part = store.read(path.stem).assign(editor=editor)
            if "problem" not in part:
                part = part.assign(problem=problem, draw=-1, partner_case=-1)
            frames.append(part)
    edits = pd.concat(frames, ignore_index=True)
    atomic_write_parquet(out / "edits.parquet", edits)
    print(f"edits.parquet: {len(edits)} rows; cells {sorted(set(zip(edits.problem, edits.editor)))}; editors "
          f"{editor_names(edits)}")
    return edits


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--study", type=Path, required=True, help="a finished study folder (e.g. paper/study)")
    p.add_argument("--out", type=Path, required=True, help="the grid's results folder")
    p.add_argument("--facts-from", type=Path, default=None, help="a folder whose facts.jsonl are the known facts")
    p.add_argument("--subset", type=int, default=100, help="facts of the subset cells (default 100)")
    p.add_argument("--timing", action="store_true", help="time each cell alone on --facts facts at --layers")
    p.add_argument("--facts", type=int, default=4)
    p.add_argument("--layers", default="8,16,24")
    p.add_argument("--editors-from", type=Path, default=None,
                   help="a finished editors' study of the same study: its error-injection edits are reused")
    p.add_argument("--cells", default=None, help="only these cells, e.g. fact_forcing:rome,flip_forcing:ft1")
    a = p.parse_args(argv)
    for need in ("run.json", "trace.parquet", "edits.parquet"):
        if not (a.study / need).is_file():
            raise SystemExit(f"--study {a.study}: {need} is missing; pass a finished study folder (e.g. paper/study)")
    ctx = _context(a.study, a.out, a.facts_from, {})
    cells = ALL_FACT_CELLS + SUBSET_CELLS
    if a.cells:
        cells = [tuple(c.split(":")) for c in a.cells.split(",")]
    if a.timing:
        facts = ctx.study_facts[: a.facts]
        layers = [int(x) for x in a.layers.split(",")]
        rows = []
        for problem, editor in cells:
            rows.append(run_cell(ctx, problem, editor, facts, layers))
            print(rows[-1], flush=True)
            pd.DataFrame(rows).to_csv(a.out / "cell_timing.csv", index=False)
        return 0
    facts = study_facts(ctx, a.study)
    small = stratified_subset(facts, a.subset, ctx.config.seed)
    facts_of = {cell: facts if cell in ALL_FACT_CELLS else small for cell in cells}
    reused = reuse_error_injection(ctx, a.study, cells, facts_of, a.editors_from)
    for problem, editor in cells:
        timing = run_cell(ctx, problem, editor, facts_of[(problem, editor)])
        record_cell(a.out, timing, reused.get(f"{problem}:{editor}"), study=str(a.study), subset=a.subset,
                    subset_seed=ctx.config.seed)
        print(timing, flush=True)
    assemble(a.out, cells)
    from experiments.stages import analyze, report

    analyze.run(ctx)
    report.run(ctx)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
