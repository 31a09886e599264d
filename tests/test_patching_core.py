"""The shared patching core: suffix-only, staggered, batched patching equals plain full-model patching."""

import pytest
import torch

from causaleval.errors import SiteError
from causaleval.model.hooks import trace
from causaleval.patching.core import Patch, patch_readout, position_groups, read_logits, run_model


def _full_patch(bundle, ids, patch):
    """Reference: one full forward pass with hooks writing the source at the patched position."""
    edits = {}
    for j, layer in enumerate(patch.layers):
        def fn(h, j=j):
            h = h.clone()
            h[0, patch.position] = patch.source[j]
            return h
        edits[bundle.family.module_path(patch.component, layer)] = fn
    with trace(bundle.model, edit=edits):
        logits = bundle.model(input_ids=ids[patch.base_row:patch.base_row + 1]).logits[:, -1]
    return read_logits(logits, [patch.read_ids])[0]


@pytest.mark.parametrize("overhead", [0, 32, 10**6])
def test_patched_readout_matches_full_forward(tiny, overhead):
    """Whether positions run apart (0), in cost-chosen groups (32) or all from the first one (10**6)."""
    torch.manual_seed(0)
    ids, src_ids = torch.randint(0, 300, (3, 7)), torch.randint(0, 300, (1, 7))
    base, src = run_model(tiny, ids), run_model(tiny, src_ids)
    assert torch.allclose(base.logits, tiny.model(input_ids=ids).logits[:, -1], atol=1e-5)
    patches = [Patch(r, pos, comp, layers, torch.stack([src.states[(comp, l)][0, pos] for l in layers]), (5, 7))
               for comp in ("residual", "mlp", "attn") for layers in ((0,), (1, 2), (3,))
               for pos in (0, 3, 6) for r in range(3)]
    fast = patch_readout(tiny, base, patches, max_rows=5, overhead=overhead)
    ref = torch.stack([_full_patch(tiny, ids, p) for p in patches])
    assert torch.allclose(fast, ref, atol=1e-5)


def test_identity_patch_returns_the_base_run(tiny_gpt2):
    ids = torch.randint(0, 300, (2, 6))
    base = run_model(tiny_gpt2, ids)
    patches = [Patch(r, pos, "residual", (1,), base.states[("residual", 1)][r, pos][None], (4,))
               for r in range(2) for pos in range(6)]
    out = patch_readout(tiny_gpt2, base, patches)
    expect = read_logits(base.logits.repeat_interleave(6, 0), [(4,)] * 12)
    assert torch.allclose(out, expect, atol=1e-5)


def test_patch_out_of_range_is_a_clear_error(tiny_llama):
    base = run_model(tiny_llama, torch.randint(0, 300, (1, 5)))
    src = torch.zeros(1, 32)
    with pytest.raises(SiteError, match="position 9"):
        patch_readout(tiny_llama, base, [Patch(0, 9, "mlp", (0,), src, (1,))])
    with pytest.raises(SiteError, match="layer 7"):
        patch_readout(tiny_llama, base, [Patch(0, 1, "mlp", (7,), src, (1,))])
    with pytest.raises(SiteError, match="component"):
        patch_readout(tiny_llama, base, [Patch(0, 1, "embedding", (0,), src, (1,))])


def test_position_groups_trade_recomputed_tokens_against_calls():
    positions, firsts = [0, 0, 3, 3, 6, 6, 1], [0, 2, 0, 2, 0, 2, 4]
    apart = position_groups(positions, firsts, readout=6, n_layers=4, overhead=0)
    assert sorted(sorted(positions[i] for i in g) for g in apart) == [[0, 0], [1], [3, 3], [6, 6]]
    together = position_groups(positions, firsts, readout=6, n_layers=4, overhead=10**6)
    assert [sorted(g) for g in together] == [list(range(7))]
    # every patch lands in exactly one group, and groups are runs of consecutive distinct positions
    for overhead in (0, 5, 20, 80, 10**6):
        groups = position_groups(positions, firsts, readout=6, n_layers=4, overhead=overhead)
        assert sorted(i for g in groups for i in g) == list(range(7))
        spans = [(min(positions[i] for i in g), max(positions[i] for i in g)) for g in groups]
        assert all(hi < lo for (_, hi), (lo, _) in zip(spans, spans[1:]))
