"""Benchmark: ROME statistics C = E[k kᵀ], before (all layers accumulated at once in float64 on the
CPU, keys collected by hooks during sampling) vs now (sampling without hooks, then C layer by layer on
the model's device, :func:`causaleval.editing.rome.stats.layer_moments`).

``python -m experiments.bench stats [--tokens 4096] [--batch 32] [--layers 0,6,12,18,24,29] [--repeats 3]``

Both paths sample the same seeded corpus (same ids) and must give the same C (max relative |Δ| ≤ 1e-4).
Reported: tokens/s from scratch (sample + statistics) and from a cached corpus (statistics only), medians
over interleaved repeats, and each as a multiple of its lower bound (FLOPs of one forward of the corpus —
with the unembedding when sampling, up to the last needed layer otherwise — over the GEMM probe).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from causaleval.editing.rome.corpus import sample_ids
from causaleval.editing.rome.stats import layer_moments
from causaleval.model.hooks import trace
from causaleval.model.loading import load_model
from experiments.bench.bounds import block_token_flops, gemm_flops_per_s, unembed_flops


class _CpuAccumulator:
    """The previous accumulator: float32 keys moved to the CPU, summed in float64 there."""

    def __init__(self, dim: int):
        self.sum, self.count, self.buf, self.rows = torch.zeros(dim, dim, dtype=torch.float64), 0, [], 0

    def add(self, keys):
        k = keys.detach().reshape(-1, keys.shape[-1]).float().cpu()
        self.buf.append(k)
        self.rows += k.shape[0]
        if self.rows >= 4096:
            self.flush()

    def flush(self):
        if self.buf:
            k = torch.cat(self.buf)
            self.sum += (k.T @ k).double()
            self.count += k.shape[0]
            self.buf, self.rows = [], 0


@torch.no_grad()
def before(bundle, layers, n_seq, seq_len, batch, ids=None):
    """The previous algorithm: every layer's accumulator alive at once, fed by hooks."""
    paths = {l: bundle.family.module_path("down_proj", l) for l in layers}
    dim = bundle.model.get_submodule(paths[layers[0]]).weight.shape[1]
    accs = {l: _CpuAccumulator(dim) for l in layers}
    with trace(bundle.model, capture_inputs=list(paths.values())) as store:
        def collect():
            for l, p in paths.items():
                accs[l].add(store[f"{p}:in"])
        if ids is None:
            ids = sample_ids(bundle, n_seq, seq_len - 1, seed=0, batch=batch, on_forward=collect)
        else:
            for lo in range(0, ids.shape[0], batch):
                bundle.model.base_model(input_ids=ids[lo:lo + batch], use_cache=False)
                collect()
    out = {}
    for l, acc in accs.items():
        acc.flush()
        out[l] = acc.sum / acc.count
    return ids, out


@torch.no_grad()
def after(bundle, layers, n_seq, seq_len, batch, ids=None):
    if ids is None:
        ids = sample_ids(bundle, n_seq, seq_len - 1, seed=0, batch=batch)
    path = lambda l: bundle.family.module_path("down_proj", l)  # noqa: E731
    dim = bundle.model.get_submodule(path(layers[0])).weight.shape[1]
    return ids, {l: c for l, c, _ in layer_moments(bundle, ids, layers, path, dim, batch=max(1, batch // 4))}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.bench stats")
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=32, help="sequences sampled at once (study: 256)")
    p.add_argument("--layers", default="0,6,12,18,24,29")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.set_grad_enabled(False)
    bundle = load_model()
    layers = [int(x) for x in a.layers.split(",")]
    n_seq = max(1, math.ceil(a.tokens / a.seq_len))
    n_tok = n_seq * a.seq_len
    L = bundle.n_layers
    print(f"{n_tok} tokens ({n_seq} × {a.seq_len}), {a.batch} sequences at once, layers {layers}; torch threads "
          f"{torch.get_num_threads()}; repeats {a.repeats} (interleaved; the machine is shared, so medians)")
    t = {k: [] for k in ("before_scratch", "after_scratch", "before_cached", "after_cached")}
    rates, err = [], 0.0
    ids = None
    for rep in range(a.repeats):
        rates.append(gemm_flops_per_s())
        for mode in (("before", "after") if rep % 2 == 0 else ("after", "before")):
            fn = before if mode == "before" else after
            t0 = time.perf_counter()
            got_ids, cs = fn(bundle, layers, n_seq, a.seq_len, a.batch)
            t[f"{mode}_scratch"].append(time.perf_counter() - t0)
            ids = got_ids if ids is None else ids
            assert torch.equal(got_ids, ids), "the two paths sampled different corpora"
            t0 = time.perf_counter()
            _, cc = fn(bundle, layers, n_seq, a.seq_len, a.batch, ids=ids)
            t[f"{mode}_cached"].append(time.perf_counter() - t0)
            if mode == "before":
                ref = cc
            else:
                new = cc
        err = max(err, max(float((ref[l] - new[l]).abs().max() / ref[l].abs().max()) for l in layers))
    rate = statistics.median(rates)
    ctx = a.seq_len / 2
    sample_flops = n_tok * (L * block_token_flops(bundle, ctx) + unembed_flops(bundle))
    stat_flops = n_tok * (max(layers) + 1) * block_token_flops(bundle, ctx)
    print(f"GEMM probe: {rate / 1e9:.1f} GFLOP/s (median of {len(rates)})")
    for what, bound in (("scratch", sample_flops / rate), ("cached", stat_flops / rate)):
        b, n = statistics.median(t[f"before_{what}"]), statistics.median(t[f"after_{what}"])
        label = "sample + statistics" if what == "scratch" else "statistics from a cached corpus"
        print(f"{label:32}: before {n_tok / b:8.1f} tok/s ({b:7.2f} s, {b / bound:5.1f}× bound), after "
              f"{n_tok / n:8.1f} tok/s ({n:7.2f} s, {n / bound:5.1f}× bound); after/before speed {b / n:5.2f}×; "
              f"bound {n_tok / bound:8.1f} tok/s")
    print(f"max relative |ΔC| before vs after: {err:.1e} ({'OK' if err <= 1e-4 else 'FAIL'}: must be ≤ 1e-4)")
    print("peak accumulators: before one per layer (float64 on the CPU), after one (float64 on the model's device)")
