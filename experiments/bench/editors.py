"""Benchmark of every editor's batched sweep (``python -m experiments.bench edit --editor ft1,ft5,memit``):
seconds per (case, layer) edit incl. scoring, and that time as a multiple of its arithmetic lower bound
(the minimal FLOPs below over this machine's measured matmul rate, as ``experiments.bench.edit``).

Lower bounds per (case, layer), P = parameters of one block, V·d the unembedding, L layers, window
w₀…w₁ (FT-1: {l}; FT-5 / MEMIT: five layers centred on l, clipped), all counted on unpadded tokens:

* ROME: ``experiments.bench.edit.lower_bound_flops`` (v* passes from l+1 on the windows after the
  subject, scoring from l, a share of the unedited forwards);
* FT: (steps + 1) forwards and steps backwards (activation gradients, plus the window's down-projection
  weight gradients, 2·d·f per token and layer) of the prompt+target row through blocks w₀…L−1 at
  2·P per token and block, plus 2·V·d per read target token each way; scoring from w₀; a share of the
  unedited forward;
* MEMIT: the z optimisation as ROME's v* at layer w₁ (its passes run blocks w₁+1…L−1), then one forward
  of all rewriting rows through blocks w₀…w₁ per window layer; scoring from w₀; a share of the
  unedited forwards.
"""

from __future__ import annotations

import statistics
import time

import torch

from causaleval.editing.editor import centred_window, sweep
from causaleval.model.sites import get_module


def _block_params(bundle, layer: int) -> int:
    return sum(p.numel() for p in get_module(bundle.model, bundle.family.layer_path(layer)).parameters())


def _probe_cost(bundle, fact, start: int, max_neighbours, seed) -> tuple[float, float]:
    """(scoring FLOPs from ``start``, the probes' unedited forward FLOPs)."""
    from causaleval.editing.scores import build_probes

    L, p = bundle.n_layers, _block_params(bundle, 0)
    vd = bundle.model.get_output_embeddings().weight.numel()
    probes = build_probes(bundle, fact, max_neighbours, seed)
    tokens = int(probes.attention_mask.sum())
    return tokens * (L - start) * 2 * p + len(probes.rows) * 2 * vd, tokens * L * 2 * p


def ft_bound(bundle, fact, layer: int, window: int, steps: int, max_neighbours, seed, n_swept: int) -> float:
    from causaleval.data.tokens import answer_ids

    L, p = bundle.n_layers, _block_params(bundle, 0)
    vd = bundle.model.get_output_embeddings().weight.numel()
    w = centred_window(layer, window, L)
    target = answer_ids(bundle.tokenizer, fact.target_new)
    tokens = len(bundle.tokenizer(fact.text, add_special_tokens=True)["input_ids"]) + len(target) - 1
    down = get_module(bundle.model, bundle.family.module_path("down_proj", w[0])).weight.numel()
    fwd = tokens * (L - w[0]) * 2 * p + len(target) * 2 * vd
    bwd = fwd + tokens * len(w) * 2 * down
    scoring, probe_fwd = _probe_cost(bundle, fact, w[0], max_neighbours, seed)
    return (steps + 1) * fwd + steps * bwd + scoring + (tokens * L * 2 * p + probe_fwd) / n_swept


def memit_bound(bundle, fact, contexts, hp, layer: int, window: int, steps: int, max_neighbours, seed,
                n_swept: int) -> float:
    from causaleval.editing.rome.compute import build_edit_batch

    L, p = bundle.n_layers, _block_params(bundle, 0)
    vd = bundle.model.get_output_embeddings().weight.numel()
    w = centred_window(layer, window, L)
    b = build_edit_batch(bundle, fact, contexts, hp.kl_prompt)
    ends = (b.lookup + 1).scatter_reduce(0, b.tgt_rows, b.tgt_cols + 1, reduce="amax")
    window_tokens = int((ends - b.lookup).sum())
    z = (2 * steps - 1) * (window_tokens * (L - w[-1] - 1) * 2 * p + (len(b.tgt_rows) + 1) * 2 * vd)
    row_tokens = int(b.attention_mask.sum())
    forwards = len(w) * row_tokens * (w[-1] - w[0] + 1) * 2 * p
    scoring, probe_fwd = _probe_cost(bundle, fact, w[0], max_neighbours, seed)
    return z + forwards + scoring + (row_tokens * L * 2 * p + probe_fwd) / n_swept


