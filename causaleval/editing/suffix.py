"""Run a model from a cached residual stream: blocks l..L−1 only, logits only where they are read.

One unedited forward records, for every block, its input hidden state and the other arguments the
model passed it (attention mask, rotary position embeddings, position ids, ...), via forward
pre-hooks.  :func:`run_from` then re-runs blocks ``layer..L−1`` from block ``layer``'s recorded input
with those same arguments, which works unchanged for every family (GPT-2, GPT-J, GPT-NeoX, Llama),
and :func:`logits_at_positions` applies the final norm and unembedding only to the gathered positions.
Valid while the weights of blocks < ``layer`` are unchanged (a ROME edit at ``layer`` keeps them).

:func:`capture_window` goes further for the v* optimisation (docs/design.md#rome): δ enters at the subject's last
token, so with causal attention nothing before that token changes.  It keeps the full forward's
key/value cache, and :meth:`SuffixWindow.run` re-runs blocks ``layer..L−1`` only on each row's
positions from its subject's last token on, attending to the cached keys/values of the positions
before it (:mod:`causaleval.model.kvcache`).  Exact; it cuts the tokens per step about three-fold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from causaleval.model.kvcache import (BlockCalls, block_input, output_cache, prefix_cache, record_block_calls,
                                      take_rows)
from causaleval.model.loading import ModelBundle, head_logits, softcap
from causaleval.model.sites import get_module


@dataclass
class BlockInputs:
    """Per block: the input hidden state and the other positional / keyword arguments."""

    hidden: list[torch.Tensor]
    args: list[tuple]
    kwargs: list[dict]

    def select(self, rows: torch.Tensor) -> "BlockInputs":
        """The same inputs restricted to batch rows ``rows`` (:func:`~causaleval.model.kvcache.take_rows`)."""
        n = self.hidden[0].shape[0]
        return BlockInputs(hidden=[h[rows] for h in self.hidden],
                           args=[tuple(take_rows(a, rows, n) for a in args) for args in self.args],
                           kwargs=[{k: take_rows(v, rows, n) for k, v in kw.items()} for kw in self.kwargs])


def _blocks(bundle: ModelBundle) -> list[torch.nn.Module]:
    return [get_module(bundle.model, bundle.family.layer_path(l)) for l in range(bundle.n_layers)]


@torch.no_grad()
def capture_block_inputs(bundle: ModelBundle, input_ids: torch.Tensor,
                         attention_mask: torch.Tensor | None) -> tuple[BlockInputs, torch.Tensor]:
    """One forward of the base model; returns every block's inputs and the last block's output."""
    calls, last, _ = record_block_calls(bundle, input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    hidden = [block_input(c) for c in calls]
    args = [a[1:] for a, _ in calls]
    kwargs = [{k: v for k, v in kw.items() if k != "hidden_states"} for _, kw in calls]
    return BlockInputs(hidden=hidden, args=args, kwargs=kwargs), last


def run_from(bundle: ModelBundle, cache: BlockInputs, layer: int, hidden: torch.Tensor | None = None) -> torch.Tensor:
    """The last block's output, running only blocks ``layer..L−1`` from the cached input of ``layer``."""
    blocks = _blocks(bundle)
    h = cache.hidden[layer] if hidden is None else hidden
    for i in range(layer, len(blocks)):
        out = blocks[i](h, *cache.args[i], **cache.kwargs[i])
        h = out[0] if isinstance(out, tuple) else out
    return h


VOCAB_SLICE = 2048


def logits_at_positions(bundle: ModelBundle, last_hidden: torch.Tensor, rows: torch.Tensor,
                        cols: torch.Tensor) -> torch.Tensor:
    """Final norm and unembedding at (rows[i], cols[i]) only: shape (len(rows), vocab).

    On CPU the unembedding runs in vocabulary slices of ``VOCAB_SLICE`` rows of the weight: for the
    handful of positions a ROME loss reads, BLAS runs one (vocab × d) product about twice as slowly
    as cache-sized slices (measured: about 10 % of a v* optimisation on SmolLM2)."""
    return unembed(bundle, last_hidden[rows, cols])


def unembed(bundle: ModelBundle, hidden: torch.Tensor) -> torch.Tensor:
    """Final norm and unembedding of (n, d) last-block outputs: (n, vocab) logits (CPU: in vocabulary
    slices, see :func:`logits_at_positions`), soft-capped where the model caps its logits."""
    hidden = get_module(bundle.model, bundle.family.final_norm)(hidden)
    head = bundle.model.get_output_embeddings()
    if hidden.device.type != "cpu" or not isinstance(head, torch.nn.Linear):
        return head_logits(bundle.model, hidden)
    weights = head.weight.split(VOCAB_SLICE)
    biases = head.bias.split(VOCAB_SLICE) if head.bias is not None else [None] * len(weights)
    return softcap(bundle.model, torch.cat([torch.nn.functional.linear(hidden, w, b)
                                            for w, b in zip(weights, biases)], -1))


