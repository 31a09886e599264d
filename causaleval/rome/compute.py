"""ROME: keys, the v* optimisation, the rank-one update and exact restore (SPEC §5; Meng et al. 2022).

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
  (see :class:`~causaleval.rome.hparams.RomeHyperParams`), transposed for GPT-2's Conv1D.

Efficiency: one unedited forward per case records every block's input, the key/value cache and the
keys of every layer (:mod:`causaleval.rome.suffix`); each optimisation step then adds δ to block l's
cached output and runs only blocks l+1..L−1, only on each row's positions from the subject's last token
to the last one the loss reads (the earlier ones cannot change), and computes logits only at the
target-token positions and the KL position.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from causaleval.counterfact import Fact
from causaleval.errors import SiteError
from causaleval.models import ModelBundle
from causaleval.rome.hparams import RomeHyperParams
from causaleval.rome.suffix import SuffixWindow, logits_at_positions, record_forward, window_after
from causaleval.sites import check_layer, down_proj_weight_out_in, get_module
from causaleval.tokens import answer_ids, encode_prompt, pad_batch


@dataclass
class EditBatch:
    """Rewriting prompts (rows 0..n_rewrite−1, row 0 the bare prompt) and the KL prompt (last row)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    lookup: torch.Tensor          # subject-last position per row
    n_rewrite: int
    target_ids: list[int]
    tgt_rows: torch.Tensor        # NLL read positions (flattened over rows and target tokens)
    tgt_cols: torch.Tensor
    tgt_tokens: torch.Tensor


def context_templates(prompt: str, contexts: list[str]) -> list[str]:
    """The bare prompt template and ``"{context}. {prompt}"`` for each context text (original ROME)."""
    return [prompt] + [f"{c}. {prompt}" for c in contexts]


def build_edit_batch(bundle: ModelBundle, fact: Fact, contexts: list[str], kl_prompt: str = "{} is a") -> EditBatch:
    tok = bundle.tokenizer
    try:
        if not fact.target_new.strip():
            raise SiteError("empty target")
        target = answer_ids(tok, fact.target_new)
    except SiteError as err:
        raise SiteError(f"case {fact.case_id}: target_new {fact.target_new!r} tokenises to nothing; "
                        "give a non-empty target") from err
    seqs, lookup, rows, cols, toks = [], [], [], [], []
    for i, template in enumerate(context_templates(fact.prompt, contexts)):
        enc = encode_prompt(tok, template, fact.subject, fact.case_id)
        seqs.append(list(enc.input_ids) + target[:-1])
        lookup.append(enc.position("subject_last"))
        for j, t in enumerate(target):
            rows.append(i)
            cols.append(enc.length - 1 + j)
            toks.append(t)
    kl = encode_prompt(tok, kl_prompt, fact.subject, fact.case_id)
    seqs.append(list(kl.input_ids))
    lookup.append(kl.position("subject_last"))
    ids, mask, _ = pad_batch(seqs, tok.pad_token_id, device=bundle.device)
    dev = bundle.device
    return EditBatch(ids, mask, torch.tensor(lookup, device=dev), len(seqs) - 1, target,
                     torch.tensor(rows, device=dev), torch.tensor(cols, device=dev), torch.tensor(toks, device=dev))


@dataclass
class PreparedEdit:
    """Everything one case needs at any layer, from a single unedited forward pass."""

    fact: Fact
    batch: EditBatch
    window: SuffixWindow                 # each row from its subject's last token to its last read position
    keys: dict[int, torch.Tensor]        # layer -> (rows, d_in) down-proj inputs at the subject's last token
    outs: dict[int, torch.Tensor]        # layer -> (rows, d_out) down-proj outputs there
    kl_init: torch.Tensor                # unedited log-probs at the KL position


@torch.no_grad()
def prepare_edit(bundle: ModelBundle, fact: Fact, contexts: list[str], hparams: RomeHyperParams) -> PreparedEdit:
    batch = build_edit_batch(bundle, fact, contexts, hparams.kl_prompt)
    rows = torch.arange(batch.input_ids.shape[0], device=bundle.device)
    keys, outs, handles = {}, {}, []
    for l in range(bundle.n_layers):
        mod = get_module(bundle.model, bundle.family.module_path("down_proj", l))

        def hook(_m, inp, out, l=l):
            keys[l] = inp[0][rows, batch.lookup].detach().clone()
            outs[l] = out[rows, batch.lookup].detach().clone()
        handles.append(mod.register_forward_hook(hook))
    try:
        hidden, cache = record_forward(bundle, batch.input_ids, batch.attention_mask)
    finally:
        for h in handles:
            h.remove()
    # each row from its subject's last token (where δ enters) to the last position the loss reads
    ends = (batch.lookup + 1).scatter_reduce(0, batch.tgt_rows, batch.tgt_cols + 1, reduce="amax")
    window = window_after(bundle, hidden, cache, batch.input_ids, batch.attention_mask, batch.lookup, ends)
    last = hidden[-1]
    kl_row = torch.tensor([batch.n_rewrite], device=bundle.device)
    kl_init = torch.log_softmax(logits_at_positions(bundle, last, kl_row, batch.lookup[kl_row]).float(), -1)
    return PreparedEdit(fact, batch, window, keys, outs, kl_init)


