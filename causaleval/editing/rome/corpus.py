"""Text the ROME statistics and context texts are drawn from (docs/design.md#rome), cached per model.

* :func:`model_slug` names a model's cache folder ``cache_dir()/rome/<slug>``.
* :func:`sample_ids` samples token sequences from the model itself (seeded; plain ancestral sampling,
  or top-k as in the original ``generate_fast``), optionally calling back after every forward pass so
  that key statistics can be accumulated while generating.
* :func:`context_texts` returns the N short model-generated texts prefixed to edit prompts
  (Meng et al.: 10 texts of 5 tokens and 10 of 10 tokens, top-k 5, from ``<|endoftext|>``), cached as JSON.
* :func:`dataset_ids` tokenises a local text dataset (``.txt``/``.json``/``.jsonl``/``.parquet``/``.csv``
  with a ``text`` column) into sequences, the alternative corpus for the statistics.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from causaleval.errors import DataError
from causaleval.model.loading import ModelBundle, cache_dir
from causaleval.runs.store import atomic_write_json

_SLUG_IGNORE = ("device", "weights_fingerprint", "tokenizer_fingerprint")   # the last two: in "_weights"


def model_slug(bundle: ModelBundle) -> str:
    """``<name>-<hash>``: the name of the model's cache folder (statistics, corpus, context texts).

    The hash covers the model identity (minus the device: name, dtype, family, shapes) and its weights:
    a model loaded from files (:func:`causaleval.model.loading.load_model`) by its safetensors files'
    sha256 (in ``identity["weights_sha256"]``); a model passed in memory (the Python API) by a
    fingerprint of every parameter and buffer and of its tokenizer's vocabulary
    (:func:`causaleval.model.fingerprint.weights_fingerprint`), so two models that differ in any weight
    never share statistics.  The fingerprint is taken once per bundle (the API makes one per call).
    Reuse is intended in one case: a bundle keeps its key while an edit is applied to it, so an edit
    computed inside another edit's context uses the unedited model's C (as ROME's sequential edits do)."""
    ident = {k: v for k, v in bundle.identity.items() if k not in _SLUG_IGNORE}
    if "weights_sha256" not in ident:
        ident["_weights"] = memory_fingerprint(bundle)
    emb = bundle.model.get_input_embeddings().weight
    ident["_fingerprint"] = f"{float(emb.detach().double().sum()):.12e}/{float(emb.detach().double().abs().sum()):.12e}"
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(bundle.name)).name) or "model"
    return f"{name}-{digest}"


def memory_fingerprint(bundle: ModelBundle) -> str:
    """Fingerprint of an in-memory model's weights and tokenizer vocabulary, remembered in ``bundle.identity``."""
    if "weights_fingerprint" not in bundle.identity:
        from causaleval.model.fingerprint import weights_fingerprint

        tok = bundle.tokenizer
        vocab = json.dumps(sorted(tok.get_vocab().items()), ensure_ascii=False)
        special = [tok.bos_token_id, tok.eos_token_id, getattr(tok, "unk_token_id", None)]
        tok_hash = hashlib.sha256((vocab + json.dumps(special)).encode("utf-8", "surrogatepass")).hexdigest()[:16]
        bundle.identity["weights_fingerprint"] = weights_fingerprint(bundle.model)
        bundle.identity["tokenizer_fingerprint"] = f"sha256-{tok_hash}"
    return f"{bundle.identity['weights_fingerprint']}/{bundle.identity['tokenizer_fingerprint']}"


def rome_cache(bundle: ModelBundle) -> Path:
    return cache_dir() / "rome" / model_slug(bundle)


def start_token_id(tokenizer) -> int:
    """The token generation starts from: ``<|endoftext|>`` if the vocabulary has it (GPT-2, SmolLM2), else BOS, else EOS."""
    vocab = tokenizer.get_vocab()
    if "<|endoftext|>" in vocab:
        return int(vocab["<|endoftext|>"])
    for tid in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    raise DataError("the tokenizer has neither <|endoftext|>, BOS nor EOS to start sampling from")


