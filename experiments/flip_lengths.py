"""Same-length flip pools: how many of each known fact's flip partners keep its prompt's token count.

    python -m experiments.flip_lengths RUN --model smollm2 --name smollm2 [--out paper/facts]

Flip scrubbing aligns the corrupted and the clean run position by position, so it draws its partners
from those whose prompt (the case's template with the partner's subject) has the case's token count, and
from the whole flip set only when none has (``prefer_same_length`` in
:func:`causaleval.estimators.resample_scrubbing.partner_draws`).  Its reliability therefore grows with the
same-length pool, not with the flip pool of ``experiments.facts_tables``.  Reads a facts-stage run's
``facts.jsonl`` and ``facts_filter.parquet`` (the known facts are the pool, as in the trace stage; only the
relations of the committed ``known_<name>.csv`` when there is one), needs the
model's tokenizer only, and writes ``flip_pool_same_length_<name>.csv``: per relation (and ``all``) the known
facts, the min / median / max same-length flip pool and the share of facts with at least 10 / 24 partners.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from causaleval.data.counterfact import facts_from_jsonl
from causaleval.data.tokens import encode_prompt
from causaleval.estimators.flip_scrubbing import flip_set
from causaleval.runs.store import atomic_write_text
from experiments.facts_tables import THRESHOLDS, relation_name


def same_length_pools(tokenizer, facts: list) -> pd.DataFrame:
    """One row per fact: case_id, relation_id, flip_pool (the flip set) and same_length (its partners whose
    prompt, the case's template with the partner's subject, has the case's token count)."""
    holder = SimpleNamespace(tokenizer=tokenizer)
    lengths: dict[tuple[str, str], int] = {}

    def length(template: str, subject: str) -> int:
        if (template, subject) not in lengths:
            lengths[template, subject] = encode_prompt(tokenizer, template, subject).length
        return lengths[template, subject]

    rows = []
    for fact in facts:
        partners = flip_set(holder, fact, facts)
        own = length(fact.prompt, fact.subject)
        rows.append(dict(case_id=fact.case_id, relation_id=fact.relation_id, flip_pool=len(partners),
                         same_length=sum(length(fact.prompt, p.subject) == own for p in partners)))
    return pd.DataFrame(rows)


def same_length_table(pools: pd.DataFrame) -> pd.DataFrame:
    """Per relation (and ``all``): known, min / median / max same-length pool, shares with ≥ 10 / ≥ 24."""
    rows = []
    for rid, part in [*pools.groupby("relation_id", sort=False), ("all", pools)]:
        row = {"relation_id": rid, "relation": relation_name(rid) if rid != "all" else "", "known": len(part),
               "same_length_min": int(part.same_length.min()),
               "same_length_median": float(part.same_length.median()),
               "same_length_max": int(part.same_length.max())}
        for t in THRESHOLDS:
            row[f"share_ge_{t}"] = round(float((part.same_length >= t).mean()), 3)
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="results folder of a facts-stage run (facts.jsonl, facts_filter.parquet)")
    p.add_argument("--model", required=True, help="the model whose tokenizer counts the tokens (e.g. smollm2)")
    p.add_argument("--name", required=True, help="model name in the file name, e.g. smollm2")
    p.add_argument("--out", type=Path, default=Path("paper/facts"))
    a = p.parse_args(argv)
    for f in ("facts.jsonl", "facts_filter.parquet"):
        if not (a.run / f).is_file():
            p.error(f"{a.run}: no {f}; run the facts stage first "
                    "(python -m experiments.main --stage facts --relations all --out FOLDER)")
    table = pd.read_parquet(a.run / "facts_filter.parquet")
    committed = a.out / f"known_{a.name}.csv"          # the relations the committed known-facts table keeps
    if committed.is_file():
        kept = set(pd.read_csv(committed, keep_default_na=False).relation_id) - {"all"}
        table = table[table.relation_id.isin(kept)]
    known = set(table.case_id[table.known.astype(bool)])
    facts = [f for f in facts_from_jsonl(a.run / "facts.jsonl") if f.case_id in known]
    from causaleval.model.loading import load_model

    tokenizer = load_model(a.model).tokenizer
    path = a.out / f"flip_pool_same_length_{a.name}.csv"
    atomic_write_text(path, same_length_table(same_length_pools(tokenizer, facts)).to_csv(index=False))
    print(path)


if __name__ == "__main__":
    main()
