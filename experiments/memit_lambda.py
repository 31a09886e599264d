"""MEMIT's λ (``mom2_update_weight``) on the committed study's facts: rewrite / paraphrase / neighbourhood scores
per λ and layer, and the package's default multiple of the width-scaled published λ.

``python -m experiments.memit_lambda [--facts 4] [--layers 4,16,24] [--multiples 0.1,0.3,1,2,3,published]
[--out paper/editors]`` edits a seeded, relation-stratified subset of ``paper/study``'s facts with MEMIT for one
fact (Meng et al. 2023; docs/editors.md) at the given study edit layers, once per λ, and writes

- ``<out>/memit_lambda_rows.parquet``: one row per (λ, case, layer) with the edit scores;
- ``<out>/memit_lambda.csv``: per λ and layer, n and the mean rewrite / paraphrase / neighbourhood score, ES,
  PS, NS and S (and a row per λ with layer ``all``), from which ``docs/memit-lambda.md`` is generated
  (``python -m experiments.memit_lambda --page``).

λ is given as a multiple m of the published λ scaled to the model's MLP width,
λ = m · 15,000 · d_ff / 16,384 (:func:`causaleval.editing.memit.scaled_lambda`; GPT-J's file: λ = 15,000 at
d_ff = 16,384); ``published`` is the published λ = 15,000 itself.  Each λ's rows are kept in
``<out>/memit_lambda_parts/`` as soon as they are finished, so a rerun computes only the missing λ values.
Study settings: SmolLM2, ROME's context texts and statistics, 10 neighbours, seed 0.  The default layers
leave out the top ones: a window that ends at the model's last layer puts z after the last block, where the
subject's last token no longer reaches the answer's position, so no λ edits there (docs/editors.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from experiments.editor_grid import overall_scores, score_grid, summarise_by
from experiments.editors_study import study_config, study_layers, study_subset

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "paper" / "study"


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Per λ and layer (and per λ over all layers, ``layer = all``): :func:`experiments.editor_grid.summarise_by`."""
    return summarise_by(rows, ["multiple", "lambda"])


def chosen_multiple(table: pd.DataFrame) -> float:
    """The package's λ multiple: of the measured multiples, the one with the largest S over all layers
    (efficacy, generalisation and specificity balanced, as Meng et al. 2022 score editors); ties → the larger
    multiple (the smaller change to the model)."""
    overall = table[table.layer == "all"].sort_values("multiple", ascending=False)
    return float(overall.loc[overall.S.idxmax(), "multiple"])


def is_inside(table: pd.DataFrame, multiple: float) -> bool:
    """Whether ``multiple`` lies strictly inside the measured grid (the grid brackets the chosen value)."""
    grid = sorted(table.multiple.unique())
    return grid[0] < multiple < grid[-1]


def page(table: pd.DataFrame, source: str) -> str:
    """docs/memit-lambda.md from the summary table (no number typed by hand)."""
    from causaleval.editing.memit import GPTJ_D_FF, PUBLISHED_LAMBDA

    overall = table[table.layer == "all"].sort_values("multiple").set_index("multiple")
    ms = list(overall.index)
    best = chosen_multiple(table)
    d_ff = round(float(overall["lambda"].iloc[0]) / ms[0] * GPTJ_D_FF / PUBLISHED_LAMBDA)
    head = [f"m = {m:.3g} (λ = {overall.loc[m, 'lambda']:.5g})" for m in ms]
    out = ["# MEMIT's λ on SmolLM2",
           "",
           f"<!-- written by `python -m experiments.memit_lambda --page` from {source}; do not edit -->",
           "",
           "MEMIT for one fact ([editors.md](editors.md#memit-for-one-fact-memit)) at study edit layers on a seeded, "
           "relation-stratified subset of the committed study's facts (exploratory), once per λ "
           "(`mom2_update_weight`); every other setting is MEMIT's published one. λ is written as a multiple m of "
           f"the published λ scaled to the MLP width, λ = m · {PUBLISHED_LAMBDA:g} · d_ff / {GPTJ_D_FF} "
           f"(SmolLM2: d_ff = {d_ff}); the published λ = {PUBLISHED_LAMBDA:g} itself is "
           f"m = {GPTJ_D_FF / d_ff:.3g}. Cells: mean rewrite score / paraphrase score / neighbourhood score; n = "
           + ", ".join(f"{int(overall.loc[m, 'n'])} edits at m = {m:.3g}" for m in ms) + ".",
           "",
           *score_grid(table, "multiple", ms, head),
           "",
           overall_scores(overall, ms, lambda m: f"m = {m:.3g}") + " (wall seconds on a shared "
           "two-core machine with other jobs running, and the first λ run at a layer also carries the z "
           "optimisation the others share: not comparable across λ).",
           "",
           f"**Package default: m = {best:.3g}**, i.e. λ = {best:.3g} · {PUBLISHED_LAMBDA:g} · d_ff / {GPTJ_D_FF} "
           f"(SmolLM2: λ = {overall.loc[best, 'lambda']:.5g}), the measured multiple with the largest S (the "
           "harmonic mean of ES, PS and NS, Meng et al. 2022's score of an editor)"
           + ("" if is_inside(table, best) else " — at the edge of the grid: widen the grid before relying on it")
           + ". Why λ is scaled by d_ff and not fixed per model: [editors.md](editors.md#λ-on-a-small-model). "
           "MEMIT's published values stay available as `causaleval.editing.memit.PUBLISHED_MEMIT` and with "
           f"`--set editor_hparams.memit.mom2_update_weight={PUBLISHED_LAMBDA:g}`."]
    return "\n".join(out) + "\n"


