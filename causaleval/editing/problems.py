"""Editing problems (Hase et al. 2023, §3.3–3.4): what an edit is asked to do, on which prompt, and
how it is scored (docs/problems.md).  Every editor solves every problem: a problem turns a fact into
the *request* the editor optimises (prompt, subject, target o*, comparison answer) and says whether
p(o* | prompt) is maximised or minimised and whether the subject's embeddings are noised.

* ``error_injection`` (the study's default): maximise p(o_new | s, r).
* ``fact_forcing``: maximise p(o | s_noise, r), the subject's token embeddings noised at the trace
  stage's scale ν during the optimisation (several draws) and scored on fresh draws; matched to
  noise tracing.
* ``flip_forcing`` (this project): for a flip partner s′ that the trace stage drew for the fact,
  maximise p(o | s′, r), an edit keyed on s′, scored on s′'s prompts; matched to flip scrubbing's
  per-draw effect of that same (s, s′) pair.
* ``fact_erasure``: minimise p(o | s, r) (the loss is p itself, as Hase et al.'s code does).
* ``fact_amplification``: maximise p(o | s, r).

In a request, ``target_new`` is the problem's target o* and ``target_true`` the comparison answer
(o_new for the problems on o; the partner's own answer o′ for flip forcing), so the edit scores'
``*_new`` columns read p(o*) and ES/PS compare o* with that answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from causaleval.data.counterfact import Fact
from causaleval.editing.noise import SubjectNoise
from causaleval.editing.scores import EditScores, edit_scores
from causaleval.errors import ConfigError

PROBLEMS: tuple[str, ...] = ("error_injection", "fact_forcing", "flip_forcing", "fact_erasure", "fact_amplification")
DEFAULT_PROBLEMS: tuple[str, ...] = ("error_injection",)
MATCHED_ESTIMATOR: dict[str, str] = {"fact_forcing": "noise", "flip_forcing": "flip"}   # the localiser each one mirrors


@dataclass(frozen=True)
class EditProblem:
    """One editing problem: the target (``"new"``: o_new, ``"true"``: o), its direction, the subject
    (``"own"``, ``"noised"``, ``"partner"``), the score of the rewrite/paraphrase prompts
    (``"recovered"`` = (p_a − p_b)/(1 − p_b), ``"erased"`` = (p_b − p_a)/p_b), and for noised subjects
    the noise and the number of draws in the optimisation (``edit_draws``) and in the scoring
    (``score_draws``, fresh draws)."""

    name: str
    target: str = "new"
    maximise: bool = True
    subject: str = "own"
    score: str = "recovered"
    noise: SubjectNoise | None = None
    edit_draws: int = 1
    score_draws: int = 1

    @property
    def minimise(self) -> bool:
        return not self.maximise

    @property
    def noised(self) -> bool:
        return self.subject == "noised"


def make_problem(name: str, nu: float | None = None, seed: int = 0, edit_draws: int = 10,
                 score_draws: int = 5) -> EditProblem:
    """The problem ``name``; fact forcing needs ν (the trace stage's noise scale)."""
    if name == "error_injection":
        return EditProblem(name)
    if name == "fact_amplification":
        return EditProblem(name, target="true")
    if name == "fact_erasure":
        return EditProblem(name, target="true", maximise=False, score="erased")
    if name == "flip_forcing":
        return EditProblem(name, target="true", subject="partner")
    if name == "fact_forcing":
        if nu is None or not math.isfinite(nu) or nu <= 0:
            raise ConfigError(f"fact_forcing needs the noise scale ν > 0 of the trace stage, got {nu!r}")
        return EditProblem(name, target="true", subject="noised", noise=SubjectNoise(float(nu), int(seed)),
                           edit_draws=int(edit_draws), score_draws=int(score_draws))
    raise ConfigError(f"edit problem {name!r}: unknown; choose from {', '.join(PROBLEMS)}")


def parse_problems(value) -> list[str]:
    """``"error_injection,fact_forcing"`` or a list → the problem names, checked before any model loads."""
    from causaleval.runs.rules import parse_names

    return parse_names("edit_problems", value, PROBLEMS, "--set edit_problems=error_injection,flip_forcing",
                       "a problem")


def request(fact: Fact, problem: EditProblem, partner: Fact | None = None) -> Fact:
    """The request the editor optimises for ``fact`` under ``problem`` (see module docstring).  Flip
    forcing needs the partner fact s′ (from the trace stage's draws): the case's prompt template with
    s′ must give o; it is scored on that prompt, s′'s paraphrases and s′'s neighbourhood."""
    if problem.subject == "partner":
        if partner is None:
            raise ValueError(f"case {fact.case_id}: flip forcing needs a partner subject")
        return Fact(case_id=fact.case_id, prompt=fact.prompt, relation_id=fact.relation_id, subject=partner.subject,
                    target_true=partner.target_true, target_new=fact.target_true,
                    paraphrase_prompts=list(partner.paraphrase_prompts),
                    neighborhood_prompts=list(partner.neighborhood_prompts),
                    extra={"partner_case": int(partner.case_id)})
    if problem.target == "true":
        return replace(fact, target_new=fact.target_true, target_true=fact.target_new)
    return fact


def problem_scores(problem: EditProblem, kind: Sequence[str], before: np.ndarray, after: np.ndarray) -> EditScores:
    """Scores of one edit from (n_prompts, 2) [p(o*), p(comparison)] before and after.  Maximising
    problems: the edit scores of :mod:`causaleval.editing.scores` on o*.  Erasure (Hase et al. 2023,
    §3.4): rewrite/paraphrase score = (p_b(o) − p_a(o)) / p_b(o), the share of p(o) erased; ES/PS =
    [p_a(o) < p_a(comparison)]; the neighbourhood score is unchanged (how little p(o | s*) moves)."""
    sc = edit_scores(list(kind), before, after)
    if problem.maximise:
        return sc
    k = np.asarray(kind)
    b, a = np.asarray(before, float), np.asarray(after, float)
    i, pa = int(np.flatnonzero(k == "prompt")[0]), k == "paraphrase"
    with np.errstate(divide="ignore", invalid="ignore"):
        erased = np.where(b[:, 0] > 0, (b[:, 0] - a[:, 0]) / b[:, 0], np.nan)
    return replace(sc, rewrite_score=float(erased[i]),
                   paraphrase_score=float(np.mean(erased[pa])) if pa.any() else math.nan,
                   es=float(a[i, 0] < a[i, 1]),
                   ps=float(np.mean(a[pa, 0] < a[pa, 1])) if pa.any() else math.nan,
                   es_magnitude=float(a[i, 1] - a[i, 0]),
                   ps_magnitude=float(np.mean(a[pa, 1] - a[pa, 0])) if pa.any() else math.nan)


# Hase et al. (2023)'s code changes a few hyperparameters per problem (window of one layer; FT-5 uses
# the FT values of their windowed branch): more optimisation steps under subject noise, tighter FT boxes
# for erasure and amplification.  Applied on top of the study's editor settings.
PROBLEM_HPARAMS: dict[tuple[str, str], dict] = {
    ("fact_forcing", "rome"): {"v_num_grad_steps": 25, "v_lr": 0.05},
    ("fact_forcing", "ft1"): {"num_steps": 50},
    ("fact_forcing", "ft5"): {"num_steps": 50, "norm_constraint": 1e-4},
    ("fact_erasure", "ft1"): {"norm_constraint": 1e-5},
    ("fact_erasure", "ft5"): {"norm_constraint": 1e-5},
    ("fact_amplification", "ft1"): {"norm_constraint": 5e-5},
    ("fact_amplification", "ft5"): {"norm_constraint": 1e-5},
}


def flip_partners(bundle, fact: Fact, pool: Sequence[Fact], n_draws: int, seed: int) -> list[tuple[int, Fact]]:
    """(draw index, partner fact) of every flip partner s′ the trace stage draws for ``fact``: the same
    flip set, draw count, seed, tag and same-length preference as flip scrubbing
    (:func:`causaleval.estimators.resample_scrubbing.partner_specs`), so draw k here is draw k of
    ``trace_draws`` for estimator ``flip``."""
    from causaleval.estimators import flip_scrubbing
    from causaleval.estimators.resample_scrubbing import partner_draws

    partners = flip_scrubbing.flip_set(bundle, fact, pool)
    if not partners:
        return []
    by_case = {p.case_id: p for p in partners}
    draws = partner_draws(bundle, fact, partners, n_draws, seed, flip_scrubbing.NAME, prefer_same_length=True)
    return [(int(d.index), by_case[d.partner_case]) for d in draws]
