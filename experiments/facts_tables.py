"""Known-facts and flip-pool tables of a facts-stage run, committed under ``paper/facts/`` (docs/facts.md).

    python -m experiments.facts_tables RUN_FOLDER --name smollm2 [--out paper/facts]

Reads ``RUN_FOLDER/facts_filter.parquet`` (every built case with its known-facts outcome and the token id
of its answer's first token) and writes

* ``known_<name>.csv``: relation × built × known × share (and a row ``all``), with ``answer_tokens``, the
  number of distinct first tokens of the relation's answers: 1 means the known-facts test is void for
  that model (every answer starts with the same token, e.g. a bare space before digits), and
  ``known_valid``, the known facts of relations with at least two answer tokens;
* ``flip_pool_<name>.csv``: per relation, the flip pool of each known fact, i.e. the known facts of the same
  relation whose answer's first token differs (the flip set of docs/estimands.md#flip-scrubbing): its
  minimum, median and maximum, and the share of facts with at least 10 and at least 24 partners (the row
  ``all`` leaves out relations whose answers all start with one token, whose known-facts test is void).

``--pages`` then writes docs/facts_tables.md from every committed ``known_*.csv`` / ``flip_pool_*.csv``;
``--drop RELATION ...`` first removes relations from those tables (:func:`drop_relations`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from causaleval.data.catalogue import relation_name
from causaleval.runs.store import atomic_write_text

THRESHOLDS = (10, 24)


def known_table(filter_table: pd.DataFrame) -> pd.DataFrame:
    """relation_id, relation, built, known, share, answer_tokens, known_valid (rows in the order relations
    first appear; then ``all``)."""
    order = list(dict.fromkeys(filter_table.relation_id))
    g = filter_table.groupby("relation_id").agg(built=("known", "count"), known=("known", "sum"),
                                                answer_tokens=("true_first_id", "nunique")).reindex(order).reset_index()
    g.insert(1, "relation", [relation_name(r) for r in g.relation_id])
    g["known_valid"] = g.known.where(g.answer_tokens > 1, 0)
    total = pd.DataFrame([{"relation_id": "all", "relation": "", "built": g.built.sum(), "known": g.known.sum(),
                           "answer_tokens": "", "known_valid": g.known_valid.sum()}])
    g = pd.concat([g, total], ignore_index=True)
    g["share"] = (g.known / g.built).round(3)
    return g[["relation_id", "relation", "built", "known", "share", "answer_tokens", "known_valid"]]


def flip_pool_sizes(filter_table: pd.DataFrame) -> pd.DataFrame:
    """One row per known case: case_id, relation_id, flip_pool (known same-relation cases, another answer token)."""
    known = filter_table[filter_table.known.astype(bool)]
    per_token = known.groupby(["relation_id", "true_first_id"]).size()
    per_relation = known.groupby("relation_id").size()
    sizes = [int(per_relation[r] - per_token[(r, t)]) for r, t in zip(known.relation_id, known.true_first_id)]
    return pd.DataFrame({"case_id": known.case_id.to_numpy(), "relation_id": known.relation_id.to_numpy(),
                         "flip_pool": sizes})


def flip_pool_table(filter_table: pd.DataFrame) -> pd.DataFrame:
    """Per relation (and ``all``): known, min/median/max flip pool, share of known facts with ≥ 10 / ≥ 24 partners."""
    sizes = flip_pool_sizes(filter_table)
    order = [r for r in dict.fromkeys(filter_table.relation_id) if r in set(sizes.relation_id)]
    rows = []
    void = set(filter_table.groupby("relation_id").true_first_id.nunique().loc[lambda n: n < 2].index)
    valid = sizes[~sizes.relation_id.isin(void)]
    for rid, part in [*((r, sizes[sizes.relation_id == r]) for r in order), ("all", valid)]:
        row = {"relation_id": rid, "relation": relation_name(rid) if rid != "all" else "", "known": len(part),
               "pool_min": int(part.flip_pool.min()), "pool_median": float(part.flip_pool.median()),
               "pool_max": int(part.flip_pool.max())}
        for t in THRESHOLDS:
            row[f"share_ge_{t}"] = round(float((part.flip_pool >= t).mean()), 3)
        rows.append(row)
    return pd.DataFrame(rows)


def drop_relations(known: pd.DataFrame, pool: pd.DataFrame, relations: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The committed tables without ``relations``, as :func:`known_table` and :func:`flip_pool_table`
    would build them from a filter table without them: the known table's ``all`` row is the sum of the
    others; the flip pools' ``all`` row must already leave the relation out (its known-facts test void,
    ``known_valid`` 0), since its median over facts cannot be recomputed from the rows — else an error."""
    from causaleval.errors import CausalEvalError

    drop = known.relation_id.isin(relations)
    counted = known[drop & (known.known_valid.astype(int) > 0)]
    if len(counted):
        raise CausalEvalError(f"relation {counted.relation_id.iloc[0]} has valid known facts, so the flip pools' all "
                              "row includes it and cannot be recomputed without the facts-stage run: rebuild the "
                              "tables from that run without it")
    kept = known[~drop & (known.relation_id != "all")]
    total = {"relation_id": "all", "relation": "", "built": kept.built.astype(int).sum(),
             "known": kept.known.astype(int).sum(), "answer_tokens": "",
             "known_valid": kept.known_valid.astype(int).sum()}
    total["share"] = round(total["known"] / total["built"], 3)
    known = pd.concat([kept, pd.DataFrame([total])], ignore_index=True)[list(known.columns)]
    return known, pool[~pool.relation_id.isin(relations)].reset_index(drop=True)


