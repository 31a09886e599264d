"""``python -m experiments.paper [--results DIR]``: regenerate the paper's tables and figures, then compile.

Uses the latest results folder (the most recently analysed ``results/*/``, or ``--results``), writes
``paper/tables`` and ``paper/figures`` from it and runs ``latexmk -pdf`` in ``paper/`` when latexmk is
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
from experiments.stages.report import PAPER_DIR, build_report

LATEXMK = ["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "main.tex"]


def latest_results(root: Path = Path("results")) -> Path:
    """The results folder under ``root`` whose analysis/summary.json is newest."""
    found = sorted(root.glob("*/analysis/summary.json"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    if not found:
        raise CausalEvalError(f"no analysed results under {root.resolve()}/: run `make run` first "
                              "(or pass --results DIR of a finished run)")
    return found[-1].parent.parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.paper", description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=None, help="results folder (default: the latest under results/)")
    p.add_argument("--paper", type=Path, default=PAPER_DIR, help="paper folder with main.tex (default: paper/)")
    args = p.parse_args(argv)
    try:
        results = args.results or latest_results()
        if not (results / "analysis" / "summary.json").is_file():
            raise CausalEvalError(f"{results} has no analysis/summary.json: run `make run` (or "
                                  f"python -m experiments.main --stage analyze --out {results}) first")
        args.paper.mkdir(parents=True, exist_ok=True)
        paths = build_report(results, args.paper)
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
