"""ROME on tiny random models of every family (docs/design.md#rome)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from causaleval.data.counterfact import Fact
from causaleval.data.tokens import pad_batch
from causaleval.editing.rome import (SecondMoments, SingularStatisticsWarning, apply_edit, compute_edit,
                                     default_contexts, hparams_for, prepare_edit, rome_edit)
from causaleval.editing.rome.compute import run_with_delta
from causaleval.editing.rome.corpus import sample_ids
from causaleval.editing.suffix import capture_block_inputs, capture_window, logits_at_positions, run_from
from causaleval.errors import SiteError
from causaleval.model.hooks import trace
from causaleval.model.sites import get_module
from causaleval.model.testing import FAMILY_CONFIGS, isolated_cache, tiny_model, tiny_tokenizer

FAMILIES = tuple(FAMILY_CONFIGS)
# In a tiny random model attention barely moves information, so the subject ends the prompt, and the
# target is one token of the tiny vocabulary.  ‖v₀‖ is tiny there, so weight decay is off and the clamp loose.
FACT = Fact(case_id=7, prompt="The capital of {}", relation_id="P36", subject="France", target_true="Paris",
            target_new="Africa", paraphrase_prompts=["The capital city of France"],
            neighborhood_prompts=["The capital of Germany"])
OTHER = "The official language of Brazil"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    yield from isolated_cache(tmp_path, monkeypatch)


def tiny_hp(family: str, **kw):
    base = dict(context_lengths=((4, 2),), stat_tokens=400, stat_seq_len=20, stat_batch=32,
                v_weight_decay=0.0, clamp_norm_factor=1000.0)
    base.update(kw)
    return hparams_for(family, 4, **base)


def next_token_probs(bundle, text: str) -> torch.Tensor:
    ids = bundle.tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return torch.softmax(bundle.model(ids).logits[0, -1], -1)


def params_clone(bundle) -> dict:
    return {k: v.detach().clone() for k, v in bundle.model.state_dict().items()}


def assert_bitwise(bundle, saved: dict) -> None:
    for k, v in bundle.model.state_dict().items():
        assert torch.equal(v, saved[k]), f"{k} differs after restore"


@pytest.mark.parametrize("family", FAMILIES)
def test_edit_makes_target_top1_and_restores(family):
    b = tiny_model(family)
    if b.family.post_mlp_norm:
        # Gemma: the norm after the MLP caps what the edited MLP adds at unit RMS times its gain (1 + w),
        # and a random model's gain of 1 lets one MLP move the residual too little for a top-1 change;
        # a gain of 4 at the edited layer does (Gemma 3 270M's trained gains average 1.8 at layer 0 to 324
        # at layer 17).
        with torch.no_grad():
            b.model.get_submodule(b.family.module_path("mlp", 1)).weight.fill_(3.0)
    hp = tiny_hp(family)
    saved = params_clone(b)
    before = next_token_probs(b, FACT.text)
    res = rome_edit(b, FACT, layer=1, hparams=hp)
    new_id = b.tokenizer(" Africa")["input_ids"][0]
    assert int(before.argmax()) != new_id
    with apply_edit(b, res):
        after = next_token_probs(b, FACT.text)
        assert int(after.argmax()) == new_id
        # an unrelated subject moves much less than the edited prompt (total variation)
        tv_edit = 0.5 * (after - before).abs().sum()
    other_after = next_token_probs(b, OTHER)  # restored already
    with apply_edit(b, res):
        other_edited = next_token_probs(b, OTHER)
    tv_other = 0.5 * (other_edited - other_after).abs().sum()
    assert tv_other < tv_edit
    # at the edited layer, the update acts on an unrelated subject's key far less than on k0
    other = Fact(8, "The official language of {}", "P37", "Brazil", "Portuguese", "Africa")
    k_other = prepare_edit(b, other, [], hp).keys[1][0]
    assert (res.delta_w @ k_other).norm() < 0.5 * (res.delta_w @ res.k0).norm()
    assert_bitwise(b, saved)


@pytest.mark.parametrize("family", ["gpt2", "llama"])  # Conv1D (in × out) and Linear (out × in)
@pytest.mark.parametrize("key_mode", ["mixed", "averaged", "bare"])
def test_update_is_rank_one_and_maps_key_to_v_star(family, key_mode):
    b = tiny_model(family)
    hp = tiny_hp(family, key_mode=key_mode)
    layer = 2
    stats = SecondMoments(b, hp)
    prep = prepare_edit(b, FACT, default_contexts(b, hp), hp)
    res = compute_edit(b, prep, layer, hp, stats)
    assert torch.linalg.matrix_rank(res.delta_w.double(), rtol=1e-5) == 1
    key = res.k_avg if key_mode == "averaged" else res.k0
    mod = get_module(b.model, b.family.module_path("down_proj", layer))
    with apply_edit(b, res), torch.no_grad():
        out = mod(key[None, None, :])[0, 0]
    torch.testing.assert_close(out, res.v_star, rtol=1e-4, atol=1e-4)
    # the edited module's output at k0 inside the real prompt is v* too (mixed/bare)
    if key_mode != "averaged":
        seen = {}
        h = mod.register_forward_hook(lambda m, i, o: seen.__setitem__("o", o))
        with apply_edit(b, res), torch.no_grad():
            b.model(prep.batch.input_ids[:1], attention_mask=prep.batch.attention_mask[:1])
        h.remove()
        torch.testing.assert_close(seen["o"][0, prep.batch.lookup[0]], res.v_star, rtol=1e-4, atol=1e-4)


def test_restore_is_bitwise_after_many_edits():
    b = tiny_model("gpt_neox")
    hp = tiny_hp("gpt_neox", v_num_grad_steps=3)
    saved = params_clone(b)
    stats = SecondMoments(b, hp)
    ctx = default_contexts(b, hp)
    prep = prepare_edit(b, FACT, ctx, hp)
    for layer in (0, 1, 2, 3, 1, 1, 0):
        res = compute_edit(b, prep, layer, hp, stats)
        handle = apply_edit(b, res).apply()
        assert not torch.equal(get_module(b.model, b.family.module_path("down_proj", layer)).weight,
                               saved[b.family.module_path("down_proj", layer) + ".weight"])
        handle.restore()
        handle.restore()  # idempotent
    assert_bitwise(b, saved)


@pytest.mark.parametrize("family", FAMILIES)
def test_suffix_run_matches_full_forward(family, monkeypatch):
    monkeypatch.setattr("causaleval.editing.suffix.VOCAB_SLICE", 7)   # several vocabulary slices (and a bias for GPT-J)
    b = tiny_model(family)
    ids, mask, _ = pad_batch([[5, 6, 7, 8, 9, 10], [11, 12, 13]], 0)
    cache, last = capture_block_inputs(b, ids, mask)
    rows, cols = torch.tensor([0, 0, 1]), torch.tensor([2, 5, 2])
    with torch.no_grad():
        full = b.model(input_ids=ids, attention_mask=mask).logits[rows, cols]
        for layer in range(b.n_layers):
            torch.testing.assert_close(logits_at_positions(b, run_from(b, cache, layer), rows, cols), full)


@pytest.mark.parametrize("family", FAMILIES)
def test_window_run_matches_full_run_with_and_without_delta(family):
    """Re-running each row only from its window start, after the cached prefix, is exact (docs/design.md#rome)."""
    b = tiny_model(family)
    ids, mask, _ = pad_batch([[5, 6, 7, 8, 9, 10, 11], [12, 13, 14], [15, 16, 17, 18, 19]], 0)
    starts = torch.tensor([4, 0, 2])
    blocks, _ = capture_block_inputs(b, ids, mask)
    window, _ = capture_window(b, ids, mask, starts)
    rows, pos = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2]), torch.tensor([4, 5, 6, 0, 1, 2, 2, 4])
    d = b.model.config.hidden_size
    for layer in range(b.n_layers):
        delta = torch.randn(d, generator=torch.Generator().manual_seed(layer), requires_grad=True)
        path = b.family.module_path("down_proj", layer)
        grads = []
        col0 = torch.zeros(3, dtype=torch.long)
        shortcut = lambda: run_with_delta(b, window, layer, delta.expand(3, -1))  # noqa: E731
        for run, at in ((lambda: run_from(b, blocks, layer), starts), (lambda: window.run(layer), col0),
                        (shortcut, None)):   # δ as compute_v adds it (on block l's cached output but in Gemma)
            edit = {} if at is None else {path: lambda out, at=at: out.index_put(
                (torch.arange(3), at), delta.expand(3, -1), accumulate=True)}
            with torch.enable_grad(), trace(b.model, edit=edit):
                last = run()
            cols = pos if at is starts else window.column(rows, pos)
            logits = logits_at_positions(b, last, rows, cols)
            logits.square().mean().backward()
            grads.append((logits.detach(), delta.grad.clone()))
            delta.grad = None
        for other in grads[1:]:
            torch.testing.assert_close(other[0], grads[0][0], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(other[1], grads[0][1], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError):
        window.column(torch.tensor([0]), torch.tensor([3]))
    # a window cut short at the last read position gives the same values there
    short, _ = capture_window(b, ids, mask, starts, ends=torch.tensor([6, 2, 3]))
    keep = torch.tensor([0, 1, 3, 4, 6])
    with torch.no_grad():
        full_last = window.run(1)
        short_last = short.run(1)
    torch.testing.assert_close(logits_at_positions(b, short_last, rows[keep], short.column(rows[keep], pos[keep])),
                               logits_at_positions(b, full_last, rows[keep], window.column(rows[keep], pos[keep])))
    with pytest.raises(ValueError):
        short.column(torch.tensor([2]), torch.tensor([4]))


def test_statistics_cached_with_provenance_and_equal_to_full_forward(tmp_path):
    b = tiny_model("llama")
    hp = tiny_hp("llama")
    s1 = SecondMoments(b, hp, seed=3)
    s1.ensure([1, 3])
    prov = s1.provenance[1]
    assert prov["seed"] == 3 and prov["n_tokens"] >= hp.stat_tokens and "sampled" in prov["source"]
    files = sorted(p.name for p in (tmp_path / "rome").rglob("*") if p.is_file())
    assert any(f.startswith("corpus-") and f.endswith(".npy") for f in files)
    assert any(f.startswith("layer1-") and f.endswith(".json") for f in files)
    # keys accumulated while sampling equal keys of a full forward over the cached corpus
    ids = sample_ids(b, math.ceil(hp.stat_tokens / hp.stat_seq_len), hp.stat_seq_len - 1, seed=3, batch=32)
    path = b.family.module_path("down_proj", 1)
    keys = []
    h = get_module(b.model, path).register_forward_pre_hook(lambda m, i: keys.append(i[0].reshape(-1, i[0].shape[-1])))
    with torch.no_grad():
        b.model(ids)
    h.remove()
    k = torch.cat(keys).double()
    torch.testing.assert_close(s1.get(1), k.T @ k / k.shape[0], rtol=1e-4, atol=1e-7)
    s2 = SecondMoments(b, hp, seed=3)
    s2.ensure([1])
    assert torch.equal(s2.get(1), s1.get(1))
    assert s2.one_off_seconds == 0.0


def test_context_texts_are_seeded_and_cached():
    b = tiny_model("gpt2")
    hp = tiny_hp("gpt2")
    a = default_contexts(b, hp, seed=1)
    assert len(a) == 2 and all("{" not in t for t in a)
    assert default_contexts(b, hp, seed=1) == a == default_contexts(b, hp, seed=1, use_cache=False)


def test_bad_inputs_are_clear_errors():
    b = tiny_model("llama")
    hp = tiny_hp("llama", v_num_grad_steps=2)
    stats = SecondMoments(b, hp)
    with pytest.raises(SiteError, match="tokenises to nothing"):
        rome_edit(b, Fact(1, "The capital of {}", "P36", "France", "Paris", "   "), layer=1, hparams=hp, stats=stats)
    with pytest.raises(SiteError, match="placeholder"):
        rome_edit(b, Fact(1, "The capital of Spain", "P36", "France", "Paris", "Africa"), layer=1, hparams=hp,
                  stats=stats)
    with pytest.raises(SiteError, match="out of range"):
        rome_edit(b, FACT, layer=4, hparams=hp, stats=stats)
    with pytest.raises(SiteError, match="out of range"):
        stats.ensure([-1])


def test_singular_statistics_are_regularised_with_a_warning():
    b = tiny_model("gpt2")
    hp = tiny_hp("gpt2", stat_tokens=20, stat_seq_len=10, v_num_grad_steps=2)  # 20 keys for dimension 64
    stats = SecondMoments(b, hp)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = rome_edit(b, FACT, layer=1, hparams=hp, stats=stats)
    assert any(issubclass(w.category, SingularStatisticsWarning) for w in caught)
    assert stats.provenance[1]["ridge_lambda"] > 0
    assert np.isfinite(res.delta_w.numpy()).all()


def test_tiny_tokenizer_target_is_one_token():
    assert len(tiny_tokenizer()(" Africa")["input_ids"]) == 1
