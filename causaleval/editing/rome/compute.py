"""ROME: keys, the v* optimisation, the rank-one update and exact restore (docs/design.md#rome; Meng et al. 2022).

For an edit of case (s, r, o_new) at layer l, with W the down-projection of block l:

* rewriting prompts = the bare prompt and N context-prefixed prompts ``"{context}. {prompt}"``
  (as the original's ``"{}"`` + ``"<text>. {}"`` templates), each followed by target_new[:-1];
  one KL prompt ``"{subject} is a"``; every row reads the subject's last token (located in the full,
  prefixed text);
* keys: the input of W at that token; k₀ from the bare prompt, k̄ their mean over all rewriting prompts;
* v* = v₀ + δ, δ added to W's output at the subject's last token of every row, minimising
  mean NLL(target_new) + kl_factor · KL(p_δ ‖ p_0) at the KL prompt + wd · ‖δ‖/‖v₀‖²
  (Adam, lr 0.5, ≤ 20 forward passes, stop when loss < 0.05, ‖δ‖ ≤ clamp · ‖v₀‖);
* update W ← W + (v* − W k − b) uᵀ / (uᵀ k), u = C⁻¹k_u/‖C⁻¹k_u‖, keys per ``key_mode``
  (see :class:`~causaleval.editing.rome.hparams.RomeHyperParams`), transposed for GPT-2's Conv1D.

Efficiency: one unedited forward per case records every block's input, the key/value cache and the
keys of every layer (:mod:`causaleval.editing.suffix`); each optimisation step then adds δ to block l's
cached output and runs only blocks l+1..L−1 (where a norm follows the MLP, as in Gemma, δ is added
to the down-projection's output instead and block l is re-run too), only on each row's positions from the subject's last token
to the last one the loss reads (the earlier ones cannot change), and computes logits only at the
target-token positions and the KL position.

Batching: :func:`prepare_edits` puts the rows of many cases into one batch (right-padded, each row with
its own window and read positions) and :func:`compute_v` optimises their v* together at one layer: one
forward/backward per step for all cases, but each case keeps its own δ, Adam state, clamp and early
stop, so its loss trajectory is the one it would have alone (to float rounding; tested to 1e-5).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import torch

from causaleval.data.counterfact import Fact
from causaleval.data.tokens import answer_ids, encode_prompt, pad_batch
from causaleval.editing.applied import AppliedWeights
from causaleval.editing.rome.hparams import RomeHyperParams
from causaleval.editing.suffix import (SuffixWindow, logits_at_positions, record_forward, span_buckets, unembed,
                                       window_after)
from causaleval.errors import SiteError
from causaleval.model.hooks import trace
from causaleval.model.loading import ModelBundle
from causaleval.model.sites import check_layer, down_proj_weight_out_in, get_module


@dataclass
class EditBatch:
    """The rows of one or more cases: per case its rewriting prompts (the bare prompt first) and its KL
    prompt.  Read position i contributes log p(tgt_tokens[i]) at (tgt_rows[i], tgt_cols[i])."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    lookup: torch.Tensor          # (R,) subject-last position per row
    case: torch.Tensor            # (R,) case index of each row
    first_rows: torch.Tensor      # (n,) bare-prompt row of each case (its rewriting rows follow)
    kl_rows: torch.Tensor         # (n,) KL row of each case
    n_rewrite: torch.Tensor       # (n,) rewriting prompts per case
    n_target: torch.Tensor        # (n,) target tokens per case
    tgt_rows: torch.Tensor        # NLL read positions (flattened over rows and target tokens)
    tgt_cols: torch.Tensor
    tgt_tokens: torch.Tensor
    spans: list = field(default_factory=list)     # (subject_start, subject_end) per row
    row_keys: list = field(default_factory=list)  # (case_id, row within case) per row: seeds its subject noise

    @property
    def n_cases(self) -> int:
        return int(self.first_rows.shape[0])

    def subset(self, cases: torch.Tensor) -> tuple["EditBatch", torch.Tensor]:
        """The batch of ``cases`` only (ascending), and the rows it keeps."""
        keep = torch.isin(self.case, cases)
        rows = keep.nonzero().squeeze(1)
        remap = torch.full_like(self.case, -1).index_put((rows,), torch.arange(len(rows), device=rows.device))
        cmap = torch.full((self.n_cases,), -1, dtype=torch.long, device=rows.device).index_put(
            (cases,), torch.arange(len(cases), device=rows.device))
        t = keep[self.tgt_rows]
        kept = rows.tolist()
        return EditBatch(self.input_ids[rows], self.attention_mask[rows], self.lookup[rows], cmap[self.case[rows]],
                         remap[self.first_rows[cases]], remap[self.kl_rows[cases]], self.n_rewrite[cases],
                         self.n_target[cases], remap[self.tgt_rows[t]], self.tgt_cols[t], self.tgt_tokens[t],
                         [self.spans[r] for r in kept] if self.spans else [],
                         [self.row_keys[r] for r in kept] if self.row_keys else []), rows


