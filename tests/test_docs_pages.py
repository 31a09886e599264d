"""The documentation's measured figures are generated from the committed runs (experiments/docs_pages.py)
and are up to date: what `make paper` would write is what is committed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from causaleval.errors import CausalEvalError
from experiments import docs_pages, paper

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pages():
    return docs_pages.render(docs_pages.committed())


@pytest.mark.parametrize("name", sorted(docs_pages.PAGES))
def test_committed_docs_pages_are_what_the_committed_tables_give(pages, name):
    """Rerun `make paper` (python -m experiments.paper) when this fails."""
    assert (ROOT / "docs" / name).read_text() == pages[name], f"docs/{name} is stale: run make paper"


def test_readme_answer_block_is_up_to_date():
    text = (ROOT / "README.md").read_text()
    block = docs_pages.answer_block(docs_pages.committed())
    assert block in text, "the README's answer block is stale: run make paper"
    assert text.count(docs_pages.BEGIN) == 1 and text.count(docs_pages.END) == 1
    assert "make test" in text and "make run" in text


def test_update_readme_rewrites_only_the_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{docs_pages.BEGIN}\nold answer\n{docs_pages.END}\nafter\n")
    assert docs_pages.update_readme(readme, f"{docs_pages.BEGIN}\nnew answer\n{docs_pages.END}")
    assert readme.read_text() == f"# x\n\nbefore\n{docs_pages.BEGIN}\nnew answer\n{docs_pages.END}\nafter\n"
    assert not docs_pages.update_readme(readme, f"{docs_pages.BEGIN}\nnew answer\n{docs_pages.END}")
    readme.write_text("# no markers\n")
    with pytest.raises(CausalEvalError, match="lacks the answer markers"):
        docs_pages.update_readme(readme, "x")


def test_pages_quote_the_summary(pages):
    """Spot check against the study's own summary: the primary H1 difference and each r_w appear as printed."""
    import json

    v = json.loads((ROOT / "paper" / "study" / "analysis" / "summary.json").read_text())["variants"]["default"]
    h = v["h1"]["rewrite_score"]["flip-noise"]
    assert docs_pages.ci(h["diff"], h["ci_low"], h["ci_high"]) in pages["results.md"]
    for d in v["delta_r2"]["rewrite_score"].values():
        assert docs_pages.ci(d["r_w"], d["r_w_ci_low"], d["r_w_ci_high"]) in pages["results.md"]


def test_formatting_helpers():
    assert docs_pages.num(-0.0268, 3) == "−0.027" and docs_pages.num(float("nan")) == "n/a"
    assert docs_pages.num(-0.0004, 2) == "−0.00"   # a CI bound below 0 stays visibly below 0
    assert docs_pages.pval(0.0001) == "< 0.001" and docs_pages.pval(0.5) == "0.500"
    table = docs_pages.md_table(["a", "b|c"], [["x|y", 1]])
    assert table.splitlines() == ["| a | b\\|c |", "|---|---:|", "| x\\|y | 1 |"]


def test_tables_have_no_hand_typed_numbers_left_in_the_readme():
    """Outside the generated block the README quotes no measured figure (decimals like 0.034 or 1.2×)."""
    text = (ROOT / "README.md").read_text()
    start, end = text.index(docs_pages.BEGIN), text.index(docs_pages.END)
    rest = text[:start] + text[end:]
    assert not re.findall(r"\b\d+\.\d+\b(?!\.)", rest.replace("3.10", "").replace("Apache-2.0", "")), "a measured figure typed into the README"


def test_make_paper_writes_the_docs_only_from_the_committed_runs(tmp_path, monkeypatch):
    """``python -m experiments.paper --results DIR`` (another run) leaves docs/ and the README alone; the default
    (the committed study into paper/) rewrites them.  Table and figure builders are stubbed: only the branch is
    under test here (tests/test_paper.py builds them)."""
    calls = []
    monkeypatch.setattr(docs_pages, "write_pages", lambda src, *a, **k: calls.append(src) or [])
    for name in ("build_report", "validate_report", "write_replication"):
        monkeypatch.setattr(paper, name, lambda *a, **k: [])
    other = tmp_path / "other-run"
    (other / "analysis").mkdir(parents=True)
    (other / "analysis" / "summary.json").write_text("{}")
    monkeypatch.setenv("PATH", str(tmp_path))          # no latexmk
    assert paper.main(["--results", str(other), "--paper", str(tmp_path / "p")]) == 0
    assert paper.main(["--paper", str(tmp_path / "p")]) == 0      # the committed study, but another paper folder
    assert not calls
    assert paper.main([]) == 0
    assert len(calls) == 1 and calls[0].study == paper.STUDY_DIR and calls[0].validate is not None
