"""Write a facts-stage output for the first N subjects of some new relations (a cheaper pool for a trace run).

    python -m experiments.subset_facts OUT --relations P131 P30-city --subjects 200 [--model smollm2]

Builds :func:`causaleval.data.morefacts.build_more_facts` with ``N`` subjects per relation (the most
populous cities first), runs the known-facts filter and writes ``OUT/facts_filter.parquet`` and
``OUT/facts.jsonl`` exactly as the facts stage does; then ``python -m experiments.main --stage trace
--relations … --out OUT`` traces the known ones.  Case ids are those of the full relations (they do not
depend on the number of subjects).  Used for the flip/noise reliability sample of docs/facts.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from causaleval.data.counterfact import write_jsonl
from causaleval.data.morefacts import MORE_RELATIONS, build_more_facts


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--relations", nargs="+", required=True, choices=list(MORE_RELATIONS))
    p.add_argument("--subjects", type=int, default=200, help="subjects built per relation (default 200)")
    p.add_argument("--model", default="smollm2")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.subjects < 2:
        p.error("--subjects must be at least 2")
    if (a.out / "facts.jsonl").exists():
        p.error(f"{a.out} already holds facts.jsonl; choose another folder")
    facts = build_more_facts(seed=a.seed, relations=a.relations, sizes={r: a.subjects for r in a.relations})

    from causaleval.data.known import known_filter
    from causaleval.model.loading import load_model
    from causaleval.runs.store import atomic_write_parquet

    table = known_filter(load_model(a.model), facts, batch_size=64)
    a.out.mkdir(parents=True, exist_ok=True)
    atomic_write_parquet(a.out / "facts_filter.parquet", table)
    known = dict(zip(table.case_id, zip(table.known, table.p_true, table.clean_top1)))
    records = []
    for f in facts:
        is_known, p_true, top1 = known[f.case_id]
        if is_known:
            rec = f.to_record()
            rec.update(p_true=float(p_true), clean_top1=top1)
            records.append(rec)
    write_jsonl(records, a.out / "facts.jsonl")
    print(table.groupby("relation_id").known.agg(built="count", known="sum").to_string())


if __name__ == "__main__":
    main()
