"""Benchmarks of tracing (``python -m experiments.bench trace [--reference]``).

Default: the study's analysis set traced one case at a time vs batched across cases
(:mod:`experiments.bench.trace_batched`).  ``--reference``: our noise-tracing estimator vs a
straightforward reference, as follows.

Both trace one known case of the embedded SmolLM2 at all layers × all positions with 10 noise draws:
the residual stream (window 1) and MLP windows of 10.  The reference is written the way the original
causal-tracing code does it (Meng et al. 2022, ``trace_with_patch``): one full forward pass per
(position, layer) cell over a batch of the clean row plus the noised rows, hooks copying row 0's state
into the others, full logits at every position.  It uses the same noise draws as ours, so the two
estimates must agree (max |Δ| < 1e-4).  Prints both wall times, their ratio and max |Δ|.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from causaleval.data.counterfact import Fact
from causaleval.data.tokens import answer_ids, encode_prompt
from causaleval.estimators import noise_tracing
from causaleval.model.hooks import trace
from causaleval.model.loading import ModelBundle, load_model
from causaleval.model.sites import window_layers
from causaleval.patching.estimands import SiteGrid


def known_case(bundle: ModelBundle, relation: str = "P36") -> tuple[Fact, list[Fact]]:
    """The first built-in fact of ``relation`` the model knows, and the relation's facts (for ν)."""
    from causaleval.data.geofacts import build_facts
    from causaleval.data.known import known_filter

    facts = [f for f in build_facts(seed=0, relations=[relation])]
    table = known_filter(bundle, facts[:64], progress=False)
    known = set(table.loc[table.known, "case_id"])
    if not known:
        raise SystemExit(f"no known {relation} fact among the first 64")
    return next(f for f in facts if f.case_id in known), facts


@torch.no_grad()
def reference_trace(bundle: ModelBundle, fact: Fact, nu_draws: list[torch.Tensor], grids) -> dict:
    """ROME-style causal tracing: per (position, layer) cell one full forward pass over
    [clean row, noised rows…]; returns {(component, window, layer, position): IE}."""
    model, fam, tok = bundle.model, bundle.family, bundle.tokenizer
    enc = encode_prompt(tok, fact.prompt, fact.subject, fact.case_id)
    o = answer_ids(tok, fact.target_true)[0]
    n = len(nu_draws)
    ids = torch.tensor([enc.input_ids] * (n + 1))
    noise = torch.stack([torch.zeros_like(nu_draws[0])] + list(nu_draws))

    def add_noise(h):
        return h + noise.to(h.dtype)

    def p_answer(edits) -> float:
        with trace(model, edit={fam.embed: add_noise, **edits}):
            logits = model(input_ids=ids).logits          # full logits at every position
        return float(torch.softmax(logits[1:, -1], -1)[:, o].mean())

    low = p_answer({})
    out = {}
    L = bundle.n_layers
    for g in grids:
        for pos in range(enc.length):
            for layer in range(L):
                layers = window_layers(layer, g.window, L) if g.window > 1 else [layer]

                def restore(h, pos=pos):
                    h = h.clone()
                    h[1:, pos] = h[0, pos]
                    return h
                edits = {fam.module_path(g.component, lay): restore for lay in layers}
                out[(g.component, g.window, layer, pos)] = p_answer(edits) - low
    return out


def main_reference(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.bench trace --reference")
    p.add_argument("--draws", type=int, default=10)
    p.add_argument("--window", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--model", default="smollm2", help="smollm2, gemma3-270m or a local model folder")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    bundle = load_model(args.model)
    fact, relation_facts = known_case(bundle)
    nu = noise_tracing.noise_scale(bundle, relation_facts)
    grids = (SiteGrid("residual"), SiteGrid("mlp", window=args.window))
    cfg = noise_tracing.NoiseTracingConfig(nu=nu, n_draws=args.draws, seed=0, grids=grids)
    enc = encode_prompt(bundle.tokenizer, fact.prompt, fact.subject, fact.case_id)
    print(f"case {fact.case_id}: {enc.text!r} → {fact.target_true!r}; {enc.length} tokens, subject tokens "
          f"{enc.subject_start}..{enc.subject_end - 1}; {bundle.n_layers} layers; {args.draws} draws; "
          f"ν = {nu:.4f}; torch threads {torch.get_num_threads()}")
    noise_tracing.trace_fact(bundle, fact, cfg)  # warm-up (template capture, allocator)
    t0 = time.perf_counter()
    ours = noise_tracing.trace_fact(bundle, fact, cfg)
    t_ours = time.perf_counter() - t0
    draws = [d.embed_delta for d in noise_tracing.make_draws(bundle, enc, fact.case_id, cfg)]
    t0 = time.perf_counter()
    ref = reference_trace(bundle, fact, draws, grids)
    t_ref = time.perf_counter() - t0
    s = ours.sites
    ref_ie = np.array([ref[(c, w, l, q)] for c, w, l, q in zip(s.component, s.window, s.layer, s.position)])
    delta = float(np.max(np.abs(ref_ie - s.ie.to_numpy())))
    n_cells = len(s)
    print(f"sites: {n_cells} (residual + MLP window {args.window}, all layers × all positions)")
    print(f"ours:      {t_ours:8.2f} s")
    print(f"reference: {t_ref:8.2f} s  (one full forward pass per cell, batch {args.draws + 1}, full logits)")
    print(f"ratio:     {t_ref / t_ours:8.2f} ×")
    print(f"max |Δ|:   {delta:.2e}  ({'OK' if delta < 1e-4 else 'FAIL'}: must be < 1e-4)")
    best = s.loc[s.component == "mlp"].sort_values("ie").iloc[-1]
    print(f"peak MLP effect: layer {best.layer}, position {best.position} ({best.role}), IE {best.ie:.4f}, "
          f"TE {best.te:.4f}")


def main(argv: list[str] | None = None) -> None:
    argv = list(argv or [])
    if "--reference" in argv:
        argv.remove("--reference")
        return main_reference(argv)
    from experiments.bench.trace_batched import main as batched

    return batched(argv)


if __name__ == "__main__":
    main()
