"""Constrained fine-tuning, FT-1 and FT-5 (Zhu et al. 2020, as used by Hase et al. 2023; docs/editors.md).

For case (s, r, o_new) at layer l, with W_j the MLP down-projection of layer j in the window
(FT-1: {l}; FT-5: the five layers centred on l, clipped at the model's first and last layer):

    minimise  NLL(o_new | prompt) = −(1/|o|) Σ_t log p(o_t | prompt, o_<t)     (teacher-forcing the whole target)

with Adam (lr ``lr``, no weight decay) on the W_j; after every step each weight is clamped into
[W_j⁰ − ε, W_j⁰ + ε] (``norm_constraint`` ε, an L∞ box).  The loss is evaluated before each step and the
optimisation stops as soon as it is below ``loss_stop`` or after ``num_steps`` steps (the ROME
repository's FT code, which Hase et al. build on).

Implementation: the parameters are ΔW_j = W_j − W_j⁰ (Adam's update does not depend on that shift),
kept per case and added to that case's row only, so many cases are fine-tuned in one batch, each with
its own Adam state, clamp and early stop (a finished case's ΔW no longer changes), i.e. each follows the
trajectory it would follow alone; a finished case's rows leave the batch (:func:`select_cases`), so the
later steps cost only the cases still running.  The blocks below the window are run once (their inputs
cached).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Sequence

import torch

from causaleval.data.counterfact import Fact
from causaleval.data.tokens import answer_ids, pad_batch
from causaleval.editing.editor import Edit, centred_window
from causaleval.editing.suffix import BlockInputs, capture_block_inputs, logits_at_positions, run_from
from causaleval.errors import CausalEvalError, SiteError
from causaleval.model.loading import ModelBundle
from causaleval.model.sites import check_layer, down_proj_weight_out_in, get_module
from causaleval.runs.checks import Rule


@dataclass(frozen=True)
class FTHyperParams:
    """Constrained fine-tuning of ``window`` down-projections centred on the edit layer.

    Defaults: Hase et al. (2023)'s released code for error injection: Adam lr 5e-4, 25 steps, ε = 1e-4
    (FT-5: ε = 5e-5, where their paper's text says 2e-5); stop below 1e-2 (ROME's FT code).  The study's
    editors ``ft1`` / ``ft5`` use :data:`FT_PRESETS`, whose ε is chosen for SmolLM2 (docs/ft-epsilon.md)."""

    window: int = 1
    lr: float = 5e-4
    num_steps: int = 25
    norm_constraint: float = 1e-4
    loss_stop: float = 1e-2
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        for name, rule in FT_RULES.items():
            found = rule.problem(getattr(self, name))
            if found:
                raise CausalEvalError(f"FT hyperparameter {name} {getattr(self, name)!r}: {found}")

    def updated(self, **changes) -> "FTHyperParams":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict:
        return asdict(self)


FT_RULES: dict[str, Rule] = {
    "window": Rule(low=1, high=1000),
    "lr": Rule(low=0, low_open=True, high=10),
    "num_steps": Rule(low=0, high=100_000),
    "norm_constraint": Rule(low=0, low_open=True),
    "loss_stop": Rule(low=0),
    "weight_decay": Rule(low=0),
}

# Hase et al. (2023)'s released code, error injection (GPT-J): FT-1 ε = 1e-4, FT-5 ε = 5e-5
HASE_FT_PRESETS: dict[str, FTHyperParams] = {
    "ft1": FTHyperParams(window=1, norm_constraint=1e-4),
    "ft5": FTHyperParams(window=5, norm_constraint=5e-5),
}

# This package's ε per FT editor: of the values measured on the committed study's facts (SmolLM2), the one
# with the largest S = harmonic mean of ES, PS, NS (docs/ft-epsilon.md; tests/test_ft_epsilon.py checks each
# against paper/editors/<editor>_epsilon.csv).  At Hase et al.'s values (1e-4, 5e-5) FT does not edit SmolLM2.
FT1_EPSILON = 5e-3
FT5_EPSILON = 1e-3

FT_PRESETS: dict[str, FTHyperParams] = {
    "ft1": FTHyperParams(window=1, norm_constraint=FT1_EPSILON),
    "ft5": FTHyperParams(window=5, norm_constraint=FT5_EPSILON),
}


@dataclass
class FTBatch:
    """One row per case: prompt + target_new[:-1]; read position i contributes log p(tokens[i]) at
    (rows[i], cols[i]) to case rows[i]; ``n_target[c]`` target tokens of case c."""

    facts: list[Fact]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    tokens: torch.Tensor
    n_target: torch.Tensor
    blocks: BlockInputs
    repeat: int = 1             # copies of every case's row (subject-noise draws); row j·n + c is copy j of case c
    minimise: bool = False      # minimise p(target) (fact erasure) instead of its NLL


@torch.no_grad()
def prepare_ft(bundle: ModelBundle, facts: Sequence[Fact], problem=None) -> FTBatch:
    """The rows of ``facts`` and one unedited forward recording every block's input.  ``problem`` (an
    :class:`~causaleval.editing.problems.EditProblem`) may minimise p(target) (erasure) or noise the
    subject (fact forcing: ``edit_draws`` copies of each row, each with its own subject noise, fixed
    through the optimisation, as Hase et al.'s code repeats the input for FT)."""
    from causaleval.data.tokens import encode_prompt
    from causaleval.editing.noise import d_model, embeddings_plus

    tok = bundle.tokenizer
    noise_spec = getattr(problem, "noise", None)
    repeat = max(1, int(problem.edit_draws)) if noise_spec is not None else 1
    seqs, rows, cols, toks, n_target, spans, keys = [], [], [], [], [], [], []
    n = len(facts)
    for j in range(repeat):
        for c, fact in enumerate(facts):
            if not fact.target_new.strip():
                raise SiteError(f"case {fact.case_id}: target_new {fact.target_new!r} is empty; give a non-empty target")
            target = answer_ids(tok, fact.target_new)
            prompt = list(tok(fact.text, add_special_tokens=True)["input_ids"])
            for k, t in enumerate(target):
                rows.append(j * n + c)
                cols.append(len(prompt) - 1 + k)
                toks.append(t)
            seqs.append(prompt + target[:-1])
            if j == 0:
                n_target.append(len(target))
            if noise_spec is not None:
                enc = encode_prompt(tok, fact.prompt, fact.subject, fact.case_id)
                spans.append((enc.subject_start, enc.subject_end))
                keys.append(("edit", int(fact.case_id), j))
    ids, mask, _ = pad_batch(seqs, tok.pad_token_id, device=bundle.device)
    noise = (noise_spec.tensor(spans, keys, ids.shape[1], d_model(bundle), ids.device)
             if noise_spec is not None else None)
    with embeddings_plus(bundle, noise):
        blocks, _ = capture_block_inputs(bundle, ids, mask)
    as_t = lambda x: torch.tensor(x, dtype=torch.long, device=bundle.device)  # noqa: E731
    return FTBatch(list(facts), ids, mask, as_t(rows), as_t(cols), as_t(toks), as_t(n_target), blocks, repeat,
                   bool(getattr(problem, "minimise", False)))


def _case_losses(bundle: ModelBundle, batch: FTBatch, layers: list[int], deltas: list[list[torch.Tensor]]) -> torch.Tensor:
    """Per case: mean NLL of its target tokens with its ΔW_j added at each window layer j (with copies of
    the rows, the mean over the copies)."""
    n, reps = len(batch.facts), batch.repeat

    def hook_for(j: int):
        def hook(_m, inp, out):
            dw = torch.stack([d[j] for d in deltas])                 # (cases, out, in)
            if reps == 1:
                return out + torch.bmm(inp[0], dw.transpose(1, 2).to(out.dtype))
            x = inp[0].view(reps, n, *inp[0].shape[1:])
            return out + torch.einsum("jnti,noi->jnto", x, dw.to(out.dtype)).reshape(out.shape)
        return hook

    handles = [get_module(bundle.model, bundle.family.module_path("down_proj", l)).register_forward_hook(hook_for(j))
               for j, l in enumerate(layers)]
    try:
        last = run_from(bundle, batch.blocks, layers[0])
    finally:
        for h in handles:
            h.remove()
    logp = torch.log_softmax(logits_at_positions(bundle, last, batch.rows, batch.cols).float(), -1)
    tok_lp = logp.gather(1, batch.tokens[:, None]).squeeze(1)
    if reps == 1:
        return -torch.zeros(n, device=tok_lp.device).index_add(0, batch.rows, tok_lp) / batch.n_target
    per_row = -torch.zeros(n * reps, device=tok_lp.device).index_add(0, batch.rows, tok_lp) / batch.n_target.repeat(reps)
    return per_row.view(reps, n).mean(0)


def select_cases(batch: FTBatch, cases: list[int]) -> FTBatch:
    """The rows of ``cases`` only (every copy of each), in that order: the same padded columns, so each
    kept row computes what it computed in the full batch."""
    n = len(batch.facts)
    device = batch.input_ids.device
    keep = torch.tensor([j * n + c for j in range(batch.repeat) for c in cases], dtype=torch.long, device=device)
    new_row = torch.full((n * batch.repeat,), -1, dtype=torch.long, device=device)
    new_row[keep] = torch.arange(len(keep), device=device)
    read = new_row[batch.rows] >= 0
    return FTBatch([batch.facts[c] for c in cases], batch.input_ids[keep], batch.attention_mask[keep],
                   new_row[batch.rows[read]], batch.cols[read], batch.tokens[read],
                   batch.n_target[torch.tensor(cases, dtype=torch.long, device=device)], batch.blocks.select(keep),
                   batch.repeat, batch.minimise)


def compute_ft(bundle: ModelBundle, batch: FTBatch, layer: int, hp: FTHyperParams) -> list[Edit]:
    """FT edits of every case of ``batch`` at ``layer`` (see module docstring); ``extra['losses']`` is the loss
    before each step and after the last."""
    check_layer(layer, bundle.n_layers)
    t0 = time.perf_counter()
    layers = centred_window(layer, hp.window, bundle.n_layers)
    n = len(batch.facts)
    eps = hp.norm_constraint
    deltas = [[torch.zeros_like(down_proj_weight_out_in(bundle.model, bundle.family, l), dtype=torch.float32,
                                requires_grad=True) for l in layers] for _ in range(n)]
    opt = torch.optim.Adam([d for case in deltas for d in case], lr=hp.lr, weight_decay=hp.weight_decay)
    losses: list[list[float]] = [[] for _ in range(n)]
    steps = [0] * n
    active, rows = list(range(n)), batch          # the cases still optimised and their rows
    for step in range(hp.num_steps + 1):
        with torch.enable_grad():
            loss = _case_losses(bundle, rows, layers, [deltas[c] for c in active])
            if batch.minimise:               # fact erasure: the loss is p(o) itself (Hase et al. 2023's code)
                loss = torch.exp(-loss)
        go_on = []                           # positions in ``active`` of the cases that take another step
        for i, (c, value) in enumerate(zip(active, loss.detach().tolist())):
            losses[c].append(value)
            if not ((value < hp.loss_stop and not batch.minimise) or step == hp.num_steps):
                go_on.append(i)
        if not go_on:
            break
        opt.zero_grad()
        loss[go_on].sum().backward()
        for i, c in enumerate(active):
            if i not in go_on:
                for d in deltas[c]:
                    d.grad = None            # finished now: Adam skips it, its ΔW stays as it ended
        opt.step()
        with torch.no_grad():
            for i in go_on:
                steps[active[i]] += 1
                for d in deltas[active[i]]:
                    d.clamp_(-eps, eps)
        if len(go_on) < len(active):         # drop the finished cases' rows from the batch
            active = [active[i] for i in go_on]
            rows = select_cases(batch, active)
    seconds = (time.perf_counter() - t0) / max(n, 1)
    out = []
    for c, fact in enumerate(batch.facts):
        dws = {l: d.detach().to(down_proj_weight_out_in(bundle.model, bundle.family, l).dtype)
               for l, d in zip(layers, deltas[c])}
        out.append(Edit(int(fact.case_id), int(layer), dws, steps[c], losses[c][-1], seconds, losses[c],
                        {"window": layers}))
    return out


class FTEditor:
    """Constrained fine-tuning behind the editor interface (``ft1``: one layer, ``ft5``: five)."""

    def __init__(self, name: str, hparams: FTHyperParams):
        self.name, self.hp = name, hparams

    def touched(self, layer: int, n_layers: int) -> list[int]:
        return centred_window(layer, self.hp.window, n_layers)

    def prepare(self, bundle: ModelBundle, facts: Sequence[Fact], problem=None) -> FTBatch:
        return prepare_ft(bundle, facts, problem)

    def compute(self, bundle: ModelBundle, prepared: FTBatch, layer: int) -> list[Edit]:
        return compute_ft(bundle, prepared, int(layer), self.hp)


# ---------------------------------------------------------------------------------------------
# importing the ROME/MEMIT repositories' hparams/FT/*.json and EasyEdit's hparams/FT/*.yaml

_FT_SAME = ("lr", "num_steps", "norm_constraint")


def import_ft_hparams(path) -> tuple[FTHyperParams, dict]:
    """Read an FT hyperparameter file (ROME/MEMIT repositories' ``hparams/FT/<model>.json``, EasyEdit's
    ``hparams/FT/<model>.yaml``).  ``layers`` gives the window's size (its positions are not used: the
    study sweeps the centre layer); ``lr``, ``num_steps``, ``norm_constraint`` map to the same names
    (``norm_constraint: false`` = no constraint is refused: causaleval's FT is constrained);
    ``weight_decay: false`` → 0.  Returns the hyperparameters and the keys not used."""
    data, where = _read_mapping(path, "FT")
    out, not_used = {}, {}
    for key, value in data.items():
        if key in _FT_SAME:
            if key == "norm_constraint" and (value is False or value is None):
                raise CausalEvalError(f"{where}: norm_constraint {value!r} means unconstrained fine-tuning; "
                                      "causaleval's FT-1/FT-5 need a number ε (Hase et al. use 1e-4 / 5e-5)")
            out[key] = _number(where, key, value, integer=key == "num_steps")
        elif key == "layers":
            layers = value if isinstance(value, list) else [value]
            out["window"] = len(layers)
        elif key == "weight_decay":
            out["weight_decay"] = 0.0 if value is False or value is None else float(value)
        else:
            not_used[key] = value
    return FTHyperParams(**out), not_used


def _number(where: str, key: str, value, integer: bool = False) -> int | float:
    """A hyperparameter file's numeric value (``where`` names the file in the one-line error)."""
    if isinstance(value, bool):
        raise CausalEvalError(f"{where}: {key} {value!r} is not a number")
    try:
        return int(value) if integer else float(value)
    except (TypeError, ValueError) as err:
        raise CausalEvalError(f"{where}: {key} {value!r} is not a number") from err


def _read_mapping(path, alg: str) -> tuple[dict, str]:
    from pathlib import Path

    import yaml

    path = Path(path)
    where = f"{alg} hparams file {path}"
    if not path.is_file():
        raise CausalEvalError(f"{where} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))    # JSON is YAML
    except (UnicodeDecodeError, yaml.YAMLError) as err:
        raise CausalEvalError(f"{where}: not valid JSON/YAML ({str(err).splitlines()[0]})") from err
    if not isinstance(data, dict):
        raise CausalEvalError(f"{where}: expected a mapping of hyperparameters")
    name = str(data.get("alg_name", alg)).upper()
    if name != alg:
        raise CausalEvalError(f"{where}: alg_name is {data.get('alg_name')!r}; expected {alg}")
    return data, where
