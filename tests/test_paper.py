"""``python -m experiments.paper``: regenerate tables/figures from the latest results, compile when possible."""

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from causaleval.analysis import AnalysisSpec
from causaleval.errors import CausalEvalError
from causaleval.synthetic import SyntheticSpec, write_synthetic_results
from experiments import paper
from experiments.stages.analyze import analyze_folder

PAPER_SRC = Path(__file__).resolve().parents[1] / "paper"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = write_synthetic_results(tmp_path_factory.mktemp("results") / "synthetic-run",
                                  SyntheticSpec(n_cases=16, n_layers=6, seed=4))
    analyze_folder(out, AnalysisSpec(n_bootstrap=40))
    return out


def paper_copy(root: Path) -> Path:
    dest = root / "paper"
    dest.mkdir()
    for name in ("main.tex", "references.bib"):
        shutil.copyfile(PAPER_SRC / name, dest / name)
    shutil.copytree(PAPER_SRC / "sections", dest / "sections")
    return dest


@pytest.fixture(scope="module")
def built_without_latex(results, tmp_path_factory):
    """experiments.paper run with a PATH that has no latexmk: (paper folder, exit code, stdout)."""
    root = tmp_path_factory.mktemp("nolatex")
    dest = paper_copy(root)
    (root / "bin").mkdir()
    old = os.environ["PATH"]
    os.environ["PATH"] = str(root / "bin")
    try:
        import contextlib
        import io
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = paper.main(["--results", str(results), "--paper", str(dest)])
    finally:
        os.environ["PATH"] = old
    return dest, code, buf.getvalue()


def test_no_results_is_a_clear_error(tmp_path, monkeypatch, capsys):
    with pytest.raises(CausalEvalError, match="make run"):
        paper.latest_results(tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    assert paper.main(["--paper", str(tmp_path / "p")]) == 2
    assert "make run" in capsys.readouterr().err
    (tmp_path / "half").mkdir()
    assert paper.main(["--results", str(tmp_path / "half"), "--paper", str(tmp_path / "p")]) == 2
    assert "analysis/summary.json" in capsys.readouterr().err


def test_latest_results_is_the_newest_analysis(results):
    root = results.parent
    older = root / "older-run"
    (older / "analysis").mkdir(parents=True, exist_ok=True)
    (older / "analysis" / "summary.json").write_text("{}")
    past = time.time() - 3600
    os.utime(older / "analysis" / "summary.json", (past, past))
    assert paper.latest_results(root) == results


def test_regenerates_tables_without_latex(built_without_latex):
    dest, code, out = built_without_latex
    assert code == 0 and "no LaTeX toolchain" in out
    assert (dest / "tables" / "numbers.tex").is_file() and (dest / "figures" / "layer_profiles.png").is_file()
    assert not (dest / "main.pdf").exists()


def test_main_tex_uses_only_generated_inputs_and_macros(built_without_latex):
    dest, _, _ = built_without_latex
    tex = (PAPER_SRC / "main.tex").read_text()
    for rel in re.findall(r"\\input\{([^}]+)\}", tex):
        assert (dest / rel).is_file() or (PAPER_SRC / f"{rel}.tex").is_file(), rel
    defined = set(re.findall(r"\\newcommand\{\\(\w+)\}", tex))
    generated = set(re.findall(r"\\newcommand\{\\(\w+)\}", (dest / "tables" / "numbers.tex").read_text()))
    prefixes = ("HOne", "DeltaR", "REffect", "RBoth", "RLayer", "PF", "PWald", "Within", "Argmax", "Williams",
                "nFacts", "nEditLayers", "nRows", "nBoot", "Model", "EditLayers", "AnalysisWindow", "NoiseDraws",
                "PartnerDraws")
    live = {m for m in re.findall(r"\\([A-Za-z]+)", tex) if m.startswith(prefixes)} - defined
    assert {"HOneDiff", "HOneCI", "HOneP", "nFacts", "DeltaRNoise", "DeltaRFlip"} <= live
    assert live <= generated, live - generated


@pytest.mark.skipif(shutil.which("latexmk") is None, reason="no LaTeX toolchain")
def test_paper_compiles(results, tmp_path):
    dest = paper_copy(tmp_path)
    assert paper.main(["--results", str(results), "--paper", str(dest)]) == 0
    assert (dest / "main.pdf").read_bytes()[:4] == b"%PDF"
    log = (dest / "main.log").read_text(errors="replace")
    assert not re.search(r"(Citation|Reference) `[^']+' on page \d+ undefined", log)
