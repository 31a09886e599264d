"""From a finished editors' study or problem grid to the paper: ``experiments.publish --editors`` /
``--problems`` copy the compact, analysis-ready files (atomically, refusing a folder of another kind), and
``experiments.paper`` writes the editors' and the problems' tables and macros from the published folders
(nothing when they are absent).  Synthetic folders built as the analysis tests build them."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from causaleval.analysis import AnalysisSpec
from causaleval.analysis.problems import with_problem
from causaleval.inference.synthetic import SyntheticSpec, write_synthetic_results
from causaleval.reporting.tables import ci, est_ci, num, pval
from causaleval.runs.store import atomic_write_json, atomic_write_parquet
from experiments import paper
from experiments.problem_grid import record_cell
from experiments.publish import main as publish_main
from experiments.stages.analyze import analyze_folder

SPEC = SyntheticSpec(n_cases=16, n_layers=6, seed=3)


def _spec() -> AnalysisSpec:
    a = AnalysisSpec(window=5, n_bootstrap=40, seed=0)
    return a.__class__(**{**a.__dict__, "n_permutations": 99, "power_reps": 20})


def _permuted(edits: pd.DataFrame, rng) -> pd.DataFrame:
    return edits.assign(rewrite_score=rng.permutation(edits.rewrite_score.to_numpy()))


@pytest.fixture(scope="module")
def editors_run(tmp_path_factory):
    """A finished editors' study: ROME's rows and FT-1's (permuted scores), analysed, with its record."""
    out = write_synthetic_results(tmp_path_factory.mktemp("editors") / "run", SPEC)
    edits = pd.read_parquet(out / "edits.parquet")
    rng = np.random.default_rng(0)
    atomic_write_parquet(out / "edits.parquet", pd.concat([edits.assign(editor="rome"),
                                                           _permuted(edits, rng).assign(editor="ft1")]))
    analyze_folder(out, _spec())
    atomic_write_json(out / "editors_study.json", {"seconds": {"ft1": 192.0}, "n_facts": SPEC.n_cases,
                                                   "layers": SPEC.edit_layers(), "editors": ["rome", "ft1"]})
    (out / "edit_parts_ft1").mkdir()                     # parts stay behind
    (out / "edit_parts_ft1" / "1.parquet").write_bytes(b"x")
    return out


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    """A finished problem grid (ROME): error injection, fact forcing and flip forcing over 3 partner draws,
    analysed, with its run record."""
    out = write_synthetic_results(tmp_path_factory.mktemp("grid") / "run", SPEC)
    edits = pd.read_parquet(out / "edits.parquet")
    rng = np.random.default_rng(1)
    flips = pd.concat([edits.assign(rewrite_score=edits.rewrite_score + rng.normal(0, 0.1, len(edits)), draw=k,
                                    partner_case=1000 + k) for k in range(3)], ignore_index=True)
    table = pd.concat([with_problem(edits), _permuted(edits, rng).assign(problem="fact_forcing", draw=-1,
                                                                         partner_case=-1),
                       flips.assign(problem="flip_forcing")], ignore_index=True).assign(editor="rome")
    atomic_write_parquet(out / "edits.parquet", table)
    analyze_folder(out, _spec())
    for problem, wall in (("error_injection", 60.0), ("fact_forcing", 600.0), ("flip_forcing", 1200.0)):
        record_cell(out, {"problem": problem, "editor": "rome", "n_facts": SPEC.n_cases,
                          "n_layers": len(SPEC.edit_layers()), "wall_s": wall, "cpu_s": wall},
                    study="synthetic", subset=100, subset_seed=0)
    return out


def _make_paper(tmp_path, monkeypatch, *args: str) -> tuple[int, Path]:
    """experiments.paper with no latexmk on PATH (tables only) into a fresh paper folder."""
    (tmp_path / "bin").mkdir(exist_ok=True)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    out = tmp_path / "paper"
    out.mkdir(exist_ok=True)
    study = tmp_path / "study"
    if not study.is_dir():
        write_synthetic_results(study, SPEC)
        analyze_folder(study, _spec())
    return paper.main(["--results", str(study), "--paper", str(out), "--replication", str(study),
                       "--confirm", str(study), *args]), out


def _macros(path: Path) -> dict[str, str]:
    return dict(re.findall(r"\\newcommand\{\\(\w+)\}\{(.*)\}$", path.read_text(), flags=re.MULTILINE))


