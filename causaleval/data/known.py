"""The known-facts filter (docs/design.md#facts; Hase et al. 2023 keep facts whose answer the model generates).

A case is *known* when the first token of `` target_true`` is the model's top-1 next token after the
prompt.  Every case gets ``p_true`` (probability of that first token), ``clean_top1`` (the decoded
top-1 token) and ``known``.
"""

from __future__ import annotations

import pandas as pd
import torch
from tqdm.auto import tqdm

from causaleval.data.counterfact import Fact
from causaleval.data.tokens import answer_ids, encode_prompt, pad_batch
from causaleval.model.loading import ModelBundle, logits_at


@torch.no_grad()
def next_token_logits(bundle: ModelBundle, sequences: list[list[int]], batch_size: int = 64) -> torch.Tensor:
    """Logits of the next token after each sequence (right-padded batches), shape (n, vocab)."""
    out = []
    for i in range(0, len(sequences), batch_size):
        ids, mask, last = pad_batch(sequences[i:i + batch_size], bundle.tokenizer.pad_token_id, bundle.device)
        out.append(logits_at(bundle, ids, mask, last).float().cpu())
    return torch.cat(out)


def known_filter(bundle: ModelBundle, facts: list[Fact], batch_size: int = 64,
                 progress: bool = True) -> pd.DataFrame:
    """One row per fact: case_id, relation_id, p_true, clean_top1, clean_top1_id, true_first_id, known."""
    tok = bundle.tokenizer
    seqs = [list(encode_prompt(tok, f.prompt, f.subject, f.case_id).input_ids) for f in facts]
    rows = []
    chunks = range(0, len(facts), batch_size)
    for i in tqdm(chunks, desc="known-facts filter", disable=not progress):
        logits = next_token_logits(bundle, seqs[i:i + batch_size], batch_size)
        probs = logits.softmax(-1)
        for f, p in zip(facts[i:i + batch_size], probs):
            first = answer_ids(tok, f.target_true)[0]
            top = int(p.argmax())
            rows.append({"case_id": f.case_id, "relation_id": f.relation_id, "p_true": float(p[first]),
                         "clean_top1": tok.decode([top]), "clean_top1_id": top, "true_first_id": first,
                         "known": top == first})
    return pd.DataFrame(rows)
