"""MEMIT's λ (experiments.memit_lambda): the committed table gives the committed page and the package's λ
multiple; the width scaling; the summary and the choice rule on a small known table; edits that differ
only in λ share one z optimisation without changing any edit."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from causaleval.editing.memit import (GPTJ_D_FF, MEMIT_LAMBDA_MULTIPLE, PUBLISHED_LAMBDA, PUBLISHED_MEMIT,
                                      memit_hparams_for, scaled_lambda)
from experiments.memit_lambda import chosen_multiple, is_inside, page, parse_multiples, summarise

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "paper" / "editors" / "memit_lambda.csv"


def _committed() -> pd.DataFrame:
    return pd.read_csv(TABLE, dtype={"layer": str})


def test_committed_page_is_what_the_committed_table_gives():
    assert (ROOT / "docs" / "memit-lambda.md").read_text() == page(_committed(), "paper/editors/memit_lambda.csv")


def test_package_multiple_is_the_measured_choice_inside_the_grid():
    t = _committed()
    chosen = chosen_multiple(t)
    assert MEMIT_LAMBDA_MULTIPLE == pytest.approx(chosen)
    assert is_inside(t, chosen), "the largest S is at the grid's edge: widen --multiples and rerun"


def test_committed_table_covers_the_published_lambda_and_matches_its_rows():
    t = _committed()
    assert PUBLISHED_LAMBDA in set(t["lambda"])                     # the published λ itself was measured
    d_ff = 1536                                                     # SmolLM2-135M's MLP width
    for m, lam in t[["multiple", "lambda"]].drop_duplicates().itertuples(index=False):
        assert lam == pytest.approx(scaled_lambda(d_ff, m), rel=1e-5)
    rows = pd.read_parquet(ROOT / "paper" / "editors" / "memit_lambda_rows.parquet")
    pd.testing.assert_frame_equal(summarise(rows).reset_index(drop=True), t, check_dtype=False, rtol=1e-5)


def test_width_scaling_and_published_values():
    assert scaled_lambda(GPTJ_D_FF, 1.0) == PUBLISHED_LAMBDA
    assert scaled_lambda(GPTJ_D_FF // 8, 2.0) == pytest.approx(PUBLISHED_LAMBDA / 4)
    # without the model's width: the published files' values; with it: the package's scaled λ
    assert memit_hparams_for("gpt2").mom2_update_weight == 20_000.0
    assert memit_hparams_for("gptj") == PUBLISHED_MEMIT["gptj"]
    assert memit_hparams_for("llama").mom2_update_weight == PUBLISHED_LAMBDA
    assert memit_hparams_for("llama", d_ff=1536).mom2_update_weight == scaled_lambda(1536, MEMIT_LAMBDA_MULTIPLE)
    assert memit_hparams_for("gptj", d_ff=1536).v_num_grad_steps == 25
    assert memit_hparams_for("llama", d_ff=1536, mom2_update_weight=7.0).mom2_update_weight == 7.0
    assert parse_multiples("0.3, 1,published") == [0.3, 1.0, None]
    for bad in ("", "x", "0,1", "-1"):
        with pytest.raises(SystemExit, match="--multiples"):
            parse_multiples(bad)


def test_summary_and_choice_on_a_known_table():
    def rows(m, es, ns):
        return [dict(multiple=m, **{"lambda": 100.0 * m}, case_id=c, layer=l, rewrite_score=es,
                     paraphrase_score=es, neighborhood_score=ns, es=es, ps=es, ns=ns, es_magnitude=0.0,
                     ps_magnitude=0.0, ns_magnitude=0.0, steps=20, seconds=1.0) for c in (1, 2) for l in (0, 8)]
    frame = pd.DataFrame(rows(0.1, 1.0, 0.2) + rows(1.0, 0.8, 0.9) + rows(10.0, 0.0, 1.0))
    t = summarise(frame)
    assert set(t.layer) == {"0", "8", "all"} and (t.n[t.layer == "all"] == 4).all()
    # S: harmonic mean of ES, PS, NS; m = 10 has ES = 0 → S = 0; m = 1 beats m = 0.1's poor NS
    assert chosen_multiple(t) == 1.0 and is_inside(t, 1.0) and not is_inside(t, 10.0)
    ties = summarise(pd.DataFrame(rows(1.0, 0.8, 0.9) + rows(3.0, 0.8, 0.9)))
    assert chosen_multiple(ties) == 3.0                              # ties → the larger λ (the smaller change)
    assert "Package default: m = 1" in page(t, "x.csv")


def test_shared_z_across_lambdas_leaves_every_edit_unchanged(tmp_path, monkeypatch):
    """Sweeps that share one preparation (and so one z optimisation) per layer give the rows of separate
    sweeps, for every λ."""
    from causaleval.editing.editor import sweep
    from causaleval.editing.memit import MemitEditor
    from causaleval.editing.rome import SecondMoments, default_contexts, hparams_for
    from causaleval.model.testing import BATCH_FACTS, isolated_cache, tiny_model

    gen = isolated_cache(tmp_path, monkeypatch)
    next(gen)
    torch.manual_seed(0)
    b = tiny_model("llama")
    hp = hparams_for("llama", 4, context_lengths=((4, 2), (6, 1)), stat_tokens=400, stat_seq_len=20, stat_batch=32)
    stats, ctx = SecondMoments(b, hp), default_contexts(b, hp)
    facts = BATCH_FACTS[:3]
    editors = [MemitEditor(memit_hparams_for("llama", mom2_update_weight=lam, v_weight_decay=0.0,
                                             clamp_norm_factor=10.0), hp, stats, ctx) for lam in (0.01, 1.0)]
    prepared = editors[0].prepare(b, facts)
    for editor in editors:
        shared = sweep(b, editor, facts, [1, 2], max_neighbours=2, prepared=prepared)
        alone = sweep(b, editor, facts, [1, 2], max_neighbours=2)
        for case_shared, case_alone in zip(shared, alone):
            for r, s in zip(case_shared, case_alone):
                assert {k: v for k, v in r.items() if k != "seconds"} == {k: v for k, v in s.items() if k != "seconds"}
    windows = {(w[0], w[-1]) for w in (editors[0].touched(l, b.n_layers) for l in (1, 2))}
    assert len(prepared.z) == len(windows)                            # one z per window, shared by both λ
    with pytest.raises(ValueError, match="prepared"):
        sweep(b, editors[0], facts, [1], prepared=prepared, problem=object())
