"""``python -m experiments.compare_results A B``: are two results folders the same run's results?

Every parquet table must be equal exactly (timing columns such as ``seconds`` dropped), every JSON file
but ``run.json`` (provenance) equal with its timing keys and the results folder's own path
(``config.out``) dropped, and every ``.jsonl``, ``.tex`` and ``.csv`` file equal byte for byte.  For
checking that a refactoring changes no result: run the same command at the
two commits with the same seed, then compare.  Exit code 0 when everything is equal, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

def is_timing(name: str) -> bool:
    """A wall-time column or key: ``seconds``, ``*_seconds``, or the ``finished`` timestamp."""
    return name == "finished" or name == "seconds" or name.endswith("_seconds")
BYTES = (".jsonl", ".tex", ".csv")


def _strip(obj, parent: str = ""):
    """``obj`` without timing keys and without the results folder's own path (``config.out``)."""
    if isinstance(obj, dict):
        return {k: _strip(v, k) for k, v in obj.items() if not is_timing(k) and not (parent == "config" and k == "out")}
    if isinstance(obj, list):
        return [_strip(v, parent) for v in obj]
    return obj


def _same(a: Path, b: Path) -> str | None:
    """None when the two files hold the same results, else what differs."""
    if a.suffix == ".parquet":
        da, db = pd.read_parquet(a), pd.read_parquet(b)
        try:
            pd.testing.assert_frame_equal(da.drop(columns=[c for c in da.columns if is_timing(c)]),
                                          db.drop(columns=[c for c in db.columns if is_timing(c)]), check_exact=True)
        except AssertionError as err:
            return " ".join(str(err).split())[:300]
        return None
    if a.suffix == ".json":
        return None if _strip(json.loads(a.read_text())) == _strip(json.loads(b.read_text())) else "JSON differs"
    return None if a.read_bytes() == b.read_bytes() else "bytes differ"


def compare(a: Path, b: Path) -> tuple[list[str], list[str]]:
    """(files compared and equal, one line per difference) of results folders ``a`` and ``b``."""
    def files(root: Path) -> set[Path]:
        return {p.relative_to(root) for p in root.rglob("*") if p.is_file()
                and (p.suffix in (".parquet", ".json", *BYTES)) and p.name != "run.json"}

    fa, fb = files(a), files(b)
    diffs = [f"only in {a}: {p}" for p in sorted(fa - fb)] + [f"only in {b}: {p}" for p in sorted(fb - fa)]
    equal = []
    for rel in sorted(fa & fb):
        why = _same(a / rel, b / rel)
        (equal.append(str(rel)) if why is None else diffs.append(f"{rel}: {why}"))
    return equal, diffs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.compare_results", description=__doc__.splitlines()[0])
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    args = p.parse_args(argv)
    for d in (args.a, args.b):
        if not d.is_dir():
            print(f"error: {d} is not a results folder; give two finished results folders", file=sys.stderr)
            return 2
    equal, diffs = compare(args.a, args.b)
    for line in diffs:
        print(f"DIFFERS {line}")
    print(f"{len(equal)} files equal, {len(diffs)} differ")
    return 0 if not diffs else 1


if __name__ == "__main__":
    sys.exit(main())
