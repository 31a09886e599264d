"""Resample scrubbing (resampling ablation; Chan et al. 2022; docs/estimands.md#resample-scrubbing).

Corrupt: replace the subject with s′ drawn uniformly from the other subjects of the same relation in
the dataset (answers may coincide).  Support: real prompts (mass 1 on real token sequences).  Restore
one clean state into the resampled run; TE and IE as in noise tracing, metric p(o).  When the support
has at most ``n_draws`` partners, all of them are used (the expectation is then exact); otherwise
``n_draws`` are drawn without replacement, seeded by (seed, case_id).  Positions of partners with a
different token count are aligned by role (:func:`causaleval.patching.core.align_position`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from tqdm.auto import tqdm

from causaleval.data.counterfact import Fact
from causaleval.data.tokens import answer_ids, encode_prompt
from causaleval.model.loading import ModelBundle
from causaleval.patching.core import (CaseSpec, Draw, TraceTables, case_sites, case_tables, draw_seed, excluded_case,
                                      trace_cases)
from causaleval.patching.estimands import Estimand, SiteGrid, Support

NAME = "resample"
METRICS = ("p",)


@dataclass(frozen=True)
class ScrubbingConfig:
    """Partner draws per case, the seed, the site grids, and the directions traced."""

    n_draws: int = 10
    seed: int = 0
    grids: tuple[SiteGrid, ...] = (SiteGrid("residual"), SiteGrid("mlp", window=10))
    directions: tuple[str, ...] = ("denoise",)
    max_rows: int = 512


def relation_subjects(pool: Sequence[Fact]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for f in pool:
        out.setdefault(f.relation_id, set()).add(f.subject)
    return out


def resample_support(fact: Fact, pool: Sequence[Fact]) -> Support:
    subjects = relation_subjects(pool).get(fact.relation_id, set())
    return Support(f"real prompts of relation {fact.relation_id} with another subject of that relation in the "
                   "dataset (any answer)", 1.0,
                   lambda p: p.relation_id == fact.relation_id and p.subject in subjects and p.subject != fact.subject)


def candidates(fact: Fact, pool: Sequence[Fact]) -> list[Fact]:
    """Other subjects of the same relation, one fact per subject, in case-id order (order-free)."""
    seen: dict[str, Fact] = {}
    for f in sorted(pool, key=lambda f: f.case_id):
        if f.relation_id == fact.relation_id and f.subject != fact.subject and f.subject not in seen:
            seen[f.subject] = f
    return list(seen.values())


def partner_draws(bundle: ModelBundle, fact: Fact, partners: Sequence[Fact], n_draws: int, seed: int,
                  tag: str, prefer_same_length: bool = False) -> list[Draw]:
    """Draws of partners: all when there are at most ``n_draws``, else a seeded sample without
    replacement.  With ``prefer_same_length`` only partners whose prompt has the case's token count are
    used when there are any."""
    tok = bundle.tokenizer
    enc = encode_prompt(tok, fact.prompt, fact.subject, fact.case_id)
    encs = [encode_prompt(tok, fact.prompt, p.subject, f"{fact.case_id} (partner {p.case_id})") for p in partners]
    chosen = list(range(len(partners)))
    if prefer_same_length:
        same = [i for i in chosen if encs[i].length == enc.length]
        chosen = same or chosen
    if len(chosen) > n_draws:
        chosen = sorted(random.Random(draw_seed(seed, fact.case_id, tag)).sample(chosen, n_draws))
    return [Draw(index=k, encoded=encs[i], alt_token=answer_ids(tok, partners[i].target_true)[0],
                 partner_case=partners[i].case_id, partner_subject=partners[i].subject)
            for k, i in enumerate(chosen)]


def trace_partners(bundle: ModelBundle, fact: Fact, partners: Sequence[Fact], support: Support, name: str,
                   metrics: Sequence[str], config: ScrubbingConfig, prefer_same_length: bool,
                   keep_draws: bool) -> TraceTables:
    """Trace one case against its partner set (shared by resample and flip scrubbing)."""
    return trace_partner_sets(bundle, [(fact, partners, support)], name, metrics, config, prefer_same_length,
                              keep_draws)[0]


def partner_specs(bundle: ModelBundle, fact: Fact, partners: Sequence[Fact], support: Support, name: str,
                  config: ScrubbingConfig, prefer_same_length: bool) -> list[CaseSpec]:
    """One case's specs (a direction each): partner draws checked against the support, and the sites."""
    draws = partner_draws(bundle, fact, partners, config.n_draws, config.seed, name, prefer_same_length)
    by_case = {p.case_id: p for p in partners}
    for d in draws:
        support.check(by_case[d.partner_case], f"{name} scrubbing, case {fact.case_id}, partner {d.partner_case}")
    enc = encode_prompt(bundle.tokenizer, fact.prompt, fact.subject, fact.case_id)
    answer = answer_ids(bundle.tokenizer, fact.target_true)[0]
    sites = case_sites(config.grids, enc, bundle.n_layers)
    return [CaseSpec(fact.case_id, fact.relation_id, enc, answer, draws, sites, d) for d in config.directions]


