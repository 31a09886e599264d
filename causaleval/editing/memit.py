"""MEMIT for one fact (Meng et al. 2023) over a window of layers centred on the edit layer (docs/editors.md).

For case (s, r, o_new) at layer l, window W = l−2 … l+2 (clipped at the model's edges), last layer L:

1. z = h_L + δ, the residual stream at the subject's last token after block L, optimised as ROME's v*
   (same rewriting prompts with the context prefixes, mean NLL(o_new) + kl_factor · KL at "{s} is a" +
   wd · ‖δ‖/‖h_L‖², Adam, ‖δ‖ ≤ clamp_norm_factor · ‖h_L‖), δ added to block L's output;
2. for each window layer i in order (earlier updates applied): the key k_i = the down-projection input at
   the subject's last token averaged over the rewriting prompts (mean of the means per context length,
   as MEMIT's ``compute_ks``), the current h = the residual after block L on the bare prompt,
   r_i = (z − h)/(layers left), and
       ΔW_i = r_i k_iᵀ (λ C_i + k_i k_iᵀ)⁻¹,
   C_i = E[k kᵀ] the layer's key second moments (as ROME's, shared cache), λ = ``mom2_update_weight``.
   (λC + kkᵀ)⁻¹k is computed as x/(1 + kᵀx), x = (λC)⁻¹k by a Cholesky factor of λC cached per layer
   (Sherman–Morrison, exact); a test checks it against a direct solve.

Batched: the cases share the z optimisation's passes (each its own δ, Adam state, clamp and stop, as
ROME's v*) and each per-layer forward (each case's ΔW added to its own rows only).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Sequence

import torch

from causaleval.data.counterfact import Fact
from causaleval.editing.editor import Edit, centred_window
from causaleval.editing.rome.compute import PreparedEdit, compute_v, prepare_edits
from causaleval.editing.rome.hparams import RULES as ROME_RULES, RomeHyperParams
from causaleval.editing.suffix import BlockInputs, capture_block_inputs
from causaleval.errors import CausalEvalError
from causaleval.model.loading import ModelBundle
from causaleval.model.sites import check_layer, down_proj_weight_out_in, get_module
from causaleval.runs.checks import Rule


@dataclass(frozen=True)
class MemitHyperParams:
    """MEMIT's settings; defaults from the MEMIT repository's ``hparams/MEMIT/gpt2-xl.json`` (five layers,
    20 steps) with the published λ = 15,000 (``EleutherAI_gpt-j-6B.json``, also EasyEdit's Llama files);
    the study's λ is scaled to the model's MLP width (:func:`memit_hparams_for`).  Context texts and
    statistics are ROME's."""

    window: int = 5
    v_lr: float = 0.5
    v_num_grad_steps: int = 20
    v_loss_stop: float = 0.05
    v_weight_decay: float = 0.5
    kl_factor: float = 0.0625
    clamp_norm_factor: float = 0.75
    mom2_update_weight: float = 15_000.0

    def __post_init__(self) -> None:
        for name, rule in MEMIT_RULES.items():
            found = rule.problem(getattr(self, name))
            if found:
                raise CausalEvalError(f"MEMIT hyperparameter {name} {getattr(self, name)!r}: {found}")

    def z_hparams(self, rome: RomeHyperParams) -> RomeHyperParams:
        """ROME's hyperparameters (contexts, statistics, KL prompt) with MEMIT's z optimisation settings."""
        return rome.updated(v_lr=self.v_lr, v_num_grad_steps=self.v_num_grad_steps, v_loss_stop=self.v_loss_stop,
                            v_weight_decay=self.v_weight_decay, kl_factor=self.kl_factor,
                            clamp_norm_factor=self.clamp_norm_factor)

    def updated(self, **changes) -> "MemitHyperParams":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict:
        return asdict(self)


# v*'s settings are ROME's (the same optimisation of z); the window and λ are MEMIT's own
MEMIT_RULES: dict[str, Rule] = {
    **{k: ROME_RULES[k] for k in ("v_lr", "v_num_grad_steps", "v_loss_stop", "v_weight_decay", "kl_factor",
                                  "clamp_norm_factor")},
    "window": Rule(low=1, high=1000),
    "mom2_update_weight": Rule(low=0, low_open=True),
}


# MEMIT's published λ for GPT-J (its EleutherAI_gpt-j-6B.json; EasyEdit's Llama files use the same) and GPT-J's
# MLP width: for keys drawn like C's statistics E[kᵀC⁻¹k] = d_ff, so λ's weight against kkᵀ scales with d_ff
# (docs/editors.md, "λ on a small model").
PUBLISHED_LAMBDA = 15_000.0
GPTJ_D_FF = 16_384


def scaled_lambda(d_ff: int, multiple: float = 1.0) -> float:
    """λ = multiple · 15,000 · d_ff / 16,384: the published GPT-J λ scaled to an MLP of ``d_ff`` hidden units."""
    return float(multiple) * PUBLISHED_LAMBDA * int(d_ff) / GPTJ_D_FF


def mlp_width(bundle: ModelBundle) -> int:
    """d_ff, the MLP's hidden units (the down-projection's input size, layer 0)."""
    return int(down_proj_weight_out_in(bundle.model, bundle.family, 0).shape[1])


# The package's λ = MEMIT_LAMBDA_MULTIPLE · 15,000 · d_ff / 16,384: of the multiples measured on the committed
# study's facts (SmolLM2), the one with the largest S = harmonic mean of ES, PS, NS (docs/memit-lambda.md;
# tests/test_memit_lambda.py checks it against paper/editors/memit_lambda.csv).
MEMIT_LAMBDA_MULTIPLE = 0.3

# MEMIT's published files: GPT-2 XL (λ = 20,000), GPT-J (25 steps), the rest (λ = 15,000, 20 steps)
PUBLISHED_MEMIT: dict[str, MemitHyperParams] = {
    "gpt2": MemitHyperParams(mom2_update_weight=20_000.0),
    "gptj": MemitHyperParams(v_num_grad_steps=25),
    "other": MemitHyperParams(),
}


def memit_hparams_for(family: str, d_ff: int | None = None, **overrides) -> MemitHyperParams:
    """The published file's settings for ``family`` (:data:`PUBLISHED_MEMIT`); with the model's MLP width
    ``d_ff`` (:func:`mlp_width`), the package's λ = :func:`scaled_lambda` (d_ff, :data:`MEMIT_LAMBDA_MULTIPLE`)
    instead of the published one.  ``overrides`` win."""
    base = PUBLISHED_MEMIT.get(family, PUBLISHED_MEMIT["other"])
    if d_ff is not None:
        base = base.updated(mom2_update_weight=scaled_lambda(d_ff, MEMIT_LAMBDA_MULTIPLE))
    return base.updated(**overrides)


def memit_hparams_of(bundle: ModelBundle, **overrides) -> MemitHyperParams:
    """The package's MEMIT settings for a loaded model: its family's published file with λ scaled to its
    MLP width (:func:`memit_hparams_for` with ``d_ff`` = :func:`mlp_width`); ``overrides`` win."""
    return memit_hparams_for(bundle.family.name, d_ff=mlp_width(bundle), **overrides)


@dataclass
class MemitPrepared:
    prep: PreparedEdit
    blocks: BlockInputs                 # every block's input, unedited, for the per-layer forwards
    groups: list[int]                   # rewriting prompts per context length (bare prompt first)
    # the z optimisation's results per (window, z settings): z does not depend on λ, so edits that differ
    # only in λ (experiments.memit_lambda) optimise it once
    z: dict = field(default_factory=dict)


def prepare_memit(bundle: ModelBundle, facts: Sequence[Fact], contexts: list[str], hp: RomeHyperParams,
                  problem=None) -> MemitPrepared:
    from causaleval.editing.noise import embeddings_plus

    prep = prepare_edits(bundle, facts, contexts, hp, problem)
    with embeddings_plus(bundle, prep.embed_noise):
        blocks, _ = capture_block_inputs(bundle, prep.batch.input_ids, prep.batch.attention_mask)
    groups = [1] + [n for _, n in hp.context_lengths if n > 0]
    if prep.embed_noise is not None or sum(groups) != 1 + len(contexts):
        groups = [int(prep.batch.n_rewrite[0])] if len(facts) else [1 + len(contexts)]   # one plain mean
    return MemitPrepared(prep, blocks, groups)


@torch.no_grad()
def _forward(bundle: ModelBundle, mp: MemitPrepared, start: int, key_layer: int, z_layer: int,
             deltas: list[dict[int, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocks ``start..z_layer`` from their cached input with case c's ΔW at its rows; returns the keys of
    ``key_layer`` and the residual after block ``z_layer`` at every row's subject-last token."""
    b = mp.prep.batch
    rows_of = [(b.case == c).nonzero().squeeze(1) for c in range(b.n_cases)]
    all_rows = torch.arange(b.input_ids.shape[0], device=b.input_ids.device)
    keys: list[torch.Tensor] = []

    def hook_for(layer: int):
        def hook(_m, inp, out):
            if layer == key_layer:
                keys.append(inp[0][all_rows, b.lookup].detach().clone())
            for rows, d in zip(rows_of, deltas):
                if layer in d:
                    out.index_add_(0, rows, inp[0][rows] @ d[layer].to(out.dtype).T)
            return out
        return hook

    layers = sorted({key_layer} | {l for d in deltas for l in d})
    handles = [get_module(bundle.model, bundle.family.module_path("down_proj", l)).register_forward_hook(hook_for(l))
               for l in layers]
    try:
        h = mp.blocks.hidden[start]
        for i in range(start, z_layer + 1):
            block = get_module(bundle.model, bundle.family.layer_path(i))
            out = block(h, *mp.blocks.args[i], **mp.blocks.kwargs[i])
            h = out[0] if isinstance(out, tuple) else out
    finally:
        for handle in handles:
            handle.remove()
    return keys[0], h[all_rows, b.lookup]


class _Solver:
    """(λC + k kᵀ)⁻¹ k = x / (1 + kᵀx), x = (λC)⁻¹ k, with a Cholesky factor of C per layer (float64)."""

    def __init__(self, stats):
        self.stats = stats
        self.factors: dict[int, tuple[torch.Tensor, bool]] = {}

    def adjusted_key(self, layer: int, k: torch.Tensor, lam: float) -> torch.Tensor:
        if layer not in self.factors:
            c = self.stats.get(layer).double()
            factor, info = torch.linalg.cholesky_ex(c)
            self.factors[layer] = (factor, int(info) == 0) if int(info) == 0 else (c, False)
        factor, chol = self.factors[layer]
        k = k.double().to(factor.device)
        if not chol:           # singular C: solve the full system, as MEMIT does
            return torch.linalg.solve(lam * factor + torch.outer(k, k), k)
        x = torch.cholesky_solve(k[:, None], factor).squeeze(1) / lam
        return x / (1.0 + k @ x)


def memit_update(residual: torch.Tensor, key: torch.Tensor, adjusted_key: torch.Tensor) -> torch.Tensor:
    """ΔW = r (λC + kkᵀ)⁻¹k)ᵀ as (out × in), float64 (Meng et al. 2023, eq. 14 for one key)."""
    return torch.outer(residual.double(), adjusted_key.double())


def compute_memit(bundle: ModelBundle, mp: MemitPrepared, layer: int, hp: MemitHyperParams, rome_hp: RomeHyperParams,
                  stats, solver: _Solver | None = None) -> list[Edit]:
    """MEMIT edits of every prepared case with the window centred on ``layer`` (see module docstring)."""
    check_layer(layer, bundle.n_layers)
    t0 = time.perf_counter()
    window = centred_window(layer, hp.window, bundle.n_layers)
    z_layer = window[-1]
    solver = solver or _Solver(stats)
    b = mp.prep.batch
    n = b.n_cases
    deltas: list[dict[int, torch.Tensor]] = [{} for _ in range(n)]
    keys0, h0 = _forward(bundle, mp, window[0], window[0], z_layer, deltas)
    z_hp = hp.z_hparams(rome_hp)
    key = (window[0], z_layer, repr(z_hp))
    if key not in mp.z:
        mp.z[key] = compute_v(bundle, mp.prep, z_layer, z_hp, v0=h0[b.first_rows], residual=True)
    vrs = mp.z[key]
    z = torch.stack([vr.v_star for vr in vrs]).double()
    extra: list[dict] = [{"window": window, "z": z[c], "keys": {}, "residuals": {}} for c in range(n)]
    for i, li in enumerate(window):
        keys, h = _forward(bundle, mp, window[0], li, z_layer, deltas) if i else (keys0, h0)
        r = (z - h[b.first_rows].double()) / (len(window) - i)
        w_dtype = down_proj_weight_out_in(bundle.model, bundle.family, li).dtype
        for c in range(n):
            first = int(b.first_rows[c])
            ks = keys[first:first + int(b.n_rewrite[c])].double()
            k = torch.stack([g.mean(0) for g in torch.split(ks, mp.groups)]).mean(0)
            adj = solver.adjusted_key(li, k, hp.mom2_update_weight)
            deltas[c][li] = memit_update(r[c], k, adj).to(w_dtype)
            extra[c]["keys"][li], extra[c]["residuals"][li] = k, r[c]
    seconds = (time.perf_counter() - t0) / max(n, 1)
    return [Edit(int(f.case_id), int(layer), deltas[c], vrs[c].steps, vrs[c].final_loss, seconds, vrs[c].losses,
                 extra[c]) for c, f in enumerate(mp.prep.facts)]


class MemitEditor:
    """MEMIT for one fact behind the editor interface; shares ROME's context texts and statistics."""

    name = "memit"

    def __init__(self, hparams: MemitHyperParams, rome_hparams: RomeHyperParams, stats, contexts: list[str]):
        self.hp, self.rome_hp, self.stats, self.contexts = hparams, rome_hparams, stats, list(contexts)
        self.solver = _Solver(stats)

    def touched(self, layer: int, n_layers: int) -> list[int]:
        return centred_window(layer, self.hp.window, n_layers)

    def prepare(self, bundle: ModelBundle, facts: Sequence[Fact], problem=None) -> MemitPrepared:
        return prepare_memit(bundle, facts, self.contexts, self.hp.z_hparams(self.rome_hp), problem)

    def compute(self, bundle: ModelBundle, prepared: MemitPrepared, layer: int) -> list[Edit]:
        return compute_memit(bundle, prepared, int(layer), self.hp, self.rome_hp, self.stats, self.solver)


# ---------------------------------------------------------------------------------------------
# importing the MEMIT repository's hparams/MEMIT/*.json and EasyEdit's hparams/MEMIT/*.yaml

_MEMIT_SAME = ("v_lr", "v_num_grad_steps", "v_weight_decay", "kl_factor", "clamp_norm_factor", "mom2_update_weight")


def import_memit_hparams(path) -> tuple[MemitHyperParams, dict]:
    """Read a MEMIT hyperparameter file.  ``layers`` gives the window's size (the study centres the window
    on each edit layer; the listed positions are returned as not used); the v* settings and
    ``mom2_update_weight`` map to the same names; ``fact_token`` must be ``subject_last``;
    ``mom2_adjustment: false`` is refused (λC is MEMIT's update).  Returns the hyperparameters and the
    keys not used (module names, statistics dataset and size: causaleval's statistics are ROME's)."""
    from causaleval.editing.ft import _number, _read_mapping

    data, where = _read_mapping(path, "MEMIT")
    out, not_used = {}, {}
    for key, value in data.items():
        if key in _MEMIT_SAME:
            out[key] = _number(where, key, value, integer=key == "v_num_grad_steps")
        elif key == "layers":
            layers = value if isinstance(value, list) else [value]
            out["window"] = len(layers)
            not_used[key] = value
        elif key == "fact_token" and value != "subject_last":
            raise CausalEvalError(f"{where}: fact_token {value!r} is not supported; causaleval edits at the "
                                  "subject's last token (fact_token: subject_last)")
        elif key == "mom2_adjustment" and value is not True:
            raise CausalEvalError(f"{where}: mom2_adjustment {value!r}; causaleval's MEMIT always uses λC")
        else:
            not_used[key] = value
    return MemitHyperParams(**out), not_used
