"""Measured supports of the three base distributions: where do corrupted runs land?

The estimands of noise tracing (Meng et al. 2022), resample scrubbing (Chan et al. 2022) and flip
scrubbing differ in their base distribution.  Two diagnostics measure what each one reaches:

* **answer level**: the corrupted run's top-1 next token is the clean answer o (``clean``: the
  fact did not flip), another answer of the relation (``relation``: the behaviour of a flipped real
  input), or outside the relation's answer set (``off``: off-task); plus the probability mass
  p(A_r) = Σ_{a ∈ A_r} softmax(z)_a on the relation's answer set A_r (answers' first tokens);
* **state level**: the residual stream at the last subject token, layer by layer, against the states
  real subjects produce: the Mahalanobis distance d(h) = √((h − μ)ᵀ Σ̂⁻¹ (h − μ)) under a Ledoit–Wolf
  shrinkage covariance Σ̂ (Ledoit & Wolf 2004) fitted on the clean states of held-out real subjects,
  and how well d separates the arm's states from those of a second, disjoint held-out (calibration)
  set: the AUROC, equal to the mean percentile rank of the arm's distances among the calibration
  distances (Mann–Whitney; 0.5 = indistinguishable from real states), and the share beyond the 99th
  percentile τ_l of the calibration distances (so a fresh real state lies beyond it with probability ≈ 1 %).

*Massive* states are a category of their own: states with one activation orders of magnitude above
the rest, as the attention-sink states of the first position (Sun et al. 2024, "Massive activations
in large language models").  A state is massive at layer l when max_i |h_i| exceeds
``MASSIVE_FACTOR`` × the median of max_i |h_i| over the reference's fit states at l.  On SmolLM2-135M
ordinary real states reach at most 2.2× that median at every layer, the sink states of single-token
subjects at position 0 at least 6× from layer 2 on (about 4–5× at layer 1, 20× at layers 2–8, 50–290×
at 11–27): 4 lies in the gap at every layer, where an absolute limit (1000) misses the layer-2–8 sinks
(≈ 900) and sits near the ordinary states of the last layers (up to ≈ 600).  One such state carries most
of Σ's trace, so Ledoit–Wolf shrinks Σ̂ almost to a multiple of I and every ordinary state looks alike:
the reference (μ, Σ̂, τ) is fitted, and the calibration distances taken, without massive states, and
the share of massive states is reported per arm and layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from scipy.linalg import cholesky, solve_triangular
from sklearn.covariance import empirical_covariance, ledoit_wolf_shrinkage
from sklearn.metrics import roc_auc_score

from causaleval.data.counterfact import Fact
from causaleval.data.tokens import answer_ids, encode_prompt
from causaleval.errors import CausalEvalError
from causaleval.model.hooks import trace
from causaleval.model.loading import ModelBundle, head_logits
from causaleval.patching.core import Draw

OUTCOMES: tuple[str, ...] = ("clean", "relation", "off")
MASSIVE_FACTOR = 4.0   # massive: max_i |h_i| > MASSIVE_FACTOR × the reference's median max_i |h_i| (module docstring)


class SupportDataError(CausalEvalError):
    """Too few real subjects to fit the reference distribution of real states."""


def answer_set(tokenizer, pool: Sequence[Fact], relation_id: str) -> frozenset[int]:
    """First tokens of every answer (true and new) of the relation's facts in ``pool``."""
    ids = set()
    for f in pool:
        if f.relation_id == relation_id:
            ids.add(answer_ids(tokenizer, f.target_true)[0])
            ids.add(answer_ids(tokenizer, f.target_new)[0])
    return frozenset(ids)


def classify(top1: int, answer: int, answers: frozenset[int]) -> str:
    """``clean`` if the top-1 token is the clean answer, ``relation`` if it is another answer of the
    relation, else ``off``."""
    if top1 == answer:
        return "clean"
    return "relation" if top1 in answers else "off"


@dataclass
class Runs:
    """Per draw: last-position logits (n, V) and residual states at the last subject token (n, L, d)."""

    logits: torch.Tensor
    states: np.ndarray


