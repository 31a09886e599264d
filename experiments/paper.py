"""``python -m experiments.paper [--results DIR]``: regenerate the paper's tables and figures, then compile.

Uses the committed study run ``paper/study`` (or ``--results DIR``, any finished results folder), writes
``paper/tables`` and ``paper/figures`` from its analysis outputs without recomputing anything (and the
validate stage's table and figure from ``paper/validate``, the committed validate run, or ``--validate DIR``; the
side-by-side replication table from the other models' runs under ``paper/replication/<model>``; the
confirmatory tables and macros of the planned runs under ``paper/confirm/<model>``; the editors' table and
macros from the published editors' study ``paper/editors/study`` and the editing problems' table, figure and
macros from the published problem grid ``paper/problems/study``, each when it exists; and, for every reported
folder that carries a published per-draw table, its reliabilities rebuilt from those draws); with the
committed inputs it also rewrites the documentation's measured figures (:mod:`experiments.docs_pages`: the
docs/ results pages and the README's answer block); and runs ``latexmk -pdf`` in ``paper/`` when latexmk is
installed (Debian: ``apt-get install --no-install-recommends latexmk texlive-latex-base
texlive-latex-recommended texlive-fonts-recommended``); without it, says so and exits 0.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from causaleval.errors import CausalEvalError
from causaleval.reporting.groundtruth import write_groundtruth_report
from causaleval.reporting.replication import write_replication
from causaleval.reporting.withinfact import write_withinfact
from experiments import docs_pages
from experiments.publish import EDITORS_DIR, PROBLEMS_DIR, REPLICATION_DIR, STUDY_DIR, VALIDATE_DIR
from experiments.stages.report import build_report, validate_report

PAPER_DIR = Path(__file__).resolve().parents[1] / "paper"
GROUNDTRUTH_DIR = PAPER_DIR / "groundtruth"   # python -m experiments.groundtruth (docs/groundtruth.md)
CONFIRM_DIR = PAPER_DIR / "confirm"      # confirmatory runs: python -m experiments.publish --draws --dest paper/confirm/<model>


def confirm_reports(folders: list[Path], paper: Path) -> list[Path]:
    """The confirmatory table and macros of each planned run (causaleval.reporting.confirmatory)."""
    from causaleval.reporting.confirmatory import write_confirm_across, write_confirm_report

    plan = PAPER_DIR / "plan.yaml"
    paths = [p for f in folders for p in write_confirm_report(f, paper, plan if plan.is_file() else None)]
    return paths + write_confirm_across(folders, paper)


def edit_seconds_per_edit(study: Path) -> float | None:
    """The study's edit stage wall time per edit (its run.json and edits.parquet), None when not recorded."""
    import json

    import pandas as pd

    run, edits = study / "run.json", study / "edits.parquet"
    if not run.is_file() or not edits.is_file():
        return None
    seconds = json.loads(run.read_text()).get("completed_stages", {}).get("edit", {}).get("seconds")
    n = len(pd.read_parquet(edits, columns=["layer"]))
    return seconds / n if seconds and n else None


def editors_and_problems(editors: Path, problems: Path, study: Path, paper: Path) -> list[Path]:
    """The editors' table and macros from a published editors' study, the editing problems' table, figure
    and macros from a published problem grid (docs/editors.md, docs/problems.md); nothing for a folder that
    is not there."""
    from causaleval.reporting.editors import write_editors_report
    from causaleval.reporting.problems import write_problems_report

    out = []
    if (editors / "analysis" / "editors.parquet").is_file():
        out += write_editors_report(editors, paper, edit_seconds_per_edit(study))
        print(f"editors' table and macros from {editors}")
    if (problems / "analysis" / "problems.parquet").is_file():
        out += write_problems_report(problems, paper)
        print(f"editing problems' table, figure and macros from {problems}")
    return out


def table_name(folder: Path) -> str:
    """A folder's name in table file names: its path under paper/ with '-' for '/' (``confirm-smollm2``,
    ``replication-gemma3-270m``, ``study``), else its own name, so that two models' folders never collide."""
    try:
        return "-".join(folder.resolve().relative_to(PAPER_DIR).parts)
    except ValueError:
        return folder.name


def rebuilt_reliabilities(folders: list[Path], paper: Path) -> list[Path]:
    """``tables/reliability_<folder>.tex`` for each folder with a published per-draw table, rebuilt from it;
    prints how far each rebuilt pooled reliability is from the one its analysis recorded."""
    import json

    from causaleval.analysis.rebuild import draws_gap, largest_difference, rebuild_reliability, reliability_tex
    from causaleval.runs.store import atomic_write_text

    out = []
    for folder in dict.fromkeys(folders):
        if not (folder / "trace_draws.parquet").is_file():
            continue
        rebuilt = rebuild_reliability(folder)
        name = table_name(folder)
        path = paper / "tables" / f"reliability_{name}.tex"
        atomic_write_text(path, reliability_tex(rebuilt, name, draws_gap(folder)))
        gap = largest_difference(rebuilt, json.loads((folder / "analysis" / "summary.json").read_text()))
        print(f"{folder}: reliabilities rebuilt from its per-draw table (largest difference from the recorded "
              f"analysis: {gap:.2g})")
        out.append(path)
    return out
