"""Split-half reliability of each localisation effect (Spearman–Brown corrected, within layer) and
the bias of using only the first draws."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from causaleval.analysis.effects import case_layer_arrays, present_estimators
from causaleval.analysis.regression_tables import half_arrays, percentile_ci
from causaleval.analysis.spec import AnalysisSpec
from causaleval.inference.directional import resample_cases
from causaleval.inference.reliability import spearman_brown, split_half


def _nanmean(x, axis=None):
    """``np.nanmean`` without its warning for an all-NaN slice (a case or layer with no finite value: NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return np.nanmean(x, axis=axis)


def reliability_table(joined: pd.DataFrame, halves: pd.DataFrame, spec: AnalysisSpec) -> pd.DataFrame:
    """Per estimator: the split-half reliability of the effect within layer, pooled (``layer`` = -1, with
    a case-bootstrap CI) and per layer (Spearman–Brown of the halves' Pearson r), on the rows every
    estimator has; and the draw-count check: the mean of (effect from the first 3 draws − effect from
    all draws) with a case-bootstrap CI (a max over positions of noisier means is biased upwards)."""
    if halves is None or halves.empty:
        return pd.DataFrame()
    ests = present_estimators(joined, spec)
    data = joined.dropna(subset=[f"effect_{e}" for e in ests])
    layers, cases = sorted(data.layer.unique()), sorted(data.case_id.unique())
    rows = []
    for j, e in enumerate(ests):
        h = half_arrays(halves, e, layers, cases)
        if h is None:
            continue
        x = case_layer_arrays(data, f"effect_{e}", layers, cases)
        rng = np.random.default_rng([spec.seed, j, 3])
        r = split_half(h[0], h[1], spec.n_bootstrap, rng, spec.ci_level)
        bias = h[2] - x
        per_case = _nanmean(bias, axis=1)
        per_case = per_case[np.isfinite(per_case)]
        b_lo, b_hi = percentile_ci(per_case[resample_cases(per_case.size, spec.n_bootstrap, rng)].mean(1),
                                 spec.ci_level) if per_case.size else (np.nan, np.nan)
        rows.append(dict(estimator=e, layer=-1, r_half=r.r_half, reliability=r.reliability, ci_low=r.ci_low,
                         ci_high=r.ci_high, n_cases=r.n_cases, mean_effect=float(_nanmean(x)),
                         first3_minus_all=float(_nanmean(bias)), bias_ci_low=b_lo, bias_ci_high=b_hi))
        for li, layer in enumerate(layers):
            a, b = h[0][:, li], h[1][:, li]
            ok = np.isfinite(a) & np.isfinite(b)
            rr = float(np.corrcoef(a[ok], b[ok])[0, 1]) if ok.sum() > 2 and np.std(a[ok]) > 0 and np.std(b[ok]) > 0 \
                else np.nan
            rows.append(dict(estimator=e, layer=int(layer), r_half=rr, reliability=float(spearman_brown(rr)),
                             ci_low=np.nan, ci_high=np.nan, n_cases=int(ok.sum()),
                             mean_effect=float(_nanmean(x[:, li])),
                             first3_minus_all=float(_nanmean(bias[:, li])), bias_ci_low=np.nan,
                             bias_ci_high=np.nan))
    return pd.DataFrame(rows)
