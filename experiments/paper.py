"""``python -m experiments.paper [--results DIR]``: regenerate the paper's tables and figures, then compile.

Uses the committed study run ``paper/study`` (or ``--results DIR``, any finished results folder), writes
``paper/tables`` and ``paper/figures`` from its analysis outputs without recomputing anything (and the
validate stage's table and figure from ``paper/validate``, the committed validate run, or ``--validate DIR``; the
side-by-side replication table from the other models' runs under ``paper/replication/<model>``), and runs ``latexmk -pdf`` in ``paper/`` when latexmk is
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
from experiments.publish import REPLICATION_DIR, STUDY_DIR, VALIDATE_DIR
from experiments.stages.report import build_report, validate_report

PAPER_DIR = Path(__file__).resolve().parents[1] / "paper"
GROUNDTRUTH_DIR = PAPER_DIR / "groundtruth"   # python -m experiments.groundtruth (docs/groundtruth.md)
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
        args.paper.mkdir(parents=True, exist_ok=True)
        paths = build_report(results, args.paper)
        if args.validate is not None or not (results / "validate" / "summary.json").is_file():
            paths += validate_report(args.validate or VALIDATE_DIR, args.paper)   # else build_report did it
        paths += write_groundtruth_report(GROUNDTRUTH_DIR, args.paper)
        others = args.replication if args.replication is not None else sorted(
            d for d in REPLICATION_DIR.glob("*") if (d / "analysis" / "summary.json").is_file())
        paths += write_replication([results, *others], args.paper)
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
