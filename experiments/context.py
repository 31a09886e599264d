"""What every stage gets: the resolved config, the results folder and lazily loaded model and facts."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from causaleval.data.counterfact import Fact, facts_from_jsonl, load_counterfact
from causaleval.data.catalogue import build_facts
from causaleval.errors import CausalEvalError, DataError
from causaleval.model.loading import ModelBundle, load_model
from experiments.config import StudyConfig


@dataclass
class StageContext:
    config: StudyConfig
    out_dir: Path
    progress: bool = True
    recompute: bool = False      # recompute the stage's finished parts instead of reusing them (--force)
    _bundle: ModelBundle | None = field(default=None, repr=False)

    @property
    def bundle(self) -> ModelBundle:
        if self._bundle is None:
            c = self.config
            self._bundle = load_model(c.model, device=c.device, dtype=c.dtype, trust_remote_code=c.trust_remote_code)
        return self._bundle

    @cached_property
    def source_facts(self) -> list[Fact]:
        """The facts the facts stage filters: ``--facts`` records or the built-in facts.

        ``relations`` selects relation ids in both cases (CounterFact records carry ``relation_id``); for the
        built-in facts it may also name the sets of :mod:`causaleval.data.catalogue` (default: geography)."""
        c = self.config
        if not c.facts:
            return build_facts(seed=c.seed, relations=c.relations)
        facts = load_counterfact(c.facts)
        if c.relations:
            kept = [f for f in facts if f.relation_id in set(c.relations)]
            if not kept:
                have = sorted({f.relation_id for f in facts})
                raise DataError(f"--relations {' '.join(c.relations)}: no record of {c.facts} has these relation "
                                f"ids; it has {', '.join(have[:20])}{' …' if len(have) > 20 else ''}")
            facts = kept
        return facts

    @property
    def facts_path(self) -> Path:
        return self.out_dir / "facts.jsonl"

    @cached_property
    def known_facts(self) -> list[Fact]:
        """All known facts written by the facts stage."""
        if not self.facts_path.is_file():
            raise CausalEvalError(f"{self.facts_path} is missing: run the facts stage first "
                                  f"(python -m experiments.main --stage facts --out {self.out_dir})")
        return facts_from_jsonl(self.facts_path)

    @cached_property
    def study_facts(self) -> list[Fact]:
        """The known facts this run studies: ``max_facts`` of them (all when None), stratified over relations
        (:func:`stratified_sample`), in case order; cases studied by the ``exclude_facts_from`` folders are
        left out first (a held-out sample)."""
        facts = self.known_facts
        if self.config.exclude_facts_from:
            from experiments.config import excluded_case_ids

            out = set().union(*(excluded_case_ids(d) for d in self.config.exclude_facts_from))
            facts = [f for f in facts if str(f.case_id) not in out]
            if not facts:
                raise DataError(f"every known fact was studied by {', '.join(self.config.exclude_facts_from)} "
                                "(exclude_facts_from), so no held-out fact is left; drop a folder or add facts")
        n = self.config.max_facts
        if n is not None and n > len(facts):
            print(f"max_facts {n}: {len(facts)} facts are known to the model; studying all {len(facts)}")
        if n is not None and n < len(facts):
            chosen = set(stratified_sample([f.relation_id for f in facts], n, self.config.seed))
            facts = [f for i, f in enumerate(facts) if i in chosen]
        return facts

    def edit_layers(self) -> list[int]:
        return edit_layers_for(self.config, self.bundle.n_layers)


def stratified_sample(strata: list[str], n: int, seed: int) -> list[int]:
    """Indices of ``n`` items drawn without replacement, as evenly over the strata as their sizes allow.

    Each relation gets ⌊n / k⌋ (k relations; the first n mod k relations in sorted order get one more); a
    relation with fewer facts gives all of them and its shortfall is shared out among the others the same
    way.  Within a relation the facts are a seeded random sample.  Equal allocation rather than
    proportional keeps the small relations (and their prompt shapes) in the study."""
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(strata):
        groups.setdefault(s, []).append(i)
    quota = dict.fromkeys(groups, 0)
    left = min(n, len(strata))
    while left:
        open_ = sorted(g for g in groups if quota[g] < len(groups[g]))
        share, extra = divmod(left, len(open_))
        for j, g in enumerate(open_):
            take = min(share + (j < extra), len(groups[g]) - quota[g])
            quota[g] += take
            left -= take
    rng = random.Random(seed)
    return sorted(i for g in sorted(groups) for i in rng.sample(groups[g], quota[g]))


def stratified_subset(facts: list, n: int | None, seed: int) -> list:
    """``n`` of ``facts`` drawn by :func:`stratified_sample` over their relations (seeded), in their order;
    all of them when ``n`` is None or not below their number."""
    if n is None or n >= len(facts):
        return list(facts)
    chosen = set(stratified_sample([f.relation_id for f in facts], n, seed))
    return [f for i, f in enumerate(facts) if i in chosen]


def edit_layers_for(config: StudyConfig, n_layers: int) -> list[int]:
    """The configured edit layers, or every ``edit_layer_step``-th layer and the last."""
    if config.edit_layers is not None:
        return list(config.edit_layers)
    return sorted(set(range(0, n_layers, config.edit_layer_step)) | {n_layers - 1})


def run_case_job(ctx: StageContext, job, facts: list[Fact], parts_dir: str, shard_size: int | None = None) -> list[str]:
    """Run a stage's per-case job on the configured backend into ``<out>/<parts_dir>``; returns part keys.
    ``shard_size``: cases per shard (default ``config.shard_size``)."""
    from causaleval.runs.parts import PartStore
    from experiments.backends import run_job

    c = ctx.config
    return run_job(job, facts, PartStore(ctx.out_dir / parts_dir, recompute=ctx.recompute), c, lambda: ctx.bundle, backend=c.backend,
                   progress=ctx.progress, shard_size=shard_size or c.shard_size,
                   **({"workers": c.workers, "address": c.ray_address} if c.backend == "ray" else {}))
