"""Exploratory check of MEMIT's λ (mom2_update_weight) on SmolLM2: mean rewrite / paraphrase / neighbourhood
score and ES of MEMIT edits of a few study facts at one layer, per λ (docs/editors.md, "λ on a small model").

    OMP_NUM_THREADS=1 python -m experiments.bench.memit_lambda LAYER LAMBDAS [N_FACTS]
    e.g. python -m experiments.bench.memit_lambda 12 15000,1500,150 4

Study settings (4 context texts, statistics of 20,000 tokens, 10 neighbours, seed 0); prints one line per λ.
"""

from __future__ import annotations

import sys

import pandas as pd
import torch


def main(argv=None) -> None:
    from causaleval.editing.editor import centred_window, sweep
    from causaleval.editing.memit import MemitEditor, memit_hparams_for
    from causaleval.editing.rome import SecondMoments, default_contexts, hparams_for
    from causaleval.model.loading import load_model
    from experiments.editors_study import STUDY, study_subset
    from experiments.stages.edit import context_lengths

    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3):
        raise SystemExit(__doc__)
    layer, lambdas = int(args[0]), [float(x) for x in args[1].split(",")]
    torch.set_num_threads(1)
    facts = study_subset(STUDY, int(args[2]) if len(args) == 3 else 4, 0)
    bundle = load_model("smollm2")
    hp = hparams_for(bundle.family.name, bundle.n_layers, context_lengths=context_lengths(4), stat_tokens=20000)
    stats = SecondMoments(bundle, hp, seed=0, progress=False)
    contexts = default_contexts(bundle, hp, seed=0)
    stats.ensure(centred_window(layer, 5, bundle.n_layers))
    for lam in lambdas:
        editor = MemitEditor(memit_hparams_for(bundle.family.name, mom2_update_weight=lam), hp, stats, contexts)
        df = pd.DataFrame([r[0] for r in sweep(bundle, editor, facts, [layer], max_neighbours=10, seed=0)])
        print(f"lambda {lam:g} layer {layer}: rewrite {df.rewrite_score.mean():.3f} para "
              f"{df.paraphrase_score.mean():.3f} neigh {df.neighborhood_score.mean():.3f} es {df.es.mean():.2f}",
              flush=True)


if __name__ == "__main__":
    main()