@torch.no_grad()
def corrupted_runs(bundle: ModelBundle, draws: Sequence[Draw]) -> Runs:
    """Run every draw (its prompt, plus its embedding perturbation for noise draws), one batch per
    prompt length; read the logits at the last position and each block's output at the draw's last
    subject token."""
    n, n_layers = len(draws), bundle.n_layers
    logits: list[torch.Tensor | None] = [None] * n
    states: list[np.ndarray | None] = [None] * n
    groups: dict[int, list[int]] = {}
    for i, d in enumerate(draws):
        groups.setdefault(d.encoded.length, []).append(i)
    for length, idx in groups.items():
        ids = torch.tensor([draws[i].encoded.input_ids for i in idx], device=bundle.device)
        delta = None
        if any(draws[i].embed_delta is not None for i in idx):
            d_model = bundle.model.get_input_embeddings().weight.shape[1]
            delta = torch.stack([draws[i].embed_delta if draws[i].embed_delta is not None
                                 else torch.zeros(length, d_model) for i in idx])
        fam = bundle.family
        paths = [fam.module_path("residual", l) for l in range(n_layers)]
        edit = {} if delta is None else {fam.embed: lambda h, d=delta.to(bundle.device): h + d.to(h.dtype)}
        with trace(bundle.model, capture=paths, edit=edit) as store:
            hidden = bundle.model.base_model(input_ids=ids, use_cache=False).last_hidden_state
        last = head_logits(bundle.model, hidden[:, -1])
        pos = torch.tensor([draws[i].encoded.subject_end - 1 for i in idx], device=bundle.device)
        rows = torch.arange(len(idx), device=bundle.device)
        per_layer = torch.stack([store[p][rows, pos] for p in paths], dim=1)
        for r, i in enumerate(idx):
            logits[i] = last[r].float().cpu()
            states[i] = per_layer[r].float().cpu().numpy()
    return Runs(torch.stack(logits), np.stack(states))


def answer_rows(runs: Runs, answer: int, answers: frozenset[int], draws: Sequence[Draw]) -> pd.DataFrame:
    """A row per draw: top-1 token, outcome, p(o), p(A_r), and for partner draws whether the run's
    top-1 is the partner's own answer o′ (``partner_answered``)."""
    probs = torch.softmax(runs.logits.float(), dim=-1)
    top1 = probs.argmax(-1).tolist()
    aset = torch.tensor(sorted(answers), dtype=torch.long)
    p_set = probs[:, aset].sum(-1).tolist()
    p_o = probs[:, answer].tolist()
    return pd.DataFrame(dict(
        draw=[d.index for d in draws], top1=top1, outcome=[classify(t, answer, answers) for t in top1],
        p_answer=p_o, p_answer_set=p_set,
        partner_case=[d.partner_case if d.partner_case is not None else -1 for d in draws],
        partner_answered=[d.alt_token is not None and t == d.alt_token for d, t in zip(draws, top1)]))


@torch.no_grad()
def clean_states(bundle: ModelBundle, facts: Sequence[Fact]) -> np.ndarray:
    """(n, L, d) residual states at the last subject token of each fact's clean prompt."""
    if not facts:
        return np.zeros((0, bundle.n_layers, 0))
    draws = [Draw(index=i, encoded=encode_prompt(bundle.tokenizer, f.prompt, f.subject, f.case_id))
             for i, f in enumerate(facts)]
    return corrupted_runs(bundle, draws).states


def peak(states: np.ndarray) -> np.ndarray:
    """(n, L) largest absolute activation max_i |h_i| of (n, L, d) states."""
    return np.abs(states).max(-1) if states.shape[-1] else np.zeros(states.shape[:2])


