"""Stage ``facts``: build or load facts, keep the known ones (docs/design.md#facts).

Every prompt is first checked against the model's context length (before any forward pass).
Writes ``facts.jsonl`` (known cases as CounterFact records plus ``p_true``, ``clean_top1``),
``facts_filter.parquet`` (every case with its filter outcome) and prints known facts per relation.
No known fact at all is an error that names the filter table.
"""

from __future__ import annotations

import pandas as pd

from causaleval.data.counterfact import write_jsonl
from causaleval.data.catalogue import relation_name
from causaleval.data.known import known_filter
from causaleval.data.tokens import check_prompt_lengths, context_length
from causaleval.errors import DataError
from causaleval.runs.store import atomic_write_parquet
from experiments.context import StageContext

NAME = "facts"
OUTPUTS = ("facts.jsonl", "facts_filter.parquet")


def run(ctx: StageContext) -> None:
    cfg = ctx.config
    facts = ctx.source_facts
    bundle = ctx.bundle
    check_prompt_lengths(bundle.tokenizer, facts, context_length(bundle.model.config))
    table = known_filter(bundle, facts, batch_size=cfg.batch_size, progress=ctx.progress)
    atomic_write_parquet(ctx.out_dir / "facts_filter.parquet", table)
    if not table.known.any():
        raise DataError(f"none of the {len(facts)} facts is known to model {cfg.model!r} (its top-1 next token is "
                        "never the true answer's first token), so there is nothing to trace or edit; see "
                        f"{ctx.out_dir / 'facts_filter.parquet'} and try other facts or --relations, or a larger model")
    known = table.set_index("case_id")
    records = []
    for f in facts:
        row = known.loc[f.case_id]
        if row["known"]:
            rec = f.to_record()
            rec.update(p_true=float(row["p_true"]), clean_top1=row["clean_top1"])
            records.append(rec)
    write_jsonl(records, ctx.facts_path)
    print(summary_table(table).to_string(index=False))


def summary_table(table: pd.DataFrame) -> pd.DataFrame:
    """Known facts per relation: relation, name, built, known, share."""
    g = table.groupby("relation_id").known.agg(["count", "sum"]).reset_index()
    g.columns = ["relation_id", "built", "known"]
    g.insert(1, "relation", [relation_name(r) for r in g.relation_id])
    total = pd.DataFrame([{"relation_id": "all", "relation": "", "built": g.built.sum(), "known": g.known.sum()}])
    g = pd.concat([g, total], ignore_index=True)
    g["share"] = (g.known / g.built).round(3)
    return g
