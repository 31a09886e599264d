"""Kill anywhere, resume, same tables: a smoke run on a tiny saved model is SIGKILLed at named points in the
trace, edit and support stages and inside the analysis' atomic writer (causaleval.runs.faults), resumed after each
kill, and every parquet table of the resumed folder equals an uninterrupted run's."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from causaleval.model.testing import save_tiny_model

# The tiny random model knows no fact, so the driver marks every fact known (as tests/test_results_files.py does).
# Its total effects are ~1e-5, so every case falls below the analysis' TE floor, and the report of an analysis
# without cases is not this test's subject: the driver leaves the report stage out.
DRIVER = """
import sys
import pandas as pd
from experiments.stages import facts, report

def all_known(bundle, facts_, batch_size=64, progress=True):
    return pd.DataFrame([{"case_id": f.case_id, "relation_id": f.relation_id, "p_true": 0.5, "clean_top1": "x",
                          "clean_top1_id": 0, "true_first_id": 0, "known": True} for f in facts_])

facts.known_filter = all_known
report.run = lambda ctx: None
from experiments.main import main
sys.exit(main(sys.argv[1:]))
"""
# one case at a time, so that a resumed stage computes each case exactly as an uninterrupted one does
SETTINGS = ["trace_layers=0,1,2,3", "trace_window=2", "analysis_window=3", "rome_stat_tokens=2000",
            "support_reference_facts=40", "trace_batch_cases=1", "rome_batch_cases=1"]
KILLS = ["kill@part.trace_parts:4", "kill@part.edit_parts:2", "kill@part.support_parts:3", "kill@write.h1.parquet"]
TIMING = ("seconds",)


def _run(model: Path, out: Path, cache: Path, fault: str = "") -> subprocess.CompletedProcess:
    argv = ["--model", str(model), "--preset", "smoke", "--relations", "P36", "--out", str(out), "--quiet"]
    argv += [a for s in SETTINGS for a in ("--set", s)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), CAUSALEVAL_CACHE=str(cache), CAUSALEVAL_FAULT=fault,
               OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-c", DRIVER, *argv], env=env, capture_output=True, text=True,
                          timeout=1200)


def _tables(folder: Path) -> dict[str, pd.DataFrame]:
    return {p.relative_to(folder).as_posix(): pd.read_parquet(p) for p in sorted(folder.rglob("*.parquet"))}


@pytest.mark.slow
def test_killed_and_resumed_run_gives_the_uninterrupted_tables(tmp_path):
    model = save_tiny_model(tmp_path / "tiny")
    cache = tmp_path / "cache"
    done = _run(model, tmp_path / "full", cache)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "killed"
    for fault in KILLS:
        killed = _run(model, out, cache, fault)
        assert killed.returncode == -9, (fault, killed.stderr[-3000:])
    resumed = _run(model, out, cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "[facts] already finished" in resumed.stdout and "[trace] already finished" in resumed.stdout
    full, again = _tables(tmp_path / "full"), _tables(out)
    assert set(full) == set(again) and len(full) > 20
    for name in ("trace.parquet", "edits.parquet", "support/states.parquet", "analysis/r2.parquet"):
        assert name in full
    for name, table in full.items():
        keep = [c for c in table.columns if c not in TIMING]
        pd.testing.assert_frame_equal(again[name][keep], table[keep], check_exact=False, rtol=0, atol=1e-12,
                                      obj=name)
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name or p.name == ".causaleval.lock"]
