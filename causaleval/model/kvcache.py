"""Re-running blocks on a suffix of positions after a cached prefix (exact under causal attention).

With causal attention nothing at positions ≥ p changes a state at positions < p.  An intervention that
starts at position p — an activation patch (docs/estimands.md) or ROME's δ at the subject's last token (docs/design.md#rome)
— therefore needs the blocks re-run only on positions ≥ p, attending to the cached keys/values of the
positions before p.  Blocks are called directly with the arguments the model itself passes them
(attention mask, rotary embeddings, position ids, the cache), captured once by forward pre-hooks from a
forward pass over the suffix, so one code path serves every family of :mod:`causaleval.model.sites`.
"""

from __future__ import annotations

import copy
import inspect
from typing import Sequence

import torch

from causaleval.errors import SiteError
from causaleval.model.loading import ModelBundle
from causaleval.model.sites import get_module


def cache_keyword(model: torch.nn.Module) -> str:
    """The keyword a base model takes its key/value cache by: ``cache`` (transformers ≥ 5) or
    ``past_key_values`` (earlier)."""
    params = inspect.signature(model.base_model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def output_cache(output):
    """The key/value cache of a base model's output (either attribute name)."""
    return output.cache if hasattr(output, "cache") else output.past_key_values


def prefix_cache(cache, upto: int, rows: torch.Tensor, counts: Sequence[int] | None = None):
    """A copy of a key/value cache keeping positions < ``upto`` of ``rows`` (at layer l only the first
    ``counts[l]`` of them); the original is untouched (its tensors are sliced, never written).

    A sliding-window layer (Gemma 3, Mistral-style ``DynamicSlidingWindowLayer``) also counts the tokens
    it has seen (``cumulative_length``, which sets its attention mask and what it keeps): it is set to
    ``upto``.  Once a prompt reaches the window such a layer has dropped its oldest positions, so a
    prefix can no longer be cut from it: that is an error (:func:`check_sliding_window`)."""
    check_sliding_window(cache)
    new = copy.copy(cache)
    new.layers = []
    for l, layer in enumerate(cache.layers):
        layer = copy.copy(layer)
        if getattr(layer, "is_initialized", True) and getattr(layer, "keys", None) is not None:
            r = rows if counts is None else rows[:max(counts[l], 1)]
            layer.keys, layer.values = layer.keys[r, :, :upto], layer.values[r, :, :upto]
            if hasattr(layer, "cumulative_length"):
                layer.cumulative_length = layer.keys.shape[-2]
        new.layers.append(layer)
    return new


def check_sliding_window(cache) -> None:
    """A clear error when a sliding-window layer of ``cache`` no longer holds every position seen."""
    for l, layer in enumerate(cache.layers):
        seen = getattr(layer, "cumulative_length", None)
        keys = getattr(layer, "keys", None)
        if seen is not None and keys is not None and getattr(layer, "is_initialized", True) \
                and keys.shape[-2] < seen:
            raise SiteError(
                f"a prompt of {seen} tokens reaches the sliding attention window of layer {l} "
                f"({layer.sliding_window} tokens): its key/value cache keeps only the last "
                f"{keys.shape[-2]} positions, so patching and ROME cannot re-run a suffix after it. "
                f"Use prompts of at most {keys.shape[-2]} tokens with this model")


@torch.no_grad()
def record_block_calls(bundle: ModelBundle, **model_kwargs) -> tuple[list[tuple[tuple, dict]], torch.Tensor, object]:
    """One forward of the base model recording the (args, kwargs) each block is called with; returns
    them, the last block's output and the model's output."""
    blocks = [get_module(bundle.model, bundle.family.layer_path(l)) for l in range(bundle.n_layers)]
    calls: list = [None] * len(blocks)
    last: list = [None]
    handles = []
    for l, block in enumerate(blocks):
        def pre(_m, args, kwargs, l=l):
            calls[l] = (tuple(args), dict(kwargs))
        handles.append(block.register_forward_pre_hook(pre, with_kwargs=True))
    handles.append(blocks[-1].register_forward_hook(
        lambda _m, _i, out: last.__setitem__(0, out[0] if isinstance(out, tuple) else out)))
    try:
        output = bundle.model.base_model(**model_kwargs)
    finally:
        for h in handles:
            h.remove()
    return calls, last[0], output


def block_input(call: tuple[tuple, dict]) -> torch.Tensor:
    """The hidden state a recorded block call received (first positional or ``hidden_states``)."""
    args, kwargs = call
    return args[0] if args else kwargs["hidden_states"]


class BlockCalls:
    """The (args, kwargs) the model passes each block in a forward pass over a suffix after ``cache``.

    :meth:`call` and :meth:`run` replay blocks on new hidden states; pass a fresh copy of the prefix
    cache (:func:`prefix_cache`) each time, since every block call appends to it."""

    def __init__(self, bundle: ModelBundle, cache, **model_kwargs):
        self.bundle = bundle
        self.template = cache
        self.calls, _, _ = record_block_calls(bundle, **model_kwargs, **{cache_keyword(bundle.model): cache},
                                              use_cache=True)

    def call(self, layer: int, hidden: torch.Tensor, cache) -> torch.Tensor:
        """Block ``layer`` on ``hidden`` with ``cache`` standing in for the captured cache."""
        args, kwargs = self.calls[layer]
        swap = lambda v: cache if v is self.template else v  # noqa: E731
        kwargs = {k: swap(v) for k, v in kwargs.items()}
        if args:
            args = (hidden,) + tuple(swap(a) for a in args[1:])
        else:
            kwargs["hidden_states"] = hidden
        out = get_module(self.bundle.model, self.bundle.family.layer_path(layer))(*args, **kwargs)
        return out[0] if isinstance(out, tuple) else out

    def run(self, first: int, hidden: torch.Tensor, cache) -> torch.Tensor:
        """The last block's output, running blocks ``first..L−1`` from ``hidden`` (the input of ``first``)."""
        for layer in range(first, self.bundle.n_layers):
            hidden = self.call(layer, hidden, cache)
        return hidden

    def select(self, rows: torch.Tensor) -> "BlockCalls":
        """The same calls restricted to batch rows ``rows``: every recorded tensor argument with a row
        dimension (two or more dimensions, the first of the batch's size: attention mask, position ids,
        rotary embeddings) is indexed by ``rows``; the rest (flags, 1-D cache positions) is shared."""
        n = block_input(self.calls[0]).shape[0]
        new = copy.copy(self)
        new.calls = [(tuple(take_rows(a, rows, n) for a in args), {k: take_rows(v, rows, n) for k, v in kw.items()})
                     for args, kw in self.calls]
        return new


def take_rows(value, rows: torch.Tensor, n: int):
    """``value`` (a recorded block argument) restricted to batch rows ``rows`` of a batch of ``n``: a tensor
    with a row dimension (two or more dimensions, the first of size ``n``) is indexed, tuples are mapped,
    anything else (flags, 1-D cache positions, a rotary table broadcast over rows) is shared."""
    if torch.is_tensor(value) and value.dim() >= 2 and value.shape[0] == n:
        return value[rows]
    return tuple(take_rows(x, rows, n) for x in value) if isinstance(value, tuple) else value
