"""Combine edit runs over disjoint layer sets into one results folder (split the edit stage across machines).

The edit stage is the slow one on a CPU (each (case, layer) pair is an independent ROME edit), and an
edit's scores do not depend on which other layers are swept with it.  So the edit layers of a study can
be split over several processes or machines: run ``--stage edit`` with ``--set edit_layers=<part>`` into
folders of their own, then::

    python -m experiments.merge_edits --into results/study results/study-e1 results/study-e2
    python -m experiments.main <the same flags> --out results/study --stage edit

The first command checks that every folder was made with the target's settings (apart from
``edit_layers``) on the same facts, that the parts' layers are disjoint and together are the target's
edit layers, and writes one ``edit_parts/<case_id>.parquet`` per case into the target; the second finds
every part done and writes ``edits.parquet`` and its summaries as usual, and records the source runs
(folders, layers, seconds) in ``run.json`` under ``completed_stages.edit.merged_from``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from causaleval.errors import ResultsError
from causaleval.runs.store import atomic_write_json, atomic_write_parquet, file_sha256
from experiments.config import StudyConfig
from experiments.context import edit_layers_for
from experiments.main import merged_from_path, result_keys


def _run_info(folder: Path) -> dict:
    path = folder / "run.json"
    if not path.is_file():
        raise ResultsError(f"{folder} is not a results folder (no run.json); run the facts stage there first")
    return json.loads(path.read_text(encoding="utf-8"))


def _layers(info: dict) -> list[int]:
    cfg = StudyConfig(**info["config"])
    return edit_layers_for(cfg, int(info["model"]["n_layers"]))


def merge_edits(into: Path, sources: list[Path]) -> list[Path]:
    """Write ``into/edit_parts/<case_id>.parquet`` from the finished edit parts of ``sources``; returns the paths."""
    into, sources = Path(into), [Path(s) for s in sources]
    if not sources:
        raise ResultsError("merge_edits: name at least one source folder")
    target = _run_info(into)
    facts = into / "facts.jsonl"
    if not facts.is_file():
        raise ResultsError(f"{facts} is missing: run the facts stage in {into} first")
    keys = [k for k in result_keys(StudyConfig(**target["config"])) if k != "edit_layers"]
    want = _layers(target)
    seen: dict[int, Path] = {}
    frames: list[pd.DataFrame] = []
    record = []
    for src in sources:
        info = _run_info(src)
        # seconds: the source's last edit-stage run (a resumed run counts only its own part);
        # edit_seconds: the compute time of all its edits (the sum of edits.parquet's seconds)
        record.append({"folder": str(src), "layers": _layers(info),
                       "seconds": info.get("completed_stages", {}).get("edit", {}).get("seconds")})
        diff = {k: (info["config"].get(k), target["config"].get(k)) for k in keys
                if info["config"].get(k) != target["config"].get(k)}
        if diff:
            raise ResultsError(f"{src} was made with other settings than {into} (source, target): {diff}")
        if not (src / "facts.jsonl").is_file() or file_sha256(src / "facts.jsonl") != file_sha256(facts):
            raise ResultsError(f"{src}/facts.jsonl differs from {facts}: the runs did not study the same facts")
        edits = src / "edits.parquet"
        if not edits.is_file():
            raise ResultsError(f"{edits} is missing: finish the edit stage in {src} first")
        frame = pd.read_parquet(edits)
        record[-1]["edit_seconds"] = float(frame.seconds.sum())  # unrounded: tiny runs take milliseconds
        for layer in sorted(set(frame.layer.astype(int))):
            if layer in seen:
                raise ResultsError(f"layer {layer} is edited in both {seen[layer]} and {src}; the sources' "
                                   "edit_layers must be disjoint")
            seen[layer] = src
        frames.append(frame)
    if sorted(seen) != sorted(want):
        raise ResultsError(f"the sources edit layers {sorted(seen)}, but {into} is configured for {sorted(want)}")
    cases = [set(f.case_id.astype(int)) for f in frames]
    if any(c != cases[0] for c in cases[1:]):
        raise ResultsError("the sources' edits cover different cases; finish every source's edit stage")
    edits = pd.concat(frames, ignore_index=True).sort_values(["case_id", "layer"], kind="stable")
    written = []
    for case_id, rows in edits.groupby("case_id", sort=True):
        path = into / "edit_parts" / f"{int(case_id)}.parquet"
        atomic_write_parquet(path, rows.reset_index(drop=True))
        written.append(path)
    # the target's edit stage copies this into run.json (completed_stages.edit.merged_from)
    atomic_write_json(merged_from_path(into, "edit"), record)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.merge_edits", description=__doc__.splitlines()[0])
    p.add_argument("--into", type=Path, required=True, help="the results folder configured for all edit layers")
    p.add_argument("sources", type=Path, nargs="+", help="finished edit runs over disjoint edit_layers")
    args = p.parse_args(argv)
    paths = merge_edits(args.into, args.sources)
    print(f"wrote {len(paths)} edit parts into {args.into / 'edit_parts'}; now run the edit stage there "
          "(same flags, --stage edit) to assemble edits.parquet")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
