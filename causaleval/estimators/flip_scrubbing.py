"""Flip scrubbing (this project; docs/estimands.md#flip-scrubbing).

Corrupt: replace the subject with s′ drawn uniformly from the *flip set*: other subjects of the same
relation whose true answer's first token o′ differs from the case's answer token o (so the flip set is
symmetric).  Partners with the case's token count are preferred; otherwise positions are aligned by
role.  Metrics p(o) and LD(o, o′) = z_o − z_o′.  Both directions: denoising (clean states into the
flipped run: sufficiency) and noising (flipped states into the clean run: necessity, Heimersheim &
Nanda 2024; reported as clean − patched).  The support size (the flip set's size) is reported per case;
a case with an empty flip set is excluded and counted.
"""

from __future__ import annotations

from typing import Sequence

from tqdm.auto import tqdm

from causaleval.data.counterfact import Fact
from causaleval.data.tokens import answer_ids
from causaleval.estimators.resample_scrubbing import ScrubbingConfig, candidates, relation_subjects, trace_partner_sets
from causaleval.model.loading import ModelBundle
from causaleval.patching.core import TraceTables
from causaleval.patching.estimands import Estimand, Support

NAME = "flip"
METRICS = ("p", "ld")
DIRECTIONS = ("denoise", "noise")


def flip_set(bundle: ModelBundle, fact: Fact, pool: Sequence[Fact]) -> list[Fact]:
    """Partners of the same relation whose answer's first token differs from the case's."""
    tok = bundle.tokenizer
    o = answer_ids(tok, fact.target_true)[0]
    return [p for p in candidates(fact, pool) if answer_ids(tok, p.target_true)[0] != o]


def flip_support(bundle: ModelBundle, fact: Fact, pool: Sequence[Fact]) -> Support:
    tok = bundle.tokenizer
    o = answer_ids(tok, fact.target_true)[0]
    subjects = relation_subjects(pool).get(fact.relation_id, set())
    return Support(f"real prompts of relation {fact.relation_id} with another subject of that relation whose "
                   "true answer differs (the flip set)", 1.0,
                   lambda p: (p.relation_id == fact.relation_id and p.subject in subjects and p.subject != fact.subject
                              and answer_ids(tok, p.target_true)[0] != o))


def estimand(config: ScrubbingConfig, direction: str = "denoise", metric: str = "ld") -> Estimand:
    source = "the clean run of the case's prompt" if direction == "denoise" else "the flipped run"
    return Estimand(
        name="Flip scrubbing",
        units="the known facts with a non-empty flip set",
        base=("the case's prompt with its subject replaced by a flip partner: another subject of the same "
              "relation whose true answer differs, same token count preferred, positions aligned by role"
              if direction == "denoise" else "the case's clean prompt"),
        support=Support("real prompts of the case's relation whose subject has a different true answer (the flip "
                        "set)", 1.0, lambda p: True),
        source=source, direction=direction, sites=config.grids, metric=metric)


def trace_facts(bundle: ModelBundle, facts: Sequence[Fact], pool: Sequence[Fact], config: ScrubbingConfig,
                keep_draws: bool = True) -> list[TraceTables]:
    """Tidy tables per case, the cases traced together."""
    cases = [(f, flip_set(bundle, f, pool), flip_support(bundle, f, pool)) for f in facts]
    return trace_partner_sets(bundle, cases, NAME, METRICS, config, prefer_same_length=True, keep_draws=keep_draws)


def trace_fact(bundle: ModelBundle, fact: Fact, pool: Sequence[Fact], config: ScrubbingConfig,
               keep_draws: bool = True) -> TraceTables:
    return trace_facts(bundle, [fact], pool, config, keep_draws)[0]


def trace(bundle: ModelBundle, facts: Sequence[Fact], pool: Sequence[Fact], config: ScrubbingConfig,
          progress: bool = False, keep_draws: bool = True) -> TraceTables:
    """Flip scrubbing of every fact (``config.directions`` defaults to denoise only: pass both)."""
    return TraceTables.concat([trace_fact(bundle, f, pool, config, keep_draws)
                               for f in tqdm(facts, desc="flip scrubbing", disable=not progress)])