def write_tables(run: Path, name: str, out: Path) -> tuple[Path, Path]:
    table = pd.read_parquet(run / "facts_filter.parquet")
    out.mkdir(parents=True, exist_ok=True)
    known_path, pool_path = out / f"known_{name}.csv", out / f"flip_pool_{name}.csv"
    atomic_write_text(known_path, known_table(table).to_csv(index=False))
    atomic_write_text(pool_path, flip_pool_table(table).to_csv(index=False))
    return known_path, pool_path


def _markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def write_page(tables: Path, page: Path) -> Path:
    """docs page with every committed known-facts and flip-pool table (generated; do not edit by hand)."""
    parts = ["# Known facts and flip pools per relation (generated)", "",
             f"Generated by `python -m experiments.facts_tables --pages` from `{tables}/*.csv`; do not edit by hand. "
             "How the facts are built and checked: [facts.md](facts.md).", ""]
    for kind, title in (("known", "Known facts (relation × built × known × share)"),
                        ("flip_pool", "Flip pool per known fact (known partners of the same relation with another "
                                      "answer token)")):
        for path in sorted(p for p in tables.glob(f"{kind}_*.csv") if "same_length" not in p.stem):
            model = path.stem.removeprefix(kind + "_")
            parts += [f"## {title}: {model}", "", _markdown(pd.read_csv(path, keep_default_na=False)), ""]
    for path in sorted(tables.glob("flip_pool_same_length_*.csv")):
        model = path.stem.removeprefix("flip_pool_same_length_")
        parts += [f"## Same-length flip pool per known fact: {model}", "",
                  "Flip partners whose prompt (the case's template with the partner's subject) has the case's "
                  "token count, which flip scrubbing draws first. From `python -m experiments.flip_lengths`.", "",
                  _markdown(pd.read_csv(path, keep_default_na=False)), ""]
    for path in sorted(tables.glob("reliability_*.csv")):
        rel = pd.read_csv(path)
        cols = ["folder", "estimator", "n_cases", "reliability", "ci_low", "ci_high"]
        projected = "draws_for_target" in rel.columns
        if projected:
            cols += ["mean_draws", "draws_for_target", "draws_for_target_low", "draws_for_target_high"]
        pooled = rel[rel.layer == -1][cols].round(3)
        note = (f" `draws_for_target`: the draws (partners, noise samples) per case that the Spearman–Brown "
                f"prophecy needs for a reliability of {rel.target.iloc[0]:g} from the measured one at "
                "`mean_draws`; `_low` and `_high` are the same at the CI's upper and lower bounds."
                if projected else "")
        parts += [f"## Split-half reliability within layer (pooled over the analysis layers): {path.stem}", "",
                  "From `python -m experiments.trace_reliability`; see [facts.md](facts.md#reliability-on-the-new-relations)."
                  + note, "", _markdown(pooled), ""]
    atomic_write_text(page, "\n".join(parts))
    return page


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", nargs="?", type=Path, help="results folder of a facts-stage run")
    p.add_argument("--name", help="model name used in the file names, e.g. smollm2")
    p.add_argument("--out", type=Path, default=Path("paper/facts"))
    p.add_argument("--pages", action="store_true", help="write docs/facts_tables.md from the committed tables")
    p.add_argument("--drop", nargs="+", default=[], metavar="RELATION",
                   help="remove relations from every committed known_*/flip_pool_* table "
                        "(no model run; see drop_relations)")
    a = p.parse_args(argv)
    if a.run is not None:
        if not (a.run / "facts_filter.parquet").is_file():
            p.error(f"{a.run}: no facts_filter.parquet; run the facts stage first "
                    "(python -m experiments.main --stage facts --relations all --out FOLDER)")
        if not a.name:
            p.error("--name is needed with a run folder (e.g. --name smollm2)")
        for path in write_tables(a.run, a.name, a.out):
            print(path)
    for known_path in sorted(a.out.glob("known_*.csv")) if a.drop else []:
        pool_path = a.out / known_path.name.replace("known_", "flip_pool_", 1)
        known, pool = drop_relations(pd.read_csv(known_path, keep_default_na=False), pd.read_csv(pool_path), a.drop)
        atomic_write_text(known_path, known.to_csv(index=False))
        atomic_write_text(pool_path, pool.to_csv(index=False))
        print(known_path, pool_path)
    if a.pages:
        print(write_page(a.out, Path("docs/facts_tables.md")))
    if a.run is None and not a.pages and not a.drop:
        p.error("give a run folder, --pages, --drop, or a combination")


if __name__ == "__main__":
    main()
