"""``python -m experiments.publish --results DIR``: copy a finished run's analysis-ready tables into
``paper/study``, the committed run that ``make paper`` reports.

Copied (a few MB): ``run.json``, the trace tables (``trace.parquet``: IE and TE per site and case, from
which every localisation effect is recomputed; ``trace_cases.parquet``; ``trace_summary.parquet``), the
edit table (``edits.parquet``, ``edit_summary.parquet``), ``analysis/``, ``withinfact/`` (the within-fact
measures the analyze stage writes) and the support stage's
summaries (``support/{answers_summary,states_summary,reference,noise_scale}.parquet`` and
``summary.json``).  ``--validate`` copies instead the validate stage's compact outputs
(``validate/{summary.json,accuracy,paired,argmax,localisation,edits,profiles}.parquet`` and ``run.json``)
into ``paper/validate``, from which ``make paper`` rebuilds the validation table and figure.  ``--editors``
copies an editors' study (``python -m experiments.editors_study``) into ``paper/editors/study`` and
``--problems`` a problem grid (``python -m experiments.problem_grid``) into ``paper/problems/study``
(:data:`EDITORS_FILES`, :data:`PROBLEMS_FILES`), from which ``make paper`` writes the editors' and the
editing problems' tables and macros.  Another model's
study goes to ``--dest paper/replication/<model>`` (``make paper`` reports it beside ``paper/study``), a
confirmatory run's to ``--dest paper/confirm/<model>``.  ``--draws`` also copies the per-draw table in compact
form (``trace_draws.parquet``: the reliability's columns, the edit layers' rows, float32, zstd;
causaleval.analysis.rebuild), from which ``make paper`` rebuilds every reliability.  Parts and model caches
stay behind.  The destination is replaced
as a whole (written beside it, then renamed), so a failed copy leaves the previous committed run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import pandas as pd

from causaleval.errors import CausalEvalError

STUDY_DIR = Path(__file__).resolve().parents[1] / "paper" / "study"
VALIDATE_DIR = Path(__file__).resolve().parents[1] / "paper" / "validate"
# a second model's study: --dest paper/replication/<model> (make paper reports it beside paper/study)
REPLICATION_DIR = Path(__file__).resolve().parents[1] / "paper" / "replication"
# the validate stage's compact outputs (the per-site table and the parts stay behind)
VALIDATE_FILES = ("summary.json", "accuracy.parquet", "paired.parquet", "argmax.parquet", "localisation.parquet",
                  "edits.parquet", "profiles.parquet", "plant_success.parquet")
# an editors' study (experiments.editors_study): its edits (ROME's rows are the study's), the comparison, each
# editor's analysis summary and the run record (seconds per editor); the trace is paper/study's, so it stays behind
EDITORS_DIR = Path(__file__).resolve().parents[1] / "paper" / "editors" / "study"
EDITORS_FILES = ("editors_study.json", "analysis/editors.parquet", "edits.parquet", "run.json", "analysis/summary.json")
# a problem grid (experiments.problem_grid): the grid, each cell's analysis summary, the run record (wall time per
# cell) and its edits in compact form when that is small enough (COMPACT_EDITS_MAX_MB)
PROBLEMS_DIR = Path(__file__).resolve().parents[1] / "paper" / "problems" / "study"
PROBLEMS_FILES = ("problem_grid.json", "analysis/problems.parquet", "run.json", "analysis/summary.json")
COMPACT_EDITS_MAX_MB = 8.0    # the full grid's edits fit (tests/test_publish_editors_problems.py)
REQUIRED = ("run.json", "trace.parquet", "edits.parquet", "analysis/summary.json")
OPTIONAL = ("trace_cases.parquet", "trace_summary.parquet", "trace_meta.json", "edit_summary.parquet",
            "facts_filter.parquet", "support/answers_summary.parquet", "support/states_summary.parquet",
            "support/reference.parquet", "support/noise_scale.parquet", "support/summary.json",
            "calibration.csv")


def heatmap_rows(trace: pd.DataFrame, analysis_window: int) -> pd.DataFrame:
    """The heatmap set of a trace table: denoising, metric p, every site but the analysis set's."""
    keep = (trace.direction == "denoise") & (trace.metric == "p") \
        & ~((trace.component == "mlp") & (trace.window == analysis_window))
    return trace[keep].reset_index(drop=True)


