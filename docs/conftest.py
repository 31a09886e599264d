"""The doctests of docs/*.md write ROME statistics into a temporary cache, on one torch thread."""

import pytest

from causaleval.model.testing import isolated_cache


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    yield from isolated_cache(tmp_path, monkeypatch)
