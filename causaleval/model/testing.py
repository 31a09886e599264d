"""Tiny randomly initialised models of each supported family, for tests (docs/design.md#models).

The tokenizer is a small byte-level BPE trained in memory on the built-in fact prompts, so nothing
is downloaded.  Models are built from a config with a fixed seed.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from causaleval.data.counterfact import Fact
from causaleval.model.loading import ModelBundle, bundle_from

#: The tiny Gemma 3's sliding attention window (tokens).
SLIDING_WINDOW = 64

FAMILY_CONFIGS = {
    "gpt2": ("GPT2Config", dict(n_layer=4, n_embd=32, n_head=4, n_inner=64, n_positions=128,
                               resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)),
    "gptj": ("GPTJConfig", dict(n_layer=4, n_embd=32, n_head=4, n_inner=64, n_positions=128, rotary_dim=4,
                               resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)),
    "gpt_neox": ("GPTNeoXConfig", dict(num_hidden_layers=4, hidden_size=32, num_attention_heads=4,
                                       intermediate_size=64, max_position_embeddings=128, rotary_pct=0.25,
                                       attention_dropout=0.0, hidden_dropout=0.0)),
    "llama": ("LlamaConfig", dict(num_hidden_layers=4, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                 intermediate_size=64, max_position_embeddings=128)),
    # Gemma 3's shape in miniature: 4 query heads sharing 1 key/value head, sandwich norms, √d-scaled
    # embeddings, sliding-window layers mixed with full attention (the window above every test prompt,
    # which the key/value-cache bookkeeping needs; tests/test_patching_core.py checks the guard).  Weights
    # are drawn with std 0.1, not 0.02: with √d-scaled tied embeddings the logits are then not all alike.
    "gemma3": ("Gemma3TextConfig", dict(num_hidden_layers=4, hidden_size=32, num_attention_heads=4,
                                        num_key_value_heads=1, head_dim=8, intermediate_size=64,
                                        max_position_embeddings=128, sliding_window=SLIDING_WINDOW,
                                        query_pre_attn_scalar=8, initializer_range=0.1)),
}


@lru_cache(maxsize=1)
def tiny_tokenizer(vocab_size: int = 400):
    """A byte-level BPE tokenizer trained on the geography fact prompts and answers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from causaleval.data.geofacts import RELATIONS, raw_triples

    corpus = []
    for rid, subject, answer in raw_triples(n_cities=100):
        for t in RELATIONS[rid].templates:
            corpus.append(t.replace("{}", subject) + " " + answer)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    return fast


def tiny_model(family: str = "gpt2", seed: int = 0, n_layers: int = 4, **config) -> ModelBundle:
    """A tiny random model of ``family`` with the tiny tokenizer (float32, cpu, eval mode); ``config``
    overrides entries of its config (e.g. ``final_logit_softcapping``)."""
    import transformers

    cls_name, kwargs = FAMILY_CONFIGS[family]
    tok = tiny_tokenizer()
    kwargs = dict(kwargs, **config)
    layer_key = "n_layer" if "n_layer" in kwargs else "num_hidden_layers"
    kwargs[layer_key] = n_layers
    if family == "gemma3":   # sliding and full attention alternating, the last layer full
        kwargs["layer_types"] = ["full_attention" if (l + 1) % 2 == 0 else "sliding_attention" for l in range(n_layers)]
    cfg = getattr(transformers, cls_name)(vocab_size=len(tok), bos_token_id=tok.eos_token_id,
                                          eos_token_id=tok.eos_token_id, **kwargs)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    return bundle_from(model.float().eval().requires_grad_(False), tok, name=f"tiny-{family}", identity={"seed": seed})


def isolated_cache(tmp_path, monkeypatch):
    """Fixture body: ``$CAUSALEVAL_CACHE`` in ``tmp_path`` and one torch thread for the test's duration
    (use as ``yield from isolated_cache(tmp_path, monkeypatch)`` in a pytest fixture)."""
    monkeypatch.setenv("CAUSALEVAL_CACHE", str(tmp_path))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def save_tiny_model(folder, family: str = "gpt2"):
    """A tiny random model of ``family`` saved as a HF model folder (config, safetensors, tokenizer)."""
    b = tiny_model(family)
    b.model.save_pretrained(folder)
    b.tokenizer.save_pretrained(folder)
    return folder


#: Facts for batched-edit tests: the subject at the start, in the middle and at the end of the prompt;
#: one- and multi-token targets; zero, one and two neighbours, so the rows, windows and read positions of
#: the cases all differ.
BATCH_FACTS = [
    Fact(7, "The capital of {}", "P36", "France", "Paris", "Africa", paraphrase_prompts=["The capital city of France"],
         neighborhood_prompts=["The capital of Germany"]),
    Fact(8, "{} is a city in the country of", "P17", "Lyon", "France", "South America",
         paraphrase_prompts=["Lyon is located in"], neighborhood_prompts=["Paris is a city in the country of",
                                                                          "Nice is in"]),
    Fact(9, "The official language of {} is", "P37", "Brazil", "Portuguese", "Spanish"),
    Fact(10, "{} is part of the continent of", "P30", "Kenya", "Africa", "Europe",
         neighborhood_prompts=["Ghana is part of the continent of"]),
]
