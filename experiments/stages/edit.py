"""Stage ``edit``: ROME-edit every studied fact at every edit layer and score it (SPEC §5–6).

Writes ``edits.parquet``, one row per (case_id, layer): case_id, relation_id, layer, rewrite_score,
paraphrase_score, neighborhood_score, es, ps, ns, es_magnitude, ps_magnitude, ns_magnitude,
p_before_new, p_after_new, p_before_true, p_after_true, steps, final_loss, seconds;
``edit_summary.parquet`` (per-layer means and S) and ``edit_provenance.json`` (hyperparameters,
context texts, statistics provenance, one-off seconds).  Finished cases are kept in
``edit_parts/<case_id>.parquet`` so that an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import time

import pandas as pd

from causaleval.edit_scores import summarise
from causaleval.rome import SecondMoments, default_contexts, hparams_for, sweep_case
from causaleval.rome.hparams import RomeHyperParams
from causaleval.store import atomic_write_json, atomic_write_parquet
from experiments.context import StageContext

NAME = "edit"
OUTPUTS = ("edits.parquet",)
COLUMNS = ["case_id", "relation_id", "layer", "rewrite_score", "paraphrase_score", "neighborhood_score", "es", "ps",
           "ns", "es_magnitude", "ps_magnitude", "ns_magnitude", "p_before_new", "p_after_new", "p_before_true",
           "p_after_true", "steps", "final_loss", "seconds"]


def context_lengths(n: int) -> tuple[tuple[int, int], ...]:
    """N context texts split as in the original: half of 5 tokens, half of 10 tokens."""
    return tuple((length, k) for length, k in ((5, n - n // 2), (10, n // 2)) if k > 0)


def hparams_from_config(ctx: StageContext) -> RomeHyperParams:
    c = ctx.config
    return hparams_for(ctx.bundle.family.name, ctx.bundle.n_layers, context_lengths=context_lengths(c.rome_context_texts),
                       stat_tokens=c.rome_stat_tokens, stat_source=c.rome_stat_source, key_mode=c.rome_key_mode)


def run(ctx: StageContext) -> None:
    cfg, bundle = ctx.config, ctx.bundle
    layers = ctx.edit_layers()
    hp = hparams_from_config(ctx)
    t0 = time.time()
    stats = SecondMoments(bundle, hp, seed=cfg.seed, progress=ctx.progress)
    stats.ensure(layers)
    for layer in layers:
        stats.inverse(layer)
    contexts = default_contexts(bundle, hp, seed=cfg.seed)
    one_off = time.time() - t0
    atomic_write_json(ctx.out_dir / "edit_provenance.json", {
        "hparams": hp.to_dict(), "layers": layers, "contexts": contexts,
        "statistics": {str(l): stats.provenance[l] for l in layers},
        "statistics_computed_seconds": round(stats.one_off_seconds, 1),
        "setup_seconds": round(one_off, 1)})
    parts = ctx.out_dir / "edit_parts"
    facts = ctx.study_facts
    bar = None
    if ctx.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(facts), desc=f"ROME edits ({len(layers)} layers)", unit="case")
    frames = []
    for fact in facts:
        path = parts / f"{fact.case_id}.parquet"
        if path.is_file():
            frame = pd.read_parquet(path)
        else:
            frame = pd.DataFrame(sweep_case(bundle, fact, layers, hp, stats, contexts,
                                            max_neighbours=cfg.rome_max_neighbours, seed=cfg.seed))[COLUMNS]
            atomic_write_parquet(path, frame)
        frames.append(frame)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    edits = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    atomic_write_parquet(ctx.out_dir / "edit_summary.parquet", summarise(edits))
    atomic_write_parquet(ctx.out_dir / "edits.parquet", edits)
    print(f"ROME setup (statistics, context texts): {one_off:.1f} s; edits: {edits.seconds.sum():.1f} s "
          f"for {len(edits)} (case, layer) pairs")
    print(summarise(edits).round(3).to_string(index=False))
