"""The study's fact sample: stratified over relations, seeded, in case order."""

from collections import Counter

import pytest

from experiments.context import stratified_sample

# the embedded model's known facts per relation (473 in all)
STRATA = ["P17"] * 186 + ["P30"] * 118 + ["P37"] * 94 + ["P36"] * 58 + ["P38"] * 17


@pytest.mark.parametrize("n", [1, 5, 12, 48, 200, 473, 1000])
def test_allocation_is_as_even_as_the_relations_allow(n):
    idx = stratified_sample(STRATA, n, seed=0)
    assert idx == sorted(set(idx)) and len(idx) == min(n, len(STRATA))
    got = Counter(STRATA[i] for i in idx)
    size = Counter(STRATA)
    # a relation below the largest quota gives all its facts; the others differ by at most one
    top = max(got.values())
    assert all(got[r] == size[r] or got[r] >= top - 1 for r in size)
    if n >= len(size):
        assert set(got) == set(size)


def test_the_study_and_default_allocations():
    assert Counter(STRATA[i] for i in stratified_sample(STRATA, 200, 0)) == \
        {"P17": 46, "P30": 46, "P36": 46, "P37": 45, "P38": 17}
    assert Counter(STRATA[i] for i in stratified_sample(STRATA, 48, 0)) == \
        {"P17": 10, "P30": 10, "P36": 10, "P37": 9, "P38": 9}


def test_seeded_and_seed_dependent():
    assert stratified_sample(STRATA, 48, 3) == stratified_sample(STRATA, 48, 3)
    assert stratified_sample(STRATA, 48, 3) != stratified_sample(STRATA, 48, 4)