def _shrunk_cov(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit–Wolf shrinkage covariance (1 − s) S + s tr(S)/d I of rows x, and s (Ledoit & Wolf 2004)."""
    s = float(ledoit_wolf_shrinkage(x))
    emp = empirical_covariance(x)
    cov = (1 - s) * emp
    cov.flat[::cov.shape[0] + 1] += s * np.trace(emp) / cov.shape[0]
    return cov, s


@dataclass
class RealStates:
    """Per layer: the mean μ_l and the Cholesky factor of the shrinkage covariance Σ̂_l = (1 − s) S + s tr(S)/d I
    (Ledoit & Wolf 2004) of the ordinary (not massive) real states of the fit set, the massive limit,
    the calibration set's distances (NaN for its massive states) and their ``quantile`` (the threshold τ_l)."""

    mean: np.ndarray        # (L, d)
    chol: np.ndarray        # (L, d, d), lower: Σ̂_l = C_l C_lᵀ
    threshold: np.ndarray   # (L,)
    shrinkage: np.ndarray   # (L,)
    n_fit: int
    n_calibration: int
    quantile: float = 0.99
    massive_limit: np.ndarray | None = None          # (L,): a state with max|h| above it is massive
    calibration_distance: np.ndarray | None = None   # (m, L), NaN where the calibration state is massive
    n_massive_fit: np.ndarray | None = None          # (L,) massive fit states left out of the fit

    @classmethod
    def fit(cls, fit_states: np.ndarray, calibration_states: np.ndarray, quantile: float = 0.99,
            massive_factor: float = MASSIVE_FACTOR) -> "RealStates":
        """Fit on the ordinary states of ``fit_states`` (n, L, d) and calibrate τ_l on the ordinary states of
        ``calibration_states`` (m, L, d); ``massive_factor=np.inf`` keeps every state (the unguarded fit)."""
        n, m = len(fit_states), len(calibration_states)
        if n < 3 or m < 3:
            raise SupportDataError(f"the real-state reference needs at least 3 fit and 3 calibration subjects, "
                                   f"got {n} and {m}: use more known facts or a smaller --max-facts")
        n_layers = fit_states.shape[1]
        limit = massive_factor * np.median(peak(fit_states), axis=0)
        fit_massive = peak(fit_states) > limit
        means, chols, shrink = [], [], []
        for l in range(n_layers):
            x = fit_states[~fit_massive[:, l], l].astype(np.float64)
            if len(x) < 3:
                raise SupportDataError(f"layer {l}: fewer than 3 fit states are not massive")
            cov, s = _shrunk_cov(x)
            means.append(x.mean(0))
            chols.append(cholesky(cov, lower=True))
            shrink.append(s)
        model = cls(np.stack(means), np.stack(chols), np.zeros(n_layers), np.array(shrink), n, m, quantile,
                    limit, None, fit_massive.sum(0))
        cal = np.where(model.massive(calibration_states), np.nan, model.distance(calibration_states))
        if (np.isfinite(cal).sum(0) < 3).any():
            raise SupportDataError("fewer than 3 calibration states are not massive at some layer")
        model.calibration_distance = cal
        model.threshold = np.nanquantile(cal, quantile, axis=0)
        return model

    def distance(self, states: np.ndarray) -> np.ndarray:
        """(n, L) Mahalanobis distances of (n, L, d) states."""
        x = states.astype(np.float64) - self.mean[None]
        return np.stack([np.linalg.norm(solve_triangular(self.chol[l], x[:, l].T, lower=True), axis=0)
                         for l in range(x.shape[1])], axis=1)

    def massive(self, states: np.ndarray) -> np.ndarray:
        """(n, L) whether each state is massive at each layer (max_i |h_i| above the layer's limit)."""
        return peak(states) > self.massive_limit[None]

    def percentile(self, distance: np.ndarray) -> np.ndarray:
        """(n, L) mid-rank percentile of each distance among the ordinary calibration distances of its layer:
        the share below plus half the share tied.  Its mean over an arm's states is the arm's AUROC against
        the calibration states (Mann–Whitney), 0.5 for states from the reference distribution."""
        out = np.empty(distance.shape)
        for l in range(distance.shape[1]):
            ref = np.sort(self.calibration_distance[:, l][np.isfinite(self.calibration_distance[:, l])])
            lo, hi = np.searchsorted(ref, distance[:, l], "left"), np.searchsorted(ref, distance[:, l], "right")
            out[:, l] = (lo + hi) / (2 * len(ref))
        return out


def auroc(arm: np.ndarray, real: np.ndarray) -> float:
    """AUROC of the distances ``arm`` (positives) against the real states' ``real`` (sklearn); NaN when one
    side is empty.  0.5: the arm's states are indistinguishable from real ones by distance, 1: all farther."""
    arm, real = np.asarray(arm, float), np.asarray(real, float)
    arm, real = arm[np.isfinite(arm)], real[np.isfinite(real)]
    if not len(arm) or not len(real):
        return float("nan")
    return float(roc_auc_score(np.r_[np.ones(len(arm)), np.zeros(len(real))], np.r_[arm, real]))


def split_reference(facts: Sequence[Fact], seed: int) -> tuple[list[Fact], list[Fact]]:
    """A seeded split of real subjects into a fit half and a calibration half (one fact per subject)."""
    seen: dict[tuple[str, str], Fact] = {}
    for f in sorted(facts, key=lambda f: f.case_id):
        seen.setdefault((f.relation_id, f.subject), f)
    ordered = list(seen.values())
    order = np.random.default_rng(seed).permutation(len(ordered))
    half = len(ordered) // 2
    return [ordered[i] for i in sorted(order[:half])], [ordered[i] for i in sorted(order[half:])]
