"""A positive control for the H1 pipeline (docs/groundtruth.md#positive-control).

Plant o_new for (s, r) at layer l (the planting editor, :mod:`causaleval.groundtruth.planting`), then
edit the planted fact again — o_new → o₃, a third answer of the same relation — with ROME at every edit
layer and score those re-edits (Meng et al. 2022's rewrite score).  The localisers trace the planted
fact (answer o_new) on the planted model.  Here the association the re-edit must overwrite sits where
the planting wrote it, so if localisation informs editing anywhere it should do so here; the study's
analysis (the within-fact measure per estimator and H1 between estimators, Hase et al. 2023's design)
is run unchanged on these rows.  Each (fact, planted layer) is one *unit*, analysed as a case.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pandas as pd

from causaleval.data.counterfact import Fact

UNIT_STRIDE = 1000          # unit id = case_id · UNIT_STRIDE + planted layer (layers < 1000)


def unit_id(case_id: int, planted_layer: int) -> int:
    """The case id the analysis sees for (fact, planted layer)."""
    return int(case_id) * UNIT_STRIDE + int(planted_layer)


def split_unit(unit: int) -> tuple[int, int]:
    """(case_id, planted layer) of a unit id."""
    return divmod(int(unit), UNIT_STRIDE)


def control_layers_for(configured: list[int] | None, edit_layers: list[int], n_layers: int) -> list[int]:
    """``configured``, or the edit layers nearest 0.3·L and 0.6·L (ties to the lower; SmolLM2: 8, 16), so
    that a re-edit at the planted layer itself is among the scored ones."""
    if configured is not None:
        return sorted({int(x) for x in configured})
    edit = np.asarray(sorted(edit_layers))
    picks = {int(edit[np.argmin(np.abs(edit - q * n_layers))]) for q in (0.3, 0.6)}
    return sorted(picks)


def third_answer(fact: Fact, pool: list[Fact], first_token, seed: int = 0) -> str | None:
    """A seeded answer of ``fact``'s relation (from ``pool``'s true and new answers) whose first token
    (``first_token(text)``) differs from both o's and o_new's; None when the relation has none."""
    taken = {first_token(fact.target_true), first_token(fact.target_new)}
    answers = sorted({a for f in pool if f.relation_id == fact.relation_id for a in (f.target_true, f.target_new)})
    ok = [a for a in answers if first_token(a) not in taken]
    return random.Random(seed * 100003 + int(fact.case_id)).choice(ok) if ok else None


def reedit_fact(fact: Fact, o3: str, planted_layer: int) -> Fact:
    """The re-edit (s, r, o_new → o₃) as a case of its own (id :func:`unit_id`).  Neighbourhood prompts are
    dropped: the study's neighbours are subjects whose answer is o, which says nothing about o_new → o₃."""
    return dataclasses.replace(fact, case_id=unit_id(fact.case_id, planted_layer), target_true=fact.target_new,
                               target_new=o3, neighborhood_prompts=[])


def control_table(result, measure: str = "r_w", score: str = "rewrite_score") -> pd.DataFrame:
    """The positive control's headline from an :class:`~causaleval.analysis.study.AnalysisResult`: per
    estimator the within-fact ``measure`` (the study's primary ``r_w`` by default; any per-estimator
    column of the r2 table) with its CI and one-sided p, and per pair H1 on the same measure (diff, CI,
    one-sided p, minimum detectable difference, verdict)."""
    rows = []
    r2 = result.r2[result.r2.score == score] if len(result.r2) else result.r2
    ci = {"r_w": ("r_w_ci_low", "r_w_ci_high", "p_r_w"), "delta_r2": ("delta_ci_low", "delta_ci_high", "p_cluster")}
    lo, hi, p = ci.get(measure, (f"{measure}_ci_low", f"{measure}_ci_high", f"p_{measure}"))
    for r in r2.itertuples():
        d = r._asdict()
        rows.append(dict(kind="estimator", estimator=r.estimator, measure=measure, value=d.get(measure),
                         ci_low=d.get(lo), ci_high=d.get(hi), p=d.get(p), mdd=np.nan, n_cases=r.n_cases, verdict=""))
    h1 = result.h1[(result.h1.score == score) & (result.h1.measure == measure)] if len(result.h1) else result.h1
    for r in h1.itertuples():
        rows.append(dict(kind="h1", estimator=f"{r.a} - {r.b}", measure=measure, value=r.diff, ci_low=r.ci_low,
                         ci_high=r.ci_high, p=r.p_one_sided, mdd=r.mdd, n_cases=r.n_cases, verdict=r.verdict))
    return pd.DataFrame(rows, columns=["kind", "estimator", "measure", "value", "ci_low", "ci_high", "p", "mdd",
                                       "n_cases", "verdict"])