@dataclass
class VResult:
    v_star: torch.Tensor
    v0: torch.Tensor
    steps: int
    final_loss: float
    losses: list[float] = field(default_factory=list)


def compute_v(bundle: ModelBundle, prep: PreparedEdit, layer: int, hp: RomeHyperParams) -> VResult:
    """The v* optimisation (see module docstring), running only blocks ``layer``+1..L−1 and, in each row,
    only the positions from the subject's last token on (where δ enters; :class:`SuffixWindow`)."""
    b = prep.batch
    n_rows = b.input_ids.shape[0]
    rows = torch.arange(n_rows, device=bundle.device)
    v0 = prep.outs[layer][0]
    delta = torch.zeros_like(v0, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=hp.v_lr)
    kl_row = torch.tensor([b.n_rewrite], device=bundle.device)
    read_rows = torch.cat([b.tgt_rows, kl_row])
    read_cols = prep.window.column(read_rows, torch.cat([b.tgt_cols, b.lookup[kl_row]]))
    first = torch.zeros(n_rows, dtype=torch.long, device=bundle.device)   # window column of the subject's last token
    n_t = len(b.target_ids)
    max_norm = hp.clamp_norm_factor * v0.norm()
    losses: list[float] = []

    # The down-projection's output joins the residual stream by addition in every family, so δ on it
    # shifts block ``layer``'s cached output by δ: block ``layer`` itself is never re-run.
    after = prep.window.hidden[layer + 1]

    step = 0
    for step in range(hp.v_num_grad_steps):
        with torch.enable_grad():
            shifted = after.index_put((rows, first), delta.to(after.dtype).expand(n_rows, -1), accumulate=True)
            last = prep.window.run(layer + 1, shifted)
            logp = torch.log_softmax(logits_at_positions(bundle, last, read_rows, read_cols).float(), -1)
            tok_lp = logp[:-1].gather(1, b.tgt_tokens[:, None]).squeeze(1)
            nll = -(torch.zeros(b.n_rewrite, device=tok_lp.device).index_add(0, b.tgt_rows, tok_lp) / n_t).mean()
            kl = hp.kl_factor * torch.nn.functional.kl_div(prep.kl_init, logp[-1:], log_target=True,
                                                          reduction="batchmean")
            wd = hp.v_weight_decay * (delta.norm() / v0.norm() ** 2)
            loss = nll + kl + wd
        losses.append(float(loss.detach()))
        if losses[-1] < hp.v_loss_stop or step == hp.v_num_grad_steps - 1:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            if delta.norm() > max_norm:
                delta.mul_(max_norm / delta.norm())
    return VResult(v_star=(v0 + delta.detach()), v0=v0, steps=step + 1, final_loss=losses[-1], losses=losses)


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
    seconds: float
    key_mode: str


def compute_edit(bundle: ModelBundle, prep: PreparedEdit, layer: int, hp: RomeHyperParams, stats) -> EditResult:
    """v* and ΔW at ``layer`` for a prepared case; ``stats`` gives ``inverse(layer)`` = C⁻¹."""
    check_layer(layer, bundle.n_layers)
    t0 = time.perf_counter()
    vr = compute_v(bundle, prep, layer, hp)
    keys = prep.keys[layer][: prep.batch.n_rewrite]
    k0, k_avg = keys[0], keys.mean(0)
    mod = get_module(bundle.model, bundle.family.module_path("down_proj", layer))
    w = down_proj_weight_out_in(bundle.model, bundle.family, layer)
    dw, u = rank_one_update(w, getattr(mod, "bias", None), stats.inverse(layer), k_avg, k0, vr.v_star, hp.key_mode)
    return EditResult(prep.fact.case_id, layer, dw.to(w.dtype), u, k0, k_avg, vr.v_star, vr.v0, vr.steps,
                      vr.final_loss, time.perf_counter() - t0, hp.key_mode)


class AppliedEdit:
    """An edit written into the model; ``restore()`` (or leaving the ``with`` block) puts back the
    original weight bitwise (a clone is kept; nothing is subtracted)."""

    def __init__(self, bundle: ModelBundle, result: EditResult):
        self.module = get_module(bundle.model, bundle.family.module_path("down_proj", result.layer))
        weight = self.module.weight
        self.original = weight.detach().clone()
        self.restored = False
        delta = result.delta_w if bundle.family.down_proj_orientation == "linear" else result.delta_w.T
        with torch.no_grad():
            weight.add_(delta.to(weight.dtype))

    def restore(self) -> None:
        if not self.restored:
            with torch.no_grad():
                self.module.weight.copy_(self.original)
            self.restored = True

    def __enter__(self) -> "AppliedEdit":
        return self

    def __exit__(self, *exc) -> None:
        self.restore()


def apply_edit(bundle: ModelBundle, result: EditResult) -> AppliedEdit:
    return AppliedEdit(bundle, result)