def bench_editors(a, bundle, ordered, layers, hp, stats, contexts, names: list[str]) -> None:
    """Batched sweeps of ``ordered`` facts (shards of ``a.batch``) per editor, ``a.repeats`` times; prints
    seconds per edit and × bound per editor and layer."""
    from experiments.backends import shards
    from experiments.bench.edit import gemm_gflops, lower_bound_flops
    from experiments.stages.edit import make_editor

    class _Cfg:
        editor_hparams: dict = {}

    kw = dict(max_neighbours=a.max_neighbours, seed=a.seed)
    for name in names:
        editor = make_editor(name, bundle, _Cfg, hp, stats, contexts)
        sweep(bundle, editor, ordered[:1], layers[:1], **kw)        # warm-up
        times: dict[int, list[float]] = {l: [] for l in layers}
        gflops, steps = [], {}
        for _ in range(a.repeats):
            gflops.append(gemm_gflops(torch.get_num_threads()))
            t = {l: 0.0 for l in layers}
            for group in shards(ordered, a.batch):
                for fact, rows in zip(group, sweep(bundle, editor, group, layers, **kw)):
                    for i, layer in enumerate(layers):
                        t[layer] += rows[i]["seconds"]
                        steps[(fact.case_id, layer)] = rows[i]["steps"]
            for l in layers:
                times[l].append(t[l])
            gflops.append(gemm_gflops(torch.get_num_threads()))
        rate = statistics.median(gflops) * 1e9
        n = len(ordered)
        print(f"\n{name}: {n} facts, batches of {a.batch}, {a.repeats} repeats, {torch.get_num_threads()} threads; "
              f"matmul probe {rate / 1e9:.1f} GFLOP/s")
        print(f"{'layer':>5} {'s/edit':>8} {'× bound':>8} {'mean steps':>10}")
        for layer in layers:
            bound = 0.0
            for f in ordered:
                s = steps[(f.case_id, layer)]
                if name == "rome":
                    bound += lower_bound_flops(bundle, f, contexts, hp, layer, s, a.max_neighbours, a.seed, len(layers))
                elif name == "memit":
                    bound += memit_bound(bundle, f, contexts, editor.hp.z_hparams(hp), layer, editor.hp.window, s,
                                         a.max_neighbours, a.seed, len(layers))
                else:
                    bound += ft_bound(bundle, f, layer, editor.hp.window, s, a.max_neighbours, a.seed, len(layers))
            med = statistics.median(times[layer])
            print(f"{layer:>5} {med / n:>8.3f} {med / (bound / rate):>8.1f} "
                  f"{statistics.mean(steps[(f.case_id, layer)] for f in ordered):>10.1f}", flush=True)


def run_bench(a) -> None:
    """Entry from ``experiments.bench.edit`` when ``--editor`` is given."""
    from causaleval.editing.editor import parse_editors
    from causaleval.editing.rome import SecondMoments, default_contexts, hparams_for
    from causaleval.editing.memit import MemitHyperParams
    from causaleval.model.loading import load_model
    from experiments.bench.edit import default_layers, draw_facts, facts_path
    from experiments.config import StudyConfig
    from experiments.stages.edit import context_lengths

    names = parse_editors(a.editor)
    bundle = load_model(a.model)
    layers = default_layers(bundle.n_layers) if a.layers is None else [int(x) for x in a.layers.split(",")]
    groups = draw_facts(bundle, facts_path(a), a.per_relation, a.seed)
    ordered = sorted((f for facts in groups.values() for f in facts), key=lambda f: f.case_id)
    a.batch = a.batch or StudyConfig.rome_batch_cases
    hp = hparams_for(bundle.family.name, bundle.n_layers, context_lengths=context_lengths(a.contexts),
                     stat_tokens=a.stat_tokens)
    stats = SecondMoments(bundle, hp, seed=a.seed, progress=False)
    need = sorted({w for l in layers for w in centred_window(l, MemitHyperParams().window, bundle.n_layers)})
    t0 = time.perf_counter()
    stats.ensure(need)
    print(f"statistics of layers {need}: {time.perf_counter() - t0:.1f} s (one-off, cached)")
    contexts = default_contexts(bundle, hp, seed=a.seed)
    bench_editors(a, bundle, ordered, layers, hp, stats, contexts, names)
