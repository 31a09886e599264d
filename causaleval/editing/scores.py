"""Edit success scores (docs/design.md#edit-scores), on probabilities of the full target string.

p(o | prompt) = Π_j p(o_j | prompt, o_<j) (teacher forcing; o tokenised by ``tokens.answer_ids``).
With p before / after the edit:

* rewrite score = (p_a(new) − p_b(new)) / (1 − p_b(new)) on the prompt (Hase et al. 2023);
* paraphrase score = the same, averaged over the paraphrase prompts;
* neighborhood score = mean over neighbourhood prompts s* of
  1 − |p_a(new | s*) − p_b(new | s*)| / (0.5 + |p_b(new | s*) − 0.5|) (Hase et al. 2023, §3.4): how far
  the edit spills the *new* target onto subjects it should leave alone (1 = not at all);
* ES = [p_a(new) > p_a(true)] on the prompt; PS = the share of paraphrases with it;
  NS = the share of neighbourhood prompts with p_a(true) > p_a(new) (Meng et al. 2022);
  magnitudes EM/PM/NM = mean p_a(new) − p_a(true) (NM: p_a(true) − p_a(new));
* S = harmonic mean of the dataset means of ES, PS, NS (:func:`summarise`).

A case without neighbourhood prompts (e.g. capitals in the built-in facts: no other country shares
a capital) has NaN neighborhood score, NS and NM; means skip NaN.  A rewrite score is NaN when
p_b(new) = 1.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from causaleval.data.counterfact import Fact
from causaleval.data.tokens import answer_ids, pad_batch
from causaleval.editing.suffix import BlockInputs, capture_block_inputs, logits_at_positions, run_from
from causaleval.model.loading import ModelBundle
from causaleval.model.sites import get_module

KINDS = ("prompt", "paraphrase", "neighborhood")


@dataclass
class Probes:
    """Teacher-forced sequences reading p(new) and p(true) for every evaluation prompt of a case.

    ``kind[i]`` names prompt i; read position r contributes log p(tokens[r]) at (rows[r], cols[r]) to
    entry (owner[r], target[r]) (target 0 = new, 1 = true)."""

    kind: list[str]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    tokens: torch.Tensor
    owner: torch.Tensor
    target: torch.Tensor
    texts: list = field(default_factory=list)     # the text of each prompt


def build_probes(bundle: ModelBundle, fact: Fact, max_neighbours: int | None = None, seed: int = 0) -> Probes:
    """Sequences for the prompt, its paraphrases and (up to ``max_neighbours``, seeded) neighbours.

    Each prompt gets ``prompt + target[:-1]`` per target; a sequence that is a prefix of the other
    (a one-token target) is not run twice."""
    tok = bundle.tokenizer
    targets = [answer_ids(tok, fact.target_new), answer_ids(tok, fact.target_true)]
    neighbours = list(fact.neighborhood_prompts)
    if max_neighbours is not None and len(neighbours) > max_neighbours:
        neighbours = random.Random(seed * 100003 + fact.case_id).sample(neighbours, max_neighbours)
    texts = [(fact.text, "prompt")] + [(p, "paraphrase") for p in fact.paraphrase_prompts] + \
        [(p, "neighborhood") for p in neighbours]
    seqs: list[list[int]] = []
    rows, cols, toks, owner, which = [], [], [], [], []
    for i, (text, _kind) in enumerate(texts):
        p_ids = list(tok(text, add_special_tokens=True)["input_ids"])
        cand = [p_ids + t[:-1] for t in targets]
        longer = 0 if len(cand[0]) >= len(cand[1]) else 1
        shared = cand[1 - longer] == cand[longer][: len(cand[1 - longer])]
        if shared:
            seq_of = {0: len(seqs), 1: len(seqs)}
            seqs.append(cand[longer])
        else:
            seq_of = {0: len(seqs), 1: len(seqs) + 1}
            seqs.extend(cand)
        for t in (0, 1):
            for j, tid in enumerate(targets[t]):
                rows.append(seq_of[t])
                cols.append(len(p_ids) - 1 + j)
                toks.append(tid)
                owner.append(i)
                which.append(t)
    ids, mask, _ = pad_batch(seqs, tok.pad_token_id, device=bundle.device)
    dev = bundle.device
    as_t = lambda x: torch.tensor(x, device=dev)  # noqa: E731
    return Probes([k for _, k in texts], ids, mask, as_t(rows), as_t(cols), as_t(toks), as_t(owner), as_t(which),
                  [t for t, _ in texts])


def concat_probes(parts: Sequence[Probes], pad_id: int) -> Probes:
    """The probes of several cases in one right-padded batch (rows and prompts numbered on)."""
    width = max(p.input_ids.shape[1] for p in parts)
    pad = lambda t, v: torch.nn.functional.pad(t, (0, width - t.shape[1]), value=v)  # noqa: E731
    row0 = np.cumsum([0] + [p.input_ids.shape[0] for p in parts])
    own0 = np.cumsum([0] + [len(p.kind) for p in parts])
    return Probes([k for p in parts for k in p.kind],
                  torch.cat([pad(p.input_ids, pad_id) for p in parts]), torch.cat([pad(p.attention_mask, 0) for p in parts]),
                  torch.cat([p.rows + int(r) for p, r in zip(parts, row0)]), torch.cat([p.cols for p in parts]),
                  torch.cat([p.tokens for p in parts]), torch.cat([p.owner + int(o) for p, o in zip(parts, own0)]),
                  torch.cat([p.target for p in parts]), [t for p in parts for t in p.texts])


def probs_from_hidden(bundle: ModelBundle, probes: Probes, last_hidden: torch.Tensor) -> np.ndarray:
    """(n_prompts, 2) probabilities [p(new), p(true)] of the full target strings."""
    logp = torch.log_softmax(logits_at_positions(bundle, last_hidden, probes.rows, probes.cols).double(), -1)
    tok_lp = logp.gather(1, probes.tokens[:, None]).squeeze(1)
    out = torch.zeros(len(probes.kind), 2, dtype=torch.float64, device=tok_lp.device)
    out.index_put_((probes.owner, probes.target), tok_lp, accumulate=True)
    return out.exp().cpu().numpy()


@dataclass
class PreparedProbes:
    """Probes of one or more cases with the unedited probabilities and the block inputs for re-running
    from any layer; case c owns prompts ``prompts[c]`` and sequence rows ``rows[c]``."""

    probes: Probes
    before: np.ndarray
    blocks: BlockInputs
    prompts: list[slice]
    rows: list[torch.Tensor]

    def kind(self, case: int) -> list[str]:
        return self.probes.kind[self.prompts[case]]


def probe_noise(bundle: ModelBundle, facts: Sequence[Fact], parts: Sequence[Probes], probes: Probes, noise,
                draw: int) -> torch.Tensor:
    """Subject noise for every probe sequence: on the fact's subject wherever its prompt contains it (the
    prompt and paraphrases; neighbourhood prompts have other subjects), seeded by (draw, case_id, prompt)
    so both targets of one prompt see the same noise (Hase et al. 2023 score Fact Forcing so)."""
    from causaleval.editing.noise import d_model, subject_span

    seq_prompt: dict[int, int] = {}
    for r, o in zip(probes.rows.tolist(), probes.owner.tolist()):
        seq_prompt.setdefault(r, o)
    prompt_case = [c for c, p in enumerate(parts) for _ in p.kind]
    own0 = np.cumsum([0] + [len(p.kind) for p in parts])
    spans, keys = [], []
    for r in range(probes.input_ids.shape[0]):
        o = seq_prompt[r]
        c = prompt_case[o]
        spans.append(subject_span(bundle.tokenizer, probes.texts[o], facts[c].subject))
        keys.append(("score", int(draw), int(facts[c].case_id), int(o - own0[c])))
    return noise.tensor(spans, keys, probes.input_ids.shape[1], d_model(bundle), probes.input_ids.device)


@torch.no_grad()
def prepare_probes(bundle: ModelBundle, facts: Fact | Sequence[Fact], max_neighbours: int | None = None,
                   seed: int = 0, layers: Sequence[int] | None = None, noise=None, draw: int = 0) -> PreparedProbes:
    """Probes of ``facts`` (one or several) in one batch and one unedited forward; keeps the block inputs
    of ``layers`` only (default: every layer), the layers :func:`probs_after` may start from.  With
    ``noise`` (a :class:`~causaleval.editing.noise.SubjectNoise`) the subject is noised (draw ``draw``)
    in that forward, so the before and after probabilities both read the noised prompts."""
    from causaleval.editing.noise import embeddings_plus

    facts = [facts] if isinstance(facts, Fact) else list(facts)
    parts = [build_probes(bundle, f, max_neighbours, seed) for f in facts]
    probes = concat_probes(parts, bundle.tokenizer.pad_token_id)
    extra = probe_noise(bundle, facts, parts, probes, noise, draw) if noise is not None else None
    with embeddings_plus(bundle, extra):
        blocks, last = capture_block_inputs(bundle, probes.input_ids, probes.attention_mask)
    if layers is not None:
        blocks.hidden = [h if l in set(layers) else None for l, h in enumerate(blocks.hidden)]
    own0 = np.cumsum([0] + [len(p.kind) for p in parts])
    row0 = np.cumsum([0] + [p.input_ids.shape[0] for p in parts])
    return PreparedProbes(probes, probs_from_hidden(bundle, probes, last), blocks,
                          [slice(int(a), int(b)) for a, b in zip(own0[:-1], own0[1:])],
                          [torch.arange(int(a), int(b), device=bundle.device) for a, b in zip(row0[:-1], row0[1:])])


@torch.no_grad()
def probs_after(bundle: ModelBundle, prepared: PreparedProbes, layer: int,
                delta_ws: Sequence[torch.Tensor] | None = None) -> np.ndarray:
    """Probabilities after edits at ``layer``, running only blocks ``layer``..L−1: with the model as it is
    (an edit applied to its weights), or with ``delta_ws[c]`` (out × in) added to the down-projection of
    ``layer`` for case c's rows only, i.e. W k + ΔW_c k (many cases' edits evaluated in one batch)."""
    if delta_ws is None:
        return probs_from_hidden(bundle, prepared.probes, run_from(bundle, prepared.blocks, layer))
    if len(delta_ws) != len(prepared.rows):
        raise ValueError(f"{len(delta_ws)} edits for {len(prepared.rows)} cases")

    def hook(_m, inp, out):
        for rows, dw in zip(prepared.rows, delta_ws):
            out.index_add_(0, rows, inp[0][rows] @ dw.to(out.dtype).T)
        return out
    handle = get_module(bundle.model, bundle.family.module_path("down_proj", layer)).register_forward_hook(hook)
    try:
        return probs_from_hidden(bundle, prepared.probes, run_from(bundle, prepared.blocks, layer))
    finally:
        handle.remove()


@dataclass
class EditScores:
    rewrite_score: float
    paraphrase_score: float
    neighborhood_score: float
    es: float
    ps: float
    ns: float
    es_magnitude: float
    ps_magnitude: float
    ns_magnitude: float
    p_before_new: float
    p_after_new: float
    p_before_true: float
    p_after_true: float

    def to_dict(self) -> dict:
        return asdict(self)


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else math.nan


def _rewrite(pb_new: np.ndarray, pa_new: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(pb_new < 1.0, (pa_new - pb_new) / (1.0 - pb_new), np.nan)


def edit_scores(kind: list[str], before: np.ndarray, after: np.ndarray) -> EditScores:
    """Scores of one edit from (n_prompts, 2) [p(new), p(true)] before and after (docs/design.md#edit-scores)."""
    kind_a = np.asarray(kind)
    pr, pa, nb = (kind_a == "prompt"), (kind_a == "paraphrase"), (kind_a == "neighborhood")
    if pr.sum() != 1:
        raise ValueError("edit_scores needs exactly one 'prompt' row")
    b, a = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    i = int(np.flatnonzero(pr)[0])
    neigh_b, neigh_a = b[nb, 0], a[nb, 0]   # p(new | s*), Hase et al. (2023, §3.4)
    return EditScores(
        rewrite_score=float(_rewrite(b[i:i + 1, 0], a[i:i + 1, 0])[0]),
        paraphrase_score=_mean(_rewrite(b[pa, 0], a[pa, 0])),
        neighborhood_score=_mean(1.0 - np.abs(neigh_a - neigh_b) / (0.5 + np.abs(neigh_b - 0.5))),
        es=float(a[i, 0] > a[i, 1]),
        ps=_mean((a[pa, 0] > a[pa, 1]).astype(float)),
        ns=_mean((a[nb, 1] > a[nb, 0]).astype(float)),
        es_magnitude=float(a[i, 0] - a[i, 1]),
        ps_magnitude=_mean(a[pa, 0] - a[pa, 1]),
        ns_magnitude=_mean(a[nb, 1] - a[nb, 0]),
        p_before_new=float(b[i, 0]), p_after_new=float(a[i, 0]),
        p_before_true=float(b[i, 1]), p_after_true=float(a[i, 1]),
    )


def harmonic_mean(values) -> float:
    """Harmonic mean of non-negative scores (0 if any is 0, NaN if any is NaN or none given)."""
    v = np.asarray(list(values), dtype=float)
    if not len(v) or np.isnan(v).any():
        return math.nan
    if (v <= 0).any():
        return 0.0
    from scipy.stats import hmean

    return float(hmean(v))


def summarise(edits: pd.DataFrame, by: str = "layer") -> pd.DataFrame:
    """Per ``by``: n cases and the means of every score; S = harmonic mean of mean ES, PS, NS
    (NS over the cases that have neighbours; without any, S is the harmonic mean of ES and PS)."""
    cols = [c for c in ("rewrite_score", "paraphrase_score", "neighborhood_score", "es", "ps", "ns",
                        "es_magnitude", "ps_magnitude", "ns_magnitude", "steps", "seconds") if c in edits]
    g = edits.groupby(by)[cols].mean()
    g.insert(0, "n", edits.groupby(by).size())
    g["S"] = [harmonic_mean([r.es, r.ps] + ([] if math.isnan(r.ns) else [r.ns])) for r in g.itertuples()]
    return g.reset_index()
