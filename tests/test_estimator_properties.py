"""Property-based tests (hypothesis) of estimator invariants on tiny random models (docs/estimands.md)."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from causaleval.data.geofacts import build_facts
from causaleval.data.tokens import answer_ids
from causaleval.estimators import flip_scrubbing, noise_tracing, resample_scrubbing
from causaleval.inference.bootstrap import bootstrap_ci
from causaleval.model.hooks import trace
from causaleval.model.testing import tiny_model
from causaleval.patching.core import Patch, patch_readout, read_logits, run_model
from causaleval.patching.estimands import SiteGrid

SETTINGS = settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck),
                    phases=(Phase.explicit, Phase.reuse, Phase.generate))
GRIDS = (SiteGrid("residual"), SiteGrid("mlp", window=3), SiteGrid("attn", layers=(1,)))

_MODELS = {f: tiny_model(f) for f in ("gpt2", "llama", "gemma3")}
_FACTS = build_facts(seed=0)
_POOL = [f for f in _FACTS if f.relation_id in ("P36", "P30")][:60]
families = st.sampled_from(sorted(_MODELS))
case_index = st.integers(0, 59)
seeds = st.integers(0, 2**16)


def _nu(bundle):
    return noise_tracing.noise_scale(bundle, _POOL)


@SETTINGS
@given(families, case_index, st.integers(0, 3))
def test_restoring_a_complete_cut_recovers_the_clean_output(family, i, layer):
    """Writing the clean residual stream at every position of one layer into the corrupted run gives
    exactly the clean logits; in the estimators the last layer's last position is such a cut: IE = TE."""
    bundle, fact = _MODELS[family], _POOL[i]
    cfg = noise_tracing.NoiseTracingConfig(nu=_nu(bundle), n_draws=2, grids=(SiteGrid("residual", layers=(3,)),))
    draws = noise_tracing.make_draws(bundle, noise_tracing.encode_prompt(bundle.tokenizer, fact.prompt, fact.subject),
                                     fact.case_id, cfg)
    ids = torch.tensor([draws[0].encoded.input_ids])
    clean = run_model(bundle, ids)
    path = bundle.family.module_path("residual", layer)
    with trace(bundle.model, edit={bundle.family.embed: lambda h: h + draws[0].embed_delta,
                                   path: lambda h: clean.states[("residual", layer)].clone()}):
        cut = bundle.model(input_ids=ids).logits[:, -1]
    assert torch.allclose(cut, clean.logits, atol=1e-5)
    t = noise_tracing.trace_fact(bundle, fact, cfg).sites
    last = t[t.position == t.position.max()]
    assert np.allclose(last.ie, last.te, atol=1e-6)


@SETTINGS
@given(families, case_index)
def test_zero_noise_and_source_equal_to_base_give_zero_effect(family, i):
    bundle, fact = _MODELS[family], _POOL[i]
    t = noise_tracing.trace_fact(bundle, fact, noise_tracing.NoiseTracingConfig(nu=0.0, n_draws=2, grids=GRIDS))
    assert np.allclose(t.sites.ie, 0, atol=1e-6) and np.allclose(t.sites.te, 0, atol=1e-6)
    base = run_model(bundle, torch.tensor([t.sites.position.max() * [1] + [2]]))
    patches = [Patch(0, p, c, (l,), base.states[(c, l)][0, p][None], (3,)) for c in ("mlp", "attn")
               for l in range(4) for p in range(base.length)]
    expect = read_logits(base.logits.expand(len(patches), -1), [(3,)] * len(patches))
    assert torch.allclose(patch_readout(bundle, base, patches), expect, atol=1e-5)


@SETTINGS
@given(families, st.lists(case_index, min_size=2, max_size=3, unique=True), st.randoms(use_true_random=False),
       st.sampled_from([3, 40]))
def test_permuting_or_rebatching_cases_leaves_estimates_unchanged(family, idx, rnd, max_rows):
    bundle = _MODELS[family]
    facts = [_POOL[i] for i in idx]
    cfg = resample_scrubbing.ScrubbingConfig(n_draws=2, grids=GRIDS)
    key = ["case_id", "component", "window", "layer", "position"]
    a = resample_scrubbing.trace(bundle, facts, _POOL, cfg).sites.sort_values(key).reset_index(drop=True)
    shuffled = list(facts)
    rnd.shuffle(shuffled)
    cfg2 = resample_scrubbing.ScrubbingConfig(n_draws=2, grids=GRIDS, max_rows=max_rows)
    pool = list(_POOL)
    rnd.shuffle(pool)
    b = resample_scrubbing.trace(bundle, shuffled, pool, cfg2).sites.sort_values(key).reset_index(drop=True)
    assert (a[key] == b[key]).all().all()
    assert np.allclose(a.ie, b.ie, atol=1e-6, equal_nan=True) and np.allclose(a.te, b.te, atol=1e-6)


