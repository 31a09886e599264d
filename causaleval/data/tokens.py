"""Token positions by role and batch encoding (docs/estimands.md).

Roles: ``subject_first``, ``subject_middle``, ``subject_last``, ``after_subject`` (the first token
after the subject; the last token if none), ``last`` (the read-out position), and ``subject``
(all subject tokens, for corruption).  Prompts are right-padded so that absolute positions of
real tokens never move.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from causaleval.errors import SiteError

ROLES: tuple[str, ...] = ("subject_first", "subject_middle", "subject_last", "after_subject", "last")


@dataclass(frozen=True)
class Encoded:
    """One prompt with a located subject span [subject_start, subject_end)."""

    text: str
    input_ids: tuple[int, ...]
    subject_start: int
    subject_end: int

    @property
    def length(self) -> int:
        return len(self.input_ids)

    def position(self, role: str) -> int:
        """Token index of a role (docs/estimands.md)."""
        s, e = self.subject_start, self.subject_end
        if role == "subject_first":
            return s
        if role == "subject_last":
            return e - 1
        if role == "subject_middle":
            return s + (e - s - 1) // 2
        if role == "after_subject":
            return min(e, self.length - 1)
        if role == "last":
            return self.length - 1
        raise SiteError(f"unknown token role {role!r}; choose one of {ROLES}")

    def role_of(self, pos: int) -> str:
        """The role of a token index: subject roles, ``further_tokens`` between subject and the end, ``last``."""
        if pos == self.length - 1:
            return "last"
        if pos < self.subject_start:
            return "before_subject"
        if pos < self.subject_end:
            if pos == self.subject_end - 1:
                return "subject_last"
            return "subject_first" if pos == self.subject_start else "subject_middle"
        return "after_subject" if pos == self.subject_end else "further_tokens"


def encode_prompt(tokenizer, template: str, subject: str, case_id: object = None) -> Encoded:
    """Tokenise ``template.format(subject)`` and locate the subject's tokens.

    Uses character offsets where the tokenizer provides them, else the prefix-length rule of the
    ROME reference code.  A template without ``{}`` or a subject that cannot be located is an error
    naming the case.
    """
    where = f"case {case_id}: " if case_id is not None else ""
    if "{}" not in template:
        raise SiteError(f"{where}prompt {template!r} has no '{{}}' placeholder for the subject {subject!r}")
    if not subject:
        raise SiteError(f"{where}empty subject in prompt {template!r}")
    text = template.replace("{}", subject, 1)
    char_start = template.index("{}")
    char_end = char_start + len(subject)
    enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=getattr(tokenizer, "is_fast", False))
    ids = list(enc["input_ids"])
    if "offset_mapping" in enc:
        toks = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if b > a and a < char_end and b > char_start]
    else:
        prefix = tokenizer(text[:char_start], add_special_tokens=True)["input_ids"]
        upto = tokenizer(text[:char_end], add_special_tokens=True)["input_ids"]
        toks = list(range(len(prefix), len(upto)))
    if not toks:
        raise SiteError(f"{where}subject {subject!r} not found among the tokens of {text!r}")
    return Encoded(text=text, input_ids=tuple(ids), subject_start=toks[0], subject_end=toks[-1] + 1)


def answer_ids(tokenizer, answer: str) -> list[int]:
    """Token ids of an answer continuing a prompt (a leading space, no special tokens)."""
    ids = tokenizer(" " + answer.strip(), add_special_tokens=False)["input_ids"]
    if not ids:
        raise SiteError(f"answer {answer!r} tokenises to nothing")
    return list(ids)


def pad_batch(sequences: list[list[int]] | list[tuple[int, ...]], pad_id: int, device=None):
    """Right-pad token sequences; returns (input_ids, attention_mask, last_index)."""
    if not sequences:
        raise ValueError("pad_batch needs at least one sequence")
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    last = mask.sum(1) - 1
    return ids.to(device), mask.to(device), last.to(device)


def context_length(config) -> int | None:
    """The model's maximum sequence length from its HF config (None when it states none)."""
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_prompt_lengths(tokenizer, facts, limit: int | None, reserve: int = 32) -> None:
    """Reject, by case and field, any prompt whose tokens plus ``reserve`` exceed the model's context ``limit``.

    ``reserve`` leaves room for the answer tokens and ROME's context prefix (Meng et al. 2022), so a
    fact that passes here never overflows the position embeddings in a later stage.
    """
    if limit is None:
        return
    from causaleval.errors import DataError

    texts, where = [], []
    for f in facts:
        for name, prompts in (("prompt", [f.prompt]), ("paraphrase_prompts", f.paraphrase_prompts),
                              ("neighborhood_prompts", f.neighborhood_prompts)):
            for p in prompts:
                texts.append(p.replace("{}", f.subject, 1) if name == "prompt" else p)
                where.append((f.case_id, name))
    if not texts:
        return
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]
    for n, (case_id, name) in zip(lengths, where):
        if n + reserve > limit:
            raise DataError(f"case_id {case_id}: field '{name}' is {n:,} tokens; with {reserve} tokens for the answer "
                            f"and ROME's context text it exceeds the model's context of {limit:,} tokens. "
                            "Shorten or drop this record")
