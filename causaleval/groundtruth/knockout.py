"""Knockout check on natural facts: does the layer a localiser ranks first matter more when knocked out?
(docs/groundtruth.md#knockout)

Knockout of site (window W centred at layer j, position t): the MLP outputs of the W layers at t are
replaced by their values on a flip partner's prompt (a real subject whose answer differs), averaged over
partners; the drop in p(o) is the flip-scrubbing *noising* effect at that site (clean − patched,
docs/estimands.md#directions), which the trace stage already computes.  A localiser picks the site with
its largest denoising effect (window W, edit layers, positions from the first subject token; the study's
estimands).  Compared at the same position: the expected drop at a uniformly random edit layer (the mean
over edit layers) and the drop at the *golden* layer (the edit layer with the fact's best edit score).
If a localiser finds where the fact is stored, knocking out its pick should hurt more than a random
layer (Hase et al. 2023 ask the complementary question of whether it predicts where to edit).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from causaleval.inference.bootstrap import bootstrap_ci
from causaleval.inference.paired import sign_flip_test

LOCALISERS = ("noise", "resample", "flip")


def localiser_picks(trace: pd.DataFrame, window: int = 5, metric: str = "p", min_layer: int = 0) -> pd.DataFrame:
    """Per (estimator, case) the site (layer ≥ ``min_layer``, position) of the largest denoising IE of MLP
    window ``window`` at positions from the first subject token (ties: the lowest layer, then position)."""
    d = trace[(trace.direction == "denoise") & (trace.component == "mlp") & (trace.window == window)
              & (trace.metric == metric) & (trace.role != "before_subject") & (trace.layer >= min_layer)]
    d = d.sort_values(["estimator", "case_id", "ie", "layer", "position"], ascending=[True, True, False, True, True])
    return d.groupby(["estimator", "case_id"], as_index=False).first()[["estimator", "case_id", "relation_id",
                                                                       "layer", "position", "ie"]]


def knockout_rows(trace: pd.DataFrame, edits: pd.DataFrame, window: int = 5, score: str = "rewrite_score",
                  min_layer: int = 0) -> pd.DataFrame:
    """Per (localiser, case): its pick, the knockout drop there (``drop_pick``), the mean drop over the
    edit layers at the same position (``drop_random``) and the drop at the golden layer (``drop_golden``).
    ``min_layer`` > 0 leaves the lower layers out of the picks, the random layers and the golden layer (the
    layer-0 MLP carries a large effect for every fact)."""
    ko = trace[(trace.direction == "noise") & (trace.estimator == "flip") & (trace.component == "mlp")
               & (trace.window == window) & (trace.metric == "p") & (trace.layer >= min_layer)]
    ko = ko[["case_id", "layer", "position", "ie"]]
    ko = ko.rename(columns={"ie": "drop"})
    edits = edits[edits.layer >= min_layer]
    golden = (edits.sort_values(["case_id", score, "layer"], ascending=[True, False, True])
              .groupby("case_id", as_index=False).first()[["case_id", "layer"]].rename(columns={"layer": "golden"}))
    picks = localiser_picks(trace, window, min_layer=min_layer).merge(golden, on="case_id", how="inner")
    at = ko.set_index(["case_id", "layer", "position"])["drop"]
    rand = ko.groupby(["case_id", "position"])["drop"].mean()
    rows = []
    for r in picks.itertuples():
        rows.append(dict(estimator=r.estimator, case_id=int(r.case_id), relation_id=r.relation_id, layer=int(r.layer),
                         position=int(r.position), golden=int(r.golden),
                         drop_pick=float(at.get((r.case_id, r.layer, r.position), np.nan)),
                         drop_random=float(rand.get((r.case_id, r.position), np.nan)),
                         drop_golden=float(at.get((r.case_id, r.golden, r.position), np.nan))))
    return pd.DataFrame(rows)


def _paired(d: np.ndarray, n_perm: int, n_resamples: int, seed: int, rng) -> dict:
    d = d[np.isfinite(d)]
    test = sign_flip_test(d, n_perm, rng)
    ci = bootstrap_ci(d, n_resamples=n_resamples, seed=seed)
    return dict(diff=test.diff, ci_low=ci.low, ci_high=ci.high, p=test.p, n_facts=test.n)


def knockout_table(rows: pd.DataFrame, n_perm: int = 9999, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per localiser: the mean drop at its pick (CI over facts) and the paired differences pick − random
    and pick − golden; between localisers: flip − noise and resample − noise of the drop at the pick."""
    rng = np.random.default_rng(seed)
    out = []
    for est in [e for e in LOCALISERS if e in set(rows.estimator)]:
        g = rows[rows.estimator == est]
        for what, col in (("pick", "drop_pick"), ("random", "drop_random"), ("golden", "drop_golden")):
            ci = bootstrap_ci(g[col].dropna().to_numpy(), n_resamples=n_resamples, seed=seed)
            out.append(dict(kind="mean", a=est, b=what, diff=ci.estimate, ci_low=ci.low, ci_high=ci.high,
                            p=np.nan, n_facts=int(g[col].notna().sum())))
        for other in ("random", "golden"):
            d = (g.drop_pick - g[f"drop_{other}"]).to_numpy()
            out.append(dict(kind="paired", a=est, b=other, **_paired(d, n_perm, n_resamples, seed, rng)))
        out.append(dict(kind="share_golden", a=est, b="golden", diff=float((g.layer == g.golden).mean()),
                        ci_low=np.nan, ci_high=np.nan, p=np.nan, n_facts=len(g)))
    wide = rows.pivot_table(index="case_id", columns="estimator", values="drop_pick")
    for a, b in (("flip", "noise"), ("resample", "noise")):
        if a in wide and b in wide:
            out.append(dict(kind="paired", a=a, b=b,
                            **_paired((wide[a] - wide[b]).to_numpy(), n_perm, n_resamples, seed, rng)))
    return pd.DataFrame(out, columns=["kind", "a", "b", "diff", "ci_low", "ci_high", "p", "n_facts"])