@dataclass
class SuffixWindow:
    """Row r's positions ``starts[r] … ends[r]−1``, padded to a common width S, to be re-run after the cached keys/values of that row's positions < ``starts[r]``.
    ``hidden[l]`` is the (R, S, d) input of block l there (``hidden[L]`` the last block's output);
    :meth:`column` maps a position to its window column."""

    starts: torch.Tensor
    ends: torch.Tensor
    hidden: list[torch.Tensor]
    calls: BlockCalls
    cache: object
    width: int
    rows: torch.Tensor | None = None     # the rows of ``cache`` this window's rows are (None: all, in order)

    def run(self, layer: int, hidden: torch.Tensor | None = None) -> torch.Tensor:
        """The last block's (R, S, d) output over the window, running blocks ``layer..L−1`` only, from
        ``hidden`` (default: the cached input of block ``layer``)."""
        hidden = self.hidden[layer] if hidden is None else hidden
        rows = torch.arange(self.starts.shape[0], device=self.starts.device) if self.rows is None else self.rows
        return self.calls.run(layer, hidden, prefix_cache(self.cache, self.width, rows))

    def select(self, rows: torch.Tensor) -> "SuffixWindow":
        """The window of rows ``rows`` only (same width; the cache is shared, not copied)."""
        base = torch.arange(self.starts.shape[0], device=self.starts.device) if self.rows is None else self.rows
        return SuffixWindow(starts=self.starts[rows], ends=self.ends[rows], hidden=[h[rows] for h in self.hidden],
                            calls=self.calls.select(rows), cache=self.cache, width=self.width, rows=base[rows])

    def column(self, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        cols = positions - self.starts[rows]
        if bool((cols < 0).any()) or bool((positions >= self.ends[rows]).any()):
            raise ValueError("a read position lies outside its row's window")
        return cols


@torch.no_grad()
def record_forward(bundle: ModelBundle, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor | None) -> tuple[list[torch.Tensor], object]:
    """One forward keeping the key/value cache: every block's input plus the last block's output
    (L + 1 hidden states, each (R, T, d)) and the cache."""
    calls, last, out = record_block_calls(bundle, input_ids=input_ids, attention_mask=attention_mask, use_cache=True)
    return [block_input(c) for c in calls] + [last], output_cache(out)


@torch.no_grad()
def window_after(bundle: ModelBundle, hidden: list[torch.Tensor], cache, input_ids: torch.Tensor,
                 attention_mask: torch.Tensor | None, starts: torch.Tensor,
                 ends: torch.Tensor | None = None, rows: torch.Tensor | None = None) -> SuffixWindow:
    """The window of positions ``starts[r] ≤ p < ends[r]`` (default: to the row's end) of right-padded
    rows, from a :func:`record_forward` of them.  With ``rows``, only those rows of ``hidden`` and ``cache``
    (``input_ids``, ``attention_mask``, ``starts`` and ``ends`` then describe just them): the window is
    then only as wide as these rows need."""
    n_rows, length = input_ids.shape
    device = input_ids.device
    source = torch.arange(n_rows, device=device) if rows is None else rows.to(device)
    lengths = (attention_mask.sum(1) if attention_mask is not None
               else torch.full((n_rows,), length, device=device))
    starts = starts.to(device)
    ends = lengths if ends is None else ends.to(device)
    if bool((starts < 0).any()) or bool((ends <= starts).any()) or bool((ends > lengths).any()):
        raise ValueError("every window must be non-empty and lie inside its row")
    width = int(starts.max())
    span = int((ends - starts).max())
    positions = starts[:, None] + torch.arange(span, device=device)[None]
    valid = positions < ends[:, None]
    positions = torch.minimum(positions, ends[:, None] - 1)   # padding repeats the last position
    mask = torch.cat([torch.arange(width, device=device)[None] < starts[:, None], valid], 1).long()
    calls = BlockCalls(bundle, prefix_cache(cache, width, source), input_ids=input_ids.gather(1, positions),
                       attention_mask=mask, position_ids=positions)
    return SuffixWindow(starts=starts, ends=ends, hidden=[h[source[:, None], positions] for h in hidden], calls=calls,
                        cache=cache, width=width, rows=None if rows is None else source)


def span_buckets(spans: Sequence[int], overhead: int = 16) -> list[list[int]]:
    """Rows grouped so that padding to each group's widest window costs least: the optimal partition of
    the rows sorted by span (dynamic programming) under cost = Σ_groups (rows · widest span + ``overhead``),
    ``overhead`` being the fixed cost of one more pass through the blocks in tokens' worth of work.

    Padding every row to the widest window wastes about half the work in a batch that mixes templates
    (a KL prompt's window is one token, a prompt with the subject first has ten); a separate pass per
    distinct width wastes the per-call overhead instead."""
    order = sorted(range(len(spans)), key=lambda i: spans[i])
    s = [int(spans[i]) for i in order]
    best, cut = [0.0] + [float("inf")] * len(s), [0] * (len(s) + 1)
    for i in range(1, len(s) + 1):
        for j in range(i):
            cost = best[j] + overhead + (i - j) * s[i - 1]
            if cost < best[i]:
                best[i], cut[i] = cost, j
    groups, i = [], len(s)
    while i > 0:
        groups.append(sorted(order[cut[i]:i]))
        i = cut[i]
    return groups[::-1]


def capture_window(bundle: ModelBundle, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                   starts: torch.Tensor, ends: torch.Tensor | None = None) -> tuple[SuffixWindow, torch.Tensor]:
    """:func:`record_forward` then :func:`window_after`; also returns the last block's (R, T, d) output."""
    hidden, cache = record_forward(bundle, input_ids, attention_mask)
    return window_after(bundle, hidden, cache, input_ids, attention_mask, starts, ends), hidden[-1]