def publish(results: Path, dest: Path = STUDY_DIR, heatmaps: Path | None = None, draws: bool = False) -> list[Path]:
    """Copy the analysis-ready files of ``results`` into ``dest`` (replacing it); returns the copies.
    ``heatmaps``: a finished trace run (e.g. ``--set heatmap_cases=50`` on a subset) whose heatmap rows
    the paper's heatmap figure shows instead of the study's own heatmap cases (``trace_heatmaps.parquet``)."""
    results, dest = Path(results), Path(dest)
    if draws and not (results / "trace_draws.parquet").is_file():
        raise CausalEvalError(f"--draws: {results} has no trace_draws.parquet (its trace stage wrote none)")
    if heatmaps is not None and not (Path(heatmaps) / "trace.parquet").is_file():
        raise CausalEvalError(f"--heatmaps {heatmaps}: no trace.parquet (run its trace stage first)")
    missing = [r for r in REQUIRED if not (results / r).is_file()]
    if missing:
        raise CausalEvalError(f"{results} is not a finished run: {', '.join(missing)} missing (run "
                              f"python -m experiments.main --out {results} to the analyze stage first)")
    tables = [p for sub in ("analysis", "withinfact") if (results / sub).is_dir() for p in (results / sub).iterdir()
              if not p.name.startswith(".")]                   # not the folders' manifests
    names = dict.fromkeys(REQUIRED + OPTIONAL + tuple(str(p.relative_to(results)) for p in tables))
    staging, copied = _replace_with(dest, [(rel, results / rel) for rel in names if (results / rel).is_file()])
    if heatmaps is not None:
        window = json.loads((Path(heatmaps) / "run.json").read_text())["config"]["analysis_window"]
        rows = heatmap_rows(pd.read_parquet(Path(heatmaps) / "trace.parquet"), window)
        rows.to_parquet(staging / "trace_heatmaps.parquet", index=False)
        copied.append(dest / "trace_heatmaps.parquet")
    if draws:
        from causaleval.analysis.rebuild import write_compact_draws

        layers = sorted(int(x) for x in pd.read_parquet(results / "edits.parquet", columns=["layer"]).layer.unique())
        write_compact_draws(pd.read_parquet(results / "trace_draws.parquet"), staging / "trace_draws.parquet", layers)
        copied.append(dest / "trace_draws.parquet")
    _swap(staging, dest)
    return copied


def _check(path: Path) -> None:
    """Publish only files that match the checksum recorded when they were written."""
    from causaleval.runs.store import unreadable

    why = unreadable(path)
    if why is not None:
        raise CausalEvalError(f"{path} is corrupt ({why}); rerun the stage that writes it with --force before "
                              "publishing")


def publish_validate(results: Path, dest: Path = VALIDATE_DIR) -> list[Path]:
    """Copy the validate stage's compact outputs of ``results`` (and its run.json) into ``dest``, replacing it."""
    results, dest = Path(results), Path(dest)
    src = results / "validate"
    if not (src / "summary.json").is_file():
        raise CausalEvalError(f"{results} has no finished validate stage (validate/summary.json is missing): run "
                              f"python -m experiments.main --stage validate --out {results} first")
    # the other planting editors' tables (validate/plant_<editor>/), when the run planted with several
    dirs = json.loads((src / "summary.json").read_text()).get("plant_editor_dirs", {})
    extra = [(f"{d}/{n}", src / d / n) for d in sorted(set(dirs.values()) - {"."}) for n in VALIDATE_FILES]
    files = [(n, src / n) for n in VALIDATE_FILES] + extra + [("run.json", results / "run.json")]
    staging, copied = _replace_with(dest, [(name, path) for name, path in files if path.is_file()])
    _swap(staging, dest)
    return copied


def _replace_with(dest: Path, files: list[tuple[str, Path]]) -> tuple[Path, list[Path]]:
    """Copy ``files`` ((name under dest, source) pairs; checksums checked) into a staging folder beside
    ``dest``; returns (staging, the copies' final paths).  The caller adds any written files, then
    :func:`_swap` renames it into place."""
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    copied = []
    for name, src in files:
        _check(src)
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, staging / name)
        copied.append(dest / name)
    return staging, copied


def _swap(staging: Path, dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)


def _require(results: Path, names: tuple[str, ...], kind: str, how: str) -> None:
    missing = [n for n in names if not (results / n).is_file()]
    if missing:
        raise CausalEvalError(f"{results} is not a finished {kind}: {', '.join(missing)} missing ({how})")