def context_templates(prompt: str, contexts: list[str]) -> list[str]:
    """The bare prompt template and ``"{context}. {prompt}"`` for each context text (original ROME)."""
    return [prompt] + [f"{c}. {prompt}" for c in contexts]


def _target_ids(tok, fact: Fact) -> list[int]:
    try:
        if not fact.target_new.strip():
            raise SiteError("empty target")
        return answer_ids(tok, fact.target_new)
    except SiteError as err:
        raise SiteError(f"case {fact.case_id}: target_new {fact.target_new!r} tokenises to nothing; "
                        "give a non-empty target") from err


def build_edit_batch(bundle: ModelBundle, facts: Fact | Sequence[Fact], contexts: list[str],
                     kl_prompt: str = "{} is a", repeat: int = 1) -> EditBatch:
    """The rows of ``facts`` (one fact or several), right-padded into one batch; with ``repeat`` > 1 each
    fact's rewriting prompts appear that many times (rows for several subject-noise draws)."""
    facts = [facts] if isinstance(facts, Fact) else list(facts)
    tok = bundle.tokenizer
    seqs, lookup, case, first, kl_rows, n_rewrite, n_target, rows, cols, toks = ([] for _ in range(10))
    spans, keys = [], []
    for c, fact in enumerate(facts):
        target = _target_ids(tok, fact)
        templates = context_templates(fact.prompt, contexts) * max(1, int(repeat))
        first.append(len(seqs))
        for template in templates:
            enc = encode_prompt(tok, template, fact.subject, fact.case_id)
            spans.append((enc.subject_start, enc.subject_end))
            keys.append((int(fact.case_id), len(seqs) - first[-1]))
            for j, t in enumerate(target):
                rows.append(len(seqs))
                cols.append(enc.length - 1 + j)
                toks.append(t)
            seqs.append(list(enc.input_ids) + target[:-1])
            lookup.append(enc.position("subject_last"))
        kl = encode_prompt(tok, kl_prompt, fact.subject, fact.case_id)
        spans.append((kl.subject_start, kl.subject_end))
        keys.append((int(fact.case_id), len(seqs) - first[-1]))
        kl_rows.append(len(seqs))
        seqs.append(list(kl.input_ids))
        lookup.append(kl.position("subject_last"))
        case.extend([c] * (len(templates) + 1))
        n_rewrite.append(len(templates))
        n_target.append(len(target))
    ids, mask, _ = pad_batch(seqs, tok.pad_token_id, device=bundle.device)
    as_t = lambda x: torch.tensor(x, dtype=torch.long, device=bundle.device)  # noqa: E731
    return EditBatch(ids, mask, as_t(lookup), as_t(case), as_t(first), as_t(kl_rows), as_t(n_rewrite),
                     as_t(n_target), as_t(rows), as_t(cols), as_t(toks), spans, keys)


