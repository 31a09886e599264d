"""Benchmarks of ROME edits: batched sweeps vs one case at a time, and ours vs the original's way.

    python -m experiments.bench edit [--per-relation 4] [--batch 16] [--layers 0,12,24] [--repeats 2]
                                     [--threads T] [--contexts 4] [--stat-tokens N] [--facts facts.jsonl]
    python -m experiments.bench edit --reference [--cases 4] [--layer L] ...   # ours vs the original's way
    python -m experiments.bench edit --editor rome,ft1,ft5,memit ...           # each editor (bench/editors.py)

Batched (default): ``--per-relation`` known facts drawn from every relation, put in case order as the
edit stage takes the study's facts (``--order stage``: grouped by relation, since case ids run relation by
relation; ``--order mixed``: relations interleaved, the least favourable batches), swept in batches of
``--batch`` as the edit stage does
(:func:`~causaleval.editing.rome.sweep_cases`: one batched v* optimisation and one batched scoring pass per
layer) vs one at a time (:func:`~causaleval.editing.rome.sweep_case`), interleaved; medians over repeats,
edits/s, the ratio per relation (a batched case's time is its equal share of its batch) and overall,
the largest |Δ| of the final losses (absolute and relative) and of p(new) between the two, and each
time as a multiple of its arithmetic lower
bound: the FLOPs of the minimal work (below) over this machine's measured matmul throughput.

Lower bound of a (case, layer) edit, counted from the actual rows and steps: v* forward passes
(steps) and backward passes (steps − 1, activation gradients only: the weights need none) through
blocks l+1..L−1 on each row's positions from the subject's last token to its last read position,
2·P_block FLOPs per token and block each way, plus 2·V·d per read position each way; the scoring
forward of every probe token through blocks l..L−1 (2·P_block) plus 2·V·d per read; and the case's
share of its two unedited forward passes (all tokens through all L blocks, shared by the swept layers).
Attention-score FLOPs (≈ 4·context·d per token, < 1 % here) are left out.

Reference (``--reference``):
Meng et al.'s ``compute_u``/``compute_v``: a separate forward for the averaged key, one
for (k₀, W k₀), and for every optimisation step a full forward *and* backward through the whole model,
with ``model(...).logits`` over the full vocabulary at every position (for the KL term) plus a second
final-norm + unembedding of the last block's output at every position (for the NLL).  Ours: one
unedited forward, then blocks l..L−1 only and logits only at the read positions.  Both share C⁻¹,
the context texts and the hyperparameters; efficacy (ES on the prompt) is reported for both.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import torch

from causaleval.data.counterfact import facts_from_jsonl
from causaleval.data.tokens import encode_prompt, pad_batch
from causaleval.editing.rome import (SecondMoments, apply_edit, compute_edit, default_contexts, hparams_for,
                                     prepare_edit, sweep_case, sweep_cases)
from causaleval.editing.rome.compute import EditResult, build_edit_batch, rank_one_update
from causaleval.editing.scores import prepare_probes
from causaleval.model.hooks import trace
from causaleval.model.loading import head_logits, load_model
from causaleval.model.sites import down_proj_weight_out_in, get_module


def reference_edit(bundle, fact, contexts, layer, hp, stats) -> EditResult:
    """The original code's way: whole-model forward/backward and full logits every step."""
    t0 = time.perf_counter()
    model, fam, tok = bundle.model, bundle.family, bundle.tokenizer
    path = fam.module_path("down_proj", layer)
    templates = [fact.prompt] + [f"{c}. {fact.prompt}" for c in contexts]
    encs = [encode_prompt(tok, t, fact.subject, fact.case_id) for t in templates]
    ids, mask, _ = pad_batch([list(e.input_ids) for e in encs], tok.pad_token_id)
    look = torch.tensor([e.position("subject_last") for e in encs])
    with torch.no_grad(), trace(model, capture=[path], capture_inputs=[path]) as st:   # compute_u
        model(input_ids=ids, attention_mask=mask)
        k_avg = st[path + ":in"][torch.arange(len(encs)), look].mean(0)
    with torch.no_grad(), trace(model, capture=[path], capture_inputs=[path]) as st:   # k0, W k0
        e0 = encs[0]
        model(input_ids=torch.tensor([e0.input_ids]))
        k0 = st[path + ":in"][0, e0.position("subject_last")]
    b = build_edit_batch(bundle, fact, contexts, hp.kl_prompt)
    n, nr = b.input_ids.shape[0], int(b.n_rewrite[0])
    rows = torch.arange(n)
    last_block = fam.layer_path(bundle.n_layers - 1)
    norm = get_module(model, fam.final_norm)
    delta = torch.zeros(down_proj_weight_out_in(model, fam, layer).shape[0], requires_grad=True)
    opt = torch.optim.Adam([delta], lr=hp.v_lr)
    init = {}

    def edit_out(out):
        if "v0" not in init:
            init["v0"] = out[0, b.lookup[0]].detach().clone()
        return out.index_put((rows, b.lookup), delta.expand(n, -1), accumulate=True)

    kl_init, steps, loss = None, 0, None
    for steps in range(hp.v_num_grad_steps):
        with trace(model, capture=[last_block], edit={path: edit_out}, detach=False) as st:
            logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
            full = st[last_block][:nr]
        kl_lp = torch.log_softmax(logits[nr, b.lookup[nr]][None], -1)
        if kl_init is None:
            kl_init = kl_lp.detach().clone()
        log_probs = torch.log_softmax(head_logits(model, norm(full)), dim=2)
        tok_lp = log_probs[b.tgt_rows, b.tgt_cols].gather(1, b.tgt_tokens[:, None]).squeeze(1)
        nll = -(torch.zeros(nr).index_add(0, b.tgt_rows, tok_lp) / int(b.n_target[0])).mean()
        v0 = init["v0"]
        loss = nll + hp.kl_factor * torch.nn.functional.kl_div(kl_init, kl_lp, log_target=True, reduction="batchmean") \
            + hp.v_weight_decay * (delta.norm() / v0.norm() ** 2)
        if float(loss.detach()) < hp.v_loss_stop or steps == hp.v_num_grad_steps - 1:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            max_norm = hp.clamp_norm_factor * v0.norm()
            if delta.norm() > max_norm:
                delta.mul_(max_norm / delta.norm())
    v_star = init["v0"] + delta.detach()
    w = down_proj_weight_out_in(model, fam, layer)
    mod = get_module(model, path)
    dw, u = rank_one_update(w, getattr(mod, "bias", None), stats.inverse(layer), k_avg, k0, v_star, hp.key_mode)
    return EditResult(fact.case_id, layer, dw.to(w.dtype), u, k0, k_avg, v_star, init["v0"], steps + 1,
                      float(loss), time.perf_counter() - t0, hp.key_mode)