def trace_partner_sets(bundle: ModelBundle, cases: Sequence[tuple[Fact, Sequence[Fact], Support]], name: str,
                       metrics: Sequence[str], config: ScrubbingConfig, prefer_same_length: bool,
                       keep_draws: bool) -> list[TraceTables]:
    """Trace several cases, each (fact, partners, support), together (:func:`causaleval.patching.core.trace_cases`);
    a case without partners is excluded and counted.  Returns one TraceTables per case, in order."""
    out: list[TraceTables | None] = [None] * len(cases)
    specs, owners = [], []
    for k, (fact, partners, support) in enumerate(cases):
        if not partners:
            out[k] = excluded_case(name, config.directions, metrics, fact.case_id, fact.relation_id,
                                   f"no partner subject of relation {fact.relation_id} in the support", 0)
            continue
        for spec in partner_specs(bundle, fact, partners, support, name, config, prefer_same_length):
            specs.append(spec)
            owners.append((k, len(partners)))
    parts: dict[int, list[TraceTables]] = {}
    for (k, n_partners), tr in zip(owners, trace_cases(bundle, specs, config.max_rows)):
        parts.setdefault(k, []).append(case_tables(tr, name, metrics, n_partners, keep_draws))
    for k, p in parts.items():
        out[k] = TraceTables.concat(p)
    return out


def estimand(config: ScrubbingConfig, direction: str = "denoise") -> Estimand:
    return Estimand(
        name="Resample scrubbing (Chan et al. 2022)",
        units="the known facts (cases whose true answer is the model's top-1 prediction)",
        base="the case's prompt with its subject replaced by another subject of the same relation, drawn "
             f"uniformly from the dataset (all of them when at most {config.n_draws}, else {config.n_draws} "
             "without replacement)",
        support=Support("real prompts of the case's relation with another subject of that relation (any answer)",
                        1.0, lambda p: True),
        source="the clean run of the case's prompt", direction=direction, sites=config.grids, metric="p")


def trace_facts(bundle: ModelBundle, facts: Sequence[Fact], pool: Sequence[Fact], config: ScrubbingConfig,
                keep_draws: bool = True) -> list[TraceTables]:
    """Tidy tables per case, the cases traced together."""
    cases = [(f, candidates(f, pool), resample_support(f, pool)) for f in facts]
    return trace_partner_sets(bundle, cases, NAME, METRICS, config, prefer_same_length=False, keep_draws=keep_draws)


def trace_fact(bundle: ModelBundle, fact: Fact, pool: Sequence[Fact], config: ScrubbingConfig,
               keep_draws: bool = True) -> TraceTables:
    return trace_facts(bundle, [fact], pool, config, keep_draws)[0]


def trace(bundle: ModelBundle, facts: Sequence[Fact], pool: Sequence[Fact], config: ScrubbingConfig,
          progress: bool = False, keep_draws: bool = True) -> TraceTables:
    """Resample scrubbing of every fact, partners drawn from ``pool`` (the dataset)."""
    return TraceTables.concat([trace_fact(bundle, f, pool, config, keep_draws)
                               for f in tqdm(facts, desc="resample scrubbing", disable=not progress)])