@torch.no_grad()
def sample_ids(bundle: ModelBundle, n_seq: int, n_new: int, seed: int, top_k: int | None = None,
               batch: int = 64, on_forward: Callable[[], None] | None = None, progress=None) -> torch.Tensor:
    """``n_seq`` sequences of ``1 + n_new`` tokens (start token + samples), with a KV cache.

    After the last sample the sequence is fed once more, so that ``on_forward`` (called after each
    forward pass) sees every token of the returned sequences exactly once.
    """
    model, dev = bundle.model, bundle.device
    gen = torch.Generator().manual_seed(int(seed))
    start = start_token_id(bundle.tokenizer)
    out_rows = []
    for lo in range(0, n_seq, batch):
        b = min(batch, n_seq - lo)
        ids = torch.full((b, 1), start, dtype=torch.long, device=dev)
        step_in, cache, rows = ids, None, [ids.cpu()]
        for t in range(n_new + 1):
            out = model(input_ids=step_in, cache=cache, use_cache=True)
            cache = out.cache
            if on_forward is not None:
                on_forward()
            if t == n_new:
                break
            logits = out.logits[:, -1].float().cpu()
            if top_k:
                vals, idx = logits.topk(top_k, dim=-1)
                choice = torch.multinomial(torch.softmax(vals, -1), 1, generator=gen)
                nxt = idx.gather(1, choice)
            else:
                nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)
            rows.append(nxt)
            step_in = nxt.to(dev)
            if progress is not None:
                progress.update(b)
        out_rows.append(torch.cat(rows, 1))
    return torch.cat(out_rows, 0)


def context_texts(bundle: ModelBundle, lengths: tuple[tuple[int, int], ...], seed: int, top_k: int = 5,
                  use_cache: bool = True) -> list[str]:
    """Short model-generated texts (``lengths`` = ((n_tokens, how_many), ...)), seeded and cached.

    As in the original, braces are blanked so that a text can be used as a template prefix."""
    lengths = tuple((int(a), int(b)) for a, b in lengths)
    key = "-".join(f"{a}x{b}" for a, b in lengths) or "none"
    path = rome_cache(bundle) / f"contexts-{key}-k{top_k}-seed{seed}.json"
    if use_cache and path.is_file():
        return list(json.loads(path.read_text())["texts"])
    texts: list[str] = []
    for i, (n_tok, n) in enumerate(lengths):
        if n <= 0:
            continue
        ids = sample_ids(bundle, n, n_tok, seed=seed * 1000 + i, top_k=top_k, batch=max(n, 1))
        for row in ids[:, 1:]:
            text = bundle.tokenizer.decode(row.tolist(), skip_special_tokens=True)
            texts.append(text.replace("{", " ").replace("}", " ").strip())
    if use_cache:
        atomic_write_json(path, {"texts": texts, "lengths": lengths, "top_k": top_k, "seed": seed,
                                 "model": bundle.identity, "source": "sampled from the model, start token "
                                 f"{start_token_id(bundle.tokenizer)}"})
    return texts


def dataset_ids(tokenizer, path: str | Path, n_tokens: int, seq_len: int) -> torch.Tensor:
    """Token ids of a local text dataset, concatenated (EOS-separated) and cut into ``seq_len`` rows."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"statistics dataset {path} does not exist; pass a local .txt/.json/.jsonl/.parquet/.csv "
                        "file with a 'text' column, or use the default corpus sampled from the model ('model')")
    import datasets

    builder = {".txt": "text", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}.get(path.suffix)
    if builder is None:
        raise DataError(f"statistics dataset {path}: unsupported file type {path.suffix!r}")
    datasets.disable_progress_bars()
    ds = datasets.load_dataset(builder, data_files=str(path), split="train")
    if "text" not in ds.column_names:
        raise DataError(f"statistics dataset {path} has no 'text' column (columns: {ds.column_names})")
    sep = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else start_token_id(tokenizer)
    flat: list[int] = []
    need = n_tokens
    for text in ds["text"]:
        if text and text.strip():
            flat.extend(tokenizer(text, add_special_tokens=False)["input_ids"] + [sep])
        if len(flat) >= need:
            break
    n_rows = len(flat) // seq_len
    if n_rows == 0:
        raise DataError(f"statistics dataset {path} holds only {len(flat)} tokens; need at least {seq_len}")
    if len(flat) < n_tokens:
        import warnings

        warnings.warn(f"statistics dataset {path} holds {len(flat)} tokens, fewer than the {n_tokens} asked for",
                      stacklevel=2)
    arr = np.asarray(flat[: n_rows * seq_len], dtype=np.int64).reshape(n_rows, seq_len)
    return torch.from_numpy(arr)