def test_record_cell_sums_wall_time_over_resumed_runs(tmp_path):
    t = {"problem": "fact_forcing", "editor": "ft1", "n_facts": 4, "n_layers": 3, "wall_s": 10.0, "cpu_s": 8.0}
    record_cell(tmp_path, t, study="s")
    record = record_cell(tmp_path, {**t, "wall_s": 5.5, "cpu_s": 1.0}, study="s")
    assert record["cells"]["fact_forcing:ft1"] == {"problem": "fact_forcing", "editor": "ft1", "n_facts": 4,
                                                   "n_layers": 3, "wall_s": 15.5, "cpu_s": 9.0}
    assert json.loads((tmp_path / "problem_grid.json").read_text()) == record
    # reused edits: the source's seconds are set (not summed over resumed runs) and counted in the cell's time
    ei = {**t, "problem": "error_injection", "editor": "rome", "wall_s": 2.0}
    for _ in range(2):
        record = record_cell(tmp_path, ei, {"from": "paper/study/edits.parquet", "n_facts": 4, "wall_s": 600.0})
    cell = record["cells"]["error_injection:rome"]
    assert cell["wall_s"] == 4.0 and cell["reused_wall_s"] == 600.0 and cell["reused_from"].endswith("edits.parquet")
    from causaleval.reporting.problems import cell_seconds

    assert cell_seconds(cell) == 604.0 and cell_seconds(record["cells"]["fact_forcing:ft1"]) == 15.5
    assert cell_seconds(None) is None


def test_publish_editors_copies_the_compact_files_and_make_paper_writes_table_and_macros(
        editors_run, tmp_path, monkeypatch, capsys):
    dest = tmp_path / "editors" / "study"
    assert publish_main(["--editors", "--results", str(editors_run), "--dest", str(dest)]) == 0
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == ["analysis/editors.parquet", "analysis/summary.json", "editors/ft1/analysis/summary.json",
                     "editors_study.json", "edits.parquet", "run.json"]     # no parts, no trace
    pd.testing.assert_frame_equal(pd.read_parquet(dest / "edits.parquet"), pd.read_parquet(editors_run / "edits.parquet"))

    code, out = _make_paper(tmp_path, monkeypatch, "--editors", str(dest))
    assert code == 0 and "editors' table and macros from" in capsys.readouterr().out
    assert r"\label{tab:editors}" in (out / "tables" / "editors.tex").read_text()
    m = _macros(out / "tables" / "editors_numbers.tex")
    table = pd.read_parquet(editors_run / "analysis" / "editors.parquet")
    ft = table[table.editor == "ft1"].iloc[0]
    assert m["EditorsFtOneHOne"] == num(ft.h1_diff) and m["EditorsFtOneHOneP"] == pval(ft.h1_p)
    assert m["EditorsFtOneHOneCI"] == ci(ft.h1_ci_low, ft.h1_ci_high)
    n_edits = SPEC.n_cases * len(SPEC.edit_layers())
    assert m["EditorsFtOneEdits"] == str(n_edits) and m["EditorsFtOneSecondsPerEdit"] == num(192.0 / n_edits, 2)
    assert m["EditorsFtOneMinutes"] == "3"
    assert m["EditorsRomeSecondsPerEdit"] == "n/a"         # the synthetic study recorded no edit stage time
    assert m["EditorsFacts"] == str(SPEC.n_cases) and m["EditorsLayers"] == str(len(SPEC.edit_layers()))
    rome = table[table.editor == "rome"].iloc[0]
    assert est_ci(rome.h1_diff, rome.h1_ci_low, rome.h1_ci_high) in m["EditorsHOneList"]
    assert "interval of flip $-$ noise" in m["EditorsHOneVerdict"]
    from experiments import docs_pages

    page = docs_pages.editors_section(dest)                 # docs/results.md's section
    assert "| ft1 |" in page and docs_pages.ci(ft.h1_diff, ft.h1_ci_low, ft.h1_ci_high) in page and "3 min 12 s" in page


def test_editors_verdict_names_the_editors_whose_interval_excludes_zero():
    from causaleval.reporting.editors import h1_verdict

    t = pd.DataFrame({"editor": ["rome", "ft1", "memit"], "h1_ci_low": [-0.1, 0.02, -0.3], "h1_ci_high": [0.1, 0.2, -0.1]})
    assert h1_verdict(t) == (r"the 95\% interval of flip $-$ noise lies above zero for FT-1 and below zero for MEMIT; "
                             "for the other editors it includes zero")
    assert h1_verdict(t.iloc[:1]).startswith("for no editor")


