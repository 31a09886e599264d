"""Every cache is keyed by every weight it depends on (issue 34): two in-memory models that differ only in
an MLP weight never share ROME statistics or context texts; identical models share them."""

from __future__ import annotations

import copy

import pytest
import torch

from causaleval.editing.rome import SecondMoments, hparams_for, model_slug
from causaleval.model.fingerprint import weights_fingerprint
from causaleval.model.loading import bundle_from
from causaleval.model.sites import get_module
from causaleval.model.testing import isolated_cache, tiny_model


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    yield from isolated_cache(tmp_path, monkeypatch)


def _pair():
    """An in-memory model (as the Python API sees it) and a copy differing only in one MLP weight element."""
    base = tiny_model("gpt2")
    other = copy.deepcopy(base.model)
    w = get_module(other, base.family.module_path("down_proj", 1)).weight
    with torch.no_grad():
        w[3, 5] += 0.5
    return bundle_from(base.model, base.tokenizer), bundle_from(other, base.tokenizer)


def test_models_differing_only_in_an_mlp_weight_get_different_cache_folders():
    a, b = _pair()
    assert torch.equal(a.model.get_input_embeddings().weight, b.model.get_input_embeddings().weight)
    assert model_slug(a) != model_slug(b)
    assert model_slug(a) == model_slug(a)        # stable once remembered in the bundle
    twin = bundle_from(copy.deepcopy(a.model), a.tokenizer)
    assert model_slug(twin) == model_slug(a)     # identical weights share the cache


def test_second_model_gets_its_own_statistics_not_the_first_ones():
    a, b = _pair()
    hp = hparams_for("gpt2", 4, stat_tokens=200, stat_seq_len=20, stat_batch=16)
    ca = SecondMoments(a, hp).get(2)
    cb = SecondMoments(b, hp).get(2)           # before the fix: read from a's folder, equal to ca
    fresh = SecondMoments(b, hp, use_cache=False).get(2)
    assert torch.equal(cb, fresh)
    assert not torch.equal(ca, cb)


def test_fingerprint_sees_every_element_dtype_and_name():
    m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    f = weights_fingerprint(m)
    m2 = copy.deepcopy(m)
    with torch.no_grad():
        m2[1].bias[-1] = torch.nextafter(m2[1].bias[-1], torch.tensor(1.0))   # one ulp, last element
    assert weights_fingerprint(m2) != f
    assert weights_fingerprint(copy.deepcopy(m).double()) != f
    assert weights_fingerprint(copy.deepcopy(m)) == f


def test_statistics_from_a_dataset_are_keyed_by_its_contents(tmp_path):
    """A local statistics dataset edited in place (same name) must not reuse the old corpus and C."""
    b = tiny_model("gpt2")
    path = tmp_path / "corpus.txt"
    path.write_text("The capital of France is Paris.\n")
    key = SecondMoments(b, hparams_for("gpt2", 4, stat_source=str(path))).corpus_key
    path.write_text("The capital of Italy is Rome.\n")
    assert SecondMoments(b, hparams_for("gpt2", 4, stat_source=str(path))).corpus_key != key
