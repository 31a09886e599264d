"""Per-layer correlations of edit score and effect with Fisher-z CIs, Williams' t between estimators
(directional: signed r_a against signed r_b, so a strong negative correlation does not count as a good
localiser) and a multiple-testing correction across the non-degenerate layers."""

from __future__ import annotations

import gc

import numpy as np
import pandas as pd
from statsmodels.stats.multitest import multipletests

from causaleval.analysis.effects import _case_counts, common_rows, present_estimators
from causaleval.analysis.regression_tables import bootstrap_weights, percentile_ci
from causaleval.analysis.spec import AnalysisSpec
from causaleval.inference.correlation import (  # noqa: F401
    fisher_ci,
    weighted_corr,
    williams_t,
)


def adjust_pvalues(p: np.ndarray, method: str) -> np.ndarray:
    """Multiplicity-adjusted p-values (statsmodels ``multipletests``: "holm", "fdr_bh", ...).

    statsmodels' Holm branch calls ``gc.collect()`` (≈0.3 s in a large process); freezing the current
    objects out of the collector's reach for the call makes it cheap without changing the result.
    """
    gc.freeze()
    try:
        return multipletests(p, method=method)[1]
    finally:
        gc.unfreeze()


def per_layer_tests(joined: pd.DataFrame, spec: AnalysisSpec, n_edit_cases: int | None = None) -> pd.DataFrame:
    """Per (score, layer, pair): r(score, E) per estimator with a Fisher-z CI, Williams' t of the signed
    r_a vs r_b (two-sided; t > 0: a's larger effects go with better edits more than b's), a paired
    bootstrap CI of r_a − r_b over cases, and the p-value corrected across the
    non-degenerate layers (a layer whose score sd is below ``degenerate_sd`` is reported, not tested)."""
    ests = present_estimators(joined, spec)
    total = int(joined.case_id.nunique()) if n_edit_cases is None else n_edit_cases
    rows = []
    for score in spec.scores:
        data = common_rows(joined, score, ests)
        counts = _case_counts(total, data)
        for layer, d in data.groupby("layer"):
            if len(d) < 5:
                continue
            y = d[score].to_numpy(float)
            flat = [e for e in ests if np.std(d[f"effect_{e}"].to_numpy(float)) == 0]
            degenerate = bool(np.std(y) < spec.degenerate_sd or flat)
            base = dict(score=score, layer=int(layer), n=len(d), degenerate=degenerate,
                        n_excluded=counts["n_excluded"])
            for e in ests:
                x = d[f"effect_{e}"].to_numpy(float)
                r = float(np.corrcoef(x, y)[0, 1]) if not degenerate else float("nan")
                base[f"r_{e}"] = r
                base[f"r_{e}_ci_low"], base[f"r_{e}_ci_high"] = fisher_ci(r, len(d), spec.ci_level)
            w = bootstrap_weights(len(d), spec.n_bootstrap, spec.seed + int(layer))
            for a, b in spec.pairs:
                if a not in ests or b not in ests:
                    continue
                xa, xb = d[f"effect_{a}"].to_numpy(float), d[f"effect_{b}"].to_numpy(float)
                rab = float(np.corrcoef(xa, xb)[0, 1]) if not degenerate else float("nan")
                row = dict(base, a=a, b=b, r_a=base[f"r_{a}"], r_b=base[f"r_{b}"], r_ab=rab)
                if degenerate:
                    row.update(r_diff=float("nan"), ci_low=float("nan"), ci_high=float("nan"),
                               williams_t=float("nan"), df=len(d) - 3, p=float("nan"))
                else:
                    t, df, p = williams_t(row["r_a"], row["r_b"], rab, len(d))
                    diff = weighted_corr(xa, y, w) - weighted_corr(xb, y, w)
                    lo, hi = percentile_ci(diff, spec.ci_level)
                    row.update(r_diff=row["r_a"] - row["r_b"], ci_low=lo, ci_high=hi,
                               williams_t=t, df=df, p=p)
                rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["p_adj"] = np.nan
    for _, idx in out.groupby(["score", "a", "b"]).groups.items():
        p = out.loc[idx, "p"]
        ok = p.notna()
        if ok.any():
            out.loc[p[ok].index, "p_adj"] = adjust_pvalues(p[ok].to_numpy(), spec.correction)
    out["correction"] = spec.correction
    return out
