"""Where a stage's per-case work runs: in this process (default) or on Ray workers (docs/design.md#stages).

A stage describes its work as a :class:`CaseJob`:

* ``setup(bundle, config, shared) -> state`` runs once per worker after the model is loaded
  (``shared`` holds dataset-level quantities the driver computed, e.g. the noise scale ν);
* ``work(state, facts) -> iterable of (key, DataFrame)`` computes the parts of a shard of cases.

The driver writes every finished part atomically into a :class:`~causaleval.runs.parts.PartStore`, so
both backends share one resumable store and a rerun computes only the missing parts.  On Ray, each
worker (an actor: one per GPU, or per CPU slot) loads the model once and takes shards of cases; an
actor that dies is restarted and its shard retried (``max_restarts``/``max_task_retries``), and since
parts are keyed by case a retried shard can never store a case twice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import pandas as pd
from tqdm.auto import tqdm

from causaleval.data.counterfact import Fact
from causaleval.errors import CausalEvalError
from causaleval.model.loading import ModelBundle, load_model
from causaleval.runs.parts import PartStore

Setup = Callable[[ModelBundle, Any, dict], Any]
Work = Callable[[Any, list[Fact]], Iterable[tuple[str, pd.DataFrame]]]


@dataclass
class CaseJob:
    """A stage's per-case work: ``key(fact)`` names the part a case writes."""

    name: str
    setup: Setup
    work: Work
    shared: dict = field(default_factory=dict)
    key: Callable[[Fact], str] = lambda f: str(f.case_id)
    batch: int = 1     # cases the local backend hands ``work`` at once (a job may compute them together)


def shards(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def run_job(job: CaseJob, facts: list[Fact], store: PartStore, config, bundle_factory: Callable[[], ModelBundle],
            backend: str = "local", progress: bool = True, shard_size: int = 4, **ray_options) -> list[str]:
    """Compute the parts that ``store`` lacks for ``facts``; returns the keys of all facts' parts."""
    keys = [job.key(f) for f in facts]
    todo = [f for f, k in zip(facts, keys) if not store.is_done(k)]
    if todo:
        bar = tqdm(total=len(todo), desc=job.name, disable=not progress)
        if backend == "local":
            _run_local(job, todo, store, config, bundle_factory(), bar, shard_size)
        elif backend == "ray":
            _run_ray(job, todo, store, config, bar, shard_size=shard_size, **ray_options)
        else:
            raise CausalEvalError(f"unknown backend {backend!r}; choose 'local' or 'ray'")
        bar.close()
    return keys


def _run_local(job: CaseJob, facts: list[Fact], store: PartStore, config, bundle: ModelBundle, bar,
               shard_size: int = 1) -> None:
    """Shards of max(``job.batch``, ``shard_size``) cases (a job may batch within a shard); each part is written
    as it comes."""
    state = job.setup(bundle, config, job.shared)
    for shard in shards(facts, max(1, job.batch, shard_size)):
        for key, frame in job.work(state, shard):
            store.write(key, frame)
        bar.update(len(shard))


class _Worker:
    """A Ray actor: loads the model once, then computes shards."""

    def __init__(self, config, job: CaseJob):
        bundle = load_model(config.model, device=config.device, dtype=config.dtype,
                            trust_remote_code=config.trust_remote_code)
        self.job = job
        self.state = job.setup(bundle, config, job.shared)

    def pid(self) -> int:
        return os.getpid()

    def run(self, facts: list[Fact]) -> list[tuple[str, pd.DataFrame]]:
        return list(self.job.work(self.state, facts))


def _run_ray(job: CaseJob, facts: list[Fact], store: PartStore, config, bar, shard_size: int = 4,
             workers: int | None = None, address: str | None = None, gpus_per_worker: float | None = None,
             max_retries: int = 3, on_started: Callable[[list], None] | None = None) -> None:
    try:
        import ray
    except ImportError as err:
        raise CausalEvalError("the Ray backend needs the optional extra: pip install 'causaleval[ray]'") from err
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            # A local cluster on loopback only.
            ray.init(num_cpus=workers or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                     _node_ip_address="127.0.0.1")
    use_gpu = str(config.device).startswith("cuda")
    if gpus_per_worker is None:
        gpus_per_worker = 1.0 if use_gpu else 0.0
    n_workers = workers or (int(ray.cluster_resources().get("GPU", 1)) if use_gpu else 2)
    cpus = max(1.0, (ray.cluster_resources().get("CPU", n_workers) // n_workers)) if not use_gpu else 1.0
    actor_cls = ray.remote(num_cpus=cpus, num_gpus=gpus_per_worker, max_restarts=max_retries,
                           max_task_retries=max_retries)(_Worker)
    actors = [actor_cls.remote(config, job) for _ in range(n_workers)]
    if on_started is not None:
        on_started(actors)
    pending = shards(facts, shard_size)
    in_flight: dict = {}
    sizes: dict = {}
    free = list(actors)
    try:
        while pending or in_flight:
            while pending and free:
                actor = free.pop()
                shard = pending.pop(0)
                ref = actor.run.remote(shard)
                in_flight[ref], sizes[ref] = actor, len(shard)
            done, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in done:
                actor = in_flight.pop(ref)
                for key, frame in ray.get(ref):
                    if not store.is_done(key):
                        store.write(key, frame)
                bar.update(sizes.pop(ref))
                free.append(actor)
    finally:
        for a in actors:
            ray.kill(a)
