"""ROME statistics: one layer's accumulator at a time, equal to a full forward over the corpus."""

import pytest
import torch

from causaleval.editing.rome import hparams_for
from causaleval.editing.rome import stats as rome_stats
from causaleval.editing.rome.stats import SecondMoments, layer_moments
from causaleval.model.sites import get_module
from causaleval.model.testing import FAMILY_CONFIGS, tiny_model


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CAUSALEVAL_CACHE", str(tmp_path))


def tiny_hp(family: str):
    return hparams_for(family, 4, context_lengths=((4, 2),), stat_tokens=400, stat_seq_len=20, stat_batch=32)


def _reference(bundle, ids, layer):
    keys = []
    mod = get_module(bundle.model, bundle.family.module_path("down_proj", layer))
    h = mod.register_forward_pre_hook(lambda m, i: keys.append(i[0].reshape(-1, i[0].shape[-1])))
    with torch.no_grad():
        bundle.model(ids)
    h.remove()
    k = torch.cat(keys).double()
    return k.T @ k / k.shape[0]


def test_layer_major_moments_equal_full_forward_for_every_family():
    for family in FAMILY_CONFIGS:
        b = tiny_model(family)
        ids = torch.randint(0, 300, (7, 9))
        path = lambda l: b.family.module_path("down_proj", l)  # noqa: E731
        dim = _reference(b, ids[:1], 0).shape[0]
        got = {l: (c, n) for l, c, n in layer_moments(b, ids, [2, 0], path, dim, batch=3)}
        assert sorted(got) == [0, 2]
        for layer, (c, n) in got.items():
            assert n == ids.numel()
            torch.testing.assert_close(c, _reference(b, ids, layer), rtol=1e-4, atol=1e-7)


def test_statistics_hold_one_layer_accumulator_at_a_time(tmp_path):
    b = tiny_model("llama")
    rome_stats._Accumulator.peak = 0
    s = SecondMoments(b, tiny_hp("llama"), seed=5)
    s.ensure([0, 1, 2, 3])
    # four layers were accumulated, never more than one accumulator (one layer's C) alive at a time
    assert rome_stats._Accumulator.peak == 1 and rome_stats._Accumulator.live == 0
    assert all(s.provenance[l]["n_tokens"] >= 400 for l in range(4))
