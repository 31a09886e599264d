"""Publishing a run with its per-draw table in compact form, and rebuilding reliabilities from it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from causaleval.analysis import AnalysisSpec
from causaleval.analysis.rebuild import DRAW_DTYPES, draws_gap, largest_difference, rebuild_reliability
from causaleval.inference.synthetic import SyntheticSpec, write_synthetic_results
from experiments.publish import main as publish_main
from experiments.stages.analyze import analyze_folder

N_DRAWS = 6


def add_draws(folder: Path, seed: int = 0) -> pd.DataFrame:
    """A per-draw table for a synthetic folder: each analysis-site IE and TE split into draws that average
    to the trace's values (draw noise proportional to the TE)."""
    trace = pd.read_parquet(folder / "trace.parquet")
    sites = trace[(trace.component == "mlp") & (trace.window == 5)]
    rng = np.random.default_rng(seed)
    rows = sites.loc[sites.index.repeat(N_DRAWS)].reset_index(drop=True)
    rows["draw"] = np.tile(np.arange(N_DRAWS), len(sites))
    noise = rng.standard_normal((len(sites), N_DRAWS))
    noise -= noise.mean(axis=1, keepdims=True)                     # the draws average to the trace's IE
    rows["value"] = rows.ie + 0.3 * rows.te.abs() * noise.ravel()
    draws = rows[["estimator", "direction", "metric", "case_id", "draw", "component", "window", "layer",
                  "position", "value", "te"]]
    draws.to_parquet(folder / "trace_draws.parquet", index=False)
    return draws


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = write_synthetic_results(tmp_path_factory.mktemp("draws") / "run", SyntheticSpec(n_cases=16, n_layers=6, seed=2))
    add_draws(out)
    analyze_folder(out, AnalysisSpec(n_bootstrap=60, n_permutations=99, power_reps=50))
    return out


def test_publish_draws_is_compact_and_rebuilds_the_recorded_reliability(run, tmp_path):
    dest = tmp_path / "confirm" / "synthetic"
    assert publish_main(["--results", str(run), "--dest", str(dest), "--draws"]) == 0
    compact = pd.read_parquet(dest / "trace_draws.parquet")
    full = pd.read_parquet(run / "trace_draws.parquet")
    edit_layers = sorted(pd.read_parquet(run / "edits.parquet").layer.unique())
    assert sorted(compact.layer.unique()) == edit_layers and len(compact) < len(full)
    assert {c: str(t) for c, t in compact.dtypes.items()} == DRAW_DTYPES
    import pyarrow.parquet as pq

    assert pq.ParquetFile(dest / "trace_draws.parquet").metadata.row_group(0).column(0).compression == "ZSTD"
    rebuilt = rebuild_reliability(dest)
    summary = json.loads((run / "analysis" / "summary.json").read_text())
    pooled = rebuilt[rebuilt.layer == -1]
    assert set(pooled.estimator) == {"noise", "resample", "flip"} and pooled.reliability.notna().all()
    assert largest_difference(rebuilt, summary) < 1e-3          # float32 draws: the same reliabilities


def test_draws_gap_measures_how_far_the_draws_average_from_the_trace(run, tmp_path):
    folder = tmp_path / "gap"
    shutil.copytree(run, folder)
    assert draws_gap(folder) < 1e-12                                # built to average to the trace's IE
    draws = pd.read_parquet(folder / "trace_draws.parquet")
    draws.loc[0, "value"] += 0.12                                   # one draw of one site moves its mean
    draws.to_parquet(folder / "trace_draws.parquet", index=False)
    assert draws_gap(folder) == pytest.approx(0.12 / N_DRAWS, rel=1e-6)
    extra = draws.iloc[[0]].assign(case_id=-5)                      # a site the trace does not have
    pd.concat([draws, extra]).to_parquet(folder / "trace_draws.parquet", index=False)
    with pytest.raises(ValueError, match="not in trace.parquet"):
        draws_gap(folder)


def test_publish_keeps_the_within_fact_tables(run, tmp_path):
    folder = tmp_path / "with-wf"
    shutil.copytree(run, folder)
    (folder / "withinfact").mkdir()
    table = pd.DataFrame({"measure": ["twoway_rank"], "estimate": [0.1]})
    table.to_parquet(folder / "withinfact" / "withinfact.parquet", index=False)
    (folder / "withinfact" / ".causaleval-manifest.jsonl").write_text("")
    dest = tmp_path / "published"
    assert publish_main(["--results", str(folder), "--dest", str(dest)]) == 0
    assert pd.read_parquet(dest / "withinfact" / "withinfact.parquet").equals(table)
    assert not (dest / "withinfact" / ".causaleval-manifest.jsonl").exists()


def test_publish_draws_without_a_per_draw_table_is_a_clear_error(run, tmp_path, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(run, bare)
    (bare / "trace_draws.parquet").unlink()
    assert publish_main(["--results", str(bare), "--dest", str(tmp_path / "d"), "--draws"]) == 2
    assert "has no trace_draws.parquet" in capsys.readouterr().err


def test_make_paper_writes_rebuilt_reliabilities(run, tmp_path, capsys, monkeypatch):
    from experiments import paper

    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))              # no latexmk: tables only, exit 0
    dest = tmp_path / "confirm" / "synthetic"
    publish_main(["--results", str(run), "--dest", str(dest), "--draws"])
    out = tmp_path / "paper"
    out.mkdir()
    assert paper.main(["--results", str(dest), "--paper", str(out), "--replication", str(dest),
                       "--confirm", str(dest)]) == 0
    text = (out / "tables" / "reliability_synthetic.tex").read_text()
    assert "rebuilt from the published per-draw table" in text and "flip" in text
    assert "Averaged over draws, its values differ from the reported trace's effects by at most $" in text
    assert "reliabilities rebuilt from its per-draw table" in capsys.readouterr().out
