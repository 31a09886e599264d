"""Noise tracing (causal tracing; Meng et al. 2022; docs/estimands.md#noise-tracing).

Corrupt: add ε ~ N(0, ν² I) to the input embeddings of the subject tokens (the embedding module's
output, what the first block receives), ν = 3 × the standard deviation of subject-token embeddings
(one scalar over the dataset).  Restore one clean state (a site)
in the corrupted run.  Metric p(o) of the clean answer token o.  TE = p_clean(o) − E_ε p_corrupt(o);
IE(a) = E_ε p_corrupt,restore(a)(o) − E_ε p_corrupt(o).  Draws are independent across cases, keyed by
(seed, case_id, draw).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from tqdm.auto import tqdm

from causaleval.data.counterfact import Fact
from causaleval.data.tokens import Encoded, answer_ids, encode_prompt
from causaleval.model.loading import ModelBundle
from causaleval.model.sites import embedding_scale, input_embeddings
from causaleval.patching.core import CaseSpec, Draw, TraceTables, case_sites, case_tables, draw_seed, trace_cases
from causaleval.patching.estimands import Estimand, SiteGrid, Support

NAME = "noise"
METRICS = ("p",)


@dataclass(frozen=True)
class NoiseTracingConfig:
    """ν (absolute noise scale), draws per case, the seed and the site grids."""

    nu: float
    n_draws: int = 10
    seed: int = 0
    grids: tuple[SiteGrid, ...] = (SiteGrid("residual"), SiteGrid("mlp", window=10))
    max_rows: int = 512


@torch.no_grad()
def noise_scale(bundle: ModelBundle, facts: Sequence[Fact], factor: float = 3.0) -> float:
    """ν = factor × std of all elements of the input embeddings of every subject's tokens (in its prompt)
    over the dataset (docs/estimands.md#noise-tracing; ROME's ``collect_embedding_std``).  The embeddings
    are the embedding module's output, what the first block receives and the noise is added to (for
    Gemma the table rows times √d)."""
    ids = []
    for f in facts:
        enc = encode_prompt(bundle.tokenizer, f.prompt, f.subject, f.case_id)
        ids.extend(enc.input_ids[enc.subject_start:enc.subject_end])
    if not ids:
        raise ValueError("noise_scale needs at least one fact")
    return factor * float(input_embeddings(bundle.model, bundle.family, torch.tensor(ids)).float().std())


def off_table(bundle: ModelBundle, tol: float = 1e-6):
    """Support predicate for ν > 0: no perturbed subject embedding (rows of a (n, d) tensor, as the first
    block receives them) coincides with an input embedding of a token (a table row times the family's
    embedding scale), i.e. the draw is not a real token sequence."""
    table = bundle.model.get_input_embeddings().weight.detach().float()
    scale = embedding_scale(bundle.model, bundle.family)
    sq_norms = (table * table).sum(1) * (scale * scale)

    def predicate(rows: torch.Tensor) -> bool:
        rows = rows.float().to(table.device)
        d2 = (rows * rows).sum(1, keepdim=True) - 2 * scale * rows @ table.T + sq_norms
        return bool((d2.min(dim=1).values > tol * tol).all())
    return predicate


def estimand(config: NoiseTracingConfig, bundle: ModelBundle | None = None) -> Estimand:
    if config.nu > 0:
        support = Support(f"subject embeddings plus Gaussian noise N(0, ν²I), ν = {config.nu:.4g}: points off "
                          "the token-embedding table", 0.0,
                          off_table(bundle) if bundle is not None else (lambda rows: True))
    else:
        support = Support("the clean prompt itself (ν = 0: no corruption)", 1.0, lambda rows: True)
    return Estimand(
        name="Noise tracing (Meng et al. 2022)",
        units="the known facts (cases whose true answer is the model's top-1 prediction)",
        base=f"the case's prompt with Gaussian noise of scale ν added to the subject tokens' input embeddings "
             f"({config.n_draws} independent draws per case, keyed by (seed, case, draw))",
        support=support, source="the clean run of the case's prompt", direction="denoise",
        sites=config.grids, metric="p")


def make_draws(bundle: ModelBundle, enc: Encoded, case_id: int, config: NoiseTracingConfig) -> list[Draw]:
    """Noise draws ε ~ N(0, ν²I) on the subject tokens, generator seeded by (seed, case_id, draw)."""
    d_model = bundle.model.get_input_embeddings().weight.shape[1]
    draws = []
    for k in range(config.n_draws):
        gen = torch.Generator().manual_seed(draw_seed(config.seed, case_id, k))
        delta = torch.zeros(enc.length, d_model)
        n_subj = enc.subject_end - enc.subject_start
        delta[enc.subject_start:enc.subject_end] = config.nu * torch.randn(n_subj, d_model, generator=gen)
        draws.append(Draw(index=k, encoded=enc, embed_delta=delta))
    return draws


def case_spec(bundle: ModelBundle, fact: Fact, config: NoiseTracingConfig, check_support: bool = True) -> CaseSpec:
    """The prompt, answer, noise draws and sites of one case (draws checked against the support)."""
    enc = encode_prompt(bundle.tokenizer, fact.prompt, fact.subject, fact.case_id)
    answer = answer_ids(bundle.tokenizer, fact.target_true)[0]
    draws = make_draws(bundle, enc, fact.case_id, config)
    if check_support:
        subject = torch.tensor(enc.input_ids[enc.subject_start:enc.subject_end])
        rows = input_embeddings(bundle.model, bundle.family, subject).float().cpu()
        drawn = torch.cat([rows + d.embed_delta[enc.subject_start:enc.subject_end] for d in draws])
        estimand(config, bundle).support.check(drawn, f"noise tracing, case {fact.case_id}")
    sites = case_sites(config.grids, enc, bundle.n_layers)
    return CaseSpec(fact.case_id, fact.relation_id, enc, answer, draws, sites, "denoise")


def trace_facts(bundle: ModelBundle, facts: Sequence[Fact], config: NoiseTracingConfig, keep_draws: bool = True,
                check_support: bool = True) -> list[TraceTables]:
    """Tidy tables per case, the cases traced together (:func:`causaleval.patching.core.trace_cases`)."""
    specs = [case_spec(bundle, f, config, check_support) for f in facts]
    return [case_tables(tr, NAME, METRICS, None, keep_draws) for tr in trace_cases(bundle, specs, config.max_rows)]


def trace_fact(bundle: ModelBundle, fact: Fact, config: NoiseTracingConfig, keep_draws: bool = True,
               check_support: bool = True) -> TraceTables:
    """Tidy tables of one case (see :func:`causaleval.patching.core.case_tables`)."""
    return trace_facts(bundle, [fact], config, keep_draws, check_support)[0]


def trace(bundle: ModelBundle, facts: Sequence[Fact], config: NoiseTracingConfig, progress: bool = False,
          keep_draws: bool = True) -> TraceTables:
    """Noise tracing of every fact; cases are independent, so order and batching do not matter."""
    parts = [trace_fact(bundle, f, config, keep_draws) for f in tqdm(facts, desc="noise tracing", disable=not progress)]
    return TraceTables.concat(parts)