def efficacy(bundle, fact, res) -> tuple[float, float]:
    """(ES, p(new)) on the prompt with the edit applied."""
    with apply_edit(bundle, res):
        p = prepare_probes(bundle, fact, max_neighbours=0).before[0]
    return float(p[0] > p[1]), float(p[0])


def gemm_gflops(threads: int, n: int = 256, d: int = 576, f: int = 1536, repeats: int = 30) -> float:
    """Median GFLOP/s of torch.mm of (n × d)·(d × f) float32 (the MLP shape of SmolLM2), on this machine now."""
    a, b = torch.randn(n, d), torch.randn(d, f)
    for _ in range(3):
        torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2 * n * d * f / statistics.median(times) / 1e9


def lower_bound_flops(bundle, fact, contexts, hp, layer: int, steps: int, max_neighbours: int | None, seed: int,
                      n_layers_swept: int) -> float:
    """FLOPs of the minimal work of one (case, layer) edit and its scores (module docstring)."""
    from causaleval.editing.scores import build_probes

    L = bundle.n_layers
    p_block = sum(p.numel() for p in get_module(bundle.model, bundle.family.layer_path(layer)).parameters())
    vd = bundle.model.get_output_embeddings().weight.numel()
    b = build_edit_batch(bundle, fact, contexts, hp.kl_prompt)
    ends = (b.lookup + 1).scatter_reduce(0, b.tgt_rows, b.tgt_cols + 1, reduce="amax")
    window_tokens = int((ends - b.lookup).sum())
    reads = len(b.tgt_rows) + 1
    passes = steps + (steps - 1)
    v_star = passes * (window_tokens * (L - layer - 1) * 2 * p_block + reads * 2 * vd)
    probes = build_probes(bundle, fact, max_neighbours, seed)
    probe_tokens = int(probes.attention_mask.sum())
    scoring = probe_tokens * (L - layer) * 2 * p_block + len(probes.rows) * 2 * vd
    prep = (int(b.attention_mask.sum()) + probe_tokens) * L * 2 * p_block / n_layers_swept
    return float(v_star + scoring + prep)