@dataclass
class PreparedEdit:
    """Everything a group of cases needs at any layer, from a single unedited forward pass of their rows."""

    facts: list[Fact]
    batch: EditBatch
    windows: list[SuffixWindow]          # each row from its subject's last token to its last read position,
    window_rows: list[torch.Tensor]      # in groups of rows of similar width (rows of window i: window_rows[i])
    keys: dict[int, torch.Tensor]        # layer -> (rows, d_in) down-proj inputs at the subject's last token
    outs: dict[int, torch.Tensor]        # layer -> (rows, d_out) down-proj outputs there
    kl_init: torch.Tensor                # (cases, vocab) unedited log-probs at each case's KL position
    minimise: bool = False               # minimise p(target) (fact erasure) instead of its NLL
    embed_noise: torch.Tensor | None = None   # (rows, T, d) subject noise in every forward of these rows


def edit_noise(bundle: ModelBundle, batch: EditBatch, problem) -> torch.Tensor | None:
    """The subject noise of a problem that noises the subject (fact forcing), one draw per row, seeded
    by (case_id, row); None otherwise."""
    if problem is None or getattr(problem, "noise", None) is None:
        return None
    from causaleval.editing.noise import d_model

    return problem.noise.tensor(batch.spans, [("edit",) + k for k in batch.row_keys], batch.input_ids.shape[1],
                                d_model(bundle), batch.input_ids.device)