def parse_multiples(text: str) -> list[float | None]:
    """``--multiples``: numbers > 0, or ``published`` (None: the published λ, whose multiple depends on d_ff)."""
    out: list[float | None] = []
    for x in (x.strip() for x in text.split(",")):
        if x == "published":
            out.append(None)
        elif x:
            try:
                out.append(float(x))
            except ValueError:
                raise SystemExit(f"--multiples {text!r}: give numbers or 'published' separated by commas, "
                                 "e.g. 0.3,1,3,published") from None
    if not out or any(m is not None and m <= 0 for m in out):
        raise SystemExit(f"--multiples {text!r}: give at least one multiple, each > 0")
    return out


def run(out: Path, n_facts: int, layers: list[int], multiples: list[float | None], seed: int, threads: int | None) -> pd.DataFrame:
    import torch

    from causaleval.editing.editor import centred_window, sweep
    from causaleval.editing.memit import (GPTJ_D_FF, PUBLISHED_LAMBDA, MemitEditor, memit_hparams_for, mlp_width,
                                         scaled_lambda)
    from causaleval.editing.rome import SecondMoments, default_contexts
    from causaleval.model.loading import load_model
    from causaleval.runs.store import atomic_write_parquet
    from experiments.stages.edit import _hparams

    if threads:
        torch.set_num_threads(threads)
    cfg = study_config(STUDY)
    facts = study_subset(STUDY, n_facts, seed)
    bundle = load_model(cfg.model, device=cfg.device)
    d_ff = mlp_width(bundle)
    grid = {GPTJ_D_FF / d_ff: PUBLISHED_LAMBDA} if None in multiples else {}   # the published λ itself, exactly
    grid.update({m: scaled_lambda(d_ff, m) for m in multiples if m is not None})
    hp = _hparams(bundle, cfg)
    stats = SecondMoments(bundle, hp, seed=cfg.seed, progress=True)
    stats.ensure(sorted({w for l in layers for w in centred_window(l, 5, bundle.n_layers)}))
    contexts = default_contexts(bundle, hp, seed=cfg.seed)
    parts = out / "memit_lambda_parts"
    parts.mkdir(parents=True, exist_ok=True)
    editors = {m: MemitEditor(memit_hparams_for(bundle.family.name, mom2_update_weight=lam), hp, stats, contexts)
               for m, lam in sorted(grid.items())}
    frames = []
    for layer in layers:                     # per layer, every λ shares one preparation and one z optimisation
        prepared = None
        for m, editor in editors.items():
            part = parts / f"m{m:.6g}-layer{layer}-facts{n_facts}-seed{seed}.parquet"
            if not part.is_file():
                t0 = time.perf_counter()
                prepared = prepared or editor.prepare(bundle, facts)
                rows = sweep(bundle, editor, facts, [layer], max_neighbours=cfg.rome_max_neighbours, seed=cfg.seed,
                             prepared=prepared)
                frame = pd.DataFrame([r for case in rows for r in case]).assign(
                    multiple=m, **{"lambda": editor.hp.mom2_update_weight})
                atomic_write_parquet(part, frame)
                print(f"layer {layer}, m = {m:.3g} (λ = {editor.hp.mom2_update_weight:.4g}): {len(frame)} edits in "
                      f"{time.perf_counter() - t0:.0f} s; mean rewrite {frame.rewrite_score.mean():.3f}, "
                      f"neighbourhood {frame.neighborhood_score.mean():.3f}", flush=True)
            frames.append(pd.read_parquet(part))
    rows = pd.concat(frames, ignore_index=True)
    atomic_write_parquet(out / "memit_lambda_rows.parquet", rows)
    table = summarise(rows)
    table.to_csv(out / "memit_lambda.csv", index=False, float_format="%.6g")
    return table


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m experiments.memit_lambda", description=__doc__.split("\n\n")[0])
    ap.add_argument("--facts", type=int, default=4, help="study facts (seeded, stratified over relations)")
    ap.add_argument("--layers", default="4,16,24", help="study edit layers, comma-separated")
    ap.add_argument("--multiples", default="0.1,0.3,1,2,3,published",
                    help="multiples m of the width-scaled published λ, or 'published' (λ = 15,000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "paper" / "editors"))
    ap.add_argument("--page", action="store_true", help="only write docs/memit-lambda.md from <out>/memit_lambda.csv")
    a = ap.parse_args(argv)
    out = Path(a.out)
    if not a.page:
        multiples = parse_multiples(a.multiples)
        try:
            layers = [int(x) for x in a.layers.split(",") if x.strip()]
        except ValueError:
            raise SystemExit(f"--layers {a.layers!r}: give layer numbers separated by commas, e.g. 0,8,16") from None
        bad = sorted(set(layers) - set(study_layers(STUDY)))
        if not layers or bad:
            raise SystemExit(f"--layers {a.layers!r}: {bad or 'none given'}; use the study's edit layers "
                             f"{study_layers(STUDY)}")
        run(out, a.facts, layers, multiples, a.seed, a.threads)
    table = pd.read_csv(out / "memit_lambda.csv", dtype={"layer": str})
    (ROOT / "docs" / "memit-lambda.md").write_text(page(table, "paper/editors/memit_lambda.csv"), encoding="utf-8")


if __name__ == "__main__":
    main()
