"""Oracle checks on the real Gemma 3 270M (``--model gemma3-270m``; docs/design.md#models).

Slow (the model loads in seconds once dequantised and cached, ~3 min the first time) and skipped where
the package is not installed (``make setup-gemma``)."""

import importlib.util

import numpy as np
import pytest
import torch

from causaleval.data.geofacts import build_facts
from causaleval.data.tokens import answer_ids, encode_prompt, pad_batch
from causaleval.estimators import noise_tracing
from causaleval.model.loading import EMBEDDED_MODELS, logits_at
from causaleval.patching.core import trace_cases
from causaleval.patching.estimands import SiteGrid

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec(EMBEDDED_MODELS["gemma3-270m"].package) is None,
                       reason="the Gemma 3 270M package is not installed (make setup-gemma)"),
]


@pytest.fixture(scope="module")
def gemma():
    from causaleval.model.loading import load_model

    return load_model("gemma3-270m")


@pytest.fixture(scope="module")
def known(gemma):
    """Built-in capital facts (subject mid-prompt) and continent facts (subject first) that Gemma knows."""
    out = []
    for rid in ("P36", "P30"):
        facts = [f for f in build_facts(seed=0) if f.relation_id == rid][:24]
        encs = [encode_prompt(gemma.tokenizer, f.prompt, f.subject, f.case_id) for f in facts]
        ids, mask, last = pad_batch([e.input_ids for e in encs], gemma.tokenizer.pad_token_id)
        with torch.no_grad():
            top = logits_at(gemma, ids, mask, last).argmax(-1).tolist()
        out += [f for f, t in zip(facts, top) if t == answer_ids(gemma.tokenizer, f.target_true)[0]][:3]
    assert len(out) >= 4, "Gemma 3 270M should know several built-in capitals and continents"
    return out


def test_family_and_shape(gemma):
    cfg = gemma.model.config
    assert (gemma.family.name, gemma.n_layers, cfg.hidden_size, cfg.num_key_value_heads) == ("gemma3", 18, 640, 1)
    assert cfg.final_logit_softcapping is None and "sliding_attention" in cfg.layer_types


def test_last_residual_site_ie_equals_te(gemma, known):
    """Restoring the clean last-layer residual at the last position restores the clean output: IE = TE."""
    grids = (SiteGrid("residual", layers=(gemma.n_layers - 1,)),)
    cfg = noise_tracing.NoiseTracingConfig(nu=noise_tracing.noise_scale(gemma, known), n_draws=3, grids=grids)
    sites = noise_tracing.trace_facts(gemma, known, cfg)
    gap = 0.0
    for t in sites:
        last = t.sites[t.sites.position == t.sites.position.max()]
        gap = max(gap, float(np.max(np.abs(last.ie - last.te))))
        assert float(last.te.iloc[0]) > 0.05          # the noise does corrupt the answer
    print(f"\nGemma 3 270M: max |IE - TE| at the last residual site = {gap:.2e}")
    assert gap < 1e-5


def test_batched_trace_equals_one_at_a_time(gemma, known):
    grids = (SiteGrid("mlp", window=5, layers=(0, 8, 17)), SiteGrid("residual", layers=(4, 12)))
    cfg = noise_tracing.NoiseTracingConfig(nu=noise_tracing.noise_scale(gemma, known), n_draws=2, grids=grids)
    specs = [noise_tracing.case_spec(gemma, f, cfg) for f in known]
    assert len({s.encoded.length for s in specs}) > 1
    many = trace_cases(gemma, specs)
    diff, moved = 0.0, 0.0
    for spec, b in zip(specs, many):
        a = trace_cases(gemma, [spec])[0]
        for x, y in ((a.clean, b.clean), (a.base, b.base), (a.patched, b.patched)):
            diff = max(diff, float(np.nanmax(np.abs(x - y))))
        moved = max(moved, float(np.nanmax(np.abs(b.effects("logp")[0]))))
    print(f"\nGemma 3 270M: max |batched - one at a time| of the readouts = {diff:.2e} (largest |IE| in logp {moved:.2f})")
    assert diff < 1e-4 and moved > 1e-2


def test_rome_edit_changes_the_answer_and_restores_bitwise(gemma, known, tmp_path, monkeypatch):
    from causaleval.editing.rome import SecondMoments, apply_edit, default_contexts, hparams_for, rome_edit

    monkeypatch.setenv("CAUSALEVAL_CACHE", str(tmp_path))    # statistics and contexts: not the user's cache
    fact = known[0]
    hp = hparams_for("gemma3", gemma.n_layers, context_lengths=((5, 2),), stat_tokens=512, stat_seq_len=32,
                     v_num_grad_steps=10)
    saved = {k: v.detach().clone() for k, v in gemma.model.state_dict().items()}
    res = rome_edit(gemma, fact, layer=6, hparams=hp, stats=SecondMoments(gemma, hp), contexts=default_contexts(gemma, hp))
    ids = torch.tensor([encode_prompt(gemma.tokenizer, fact.prompt, fact.subject).input_ids])
    new = answer_ids(gemma.tokenizer, fact.target_new)[0]
    with torch.no_grad():
        before = torch.log_softmax(gemma.model(ids).logits[0, -1], -1)[new]
        with apply_edit(gemma, res):
            after = torch.log_softmax(gemma.model(ids).logits[0, -1], -1)[new]
    print(f"\nGemma 3 270M ROME at layer 6: log p(new) {float(before):.2f} -> {float(after):.2f}, "
          f"final v* loss {res.final_loss:.3f} after {res.steps} steps")
    assert float(after) > float(before) + 1.0
    for k, v in gemma.model.state_dict().items():
        assert torch.equal(v, saved[k]), f"{k} differs after restore"