def noise_repeat(problem, n_contexts: int) -> int:
    """Copies of the rewriting prompts so that a noised problem has at least ``edit_draws`` noised rows."""
    if problem is None or getattr(problem, "noise", None) is None:
        return 1
    return max(1, -(-int(problem.edit_draws) // (n_contexts + 1)))


@torch.no_grad()
def prepare_edits(bundle: ModelBundle, facts: Sequence[Fact], contexts: list[str],
                  hparams: RomeHyperParams, problem=None) -> PreparedEdit:
    """One unedited forward over the rows of all ``facts`` (see :class:`PreparedEdit`); ``problem`` (an
    :class:`~causaleval.editing.problems.EditProblem`) may minimise p(target) or noise the subject."""
    from causaleval.editing.noise import embeddings_plus

    batch = build_edit_batch(bundle, facts, contexts, hparams.kl_prompt, noise_repeat(problem, len(contexts)))
    noise = edit_noise(bundle, batch, problem)
    rows = torch.arange(batch.input_ids.shape[0], device=bundle.device)
    keys, outs, handles = {}, {}, []
    for l in range(bundle.n_layers):
        mod = get_module(bundle.model, bundle.family.module_path("down_proj", l))

        def hook(_m, inp, out, l=l):
            keys[l] = inp[0][rows, batch.lookup].detach().clone()
            outs[l] = out[rows, batch.lookup].detach().clone()
        handles.append(mod.register_forward_hook(hook))
    try:
        with embeddings_plus(bundle, noise):
            hidden, cache = record_forward(bundle, batch.input_ids, batch.attention_mask)
    finally:
        for h in handles:
            h.remove()
    # each row from its subject's last token (where δ enters) to the last position the loss reads
    ends = (batch.lookup + 1).scatter_reduce(0, batch.tgt_rows, batch.tgt_cols + 1, reduce="amax")
    groups = [torch.tensor(g, dtype=torch.long, device=bundle.device)
              for g in span_buckets((ends - batch.lookup).tolist())]
    windows = [window_after(bundle, hidden, cache, batch.input_ids[g], batch.attention_mask[g], batch.lookup[g],
                            ends[g], rows=g) for g in groups]
    logits = logits_at_positions(bundle, hidden[-1], batch.kl_rows, batch.lookup[batch.kl_rows])
    return PreparedEdit(list(facts), batch, windows, groups, keys, outs, torch.log_softmax(logits.float(), -1),
                        bool(getattr(problem, "minimise", False)), noise)


def prepare_edit(bundle: ModelBundle, fact: Fact, contexts: list[str], hparams: RomeHyperParams) -> PreparedEdit:
    """:func:`prepare_edits` of one case."""
    return prepare_edits(bundle, [fact], contexts, hparams)


@dataclass
class VResult:
    v_star: torch.Tensor
    v0: torch.Tensor
    steps: int
    final_loss: float
    losses: list[float] = field(default_factory=list)


class _Active:
    """The rows, windows and read positions of the cases still being optimised.

    Rows run in the groups of :func:`~causaleval.editing.suffix.span_buckets` (one pass through the blocks
    per group, each padded only to its own widest window); the read positions are gathered from every
    group's output and unembedded together."""

    def __init__(self, prep: PreparedEdit, layer: int, cases: list[int]):
        self.cases = cases
        self.batch, rows = prep.batch.subset(torch.tensor(cases, device=prep.batch.case.device))
        b = self.batch
        position = torch.full((prep.batch.input_ids.shape[0],), -1, dtype=torch.long, device=rows.device)
        position[rows] = torch.arange(len(rows), device=rows.device)    # original row -> row of b
        read_rows = torch.cat([b.tgt_rows, b.kl_rows])
        read_pos = torch.cat([b.tgt_cols, b.lookup[b.kl_rows]])
        self.parts, order = [], []
        for window, group in zip(prep.windows, prep.window_rows):
            keep = (position[group] >= 0).nonzero().squeeze(1)
            if not len(keep):
                continue
            win = window.select(keep)
            local = torch.full_like(position, -1)
            local[position[group[keep]]] = torch.arange(len(keep), device=rows.device)   # row of b -> row of win
            reads = (local[read_rows] >= 0).nonzero().squeeze(1)
            lr = local[read_rows[reads]]
            self.parts.append((win, b.case[position[group[keep]]], lr, win.column(lr, read_pos[reads])))
            order.append(reads)
        self.unsort = torch.argsort(torch.cat(order))        # reads come back in the order tgt..., kl...
        self.kl_init = prep.kl_init[cases]
        self.minimise = prep.minimise

    def losses(self, bundle: ModelBundle, layer: int, delta: torch.Tensor, v0_norm: torch.Tensor,
               hp: RomeHyperParams, residual: bool = False) -> torch.Tensor:
        """Per active case: mean NLL(target_new) + kl_factor · KL + wd · ‖δ‖/‖v₀‖² (``delta``: (cases, d));
        when minimising (fact erasure), exp(−mean NLL) in place of the NLL (Hase et al. 2023's code)."""
        b = self.batch
        gathered = []
        for win, case, rows, cols in self.parts:
            gathered.append(run_with_delta(bundle, win, layer, delta[case], residual)[rows, cols])
        logp = torch.log_softmax(unembed(bundle, torch.cat(gathered)[self.unsort]).float(), -1)
        n_rows = b.input_ids.shape[0]
        n_t = b.tgt_rows.shape[0]
        tok_lp = logp[:n_t].gather(1, b.tgt_tokens[:, None]).squeeze(1)
        row_lp = torch.zeros(n_rows, device=logp.device).index_add(0, b.tgt_rows, tok_lp) / b.n_target[b.case]
        nll = -torch.zeros(len(self.cases), device=logp.device).index_add(0, b.case, row_lp) / b.n_rewrite
        kl = torch.nn.functional.kl_div(self.kl_init, logp[n_t:], log_target=True, reduction="none").sum(-1)
        fit = torch.exp(-nll) if self.minimise else nll
        return fit + hp.kl_factor * kl + hp.v_weight_decay * (delta.norm(dim=1) / v0_norm ** 2)


def run_with_delta(bundle: ModelBundle, win: SuffixWindow, layer: int, delta: torch.Tensor,
                   residual: bool = False) -> torch.Tensor:
    """The window's (R, S, d) last-block output with ``delta[r]`` added to the down-projection's output
    of block ``layer`` at row r's first window column (its subject's last token).

    Where the down-projection's output is what block ``layer`` adds to the residual stream, that is δ
    on the block's cached output and only blocks layer+1..L−1 are run.  Where a norm follows the MLP
    (``FamilySpec.post_mlp_norm``: Gemma's post-feed-forward norm) it is not, so δ enters at the
    down-projection's output through a hook and block ``layer`` is re-run too.  With ``residual``, δ is
    added to block ``layer``'s output (the residual stream, MEMIT's z) in every family."""
    if bundle.family.post_mlp_norm and not residual:
        def add(h: torch.Tensor) -> torch.Tensor:
            rows = torch.arange(h.shape[0], device=h.device)
            return h.index_put((rows, torch.zeros_like(rows)), delta.to(h.dtype), accumulate=True)
        with trace(bundle.model, edit={bundle.family.module_path("down_proj", layer): add}):
            return win.run(layer)
    after = win.hidden[layer + 1]
    rows = torch.arange(after.shape[0], device=after.device)
    shifted = after.index_put((rows, torch.zeros_like(rows)), delta.to(after.dtype), accumulate=True)
    return win.run(layer + 1, shifted)


def compute_v(bundle: ModelBundle, prep: PreparedEdit, layer: int, hp: RomeHyperParams,
              v0: torch.Tensor | None = None, residual: bool = False) -> list[VResult]:
    """The v* optimisation of every case of ``prep`` at ``layer`` (see module docstring), one result per case.

    Cases share each forward/backward but not their optimisation: each has its own δ and Adam state
    (Adam is elementwise), its own clamp, and stops on its own when its loss < ``v_loss_stop``; a stopped
    case leaves the batch, so every case follows exactly the trajectory it would follow alone.

    ``v0`` (cases, d) replaces the down-projection outputs as the start, norm and clamp reference; with
    ``residual`` δ enters block ``layer``'s output (see :func:`run_with_delta`): MEMIT's z (Meng et al. 2023)."""
    b = prep.batch
    v0 = prep.outs[layer][b.first_rows] if v0 is None else v0
    v0_norm = v0.norm(dim=1)
    max_norm = hp.clamp_norm_factor * v0_norm
    deltas = [torch.zeros_like(v0[c], requires_grad=True) for c in range(b.n_cases)]
    opt = torch.optim.Adam(deltas, lr=hp.v_lr)
    losses: list[list[float]] = [[] for _ in deltas]
    steps = [0] * len(deltas)
    active = _Active(prep, layer, list(range(b.n_cases)))
    for step in range(hp.v_num_grad_steps):
        with torch.enable_grad():
            loss = active.losses(bundle, layer, torch.stack([deltas[c] for c in active.cases]),
                                 v0_norm[active.cases], hp, residual)
        go_on = []
        for i, (c, value) in enumerate(zip(active.cases, loss.detach().tolist())):
            losses[c].append(value)
            steps[c] = step + 1
            if not ((value < hp.v_loss_stop and not prep.minimise) or step == hp.v_num_grad_steps - 1):
                go_on.append(i)
        if not go_on:
            break
        opt.zero_grad()
        loss[go_on].sum().backward()
        cont = [active.cases[i] for i in go_on]
        for c in active.cases:
            if c not in cont:
                deltas[c].grad = None      # finished: Adam skips it, its δ stays as it ended
        opt.step()
        with torch.no_grad():
            for c in cont:
                if deltas[c].norm() > max_norm[c]:
                    deltas[c].mul_(max_norm[c] / deltas[c].norm())
        if len(cont) < len(active.cases):
            active = _Active(prep, layer, cont)
    return [VResult(v_star=v0[c] + d.detach(), v0=v0[c], steps=steps[c], final_loss=losses[c][-1], losses=losses[c])
            for c, d in enumerate(deltas)]


def rank_one_update(w_out_in: torch.Tensor, bias: torch.Tensor | None, c_inv: torch.Tensor, k_avg: torch.Tensor,
                    k0: torch.Tensor, v_star: torch.Tensor, key_mode: str = "mixed") -> tuple[torch.Tensor, torch.Tensor]:
    """ΔW (out × in, float64) = (v* − W k_r − b) uᵀ / (uᵀ k_r), u = C⁻¹k_u / ‖C⁻¹k_u‖.

    ``mixed`` (original): k_u = k̄, k_r = k₀; ``averaged``: k̄, k̄; ``bare``: k₀, k₀.  Returns (ΔW, u)."""
    k_u = k0 if key_mode == "bare" else k_avg
    k_r = k_avg if key_mode == "averaged" else k0
    w = w_out_in.detach().double()
    k_u, k_r, v = k_u.double(), k_r.double(), v_star.detach().double()
    u = c_inv.double() @ k_u
    u = u / u.norm()
    out = w @ k_r + (bias.detach().double() if bias is not None else 0.0)
    denom = u @ k_r
    if float(denom.abs()) < 1e-12:
        raise SiteError("ROME update: uᵀk is zero (the key is orthogonal to C⁻¹k); cannot edit this case")
    return torch.outer(v - out, u) / denom, u


@dataclass
class EditResult:
    """A computed (not yet applied) edit: ΔW as (out × in) and what produced it."""

    case_id: int
    layer: int
    delta_w: torch.Tensor
    u: torch.Tensor
    k0: torch.Tensor
    k_avg: torch.Tensor
    v_star: torch.Tensor
    v0: torch.Tensor
    steps: int
    final_loss: float
    seconds: float                  # this edit's share of the batch's time
    key_mode: str
    losses: list[float] = field(default_factory=list)   # the v* loss at each step


def compute_edits(bundle: ModelBundle, prep: PreparedEdit, layer: int, hp: RomeHyperParams, stats) -> list[EditResult]:
    """v* and ΔW at ``layer`` for every prepared case; ``stats`` gives ``inverse(layer)`` = C⁻¹."""
    check_layer(layer, bundle.n_layers)
    t0 = time.perf_counter()
    vrs = compute_v(bundle, prep, layer, hp)
    b = prep.batch
    mod = get_module(bundle.model, bundle.family.module_path("down_proj", layer))
    w = down_proj_weight_out_in(bundle.model, bundle.family, layer)
    out = []
    for c, vr in enumerate(vrs):
        first = int(b.first_rows[c])
        keys = prep.keys[layer][first:first + int(b.n_rewrite[c])]
        k0, k_avg = keys[0], keys.mean(0)
        dw, u = rank_one_update(w, getattr(mod, "bias", None), stats.inverse(layer), k_avg, k0, vr.v_star,
                                hp.key_mode)
        out.append(EditResult(prep.facts[c].case_id, layer, dw.to(w.dtype), u, k0, k_avg, vr.v_star, vr.v0,
                              vr.steps, vr.final_loss, 0.0, hp.key_mode, vr.losses))
    for r in out:
        r.seconds = (time.perf_counter() - t0) / len(out)
    return out


def compute_edit(bundle: ModelBundle, prep: PreparedEdit, layer: int, hp: RomeHyperParams, stats) -> EditResult:
    """:func:`compute_edits` of a prepared single case."""
    if prep.batch.n_cases != 1:
        raise ValueError(f"compute_edit takes one prepared case, got {prep.batch.n_cases}; use compute_edits")
    return compute_edits(bundle, prep, layer, hp, stats)[0]


class AppliedEdit(AppliedWeights):
    """A ROME edit written into the model on ``__enter__`` (or ``apply()``); leaving the ``with`` block (or
    ``restore()``) puts back the original weight bitwise (a clone is kept; nothing is subtracted).
    See :class:`~causaleval.editing.applied.AppliedWeights` for nesting."""

    def __init__(self, bundle: ModelBundle, result: EditResult):
        super().__init__(bundle, {result.layer: result.delta_w})
        self.module = self.modules[result.layer]


def apply_edit(bundle: ModelBundle, result: EditResult) -> AppliedEdit:
    return AppliedEdit(bundle, result)
