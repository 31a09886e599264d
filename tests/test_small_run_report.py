"""A small run reports what it can (issue 34): an empty H1 table (too few facts or edit layers) and a
validate stage in which no planted edit succeeded give tables that say so, not an AttributeError."""

import json

import pandas as pd
import pytest

from causaleval.analysis import load_results
from causaleval.inference.synthetic import SyntheticSpec, write_synthetic_results
from causaleval.reporting.figures import write_figures
from causaleval.reporting.tables import h1_table, write_tables
from causaleval.reporting.validate import write_validate_report
from experiments.config import resolve
from experiments.context import StageContext
from experiments.stages import analyze


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = write_synthetic_results(tmp_path_factory.mktemp("results"), SyntheticSpec(n_cases=12, n_layers=6, seed=4))
    analyze.run(StageContext(config=resolve("smoke", n_bootstrap=30, seed=4), out_dir=out, progress=False))
    return out


def test_empty_h1_table_is_reported_as_such(results, tmp_path):
    t = load_results(results)
    t.h1 = pd.DataFrame()                 # what analyze writes when no H1 test can be computed
    assert len(t.summary["variants"]) > 1   # a comparative variant besides the default: the old crash path
    tex = h1_table(t)                       # before: AttributeError: 'DataFrame' object has no attribute 'a'
    assert "No H1 test could be computed" in tex
    paths = write_tables(t, tmp_path / "tables") + write_figures(t, tmp_path / "figures", None)
    assert (tmp_path / "tables" / "h1.tex").is_file() and paths


def test_validate_without_a_successful_planted_edit_is_reported_as_such(tmp_path):
    folder = tmp_path / "validate"
    folder.mkdir()
    for name in ("accuracy", "paired", "argmax"):
        pd.DataFrame().to_parquet(folder / f"{name}.parquet")
    (folder / "summary.json").write_text(json.dumps({"n_facts": 2, "n_edits": 4, "n_success": 0,
                                                     "planted_layers": [3, 10], "n_layers": 30}))
    paths = write_validate_report(folder, tmp_path / "report")   # before: AttributeError 'window'
    tex = (tmp_path / "report" / "tables" / "validate.tex").read_text()
    assert "No planted edit succeeded (0 of 4)" in tex
    assert {p.name for p in paths} == {"validate.tex", "validate_numbers.tex"}


def test_no_regression_table_is_reported_as_such(results, tmp_path):
    """A run that keeps one fact after the TE floor writes an empty r2 table (before: KeyError 'score' in
    the report stage); every table and figure is still written and the regression tables say why."""
    t = load_results(results)
    t.r2, t.h1 = pd.DataFrame(), pd.DataFrame()
    paths = write_tables(t, tmp_path / "tables") + write_figures(t, tmp_path / "figures", None)
    assert paths
    for name in ("r2", "directional"):
        assert "No regression could be computed" in (tmp_path / "tables" / f"{name}.tex").read_text()
