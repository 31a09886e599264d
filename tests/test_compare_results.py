"""experiments.compare_results: two results folders hold the same results, timing and provenance aside."""

import json

import pandas as pd

from experiments.compare_results import compare, main


def _folder(root, ie=0.5, seconds=1.0, extra=None):
    (root / "analysis").mkdir(parents=True)
    pd.DataFrame({"case_id": [1, 2], "ie": [ie, 0.25], "seconds": [seconds, 2.0]}).to_parquet(root / "trace.parquet")
    summary = {"h1": {"diff": ie, "seconds": seconds, "setup_seconds": seconds},
               "config": {"out": str(root), "seed": 0}}
    (root / "analysis" / "summary.json").write_text(json.dumps(summary))
    (root / "run.json").write_text(json.dumps({"git": str(seconds)}))
    (root / "facts.jsonl").write_text('{"case_id": 1}\n')
    if extra:
        (root / extra).write_text("x")
    return root


def test_equal_up_to_timing_and_provenance(tmp_path, capsys):
    a, b = _folder(tmp_path / "a"), _folder(tmp_path / "b", seconds=9.0)
    equal, diffs = compare(a, b)
    assert diffs == [] and equal == ["analysis/summary.json", "facts.jsonl", "trace.parquet"]
    assert main([str(a), str(b)]) == 0 and "3 files equal, 0 differ" in capsys.readouterr().out


def test_a_changed_value_or_missing_file_is_reported(tmp_path):
    a, b = _folder(tmp_path / "a"), _folder(tmp_path / "b", ie=0.5 + 1e-12, extra="numbers.tex")
    _, diffs = compare(a, b)
    assert any(d.startswith("trace.parquet:") for d in diffs)
    assert any(d.startswith("analysis/summary.json:") for d in diffs)
    assert any(d.startswith(f"only in {b}: numbers.tex") for d in diffs)
    assert main([str(a), str(b)]) == 1
    assert main([str(a), str(tmp_path / "missing")]) == 2