LATEXMK = ["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "main.tex"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.paper", description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=STUDY_DIR,
                   help="results folder the paper reports (default: the committed study run, paper/study)")
    p.add_argument("--paper", type=Path, default=PAPER_DIR, help="paper folder with main.tex (default: paper/)")
    p.add_argument("--validate", type=Path, default=None,
                   help="validate stage outputs the paper reports (default: <results>/validate when it exists, "
                        "else the committed paper/validate; the paper compiles without them)")
    p.add_argument("--replication", type=Path, action="append", default=None,
                   help="a finished run of another model to report beside --results (repeatable; default: "
                        "every folder under paper/replication)")
    p.add_argument("--confirm", type=Path, action="append", default=None,
                   help="a planned (confirmatory) run to report (repeatable; default: every folder under paper/confirm)")
    p.add_argument("--editors", type=Path, default=None,
                   help="a published editors' study (default: paper/editors/study when it exists; the paper compiles "
                        "without it)")
    p.add_argument("--problems", type=Path, default=None,
                   help="a published problem grid (default: paper/problems/study when it exists; the paper compiles "
                        "without it)")
    args = p.parse_args(argv)
    try:
        results = args.results
        if not (results / "analysis" / "summary.json").is_file():
            raise CausalEvalError(f"{results} has no analysis/summary.json: pass --results DIR of a finished run "
                                  f"(or run python -m experiments.main --stage analyze --out {results} first)")
        missing = [d for d in args.replication or [] if not (d / "analysis" / "summary.json").is_file()]
        if missing:
            raise CausalEvalError(f"--replication {missing[0]} has no analysis/summary.json: publish a finished run "
                                  f"there (python -m experiments.publish --results DIR --dest {missing[0]})")
        for flag, folder, table in (("--editors", args.editors, "editors"), ("--problems", args.problems, "problems")):
            if folder is not None and not (folder / "analysis" / f"{table}.parquet").is_file():
                raise CausalEvalError(f"{flag} {folder} has no analysis/{table}.parquet: publish a finished run there "
                                      f"(python -m experiments.publish {flag} --results DIR --dest {folder})")
        args.paper.mkdir(parents=True, exist_ok=True)
        paths = build_report(results, args.paper)
        if args.validate is not None or not (results / "validate" / "summary.json").is_file():
            paths += validate_report(args.validate or VALIDATE_DIR, args.paper)   # else build_report did it
        paths += write_groundtruth_report(GROUNDTRUTH_DIR, args.paper)
        others = args.replication if args.replication is not None else sorted(
            d for d in REPLICATION_DIR.glob("*") if (d / "analysis" / "summary.json").is_file())
        paths += write_replication([results, *others], args.paper)
        paths += write_withinfact([results, *others], args.paper)     # python -m experiments.withinfact
        planned = (d for d in CONFIRM_DIR.glob("*") if (d / "analysis" / "summary.json").is_file())
        confirms = docs_pages.main_model_first(planned, results) if args.confirm is None else args.confirm
        paths += confirm_reports(confirms, args.paper)
        paths += editors_and_problems(args.editors or EDITORS_DIR, args.problems or PROBLEMS_DIR, results, args.paper)
        paths += rebuilt_reliabilities([results, *others, *confirms], args.paper)
        if results.resolve() == STUDY_DIR.resolve() and args.paper.resolve() == PAPER_DIR.resolve():
            validate = args.validate or (results / "validate" if (results / "validate").is_dir() else VALIDATE_DIR)
            published = docs_pages.published_editors_and_problems(args.editors or EDITORS_DIR,
                                                                  args.problems or PROBLEMS_DIR)
            pages = docs_pages.write_pages(docs_pages.Sources(results, validate, tuple(others), tuple(confirms),
                                                              *published))
            print(f"rewrote {len(pages)} documentation pages from the committed runs: "
                  + ", ".join(str(p.relative_to(docs_pages.ROOT)) for p in pages))
    except CausalEvalError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"regenerated {len(paths)} tables and figures in {args.paper}/tables and {args.paper}/figures "
          f"from {results}")
    if shutil.which("latexmk") is None:
        print("no LaTeX toolchain found (latexmk is not on PATH): tables and figures are updated, the PDF is "
              "not built. Install one, e.g. apt-get install --no-install-recommends latexmk texlive-latex-base "
              "texlive-latex-recommended texlive-fonts-recommended")
        return 0
    proc = subprocess.run(LATEXMK, cwd=args.paper, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stdout[-4000:], file=sys.stderr)
        print(f"error: latexmk failed (exit {proc.returncode}); see {args.paper}/main.log", file=sys.stderr)
        return proc.returncode
    print(f"built {args.paper / 'main.pdf'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