def draw_facts(bundle, path: Path, per_relation: int, seed: int) -> dict[str, list]:
    """``per_relation`` known facts of every relation (the study's facts.jsonl if given, else the built-in
    facts through the known-facts filter), a seeded draw."""
    if path.is_file():
        facts = facts_from_jsonl(path)
    else:
        from causaleval.data.geofacts import build_facts
        from causaleval.data.known import known_filter
        pool = []
        for rel, group in _by_relation(build_facts(seed=seed)).items():
            pool += random.Random(seed).sample(group, min(len(group), 12 * per_relation))
        known = set(known_filter(bundle, pool, progress=False).query("known").case_id)
        facts = [f for f in pool if f.case_id in known]
    return {rel: random.Random(seed).sample(group, min(per_relation, len(group)))
            for rel, group in sorted(_by_relation(facts).items())}


def _by_relation(facts) -> dict[str, list]:
    out: dict[str, list] = {}
    for f in facts:
        out.setdefault(f.relation_id, []).append(f)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m experiments.bench edit")
    ap.add_argument("--model", default="smollm2", help="smollm2, gemma3-270m or a local model folder")
    ap.add_argument("--facts", default=None, help="facts.jsonl of known facts (default: results/<model>-default/"
                                                  "facts.jsonl if present, else the built-in facts, filtered)")
    ap.add_argument("--per-relation", type=int, default=4, help="known facts drawn from each relation")
    ap.add_argument("--batch", type=int, default=None,
                    help="cases per batched sweep, taken in --order as the edit stage takes its shards "
                         "(default: the presets' rome_batch_cases)")
    ap.add_argument("--layers", default=None, help="layers to edit (default: 0, 0.4 L and 0.8 L; SmolLM2: 0,12,24)")
    ap.add_argument("--order", choices=("stage", "mixed"), default="stage",
                    help="batch facts in case order as the edit stage does (stage) or interleave relations (mixed)")
    ap.add_argument("--contexts", type=int, default=4)
    ap.add_argument("--max-neighbours", type=int, default=10)
    ap.add_argument("--stat-tokens", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats of each method")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--reference", action="store_true", help="ours vs the original's way, one layer")
    ap.add_argument("--cases", type=int, default=4, help="--reference: cases")
    ap.add_argument("--layer", type=int, default=None, help="--reference: layer")
    ap.add_argument("--editor", default=None, help="editors to time (rome,ft1,ft5,memit): seconds per edit and × "
                    "bound of each one's batched sweep (experiments.bench.editors)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.reference:
        return reference_main(a)
    if a.editor:
        from experiments.bench.editors import run_bench

        return run_bench(a)
    from experiments.stages.edit import context_lengths

    bundle = load_model(a.model)
    layers = default_layers(bundle.n_layers) if a.layers is None else [int(x) for x in a.layers.split(",")]
    groups = draw_facts(bundle, facts_path(a), a.per_relation, a.seed)
    hp = hparams_for(bundle.family.name, bundle.n_layers, context_lengths=context_lengths(a.contexts),
                     stat_tokens=a.stat_tokens)
    stats = SecondMoments(bundle, hp, seed=a.seed, progress=False)
    stats.ensure(layers)
    for layer in layers:
        stats.inverse(layer)
    contexts = default_contexts(bundle, hp, seed=a.seed)
    kw = dict(max_neighbours=a.max_neighbours, seed=a.seed)
    sweep_case(bundle, groups[next(iter(groups))][0], [layers[0]], hp, stats, contexts, **kw)   # warm-up
    from experiments.backends import shards
    from experiments.config import StudyConfig

    size = a.batch = a.batch or StudyConfig.rome_batch_cases
    relation_of = {f.case_id: rel for rel, facts in groups.items() for f in facts}
    if a.order == "stage":    # the edit stage's shards: the study's facts in case order
        ordered = sorted((f for facts in groups.values() for f in facts), key=lambda f: f.case_id)
    else:                     # relations interleaved
        ordered = [f for rank in range(a.per_relation) for facts in groups.values() if rank < len(facts)
                   for f in facts[rank:rank + 1]]
    t_one: dict = {}    # (relation, layer) -> list over repeats of seconds for the relation's cases
    t_bat: dict = {}
    gflops, diff_loss, diff_rel, diff_p, steps = [], 0.0, 0.0, 0.0, {}
    for rep in range(a.repeats):
        gflops.append(gemm_gflops(torch.get_num_threads()))
        order = ("one", "batched") if rep % 2 == 0 else ("batched", "one")   # interleaved, alternating
        rows = {}
        for how in order:
            if how == "one":
                rows[how] = [sweep_case(bundle, f, layers, hp, stats, contexts, **kw) for f in ordered]
            else:
                rows[how] = [r for group in shards(ordered, size)
                             for r in sweep_cases(bundle, group, layers, hp, stats, contexts, **kw)]
        gflops.append(gemm_gflops(torch.get_num_threads()))
        for i, layer in enumerate(layers):
            for f, o, b_ in zip(ordered, rows["one"], rows["batched"]):
                key = (relation_of[f.case_id], layer)
                if len(t_one.setdefault(key, [])) <= rep:
                    t_one[key].append(0.0)
                    t_bat.setdefault(key, []).append(0.0)
                t_one[key][rep] += o[i]["seconds"]
                t_bat[key][rep] += b_[i]["seconds"]
                gap = abs(o[i]["final_loss"] - b_[i]["final_loss"])
                diff_loss = max(diff_loss, gap)
                diff_rel = max(diff_rel, gap / max(abs(o[i]["final_loss"]), 1e-12))
                diff_p = max(diff_p, abs(o[i]["p_after_new"] - b_[i]["p_after_new"]))
                steps[(f.case_id, layer)] = o[i]["steps"]
        print(f"repeat {rep + 1}: " + ", ".join(
            f"layer {l}: one {sum(t_one[(r, l)][-1] for r in groups):.1f} s, "
            f"batched {sum(t_bat[(r, l)][-1] for r in groups):.1f} s" for l in layers), flush=True)
        _table(bundle, groups, layers, hp, contexts, a, t_one, t_bat, gflops, diff_loss, diff_rel, diff_p, steps)


def _table(bundle, groups, layers, hp, contexts, a, t_one, t_bat, gflops, diff_loss, diff_rel, diff_p,
           steps) -> None:
    """Print the benchmark table from the repeats so far."""
    rate = statistics.median(gflops) * 1e9
    med = statistics.median
    order = "case order, as the edit stage" if a.order == "stage" else "mixed order"
    n_facts = sum(len(f) for f in groups.values())
    print(f"\nROME edit sweep benchmark — {bundle.name}, {n_facts} known facts ({a.per_relation} per relation, "
          f"batches of {a.batch} in {order}), {hp.n_context} context texts, ≤ {a.max_neighbours} neighbours, "
          f"{len(next(iter(t_one.values())))} interleaved repeats, {torch.get_num_threads()} threads; matmul probe "
          f"{rate / 1e9:.1f} GFLOP/s (median of {len(gflops)} probes)")
    print("Times: v* optimisation + update + scoring + a share of the unedited forwards, medians over repeats "
          "(batched: each case's equal share of its batch); '× bound' = time / (minimal FLOPs / matmul rate).")
    print(f"{'layer':>5} {'relation':>8} {'one s/edit':>10} {'× bound':>8} {'batched s/edit':>14} {'× bound':>8} "
          f"{'ratio':>6} {'edits/s one':>11} {'edits/s batched':>15}")
    for layer in layers:
        tot_one = tot_bat = tot_bound = 0.0
        for rel, facts in groups.items():
            bound = sum(lower_bound_flops(bundle, f, contexts, hp, layer, steps[(f.case_id, layer)], a.max_neighbours,
                                          a.seed, len(layers)) for f in facts) / rate
            one, bat = med(t_one[(rel, layer)]), med(t_bat[(rel, layer)])
            tot_one, tot_bat, tot_bound = tot_one + one, tot_bat + bat, tot_bound + bound
            n = len(facts)
            print(f"{layer:>5} {rel:>8} {one / n:>10.2f} {one / bound:>8.1f} {bat / n:>14.2f} {bat / bound:>8.1f} "
                  f"{one / bat:>5.2f}× {n / one:>11.3f} {n / bat:>15.3f}")
        print(f"{layer:>5} {'all':>8} {tot_one / n_facts:>10.2f} {tot_one / tot_bound:>8.1f} {tot_bat / n_facts:>14.2f} "
              f"{tot_bat / tot_bound:>8.1f} {tot_one / tot_bat:>5.2f}× {n_facts / tot_one:>11.3f} "
              f"{n_facts / tot_bat:>15.3f}")
    print(f"Equal results: max |Δ| final loss {diff_loss:.2e} (relative {diff_rel:.1e}), "
          f"max |Δ| p(new) {diff_p:.2e}; "
          f"v* steps per edit: mean {statistics.mean(steps.values()):.1f}")



def default_layers(n_layers: int) -> list[int]:
    """Layers 0, 0.4 L and 0.8 L (rounded): 0, 12, 24 for SmolLM2's 30 layers."""
    return [0, round(0.4 * n_layers), round(0.8 * n_layers)]


def facts_path(a) -> Path:
    """``--facts``, or the default preset's facts of ``--model``: results/<model>-default/facts.jsonl."""
    return Path(a.facts) if a.facts else Path("results") / f"{Path(a.model).name}-default" / "facts.jsonl"


def reference_main(a) -> None:
    bundle = load_model(a.model)
    path = facts_path(a)
    if path.is_file():
        facts = facts_from_jsonl(path)
    else:
        from causaleval.data.geofacts import build_facts
        facts = build_facts(seed=a.seed)
    facts = random.Random(a.seed).sample(facts, min(a.cases, len(facts)))
    from experiments.stages.edit import context_lengths
    hp = hparams_for(bundle.family.name, bundle.n_layers, context_lengths=context_lengths(a.contexts),
                     stat_tokens=a.stat_tokens)
    layer = hp.layer_for(bundle.n_layers) if a.layer is None else a.layer
    stats = SecondMoments(bundle, hp, seed=a.seed, progress=True)
    stats.inverse(layer)
    contexts = default_contexts(bundle, hp, seed=a.seed)
    t_ours, t_ref, es_o, es_r, steps_o, steps_r = [], [], [], [], [], []
    for f in facts:
        for rep in range(a.repeats):   # interleaved, so both see the same machine load
            t0 = time.perf_counter()
            ours = compute_edit(bundle, prepare_edit(bundle, f, contexts, hp), layer, hp, stats)
            t_ours.append(time.perf_counter() - t0)
            ref = reference_edit(bundle, f, contexts, layer, hp, stats)
            t_ref.append(ref.seconds)
            if rep == 0:
                es_o.append(efficacy(bundle, f, ours))
                es_r.append(efficacy(bundle, f, ref))
                steps_o.append(ours.steps)
                steps_r.append(ref.steps)
            print(f"case {f.case_id}: ours {t_ours[-1]:.2f} s ({ours.steps} steps, ES {es_o[-1][0]:.0f}, "
                  f"p_new {es_o[-1][1]:.3f}); reference {t_ref[-1]:.2f} s ({ref.steps} steps, ES {es_r[-1][0]:.0f}, "
                  f"p_new {es_r[-1][1]:.3f})", flush=True)
    mean = lambda x: sum(x) / len(x)  # noqa: E731
    ratios = [r / o for o, r in zip(t_ours, t_ref)]
    print(f"\nROME edit benchmark — {bundle.name}, layer {layer}, {len(facts)} cases × {a.repeats} repeats, "
          f"{hp.n_context} context texts, {torch.get_num_threads()} threads")
    print(f"  ours:      median {statistics.median(t_ours):.2f} s/edit, ES {mean([e for e, _ in es_o]):.2f}, "
          f"mean p(new) {mean([p for _, p in es_o]):.3f}, steps {mean(steps_o):.1f}")
    print(f"  reference: median {statistics.median(t_ref):.2f} s/edit, ES {mean([e for e, _ in es_r]):.2f}, "
          f"mean p(new) {mean([p for _, p in es_r]):.3f}, steps {mean(steps_r):.1f}")
    print(f"  speed-up:  {statistics.median(t_ref) / statistics.median(t_ours):.2f}× (ratio of medians); "
          f"per edit median {statistics.median(ratios):.2f}×, range {min(ratios):.2f}–{max(ratios):.2f}×")
