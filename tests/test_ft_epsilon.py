"""FT-1's clamp ε (experiments.ft_epsilon): the committed table gives the committed page and the package
default; the summary and the choice rule on a small known table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from causaleval.editing.ft import FT_PRESETS, HASE_FT_PRESETS
from experiments.ft_epsilon import chosen_epsilon, committed_tables, page, summarise

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "paper" / "editors" / "ft1_epsilon.csv"


def _committed() -> pd.DataFrame:
    return pd.read_csv(TABLE, dtype={"layer": str})


def test_committed_page_is_what_the_committed_tables_give():
    tables, sources = committed_tables(ROOT / "paper" / "editors")
    assert sources["ft1"] == "paper/editors/ft1_epsilon.csv"
    assert (ROOT / "docs" / "ft-epsilon.md").read_text() == page(tables, sources)


def test_package_default_is_the_measured_choice():
    chosen = chosen_epsilon(_committed())
    assert FT_PRESETS["ft1"].norm_constraint == pytest.approx(chosen)
    want = chosen_epsilon(pd.read_csv(ROOT / "paper" / "editors" / "ft5_epsilon.csv", dtype={"layer": str}))
    assert FT_PRESETS["ft5"].norm_constraint == pytest.approx(want)
    assert (HASE_FT_PRESETS["ft1"].norm_constraint, HASE_FT_PRESETS["ft5"].norm_constraint) == (1e-4, 5e-5)


def test_committed_table_covers_hase_value_and_the_study_layers():
    t = _committed()
    assert {1e-4, 5e-4, 1e-3} <= set(t.epsilon)
    assert set(t.layer) == {"0", "4", "8", "12", "16", "20", "24", "28", "29", "all"}
    for editor in ("ft1", "ft5"):       # each committed table is the summary of its committed rows
        t = pd.read_csv(ROOT / "paper" / "editors" / f"{editor}_epsilon.csv", dtype={"layer": str})
        rows = pd.read_parquet(ROOT / "paper" / "editors" / f"{editor}_epsilon_rows.parquet")
        pd.testing.assert_frame_equal(summarise(rows).reset_index(drop=True), t, check_dtype=False, rtol=1e-5)


def test_summary_and_choice_on_a_known_table():
    def rows(eps, es, ns):
        return [dict(epsilon=eps, case_id=c, layer=l, rewrite_score=es, paraphrase_score=es, neighborhood_score=ns,
                     es=es, ps=es, ns=ns, es_magnitude=0.0, ps_magnitude=0.0, ns_magnitude=0.0, steps=25,
                     seconds=1.0) for c in (1, 2) for l in (0, 4)]
    frame = pd.DataFrame(rows(1e-4, 0.0, 1.0) + rows(1e-3, 0.8, 0.9) + rows(1e-2, 1.0, 0.2))
    t = summarise(frame)
    assert set(t.layer) == {"0", "4", "all"} and (t.n[t.layer == "all"] == 4).all()
    # S: harmonic mean of ES, PS, NS; 1e-4 has ES = 0 → S = 0; 1e-3 beats 1e-2's poor NS
    assert chosen_epsilon(t) == 1e-3
    ties = pd.DataFrame(rows(1e-3, 0.8, 0.9) + rows(2e-3, 0.8, 0.9))
    assert chosen_epsilon(summarise(ties)) == 1e-3
