"""Gaussian noise on the subject's token embeddings during an edit or its scoring (Fact Forcing,
Hase et al. 2023, §3.3), drawn as noise tracing draws it (Meng et al. 2022): ε ~ N(0, ν²I) on each
subject token, ν the trace stage's scale.

A :class:`SubjectNoise` turns each row's subject span and key into one (rows, T, d) tensor; every
row's generator is seeded by (seed, key), so a row's noise does not depend on which rows share its
batch (batched edits equal one-at-a-time edits).  :func:`embeddings_plus` adds such a tensor to the
input embeddings of the forward passes run inside it.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from causaleval.model.loading import ModelBundle
from causaleval.patching.core import draw_seed


@dataclass(frozen=True)
class SubjectNoise:
    """ν (the trace stage's noise scale) and the seed of the draws."""

    nu: float
    seed: int = 0

    def tensor(self, spans: Sequence[tuple[int, int] | None], keys: Sequence[tuple], length: int, d_model: int,
               device=None) -> torch.Tensor:
        """(rows, length, d) noise: row r gets ν·N(0, I) on tokens spans[r] = [start, end) (none if None),
        its generator seeded by (seed, *keys[r])."""
        out = torch.zeros(len(spans), length, d_model)
        for r, (span, key) in enumerate(zip(spans, keys)):
            if span is None:
                continue
            start, end = span
            gen = torch.Generator().manual_seed(draw_seed(self.seed, *key))
            out[r, start:end] = self.nu * torch.randn(end - start, d_model, generator=gen)
        return out.to(device) if device is not None else out


def subject_span(tokenizer, text: str, subject: str) -> tuple[int, int] | None:
    """Token span [start, end) of the first occurrence of ``subject`` in ``text`` (None if absent)."""
    from causaleval.data.tokens import encode_prompt
    from causaleval.errors import SiteError

    if not subject or subject not in text or "{}" in text:
        return None
    try:
        enc = encode_prompt(tokenizer, text.replace(subject, "{}", 1), subject)
    except SiteError:
        return None
    return enc.subject_start, enc.subject_end


def d_model(bundle: ModelBundle) -> int:
    return int(bundle.model.get_input_embeddings().weight.shape[1])


@contextmanager
def embeddings_plus(bundle: ModelBundle, noise: torch.Tensor | None) -> Iterator[None]:
    """Inside: every forward's input embeddings get ``noise`` (rows, T, d) added (None: nothing).  A
    forward whose input has another shape is refused (the noise belongs to one batch)."""
    if noise is None:
        yield
        return

    def hook(_m, inp, out):
        if tuple(out.shape[:2]) != tuple(noise.shape[:2]):
            raise ValueError(f"subject noise of shape {tuple(noise.shape[:2])} for a batch of {tuple(out.shape[:2])}")
        return out + noise.to(device=out.device, dtype=out.dtype)

    handle = bundle.model.get_input_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
