"""Run a model from a cached residual stream: blocks l..L−1 only, logits only where they are read.

One unedited forward records, for every block, its input hidden state and the other arguments the
model passed it (attention mask, rotary position embeddings, position ids, ...), via forward
pre-hooks.  :func:`run_from` then re-runs blocks ``layer..L−1`` from block ``layer``'s recorded input
with those same arguments, which works unchanged for every family (GPT-2, GPT-J, GPT-NeoX, Llama),
and :func:`logits_at_positions` applies the final norm and unembedding only to the gathered positions.
Valid while the weights of blocks < ``layer`` are unchanged (a ROME edit at ``layer`` keeps them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from causaleval.models import ModelBundle
from causaleval.sites import get_module


@dataclass
class BlockInputs:
    """Per block: the input hidden state and the other positional / keyword arguments."""

    hidden: list[torch.Tensor]
    args: list[tuple]
    kwargs: list[dict]


def _blocks(bundle: ModelBundle) -> list[torch.nn.Module]:
    return [get_module(bundle.model, bundle.family.layer_path(l)) for l in range(bundle.n_layers)]


@torch.no_grad()
def capture_block_inputs(bundle: ModelBundle, input_ids: torch.Tensor,
                         attention_mask: torch.Tensor | None) -> tuple[BlockInputs, torch.Tensor]:
    """One forward of the base model; returns every block's inputs and the last block's output."""
    blocks = _blocks(bundle)
    n = len(blocks)
    hidden: list = [None] * n
    args: list = [None] * n
    kwargs: list = [None] * n
    handles = []
    for i, block in enumerate(blocks):
        def pre(_mod, a, kw, i=i):
            kw = dict(kw)
            if a:
                hidden[i], args[i] = a[0].detach(), tuple(a[1:])
            else:
                hidden[i], args[i] = kw.pop("hidden_states").detach(), ()
            kwargs[i] = kw
        handles.append(block.register_forward_pre_hook(pre, with_kwargs=True))
    last: dict = {}

    def post(_mod, _inp, out):
        last["h"] = (out[0] if isinstance(out, tuple) else out).detach()

    handles.append(blocks[-1].register_forward_hook(post))
    try:
        bundle.model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return BlockInputs(hidden=hidden, args=args, kwargs=kwargs), last["h"]


def run_from(bundle: ModelBundle, cache: BlockInputs, layer: int, hidden: torch.Tensor | None = None) -> torch.Tensor:
    """The last block's output, running only blocks ``layer..L−1`` from the cached input of ``layer``."""
    blocks = _blocks(bundle)
    h = cache.hidden[layer] if hidden is None else hidden
    for i in range(layer, len(blocks)):
        out = blocks[i](h, *cache.args[i], **cache.kwargs[i])
        h = out[0] if isinstance(out, tuple) else out
    return h


def logits_at_positions(bundle: ModelBundle, last_hidden: torch.Tensor, rows: torch.Tensor,
                        cols: torch.Tensor) -> torch.Tensor:
    """Final norm and unembedding at (rows[i], cols[i]) only: shape (len(rows), vocab)."""
    norm = get_module(bundle.model, bundle.family.final_norm)
    return bundle.model.get_output_embeddings()(norm(last_hidden[rows, cols]))