def test_publish_problems_and_make_paper_state_the_matched_pairs(grid_run, tmp_path, monkeypatch, capsys):
    dest = tmp_path / "problems" / "study"
    assert publish_main(["--problems", "--results", str(grid_run), "--dest", str(dest)]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"edits\.parquet in compact form: [0-9.]+ MiB", printed)
    files = {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()}
    assert files == {"analysis/problems.parquet", "analysis/summary.json", "run.json", "problem_grid.json",
                     "edits.parquet", "problems/fact_forcing/rome/analysis/summary.json",
                     "problems/flip_forcing/rome/analysis/summary.json"}
    full, compact = pd.read_parquet(grid_run / "edits.parquet"), pd.read_parquet(dest / "edits.parquet")
    assert list(compact.columns) == list(full.columns) and len(compact) == len(full)
    assert compact.rewrite_score.dtype == np.float32 and compact.layer.dtype == np.int32
    np.testing.assert_allclose(compact.rewrite_score, full.rewrite_score, rtol=1e-6)
    assert list(compact.problem.astype(str)) == list(full.problem)

    code, out = _make_paper(tmp_path, monkeypatch, "--problems", str(dest))
    assert code == 0 and "editing problems' table, figure and macros" in capsys.readouterr().out
    assert (out / "tables" / "problems.tex").is_file() and (out / "figures" / "problems_grid.pdf").is_file()
    m = _macros(out / "tables" / "problems_numbers.tex")
    grid = pd.read_parquet(grid_run / "analysis" / "problems.parquet")
    ff = grid[grid.problem == "fact_forcing"].set_index("estimator")
    # fact forcing's matched estimator is noise: matched − unmatched = −(flip − noise), its interval flipped
    assert m["ProbFactForcingRomeDiff"] == est_ci(-ff.loc["noise"].h1_diff, -ff.loc["noise"].h1_ci_high,
                                                   -ff.loc["noise"].h1_ci_low)
    assert m["ProbFactForcingRomeMatched"] == est_ci(ff.loc["noise"].r_w, ff.loc["noise"].r_w_ci_low,
                                                      ff.loc["noise"].r_w_ci_high)
    fl = grid[grid.problem == "flip_forcing"].set_index("estimator").loc["flip"]
    assert m["ProbFlipForcingRomeDiff"] == est_ci(fl.h1_diff, fl.h1_ci_low, fl.h1_ci_high)
    assert m["ProbFlipForcingRomePerDraw"] == "n/a"          # no per-draw table in the synthetic run
    assert "ProbErrorInjectionRomeDiff" not in m              # error injection has no matched estimator
    for tag in ("ProbFactForcingRomeSentence", "ProbFlipForcingRomeSentence"):
        assert m[tag] in m["ProblemsMatchedSentences"] and "so the matched estimator's measure" in m[tag]
    assert m["ProbFlipForcingRomeMinutes"] == "20" and m["ProblemsHours"] == f"{1860 / 3600:.1f}"
    assert m["ProblemsCells"] == "3"
    from experiments import docs_pages

    page = docs_pages.problems_section(dest)                # docs/results.md's section
    row = next(line for line in page.splitlines() if line.startswith("| fact_forcing | rome |"))
    n = ff.loc["noise"]
    assert docs_pages.ci(-n.h1_diff, -n.h1_ci_high, -n.h1_ci_low) in row and "10 min 00 s" in row
    assert docs_pages.published_editors_and_problems(tmp_path / "none", dest) == (None, dest)


def test_matched_sentence_reads_the_interval():
    from causaleval.reporting.problems import matched_sentence

    rows = [{"problem": "flip_forcing", "editor": "ft1", "estimator": e, "n_facts": 10, "n_layers": 3, "r_w": r,
             "r_w_ci_low": r - 0.1, "r_w_ci_high": r + 0.1, "h1_diff": 0.2, "h1_ci_low": 0.05, "h1_ci_high": 0.25,
             "h1_p": 0.01} for e, r in (("noise", 0.1), ("flip", 0.3))]
    assert "exceeds the unmatched one's" in matched_sentence(pd.DataFrame(rows))
    assert "falls below" in matched_sentence(pd.DataFrame(rows).assign(problem="fact_forcing"))   # −0.25…−0.05
    wide = pd.DataFrame(rows).assign(h1_ci_low=-0.1)
    assert "is not distinguishable" in matched_sentence(wide)


def test_without_published_folders_make_paper_writes_neither(tmp_path, monkeypatch):
    monkeypatch.setattr(paper, "EDITORS_DIR", tmp_path / "no-editors")
    monkeypatch.setattr(paper, "PROBLEMS_DIR", tmp_path / "no-problems")
    code, out = _make_paper(tmp_path, monkeypatch)
    assert code == 0
    names = {p.name for p in (out / "tables").iterdir()} | {p.name for p in (out / "figures").iterdir()}
    assert not names & {"editors.tex", "editors_numbers.tex", "problems.tex", "problems_numbers.tex",
                        "problems_grid.pdf"}


