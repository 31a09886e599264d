"""Benchmark: the trace stage's analysis set, one case at a time vs batched across cases.

``python -m experiments.bench trace [--per-relation 6] [--batch 16] [--repeats 3] [--threads 1] [--overhead 32]``

Facts are drawn like the study draws them: the known facts (``--facts`` a ``facts.jsonl`` of a run's
facts stage, else the built-in facts through the known filter), a seeded shuffle, then the first
``--per-relation`` of every relation.  Per relation, all three estimators (noise tracing, resample
scrubbing, flip scrubbing in both directions) trace the analysis set (MLP window 5 at the edit layers,
every position) of those facts, (a) one case at a time, (b) in batches of ``--batch`` as the trace stage
does (its batches of 16 facts in case order hold one relation's facts); the two paths alternate in every
repeat and the medians are compared.  Both must agree (max |Δ IE| ≤ 1e-5).  The lower bound is the
FLOPs of the minimal forward work (each clean/corrupted prompt once; each patch's blocks from its first
layer on, on its positions from the patch on; one unembedding per readout) divided by the measured
GEMM throughput.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import numpy as np
import torch

from causaleval.estimators import flip_scrubbing, noise_tracing, resample_scrubbing
from causaleval.model.loading import load_model
from causaleval.patching import core as patching
from causaleval.patching.core import _unchanged, align_position
from causaleval.patching.estimands import SiteGrid
from experiments.backends import shards
from experiments.bench.bounds import block_token_flops, gemm_flops_per_s, unembed_flops

RELATIONS = ("P17", "P30", "P36", "P37", "P38")


def known_facts(bundle, path: str | None, per_relation_scan: int = 40):
    from causaleval.data.counterfact import facts_from_jsonl
    from causaleval.data.geofacts import build_facts
    from causaleval.data.known import known_filter

    if path:
        return facts_from_jsonl(path)
    facts = build_facts(seed=0)
    scan = [f for r in RELATIONS for f in [g for g in facts if g.relation_id == r][:per_relation_scan]]
    table = known_filter(bundle, scan, progress=False)
    known = set(table.loc[table.known, "case_id"])
    return [f for f in scan if f.case_id in known]


def draw(known, per_relation: int, seed: int = 0):
    order = list(known)
    random.Random(seed).shuffle(order)
    return {r: [f for f in order if f.relation_id == r][:per_relation] for r in RELATIONS}


def specs_of(bundle, facts, pool, nu, grids, draws):
    """The case specs the study traces for ``facts`` (used to count the minimal work)."""
    ncfg = noise_tracing.NoiseTracingConfig(nu=nu, n_draws=draws, grids=grids)
    scfg = resample_scrubbing.ScrubbingConfig(n_draws=draws, grids=grids, directions=("denoise", "noise"))
    out = []
    for f in facts:
        out.append(noise_tracing.case_spec(bundle, f, ncfg, check_support=False))
        res = resample_scrubbing.candidates(f, pool)
        if res:
            out += resample_scrubbing.partner_specs(bundle, f, res, resample_scrubbing.resample_support(f, pool),
                                                    "resample", scfg, False)[:1]
        flip = flip_scrubbing.flip_set(bundle, f, pool)
        if flip:
            out += resample_scrubbing.partner_specs(bundle, f, flip, flip_scrubbing.flip_support(bundle, f, pool),
                                                    "flip", scfg, True)
    return out


def minimal_flops(bundle, specs) -> float:
    L = bundle.n_layers
    prompts = {}
    total = 0.0
    for s in specs:
        prompts[("c", tuple(s.encoded.input_ids))] = s.encoded.length
        for d in s.draws:
            prompts[("d", id(d))] = d.encoded.length
        for d in s.draws:
            for site in s.sites:
                q = align_position(s.encoded, d.encoded, site.position)
                if q is None or _unchanged(s.encoded, d, site.position, q):
                    continue
                p, T = (q, d.encoded.length) if s.direction == "denoise" else (site.position, s.encoded.length)
                first = min(site.layers)
                total += (L - first) * sum(block_token_flops(bundle, t + 1) for t in range(p, T))
                total += unembed_flops(bundle)
    for T in prompts.values():
        total += L * sum(block_token_flops(bundle, t + 1) for t in range(T)) + unembed_flops(bundle)
    return total


def trace_all(bundle, facts, pool, nu, grids, draws, batch: int):
    """All three estimators on ``facts``, ``batch`` cases per call (1: one case at a time)."""
    ncfg = noise_tracing.NoiseTracingConfig(nu=nu, n_draws=draws, grids=grids)
    rcfg = resample_scrubbing.ScrubbingConfig(n_draws=draws, grids=grids)
    fcfg = resample_scrubbing.ScrubbingConfig(n_draws=draws, grids=grids, directions=flip_scrubbing.DIRECTIONS)
    out = []
    for g in shards(list(facts), batch):
        out += noise_tracing.trace_facts(bundle, g, ncfg)
        out += resample_scrubbing.trace_facts(bundle, g, pool, rcfg)
        out += flip_scrubbing.trace_facts(bundle, g, pool, fcfg)
    return out


_KEY = ["estimator", "direction", "metric", "case_id", "component", "window", "layer", "position"]


def _sites(parts):
    import pandas as pd

    return pd.concat([p.sites for p in parts if len(p.sites)]).sort_values(_KEY).reset_index(drop=True)


def _ie_deltas(one, batched) -> dict[str, float]:
    """Largest |IE(one) − IE(batched)| per metric (p, logp, ld: their scales differ)."""
    a, b = _sites(one), _sites(batched)
    if not a[_KEY].equals(b[_KEY]):
        raise AssertionError("the two paths traced different sites")
    diff = (a.ie - b.ie).abs()
    return {m: float(np.nanmax(diff[a.metric == m])) for m in sorted(a.metric.unique())}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.bench trace")
    p.add_argument("--per-relation", type=int, default=6,
                   help="known facts per relation, traced in batches of --batch (the stage: 16, in case order, "
                        "so a batch holds one relation's facts)")
    p.add_argument("--batch", type=int, default=None, help="cases per batch (default: the presets' trace_batch_cases)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--draws", type=int, default=3, help="noise draws and partners per case (as the default and study presets: 3)")
    p.add_argument("--layer-step", type=int, default=4,
                   help="edit layers every n-th and the last (4: as the default and study presets)")
    p.add_argument("--window", type=int, default=5)
    p.add_argument("--facts", default=None, help="a facts.jsonl of known facts (default: built-in, filtered)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--model", default="smollm2", help="smollm2, gemma3-270m or a local model folder")
    p.add_argument("--overhead", type=int, default=None,
                   help="per-call cost of the position groups in tokens (patching.CALL_OVERHEAD_TOKENS; 0 = a block "
                        "call per position, as before the groups)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    from experiments.config import StudyConfig
    a.batch = a.batch or StudyConfig.trace_batch_cases
    if a.overhead is not None:
        patching.CALL_OVERHEAD_TOKENS = a.overhead
    torch.set_grad_enabled(False)
    bundle = load_model(a.model)
    L = bundle.n_layers
    layers = tuple(sorted(set(range(0, L, a.layer_step)) | {L - 1}))
    grids = (SiteGrid("mlp", a.window, layers),)
    pool = known_facts(bundle, a.facts)
    nu = noise_tracing.noise_scale(bundle, pool)
    chosen = {r: fs for r, fs in draw(pool, a.per_relation).items() if fs}
    print(f"analysis set: MLP window {a.window} at layers {list(layers)}, every position; {a.draws} draws/partners; "
          f"{len(pool)} known facts in the pool; batches of {a.batch} facts of one relation; position groups at "
          f"{patching.CALL_OVERHEAD_TOKENS} tokens per call; torch threads {torch.get_num_threads()}; repeats {a.repeats} "
          "(interleaved; the machine is shared, so medians)")
    trace_all(bundle, chosen[next(iter(chosen))][:1], pool, nu, grids, a.draws, 1)   # warm-up
    times = {(r, m): [] for r in chosen for m in ("one", "batched")}
    delta, by_metric = {}, {}
    rates = []
    for rep in range(a.repeats):
        rates.append(gemm_flops_per_s())
        for r, facts in chosen.items():
            modes = ("one", "batched") if rep % 2 == 0 else ("batched", "one")
            res = {}
            for m in modes:
                t0 = time.perf_counter()
                res[m] = trace_all(bundle, facts, pool, nu, grids, a.draws, a.batch if m == "batched" else 1)
                times[(r, m)].append(time.perf_counter() - t0)
            for m, d in _ie_deltas(res["one"], res["batched"]).items():
                by_metric[m] = max(by_metric.get(m, 0.0), d)
                delta[r] = max(delta.get(r, 0.0), d)
    rate = statistics.median(rates)
    print(f"GEMM probe: {rate / 1e9:.1f} GFLOP/s (median of {len(rates)})")
    print(f"{'relation':8} {'facts':>5} {'T':>9} {'one s':>8} {'batch s':>8} {'ratio':>6} {'one f/s':>8} "
          f"{'batch f/s':>9} {'bound s':>8} {'one ×b':>7} {'batch ×b':>8} {'max|Δ|':>8}")
    tot_one = tot_b = tot_bound = 0.0
    n_tot = 0
    for r, facts in chosen.items():
        one, bat = statistics.median(times[(r, "one")]), statistics.median(times[(r, "batched")])
        bound = minimal_flops(bundle, specs_of(bundle, facts, pool, nu, grids, a.draws)) / rate
        lengths = sorted({len(bundle.tokenizer(f.prompt.format(f.subject))["input_ids"]) for f in facts})
        tot_one, tot_b, tot_bound, n_tot = tot_one + one, tot_b + bat, tot_bound + bound, n_tot + len(facts)
        print(f"{r:8} {len(facts):5} {str(lengths):>9} {one:8.2f} {bat:8.2f} {one / bat:6.2f} {len(facts) / one:8.3f} "
              f"{len(facts) / bat:9.3f} {bound:8.3f} {one / bound:7.1f} {bat / bound:8.1f} {delta[r]:8.1e}")
    print(f"{'all':8} {n_tot:5} {'':>9} {tot_one:8.2f} {tot_b:8.2f} {tot_one / tot_b:6.2f} {n_tot / tot_one:8.3f} "
          f"{n_tot / tot_b:9.3f} {tot_bound:8.3f} {tot_one / tot_bound:7.1f} {tot_b / tot_bound:8.1f} "
          f"{max(delta.values()):8.1e}")
    print("ratio = one-at-a-time / batched (median s); f/s = facts per second, all three estimators; ×b = multiple "
          "of the lower bound; max|Δ| = largest IE difference between the two paths ("
          + ("OK" if max(delta.values()) <= 1e-5 else "FAIL") + ": must be ≤ 1e-5); per metric: "
          + ", ".join(f"{m} {d:.1e}" for m, d in by_metric.items()))
