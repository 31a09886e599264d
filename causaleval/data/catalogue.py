"""Every built-in relation and the named sets that select them (docs/facts.md).

``relations`` may name relation ids and these sets: ``geo`` (the five geography relations of
:mod:`causaleval.data.geofacts`, the default), ``more`` (the relations of :mod:`causaleval.data.morefacts`)
and ``all`` (both).  Without a new relation the facts are exactly :func:`geofacts.build_facts`' (same case
ids, order and ``target_new``), so the presets' fact samples do not change unless new relations are asked for.
"""

from __future__ import annotations

from causaleval.data.counterfact import Fact
from causaleval.data.geofacts import RELATIONS as GEO_RELATIONS
from causaleval.data.geofacts import build_facts as build_geo_facts
from causaleval.data.morefacts import MORE_RELATIONS, build_more_facts
from causaleval.errors import DataError

FACT_SETS: dict[str, list[str]] = {
    "geo": list(GEO_RELATIONS),
    "more": list(MORE_RELATIONS),
    "all": list(GEO_RELATIONS) + list(MORE_RELATIONS),
}


def relation_name(relation_id: str) -> str:
    """The relation's readable name (the id itself for relations of a --facts file)."""
    if relation_id in GEO_RELATIONS:
        return GEO_RELATIONS[relation_id].name
    if relation_id in MORE_RELATIONS:
        return MORE_RELATIONS[relation_id].name
    return relation_id


def unknown_relations(names: list[str]) -> list[str]:
    """The entries of ``names`` that are neither a built-in relation id nor a set name."""
    return [n for n in names if n not in FACT_SETS and n not in GEO_RELATIONS and n not in MORE_RELATIONS]


def available() -> str:
    """The accepted names, for error messages."""
    return ("sets " + ", ".join(f"{k} ({len(v)} relations)" for k, v in FACT_SETS.items()) + "; relations "
            + ", ".join(f"{r.relation_id} ({r.name})" for r in [*GEO_RELATIONS.values(), *MORE_RELATIONS.values()]))


def expand(names: list[str] | None) -> list[str]:
    """Relation ids of ``names`` (set names expanded), first occurrence kept; None → the geography set."""
    if not names:
        return list(FACT_SETS["geo"])
    bad = unknown_relations(names)
    if bad:
        raise DataError(f"relations {', '.join(bad)}: not a built-in relation or set; available: {available()}")
    out: list[str] = []
    for n in names:
        for rid in FACT_SETS.get(n, [n]):
            if rid not in out:
                out.append(rid)
    return out


def build_facts(seed: int = 0, relations: list[str] | None = None) -> list[Fact]:
    """The built-in facts of ``relations`` (ids or set names; default the geography set): geography facts
    first, exactly as :func:`geofacts.build_facts` builds them, then the new relations in the order named."""
    ids = expand(relations)
    geo = [r for r in ids if r in GEO_RELATIONS]
    more = [r for r in ids if r in MORE_RELATIONS]
    facts = build_geo_facts(seed=seed, relations=geo) if geo else []
    if more:
        facts += build_more_facts(seed=seed, relations=more)
    if not facts:
        raise DataError(f"no facts built for relations {ids}")
    return facts