def publish_editors(results: Path, dest: Path = EDITORS_DIR) -> list[Path]:
    """Copy an editors' study's compact files (:data:`EDITORS_FILES` and ``editors/<editor>/analysis/
    summary.json``) into ``dest``, replacing it.  Not its parts or trace (paper/study's)."""
    results, dest = Path(results), Path(dest)
    _require(results, EDITORS_FILES, "editors' study",
             f"run python -m experiments.editors_study --out {results} to the end first")
    import pyarrow.parquet as pq

    if "editor" not in pq.read_schema(results / "edits.parquet").names:
        raise CausalEvalError(f"{results}/edits.parquet has no editor column: not an editors' study (run python -m "
                              f"experiments.editors_study --out {results})")
    summaries = sorted((results / "editors").glob("*/analysis/summary.json"))
    files = [(n, results / n) for n in EDITORS_FILES] + [(str(p.relative_to(results)), p) for p in summaries]
    staging, copied = _replace_with(dest, files)
    _swap(staging, dest)
    return copied


def write_compact_edits(edits: pd.DataFrame, path: Path) -> Path:
    """An edit table in compact form: floats as float32, integers as int32, text as categories, zstd."""
    types = {c: ("float32" if pd.api.types.is_float_dtype(t) else "int32" if pd.api.types.is_integer_dtype(t)
                 else "category") for c, t in edits.dtypes.items()}
    edits.astype(types).to_parquet(path, index=False, compression="zstd")
    return Path(path)


def publish_problems(results: Path, dest: Path = PROBLEMS_DIR, max_mb: float = COMPACT_EDITS_MAX_MB) -> list[Path]:
    """Copy a problem grid's compact files (:data:`PROBLEMS_FILES`, each cell's ``problems/<problem>/<editor>/
    analysis/summary.json``) into ``dest``, replacing it, and its ``edits.parquet`` in compact form
    (:func:`write_compact_edits`) when that is at most ``max_mb`` MiB (else left out, with a note)."""
    results, dest = Path(results), Path(dest)
    _require(results, PROBLEMS_FILES + ("edits.parquet",), "problem grid",
             f"run python -m experiments.problem_grid --out {results} to the end first")
    summaries = sorted((results / "problems").glob("*/*/analysis/summary.json"))
    files = [(n, results / n) for n in PROBLEMS_FILES] + [(str(p.relative_to(results)), p) for p in summaries]
    staging, copied = _replace_with(dest, files)
    _check(results / "edits.parquet")
    path = write_compact_edits(pd.read_parquet(results / "edits.parquet"), staging / "edits.parquet")
    size = path.stat().st_size / 2**20
    if size <= max_mb:
        copied.append(dest / "edits.parquet")
        print(f"edits.parquet in compact form: {size:.1f} MiB")
    else:
        path.unlink()
        print(f"edits.parquet left out: {size:.1f} MiB in compact form, over {max_mb:g} MiB")
    _swap(staging, dest)
    return copied


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.publish", description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, required=True, help="a finished results folder, e.g. results/study")
    p.add_argument("--dest", type=Path, default=None,
                   help="destination (default: paper/study, or paper/validate with --validate, paper/editors/study "
                        "with --editors, paper/problems/study with --problems)")
    p.add_argument("--heatmaps", type=Path, default=None,
                   help="a finished trace run whose heatmap cases the paper's heatmap figure shows")
    p.add_argument("--draws", action="store_true",
                   help="also publish the per-draw table in compact form (make paper rebuilds reliabilities from it)")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--validate", action="store_true",
                      help="copy only the validate stage's compact outputs (into paper/validate)")
    kind.add_argument("--editors", action="store_true",
                      help="the folder is an editors' study (experiments.editors_study): into paper/editors/study")
    kind.add_argument("--problems", action="store_true",
                      help="the folder is a problem grid (experiments.problem_grid): into paper/problems/study")
    args = p.parse_args(argv)
    try:
        if args.editors:
            copied = publish_editors(args.results, args.dest or EDITORS_DIR)
        elif args.problems:
            copied = publish_problems(args.results, args.dest or PROBLEMS_DIR)
        elif args.validate:
            copied = publish_validate(args.results, args.dest or VALIDATE_DIR)
        else:
            copied = publish(args.results, args.dest or STUDY_DIR, args.heatmaps, args.draws)
    except CausalEvalError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    size = sum(c.stat().st_size for c in copied) / 2**20
    print(f"copied {len(copied)} files ({size:.1f} MiB) from {args.results} into {copied[0].parent if copied else '-'}; "
          "now run make paper")
    return 0


if __name__ == "__main__":
    sys.exit(main())
