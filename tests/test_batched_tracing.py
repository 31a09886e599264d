"""Tracing several cases together (shared runs and block calls) equals tracing each case alone."""

import numpy as np
import pytest

from causaleval.data.geofacts import build_facts
from causaleval.estimators import flip_scrubbing, noise_tracing, resample_scrubbing
from causaleval.model.testing import tiny_model
from causaleval.patching.core import trace_cases
from causaleval.patching.estimands import SiteGrid

GRIDS = (SiteGrid("mlp", window=3), SiteGrid("residual", layers=(0, 2)))
_FACTS = build_facts(seed=0)
# subject mid-prompt (capitals) and at the start (continents, country of a city), several prompt lengths
_POOL = [f for r in ("P36", "P30", "P17") for f in [g for g in _FACTS if g.relation_id == r][:8]]
FACTS = _POOL[::4]


def _specs(bundle, est):
    if est == "noise":
        cfg = noise_tracing.NoiseTracingConfig(nu=noise_tracing.noise_scale(bundle, _POOL), n_draws=2, grids=GRIDS)
        return [noise_tracing.case_spec(bundle, f, cfg) for f in FACTS]
    cfg = resample_scrubbing.ScrubbingConfig(n_draws=2, grids=GRIDS, directions=("denoise", "noise"))
    out = []
    for f in FACTS:
        if est == "resample":
            partners, support = resample_scrubbing.candidates(f, _POOL), resample_scrubbing.resample_support(f, _POOL)
        else:
            partners, support = flip_scrubbing.flip_set(bundle, f, _POOL), flip_scrubbing.flip_support(bundle, f, _POOL)
        if partners:
            out += resample_scrubbing.partner_specs(bundle, f, partners, support, est, cfg, est == "flip")
    return out


@pytest.mark.parametrize("family,est", [("llama", "flip"), ("gemma3", "noise"),
                                        pytest.param("llama", "noise", marks=pytest.mark.slow),
                                        pytest.param("llama", "resample", marks=pytest.mark.slow),
                                        pytest.param("gpt2", "flip", marks=pytest.mark.slow)])
def test_batched_cases_equal_one_at_a_time(family, est):
    """Per case, the readouts [logsumexp z, z_o, z_o′] of the clean, corrupted and every patched run agree
    to 1e-5, so every IE and TE does."""
    bundle = tiny_model(family)
    specs = _specs(bundle, est)
    assert len({s.encoded.length for s in specs}) > 1 and len(specs) >= 4
    many = trace_cases(bundle, specs)
    for spec, b in zip(specs, many):
        a = trace_cases(bundle, [spec])[0]
        assert (a.case_id, a.direction) == (b.case_id, b.direction) == (spec.case_id, spec.direction)
        assert np.array_equal(np.isnan(a.patched), np.isnan(b.patched))
        for x, y in ((a.clean, b.clean), (a.base, b.base), (a.patched, b.patched)):
            assert np.allclose(x, y, atol=1e-5, equal_nan=True)
        for m in ("logp", "ld"):
            (ie_a, te_a), (ie_b, te_b) = a.effects(m), b.effects(m)
            assert np.allclose(ie_a, ie_b, atol=1e-5, equal_nan=True) and np.allclose(te_a, te_b, atol=1e-5)
    # not vacuous: patching moves the readout by far more than the tolerance somewhere
    moved = max(float(np.nanmax(np.abs(t.effects("logp")[0]))) for t in many)
    assert moved > 1e-3
