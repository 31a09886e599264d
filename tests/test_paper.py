"""``python -m experiments.paper``: regenerate tables/figures from the committed study (or --results), compile
when possible."""

import os
import re
import shutil
from pathlib import Path

import pytest

from causaleval.analysis import AnalysisSpec
from causaleval.errors import CausalEvalError
from causaleval.inference.synthetic import SyntheticSpec, write_synthetic_results
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
    for name in ("main.tex", "fallbacks.tex", "references.bib"):
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


def test_no_results_is_a_clear_error(tmp_path, capsys):
    assert paper.main(["--results", str(tmp_path / "missing"), "--paper", str(tmp_path / "p")]) == 2
    assert "analysis/summary.json" in capsys.readouterr().err
    (tmp_path / "half").mkdir()
    assert paper.main(["--results", str(tmp_path / "half"), "--paper", str(tmp_path / "p")]) == 2
    assert "analysis/summary.json" in capsys.readouterr().err


def test_the_committed_paper_is_rebuilt_from_the_committed_study(tmp_path):
    """``make paper`` reads the committed study run (paper/study) and nothing else: rebuilding its
    tables gives exactly the committed paper/tables."""
    assert paper.STUDY_DIR == PAPER_SRC / "study"
    assert (paper.STUDY_DIR / "analysis" / "summary.json").is_file()
    dest = tmp_path / "paper"
    paths = paper.build_report(paper.STUDY_DIR, dest)
    tables = [p for p in paths if p.parent.name == "tables"]
    assert {p.name for p in tables} >= {"r2.tex", "h1.tex", "numbers.tex", "support_answers.tex"}
    for p in tables:
        assert p.read_text() == (PAPER_SRC / "tables" / p.name).read_text(), p.name


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
                "Rw", "PRw", "Rel", "Excess", "NullDeltaR", "DrawBias",
                "nFacts", "nEditLayers", "nRows", "nBoot", "Model", "EditLayers", "AnalysisWindow", "NoiseDraws",
                "PartnerDraws")
    live = {m for m in re.findall(r"\\([A-Za-z]+)", tex) if m.startswith(prefixes)} - defined
    assert {"HOneDiff", "HOneCI", "HOneP", "nFacts", "DeltaRNoise", "DeltaRFlip"} <= live
    assert live <= generated, live - generated


def test_every_figure_validate_and_support_macro_has_a_fallback():
    """paper/fallbacks.tex gives n/a for each \\Fig…/\\Val…/\\Sup… macro the paper uses, so it compiles without figures
    or a validate run; main.tex inputs it after the generated files, and nothing else provides a macro."""
    tex = "\n".join(p.read_text() for p in [PAPER_SRC / "main.tex", *sorted((PAPER_SRC / "sections").glob("*.tex"))])
    used = {m for m in re.findall(r"\\([A-Za-z]+)", tex) if re.match(r"(Fig|Val|Sup)[A-Z]", m)}
    fallbacks = (PAPER_SRC / "fallbacks.tex").read_text()
    provided = set(re.findall(r"\\providecommand\{\\(\w+)\}", fallbacks))
    assert used and used <= provided, used - provided
    assert "\\providecommand" not in tex
    main = (PAPER_SRC / "main.tex").read_text()
    order = [main.index(s) for s in ("{figures/captions.tex}", "{tables/validate_numbers.tex}",
                                     "{tables/support_numbers.tex}", "\\input{fallbacks}")]
    assert order == sorted(order)


@pytest.mark.skipif(shutil.which("latexmk") is None, reason="no LaTeX toolchain")
def test_paper_compiles(results, tmp_path):
    dest = paper_copy(tmp_path)
    assert paper.main(["--results", str(results), "--paper", str(dest)]) == 0
    assert (dest / "main.pdf").read_bytes()[:4] == b"%PDF"
    log = (dest / "main.log").read_text(errors="replace")
    assert not re.search(r"(Citation|Reference) `[^']+' on page \d+ undefined", log)


def test_publish_copies_the_analysis_ready_tables_and_replaces_the_old_copy(results, tmp_path):
    from experiments.publish import publish

    dest = tmp_path / "study"
    (dest / "analysis").mkdir(parents=True)
    (dest / "analysis" / "stale.parquet").write_text("old")
    copied = publish(results, dest)
    assert not (dest / "analysis" / "stale.parquet").exists()
    for rel in ("run.json", "trace.parquet", "edits.parquet", "analysis/summary.json", "analysis/r2.parquet"):
        assert (dest / rel).read_bytes() == (results / rel).read_bytes(), rel
    assert set(copied) == {p for p in dest.rglob("*") if p.is_file()}
    paths = paper.build_report(dest, tmp_path / "paper")
    assert (tmp_path / "paper" / "tables" / "h1.tex").is_file() and paths
    with pytest.raises(CausalEvalError, match="edits.parquet"):
        (results.parent / "unfinished").mkdir()
        (results.parent / "unfinished" / "run.json").write_text("{}")
        publish(results.parent / "unfinished", tmp_path / "other")
