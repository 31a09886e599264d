"""Benchmark: per-edit time of our ROME vs a reference written the way the original code does it.

    python -m experiments.bench edit [--cases 4] [--repeats 1] [--threads T] [--layer L] [--contexts 4] [--stat-tokens N]
                                     [--facts facts.jsonl]

Reference (Meng et al.'s ``compute_u``/``compute_v``): a separate forward for the averaged key, one
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

from causaleval.counterfact import facts_from_jsonl
from causaleval.edit_scores import prepare_probes
from causaleval.hooks import trace
from causaleval.models import load_model
from causaleval.rome import SecondMoments, apply_edit, compute_edit, default_contexts, hparams_for, prepare_edit
from causaleval.rome.compute import EditResult, build_edit_batch, rank_one_update
from causaleval.sites import down_proj_weight_out_in, get_module
from causaleval.tokens import encode_prompt, pad_batch


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
    n = b.input_ids.shape[0]
    rows = torch.arange(n)
    last_block = fam.layer_path(bundle.n_layers - 1)
    norm = get_module(model, fam.final_norm)
    head = model.get_output_embeddings()
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
            full = st[last_block][: b.n_rewrite]
        kl_lp = torch.log_softmax(logits[b.n_rewrite, b.lookup[b.n_rewrite]][None], -1)
        if kl_init is None:
            kl_init = kl_lp.detach().clone()
        log_probs = torch.log_softmax(head(norm(full)), dim=2)
        tok_lp = log_probs[b.tgt_rows, b.tgt_cols].gather(1, b.tgt_tokens[:, None]).squeeze(1)
        nll = -(torch.zeros(b.n_rewrite).index_add(0, b.tgt_rows, tok_lp) / len(b.target_ids)).mean()
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


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m experiments.bench edit")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--facts", default=None, help="facts.jsonl (default: results/smollm2-default/facts.jsonl if "
                                                  "present, else the built-in facts, unfiltered)")
    ap.add_argument("--cases", type=int, default=4)
    ap.add_argument("--layer", type=int, default=None)
    ap.add_argument("--contexts", type=int, default=4)
    ap.add_argument("--stat-tokens", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1, help="timed edits per case and method (interleaved)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    bundle = load_model(a.model)
    path = Path(a.facts or "results/smollm2-default/facts.jsonl")
    if path.is_file():
        facts = facts_from_jsonl(path)
    else:
        from causaleval.geofacts import build_facts
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