@SETTINGS
@given(families, case_index, seeds)
def test_same_seed_gives_identical_results(family, i, seed):
    bundle, fact = _MODELS[family], _POOL[i]
    cfg = noise_tracing.NoiseTracingConfig(nu=_nu(bundle), n_draws=2, seed=seed, grids=GRIDS)
    a, b = noise_tracing.trace_fact(bundle, fact, cfg), noise_tracing.trace_fact(bundle, fact, cfg)
    assert a.sites.equals(b.sites) and a.draws.equals(b.draws)
    other = noise_tracing.NoiseTracingConfig(nu=_nu(bundle), n_draws=2, seed=seed + 1, grids=GRIDS)
    c = noise_tracing.trace_fact(bundle, fact, other)
    assert not np.allclose(a.cases.corrupted, c.cases.corrupted)


@SETTINGS
@given(case_index, seeds, st.integers(1, 6))
def test_partners_lie_in_their_supports(i, seed, n):
    bundle, fact = _MODELS["gpt2"], _POOL[i]
    tok = bundle.tokenizer
    o = answer_ids(tok, fact.target_true)[0]
    flips = resample_scrubbing.partner_draws(bundle, fact, flip_scrubbing.flip_set(bundle, fact, _POOL), n, seed,
                                             "flip", prefer_same_length=True)
    by_id = {f.case_id: f for f in _POOL}
    for d in flips:
        partner = by_id[d.partner_case]
        assert partner.relation_id == fact.relation_id and partner.subject != fact.subject
        assert answer_ids(tok, partner.target_true)[0] != o and d.alt_token != o
    for d in resample_scrubbing.partner_draws(bundle, fact, resample_scrubbing.candidates(fact, _POOL), n, seed,
                                              "resample"):
        assert by_id[d.partner_case].relation_id == fact.relation_id
    assert len(flips) <= n


@SETTINGS
@given(families, case_index)
def test_probability_effects_lie_in_unit_interval(family, i):
    bundle, fact = _MODELS[family], _POOL[i]
    cfg = resample_scrubbing.ScrubbingConfig(n_draws=2, grids=GRIDS, directions=flip_scrubbing.DIRECTIONS)
    t = flip_scrubbing.trace_fact(bundle, fact, _POOL, cfg)
    p = t.sites[t.sites.metric == "p"]
    assert len(p) and p.ie.between(-1, 1).all() and p.te.between(-1, 1).all()
    assert t.draws[t.draws.metric == "p"].value.between(-1, 1).all()


@SETTINGS
@given(families, st.integers(1, 5), st.integers(0, 3))
def test_sites_after_the_readout_have_zero_effect(family, readout, layer):
    bundle = _MODELS[family]
    torch.manual_seed(readout)
    base, src = run_model(bundle, torch.randint(0, 300, (1, 7))), run_model(bundle, torch.randint(0, 300, (1, 7)))
    unpatched = patch_readout(bundle, base, [Patch(0, 0, "mlp", (0,), base.states[("mlp", 0)][0, 0][None], (5,))],
                              readout=readout)
    after = [Patch(0, p, c, (layer,), src.states[(c, layer)][0, p][None], (5,))
             for c in ("residual", "mlp", "attn") for p in range(readout + 1, 7)]
    out = patch_readout(bundle, base, after, readout=readout)
    assert torch.allclose(out, unpatched.expand(len(after), -1), atol=1e-5)
    at = patch_readout(bundle, base, [Patch(0, readout, "residual", (layer,), src.states[("residual", layer)][0, readout][None], (5,))],
                       readout=readout)
    assert not torch.allclose(at, unpatched, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-1, 1, allow_nan=False), min_size=2, max_size=40), st.floats(-1, 1, allow_nan=False),
       st.integers(2, 30))
def test_bootstrap_ci_contains_the_estimate_and_collapses(values, constant, n):
    ci = bootstrap_ci(np.array(values), n_resamples=200)
    assert ci.low - 1e-12 <= ci.estimate <= ci.high + 1e-12
    same = bootstrap_ci(np.full(n, constant), n_resamples=200)
    assert same.low == same.high == same.estimate == pytest.approx(constant)