def test_a_folder_of_another_kind_is_refused_and_the_old_copy_kept(editors_run, grid_run, tmp_path, capsys,
                                                                    monkeypatch):
    dest = tmp_path / "editors" / "study"
    assert publish_main(["--editors", "--results", str(editors_run), "--dest", str(dest)]) == 0
    assert publish_main(["--editors", "--results", str(grid_run), "--dest", str(dest)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is not a finished editors' study" in err and "editors_study.json" in err
    assert (dest / "editors_study.json").is_file() and not (dest.parent / "study.partial").exists()
    assert publish_main(["--problems", "--results", str(editors_run), "--dest", str(tmp_path / "p")]) == 2
    assert "is not a finished problem grid: problem_grid.json, analysis/problems.parquet missing" in capsys.readouterr().err
    no_editor = tmp_path / "no-editor"
    shutil.copytree(editors_run, no_editor)
    atomic_write_parquet(no_editor / "edits.parquet", pd.read_parquet(no_editor / "edits.parquet").drop(columns="editor"))
    assert publish_main(["--editors", "--results", str(no_editor), "--dest", str(tmp_path / "e")]) == 2
    assert "has no editor column" in capsys.readouterr().err
    with pytest.raises(SystemExit):                                 # one kind at a time
        publish_main(["--editors", "--problems", "--results", str(editors_run)])
    code, _ = _make_paper(tmp_path, monkeypatch, "--problems", str(dest))     # an editors' study is no grid
    err = capsys.readouterr().err
    assert code == 2 and f"--problems {dest} has no analysis/problems.parquet" in err


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("latexmk") is None, reason="no LaTeX toolchain")
def test_paper_compiles_with_the_editors_and_problems_sections(editors_run, grid_run, tmp_path):
    src = Path(paper.__file__).resolve().parents[1] / "paper"
    dest = tmp_path / "paper"
    dest.mkdir()
    for name in ("main.tex", "fallbacks.tex", "references.bib"):
        shutil.copyfile(src / name, dest / name)
    shutil.copytree(src / "sections", dest / "sections")
    study = write_synthetic_results(tmp_path / "study", SPEC)
    analyze_folder(study, _spec())
    assert paper.main(["--results", str(study), "--paper", str(dest), "--editors", str(editors_run),
                       "--problems", str(grid_run)]) == 0
    log, aux = (dest / "main.log").read_text(errors="replace"), (dest / "main.aux").read_text(errors="replace")
    assert "{sec:editors}" in aux and "{sec:problems}" in aux and "{tab:problems}" in aux
    assert not re.search(r"(Citation|Reference) `[^']+' on page \d+ undefined", log)


def test_the_full_grids_edits_fit_in_compact_form(tmp_path):
    """The edit table of the full grid on paper/study (every cell of experiments.problem_grid on all facts or
    its default subset, one row per flip partner draw), built from the study's own edits with every float
    jittered (so it compresses no better than measured scores), is under the publish limit in compact form."""
    from experiments.problem_grid import ALL_FACT_CELLS, SUBSET_CELLS
    from experiments.publish import COMPACT_EDITS_MAX_MB, STUDY_DIR, write_compact_edits

    study = pd.read_parquet(STUDY_DIR / "edits.parquet")
    partners = json.loads((STUDY_DIR / "run.json").read_text())["config"]["partner_draws"]
    rng = np.random.default_rng(0)
    subset = set(rng.choice(study.case_id.unique(), 100, replace=False))        # problem_grid's --subset default
    floats = [c for c in study.columns if study[c].dtype == float]
    frames = []
    for cells, rows in ((ALL_FACT_CELLS, study), (SUBSET_CELLS, study[study.case_id.isin(subset)])):
        for problem, editor in cells:
            for k in (range(partners) if problem == "flip_forcing" else [-1]):
                f = rows.assign(problem=problem, editor=editor, draw=k, partner_case=-1 if k < 0 else
                                rng.integers(0, 10_000, len(rows)))
                f[floats] = f[floats] * (1 + rng.normal(0, 0.05, (len(f), len(floats))))
                frames.append(f)
    grid = pd.concat(frames, ignore_index=True)
    size = write_compact_edits(grid, tmp_path / "edits.parquet").stat().st_size / 2**20
    print(f"{len(grid)} edits: {size:.1f} MiB in compact form")
    assert len(grid) > 10 * len(study) and size <= COMPACT_EDITS_MAX_MB


def test_rome_seconds_per_edit_is_the_study_edit_stage_over_its_edits(tmp_path):
    atomic_write_json(tmp_path / "run.json", {"completed_stages": {"edit": {"seconds": 90.0}}})
    atomic_write_parquet(tmp_path / "edits.parquet", pd.DataFrame({"layer": np.arange(30)}))
    assert paper.edit_seconds_per_edit(tmp_path) == 3.0
    atomic_write_json(tmp_path / "run.json", {"completed_stages": {}})
    assert paper.edit_seconds_per_edit(tmp_path) is None
    assert paper.edit_seconds_per_edit(tmp_path / "missing") is None
