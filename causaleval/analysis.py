"""The hypothesis tests over the joined (case, edit layer) table (Hase et al. 2023 design).

Data: one row per (case, edit layer) with the edit scores and, per estimator E, the localisation effect
at that layer, computed with one rule for every estimator.  Default (Hase et al. 2023, §4.1): the
*fraction restored* IE/TE (a ratio of means over draws: ``ie`` and ``te`` of trace.parquet are means
over draws), clipped below at 0, maximised over token positions from the first subject token, MLP
window 5, denoising, metric p.  The logit-difference metric uses the same ratio, i.e. LD normalised to
1 = clean, 0 = corrupted.  Cases whose TE (for any compared estimator) is below ``te_floor`` are
excluded and counted (``n_excluded``); every comparison uses one common set of rows for all estimators.
Variants: the raw IE (``raw_ie``), the last subject token, and the flip-only noising / logit-difference
rows (descriptive: only flip scrubbing has them, so they compare no estimators).

Tests (array-level code in :mod:`causaleval.inference`):

* per estimator and score: R²(score ~ C(layer)), R²(score ~ effect), R²(score ~ C(layer) × effect),
  ΔR² = R²(both) − R²(layer) with a bias-corrected cluster-bootstrap CI, the nested F-test and the
  cluster-aware case-permutation test (``p_cluster``; whole cases' effect profiles permuted);
* H1: ΔR²_a − ΔR²_b by a paired swap test within case, with a CI and the minimum detectable difference
  (``mdd``, 80 % power at α = 0.05) simulated on the run's own design;
* per layer: r(score, E) with Fisher-z CIs, Williams' t (Williams 1959; Steiger 1980) of |r_a| vs |r_b|
  (variance explained), Holm/BH across the non-degenerate layers (a layer whose score does not vary is
  reported as ``degenerate`` and left out of the tests);
* within case: Spearman correlation of layer profiles; argmax-layer hits (ties split) against a
  case-permutation chance level.
"""

from __future__ import annotations

import gc
import json
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.stats.multitest import multipletests

from causaleval.errors import CausalEvalError
from causaleval.inference.argmax import argmax_test
from causaleval.inference.correlation import fisher_ci, weighted_corr, williams_abs, williams_t  # noqa: F401
from causaleval.inference.directional import resample_cases, within_layer_r
from causaleval.inference.h1 import MEANINGFUL, MEASURES, PRIMARY, minimum_detectable_difference, swap_test, verdict
from causaleval.inference.regression import case_permutation_test, signed_r2_parts, weighted_r2
from causaleval.inference.reliability import half_correlation, spearman_brown, split_half
from causaleval.runs.store import atomic_write_json, atomic_write_parquet

ESTIMATORS: tuple[str, ...] = ("noise", "resample", "flip")
SCORES: tuple[str, ...] = ("rewrite_score", "paraphrase_score", "neighborhood_score")
PAIRS: tuple[tuple[str, str], ...] = (("flip", "noise"), ("resample", "noise"), ("flip", "resample"))
ANALYSIS_TABLES = ("joined", "r2", "h1", "per_layer", "within_case", "argmax", "excluded", "reliability")
EFFECTS = ("fraction", "raw")


class AnalysisError(CausalEvalError):
    """The trace or edit tables cannot be analysed (missing columns, rows or estimators)."""


@dataclass(frozen=True)
class AnalysisSpec:
    """Which localisation effect is compared with which edit scores, and how (Hase et al. 2023)."""

    name: str = "default"
    estimators: tuple[str, ...] = ESTIMATORS
    component: str = "mlp"
    window: int = 5
    token_rule: str = "max"            # "max" over positions from the first subject token, or a token role
    effect: str = "fraction"           # "fraction": max(IE/TE, 0) (Hase et al.); "raw": the IE itself
    direction: str = "denoise"
    metric: str = "p"
    te_floor: float = 0.05             # exclude cases with TE below this (metric p: a probability)
    te_floor_ld: float = 0.5           # the same for the logit-difference metric (logits)
    scores: tuple[str, ...] = SCORES
    pairs: tuple[tuple[str, str], ...] = PAIRS
    n_bootstrap: int = 1000
    n_permutations: int = 1999
    power_reps: int = 400
    min_clusters: int = 6              # fewer cases: no cluster/permutation p (too few permutations)
    degenerate_sd: float = 1e-3        # a layer whose score sd is below this is degenerate
    seed: int = 0
    correction: str = "holm"           # multipletests method across layers ("holm" or "fdr_bh")
    ci_level: float = 0.95
    alpha: float = 0.05

    def __post_init__(self) -> None:
        if self.effect not in EFFECTS:
            raise AnalysisError(f"AnalysisSpec.effect={self.effect!r}: choose one of {EFFECTS}")
        if self.te_floor < 0 or self.te_floor_ld < 0:
            raise AnalysisError(f"AnalysisSpec te_floor={self.te_floor}, te_floor_ld={self.te_floor_ld}: "
                                "a TE floor must be ≥ 0 (cases with TE ≤ 0 are always excluded)")

    @property
    def floor(self) -> float:
        """The TE floor in the units of this spec's metric."""
        return self.te_floor_ld if self.metric == "ld" else self.te_floor

    def describe(self) -> str:
        tok = ("max over positions from the first subject token" if self.token_rule == "max"
               else f"token role {self.token_rule}")
        eff = "fraction restored max(IE/TE, 0)" if self.effect == "fraction" else "raw IE"
        return (f"{eff}, {self.component.upper()} window {self.window}, {self.direction}, metric {self.metric}, "
                f"{tok}; cases with TE < {self.floor:g} excluded")


def variant_specs(base: AnalysisSpec) -> list[AnalysisSpec]:
    """The default analysis and its variants: raw IE, subject_last token, and the flip-only
    (descriptive) noising and logit-difference rows."""
    return [base,
            replace(base, name="raw_ie", effect="raw"),
            replace(base, name="subject_last", token_rule="subject_last"),
            replace(base, name="noising", direction="noise"),
            replace(base, name="logit_diff", metric="ld")]


# ----------------------------------------------------------------------------- the joined table

TRACE_COLUMNS = ("estimator", "direction", "metric", "case_id", "component", "window", "layer", "position",
                 "role", "ie", "te")
EDIT_COLUMNS = ("case_id", "relation_id", "layer")


def _require(frame: pd.DataFrame, columns, what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise AnalysisError(f"{what} lacks columns {missing}; it must follow the trace/edit stage schema "
                            "(rerun those stages with --force)")


def localisation_effects(trace: pd.DataFrame, spec: AnalysisSpec) -> pd.DataFrame:
    """Effect per (estimator, case_id, layer) with the case's TE: the spec's effect (fraction restored
    max(IE/TE, 0), or the raw IE) under its token rule, over positions from the first subject token."""
    _require(trace, TRACE_COLUMNS, "trace.parquet")
    sel = trace[(trace.component == spec.component) & (trace.window == spec.window)
                & (trace.direction == spec.direction) & (trace.metric == spec.metric)
                & trace.estimator.isin(spec.estimators)]
    if sel.empty:
        have = trace[["estimator", "direction", "metric", "component", "window"]].drop_duplicates()
        raise AnalysisError(f"trace.parquet has no rows for {spec.describe()} and estimators {spec.estimators}; "
                            f"it holds:\n{have.to_string(index=False)}")
    sel = sel[sel.role != "before_subject"]
    if spec.token_rule != "max":
        sel = sel[sel.role == spec.token_rule]
        if sel.empty:
            raise AnalysisError(f"trace.parquet has no positions with role {spec.token_rule!r}")
    te = sel.te.to_numpy(float)
    if spec.effect == "fraction":
        with np.errstate(invalid="ignore", divide="ignore"):
            value = np.where(te > 0, np.maximum(sel.ie.to_numpy(float) / np.where(te > 0, te, 1.0), 0.0), np.nan)
    else:
        value = sel.ie.to_numpy(float)
    g = sel.assign(effect=value).groupby(["estimator", "case_id", "layer"])
    agg = g.effect.max() if spec.token_rule == "max" else g.effect.mean()
    return pd.concat([agg, g.te.first()], axis=1).reset_index()


DRAW_COLUMNS = ("estimator", "direction", "metric", "case_id", "component", "window", "layer", "position",
                "draw", "value", "te")
HALVES = ("a", "b", "first")


def below_floor(te: pd.Series, spec: AnalysisSpec) -> pd.Series:
    """True where a TE is not above the spec's floor (TE ≤ 0 always; NaN too): no fraction restored there."""
    return ~(te >= spec.floor) | ~(te > 0)


def half_effects(draws: pd.DataFrame | None, trace: pd.DataFrame, spec: AnalysisSpec, first: int = 3) -> pd.DataFrame:
    """The effect per (estimator, case_id, layer, half) from a subset of each case's draws, by the rule of
    :func:`localisation_effects` (ratio of the subset's mean IE and mean TE, ...): ``a`` the even-numbered
    and ``b`` the odd-numbered draws (split-half reliability), ``first`` the first ``first`` draws (does
    the max over positions move with the number of draws?).  Empty without per-draw values and TEs.

    The fraction restored is left undefined (NaN) where the subset's mean TE is below the TE floor, the
    rule that excludes a case from the analysis: a few draws can average to a TE near zero even when all
    of them do not, and the ratio then explodes (on Gemma 3 one such half, TE 0.008, held 72 % of the
    noise halves' disagreement and lowered its split-half reliability from 0.79 to 0.43)."""
    if draws is None or draws.empty or not set(DRAW_COLUMNS) <= set(draws.columns):
        return pd.DataFrame()
    sel = draws[(draws.component == spec.component) & (draws.window == spec.window)
                & (draws.direction == spec.direction) & (draws.metric == spec.metric)
                & draws.estimator.isin(spec.estimators)]
    if sel.empty:
        return pd.DataFrame()
    keys = ["estimator", "direction", "metric", "case_id", "component", "window", "layer", "position"]
    roles = trace[keys + ["role"]].drop_duplicates(keys)
    order = sel.groupby(["estimator", "case_id"]).draw.rank(method="dense").to_numpy() - 1
    out = []
    for name, mask in zip(HALVES, (order % 2 == 0, order % 2 == 1, order < first)):
        part = sel[mask].groupby(keys, as_index=False).agg(ie=("value", "mean"), te=("te", "mean"))
        part = part.merge(roles, on=keys, how="inner")
        if len(part):
            eff = localisation_effects(part, spec)
            if spec.effect == "fraction":
                eff.loc[below_floor(eff.te, spec), "effect"] = np.nan
            out.append(eff.assign(half=name))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def exclusions(effects: pd.DataFrame, spec: AnalysisSpec) -> pd.DataFrame:
    """(estimator, case_id, te, reason) for every case whose TE is not above the floor (TE ≤ 0 always)."""
    te = effects.groupby(["estimator", "case_id"]).te.first().reset_index()
    bad = te[below_floor(te.te, spec)]
    return bad.assign(reason=[f"TE = {t:.4g} below the floor {spec.floor:g}" for t in bad.te])


def join_effects(effects: pd.DataFrame, edits: pd.DataFrame, spec: AnalysisSpec) -> pd.DataFrame:
    """One row per (case, edit layer): edit scores plus ``effect_<estimator>`` columns (inner join)."""
    _require(edits, EDIT_COLUMNS + tuple(spec.scores), "edits.parquet")
    wide = effects.pivot_table(index=["case_id", "layer"], columns="estimator", values="effect", dropna=False)
    wide.columns = [f"effect_{e}" for e in wide.columns]
    joined = edits[list(EDIT_COLUMNS) + list(spec.scores)].merge(wide.reset_index(), on=["case_id", "layer"],
                                                                  how="inner")
    if joined.empty:
        raise AnalysisError("no (case_id, layer) of edits.parquet has a localisation effect in trace.parquet: "
                            "were trace and edit run on the same facts and layers?")
    return joined.sort_values(["case_id", "layer"]).reset_index(drop=True)


def present_estimators(joined: pd.DataFrame, spec: AnalysisSpec) -> list[str]:
    return [e for e in spec.estimators if f"effect_{e}" in joined.columns and joined[f"effect_{e}"].notna().any()]


def common_rows(joined: pd.DataFrame, score: str, estimators: list[str]) -> pd.DataFrame:
    """Rows where the score and every estimator's effect are present (one sample for all estimators)."""
    cols = [score] + [f"effect_{e}" for e in estimators]
    return joined.dropna(subset=cols).reset_index(drop=True)


# ----------------------------------------------------------------------------- regressions (Hase et al.)

def fit_r2(data: pd.DataFrame, score: str, estimator: str) -> dict:
    """R² of layer, effect and both models and ΔR² with the nested F-test (statsmodels OLS).

    Both = ``score ~ C(layer) * effect`` (Hase et al. 2023): a separate intercept and effect slope per layer.
    """
    eff = f"effect_{estimator}"
    d = data[[score, eff, "layer", "case_id"]]
    m_layer = smf.ols(f"{score} ~ C(layer)", d).fit()
    m_eff = smf.ols(f"{score} ~ {eff}", d).fit()
    m_both = smf.ols(f"{score} ~ C(layer) * {eff}", d).fit()
    f_stat, p_f, df_num = m_both.compare_f_test(m_layer)
    return dict(r2_layer=m_layer.rsquared, r2_effect=m_eff.rsquared, r2_both=m_both.rsquared,
                delta_r2=m_both.rsquared - m_layer.rsquared, f=float(f_stat), f_df_num=float(df_num),
                f_df_den=float(m_both.df_resid), p_f=float(p_f), n_cases=int(d.case_id.nunique()), n_rows=len(d))


def case_layer_arrays(data: pd.DataFrame, column: str, layers: list[int], cases: list) -> np.ndarray:
    """A (case × layer) array of one column, NaN where the row is missing."""
    return data.pivot_table(index="case_id", columns="layer", values=column, dropna=False) \
        .reindex(index=cases, columns=layers).to_numpy(dtype=float)


def bootstrap_weights(n_cases: int, n_boot: int, seed: int) -> np.ndarray:
    """Case multiplicities (B × cases) of a cluster bootstrap: cases drawn with replacement."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_cases, np.full(n_cases, 1.0 / n_cases), size=n_boot).astype(float)


def percentile_ci(samples: np.ndarray, level: float) -> tuple[float, float]:
    a = (1 - level) / 2
    s = samples[np.isfinite(samples)]
    if s.size == 0:
        return float("nan"), float("nan")
    return float(np.quantile(s, a)), float(np.quantile(s, 1 - a))


def bc_percentile_ci(samples: np.ndarray, estimate: float, level: float) -> tuple[float, float]:
    """Bias-corrected percentile CI (Efron 1987, BC without acceleration): the quantiles
    Φ(2 z0 ± z_{(1+level)/2}) of the bootstrap samples, z0 = Φ⁻¹(share of samples below the estimate).
    Corrects the upward bias of ΔR² under a case bootstrap (duplicated cases are fitted twice)."""
    s = samples[np.isfinite(samples)]
    if s.size == 0:
        return float("nan"), float("nan")
    share = (np.sum(s < estimate) + 0.5 * np.sum(s == estimate)) / s.size
    z0 = stats.norm.ppf(np.clip(share, 1 / (s.size + 1), s.size / (s.size + 1)))
    z = stats.norm.ppf((1 + level) / 2)
    lo, hi = stats.norm.cdf(2 * z0 - z), stats.norm.cdf(2 * z0 + z)
    return float(np.quantile(s, lo)), float(np.quantile(s, hi))


def _case_counts(edits_cases: int, data: pd.DataFrame) -> dict:
    n = int(data.case_id.nunique())
    return dict(n_cases=n, n_excluded=max(edits_cases - n, 0))


def half_arrays(halves: pd.DataFrame, estimator: str, layers: list, cases: list) -> tuple[np.ndarray, ...] | None:
    """(a, b, first) half-effect arrays (cases × layers) of one estimator, or None without halves."""
    if halves is None or halves.empty or estimator not in set(halves.estimator):
        return None
    h = halves[halves.estimator == estimator]
    return tuple(case_layer_arrays(h[h.half == name], "effect", layers, cases) for name in HALVES)


def disattenuated_diff(y: np.ndarray, xa: np.ndarray, xb: np.ndarray, ha: tuple, hb: tuple, n_boot: int,
                       rng: np.random.Generator, level: float) -> tuple[float, float, float]:
    """r_w,a / √ρ_a − r_w,b / √ρ_b (ρ the split-half reliabilities) with a case-bootstrap percentile CI
    that resamples the scores, effects and half-effects of the same cases together."""
    def value(idx):
        ra, rb = within_layer_r(y[idx], xa[idx]), within_layer_r(y[idx], xb[idx])
        rel_a = spearman_brown(half_correlation(ha[0][idx], ha[1][idx]))
        rel_b = spearman_brown(half_correlation(hb[0][idx], hb[1][idx]))
        with np.errstate(invalid="ignore"):
            return ra / np.sqrt(np.where(rel_a > 0, rel_a, np.nan)) - rb / np.sqrt(np.where(rel_b > 0, rel_b, np.nan))
    est = float(value(np.arange(y.shape[0])))
    lo, hi = percentile_ci(value(resample_cases(y.shape[0], n_boot, rng)), level)
    return est, lo, hi


def regression_tables(joined: pd.DataFrame, spec: AnalysisSpec, n_edit_cases: int | None = None,
                      halves: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per (estimator, score): Hase et al.'s R² and ΔR² [BC bootstrap CI] with the F-test (it assumes
    independent rows: descriptive), ΔR² split by slope sign, ΔR²'s no-signal expectation (the mean of
    its case-permutation null) and the excess over it, the case-permutation p (the evidence), and the
    directional r_w [case-bootstrap CI] with its one-sided case-permutation p; with ``halves``, the
    split-half reliability and the disattenuated r_w and excess.  Per pair and measure (r_w primary,
    ΔR² descriptive): H1 by the paired swap test with the paired bootstrap interval, the one-sided
    bounds and the minimum detectable difference at 80 % power on this score's design."""
    ests = present_estimators(joined, spec)
    total = int(joined.case_id.nunique()) if n_edit_cases is None else n_edit_cases
    r2_rows, h1_rows = [], []
    for k, score in enumerate(spec.scores):
        data = common_rows(joined, score, ests)
        if data.case_id.nunique() < 3 or data.layer.nunique() < 2:
            continue
        counts = _case_counts(total, data)
        layers = sorted(data.layer.unique())
        cases = sorted(data.case_id.unique())
        y = case_layer_arrays(data, score, layers, cases)
        w = bootstrap_weights(len(cases), spec.n_bootstrap, spec.seed)
        idx = resample_cases(len(cases), spec.n_bootstrap, np.random.default_rng([spec.seed, k, 55]))
        few = len(cases) < spec.min_clusters
        method = (f"too few clusters ({len(cases)} < {spec.min_clusters})" if few
                  else f"case permutation (B = {spec.n_permutations})")
        xs, hs, rel = {}, {}, {}
        for j, e in enumerate(ests):
            fit = fit_r2(data, score, e)
            x = xs[e] = case_layer_arrays(data, f"effect_{e}", layers, cases)
            r2l, r2b = weighted_r2(y, x, w)
            lo, hi = bc_percentile_ci(r2b - r2l, fit["delta_r2"], spec.ci_level)
            _, _, pos, neg = signed_r2_parts(y, x)
            r_w = float(within_layer_r(y, x))
            r_lo, r_hi = percentile_ci(within_layer_r(y[idx], x[idx]), spec.ci_level)
            perm = dict(p_cluster=np.nan, delta_null_mean=np.nan, p_r_w=np.nan, r_w_null_mean=np.nan)
            if not few:
                dr = case_permutation_test(y, x, spec.n_permutations, np.random.default_rng([spec.seed, k, j]))
                rw = case_permutation_test(y, x, spec.n_permutations, np.random.default_rng([spec.seed, k, j, 1]),
                                           statistic=within_layer_r)
                perm = dict(p_cluster=dr.p, delta_null_mean=dr.null_mean, p_r_w=rw.p, r_w_null_mean=rw.null_mean)
            row = dict(estimator=e, score=score, **fit, delta_ci_low=lo, delta_ci_high=hi, n_boot=spec.n_bootstrap,
                       delta_r2_pos=float(pos), delta_r2_neg=float(neg), **perm,
                       delta_excess=fit["delta_r2"] - perm["delta_null_mean"], r_w=r_w, r_w_ci_low=r_lo,
                       r_w_ci_high=r_hi, cluster_method=method, n_excluded=counts["n_excluded"],
                       reliability=np.nan, reliability_ci_low=np.nan, reliability_ci_high=np.nan,
                       r_w_disattenuated=np.nan, delta_excess_disattenuated=np.nan)
            h = half_arrays(halves, e, layers, cases)
            if h is not None:
                hs[e] = h
                r = split_half(h[0], h[1], spec.n_bootstrap, np.random.default_rng([spec.seed, k, j, 2]),
                               spec.ci_level)
                rel[e] = r.reliability
                root = np.sqrt(r.reliability) if r.reliability > 0 else np.nan
                row.update(reliability=r.reliability, reliability_ci_low=r.ci_low, reliability_ci_high=r.ci_high,
                           r_w_disattenuated=r_w / root,
                           delta_excess_disattenuated=row["delta_excess"] / r.reliability if r.reliability > 0
                           else np.nan)
            r2_rows.append(row)
        pairs = [(a, b) for a, b in spec.pairs if a in xs and b in xs]
        if not pairs:
            continue
        for m_i, measure in enumerate(MEASURES):
            power = minimum_detectable_difference(y, spec.alpha, 0.8, spec.power_reps, seed=spec.seed + k,
                                                  measure=measure)
            for i, (a, b) in enumerate(pairs):
                res = swap_test(y, xs[a], xs[b], spec.n_permutations,
                                np.random.default_rng([spec.seed, k, 100 + i, m_i]), spec.ci_level, measure,
                                spec.n_bootstrap)
                dis = (np.nan,) * 3
                if measure == "r_w" and a in hs and b in hs:
                    dis = disattenuated_diff(y, xs[a], xs[b], hs[a], hs[b], spec.n_bootstrap,
                                             np.random.default_rng([spec.seed, k, 200 + i]), spec.ci_level)
                h1_rows.append(dict(
                    a=a, b=b, score=score, measure=measure, primary=measure == PRIMARY, delta_a=res.delta_a,
                    delta_b=res.delta_b, diff=res.diff, ci_low=res.ci_low, ci_high=res.ci_high, lower=res.lower,
                    upper=res.upper, p_one_sided=res.p_one_sided, mdd=power.mdd, n_perm=res.n_perm,
                    n_boot=res.n_boot, n_rows=len(data), **counts, diff_disattenuated=dis[0],
                    ci_low_disattenuated=dis[1], ci_high_disattenuated=dis[2],
                    method="paired swap test within case; paired case-bootstrap percentile interval",
                    verdict=verdict(res.diff, res.lower, res.upper, res.p_one_sided, power.mdd, spec.alpha,
                                    MEANINGFUL[measure], a, b)))
    return pd.DataFrame(r2_rows), pd.DataFrame(h1_rows)


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


# ----------------------------------------------------------------------------- per-layer correlations

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
    """Per (score, layer, pair): r(score, E) per estimator with a Fisher-z CI, Williams' t of |r_a| vs
    |r_b|, a paired bootstrap CI of |r_a| − |r_b| over cases, and the p-value corrected across the
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
                    row.update(abs_r_diff=float("nan"), ci_low=float("nan"), ci_high=float("nan"),
                               williams_t=float("nan"), df=len(d) - 3, p=float("nan"))
                else:
                    t, df, p = williams_abs(row["r_a"], row["r_b"], rab, len(d))
                    diff = np.abs(weighted_corr(xa, y, w)) - np.abs(weighted_corr(xb, y, w))
                    lo, hi = percentile_ci(diff, spec.ci_level)
                    row.update(abs_r_diff=abs(row["r_a"]) - abs(row["r_b"]), ci_low=lo, ci_high=hi,
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


# ----------------------------------------------------------------------------- within-case profiles

def _mean_ci(values: np.ndarray, spec: AnalysisSpec, salt: int = 0) -> tuple[float, float, float]:
    v = values[np.isfinite(values)]
    if v.size < 3 or np.ptp(v) == 0:
        return float(np.mean(v)) if v.size else float("nan"), float("nan"), float("nan")
    res = stats.bootstrap((v,), np.mean, n_resamples=spec.n_bootstrap, confidence_level=spec.ci_level,
                          method="percentile", rng=np.random.default_rng(spec.seed + salt))
    return float(v.mean()), float(res.confidence_interval.low), float(res.confidence_interval.high)


def _wilcoxon_p(d: np.ndarray) -> float:
    """Wilcoxon signed-rank p of paired differences: exact without ties or zeros, else the normal
    approximation (scipy's default for ties is a slow resampling test: ≈ 5 s per call at 12 cases)."""
    if d.size < 3 or not np.any(d != 0):
        return float("nan")
    a = np.abs(d)
    ties = np.any(d == 0) or np.unique(a).size < a.size
    return float(stats.wilcoxon(d, method="asymptotic" if ties else "auto").pvalue)


def within_case_tests(joined: pd.DataFrame, spec: AnalysisSpec, n_edit_cases: int | None = None
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Within-case rank correlation of layer profiles and the argmax-layer hit rate.

    Profiles: score and effect minus their mean over cases at each layer; per case the Spearman ρ across
    layers; the mean ρ over cases with a bootstrap CI; for pairs, the mean paired difference ρ_a − ρ_b
    with a bootstrap CI and a Wilcoxon signed-rank test.  Argmax: per case the tie-split hit of the raw
    effect profile's peak layer against the score's best layer; hit rate with a bootstrap CI over cases,
    against the case-permutation chance level (:mod:`causaleval.inference.argmax`).
    """
    ests = present_estimators(joined, spec)
    total = int(joined.case_id.nunique()) if n_edit_cases is None else n_edit_cases
    wc_rows, am_rows = [], []
    for k, score in enumerate(spec.scores):
        data = common_rows(joined, score, ests)
        layers = sorted(data.layer.unique())
        cases = sorted(data.case_id.unique())
        if len(layers) < 3 or len(cases) < 3:
            continue
        n_excl = _case_counts(total, data)["n_excluded"]
        y = case_layer_arrays(data, score, layers, cases)
        complete = ~np.isnan(y).any(1)
        rhos = {}
        for j, e in enumerate(ests):
            x = case_layer_arrays(data, f"effect_{e}", layers, cases)
            full = complete & ~np.isnan(x).any(1)
            yr, xr = y - np.nanmean(y, 0), x - np.nanmean(x, 0)
            rho = np.full(len(cases), np.nan)
            for i in np.flatnonzero(full):
                if np.ptp(xr[i]) > 0 and np.ptp(yr[i]) > 0:
                    rho[i] = stats.spearmanr(xr[i], yr[i]).statistic
            rhos[e] = rho
            mean, lo, hi = _mean_ci(rho, spec)
            wc_rows.append(dict(score=score, estimator=e, a=e, b="", mean_rho=mean, ci_low=lo, ci_high=hi,
                                p=float("nan"), n_cases=int(np.isfinite(rho).sum()), n_layers=len(layers),
                                n_excluded=n_excl))
            n = int(full.sum())
            if n < 3:
                continue
            res = argmax_test(x[full], y[full], spec.n_permutations, np.random.default_rng([spec.seed, k, j, 7]))
            _, lo, hi = _mean_ci(res.hits, spec, salt=11)
            am_rows.append(dict(score=score, estimator=e, hits=float(res.hits.sum()), n_cases=n,
                                hit_rate=res.hit_rate, ci_low=lo, ci_high=hi, n_layers=len(layers),
                                chance=res.chance, p=res.p, n_perm=res.n_perm, uniform_chance=1.0 / len(layers),
                                n_excluded=n_excl))
        for k2, (a, b) in enumerate(spec.pairs):
            if a not in rhos or b not in rhos:
                continue
            d = rhos[a] - rhos[b]
            mean, lo, hi = _mean_ci(d, spec, salt=k2 + 1)
            ok = d[np.isfinite(d)]
            p = _wilcoxon_p(ok)
            wc_rows.append(dict(score=score, estimator=f"{a} - {b}", a=a, b=b, mean_rho=mean, ci_low=lo,
                                ci_high=hi, p=p, n_cases=int(ok.size), n_layers=len(layers), n_excluded=n_excl))
    return pd.DataFrame(wc_rows), pd.DataFrame(am_rows)


# ----------------------------------------------------------------------------- the whole analysis

@dataclass
class AnalysisFrames:
    """The tables of an analysis (``ANALYSIS_TABLES``), in memory or read back from disk."""

    joined: pd.DataFrame
    r2: pd.DataFrame
    h1: pd.DataFrame
    per_layer: pd.DataFrame
    within_case: pd.DataFrame
    argmax: pd.DataFrame
    excluded: pd.DataFrame
    reliability: pd.DataFrame = field(default_factory=pd.DataFrame)


@dataclass(kw_only=True)
class AnalysisResult(AnalysisFrames):
    """All tables of one analysis specification."""

    spec: AnalysisSpec
    n_edit_cases: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def comparative(self) -> bool:
        """True when at least two estimators are compared (the flip-only variants are descriptive)."""
        return len(present_estimators(self.joined, self.spec)) >= 2


def analyze(trace: pd.DataFrame, edits: pd.DataFrame, spec: AnalysisSpec,
            draws: pd.DataFrame | None = None) -> AnalysisResult:
    """Every test for one way of reading the localisation effect; cases below the TE floor of any
    estimator are excluded (one common set of cases for all estimators) and listed in ``excluded``.
    With ``draws`` (trace_draws.parquet: per-draw IE and TE), also the split-half reliability of each
    effect and the disattenuated r_w, excess ΔR² and H1."""
    effects = localisation_effects(trace, spec)
    excluded = exclusions(effects, spec)
    joined = join_effects(effects, edits, spec)
    notes = []
    dropped = len(edits) - len(joined)
    if dropped:
        notes.append(f"{dropped} (case, layer) rows of edits.parquet have no localisation effect and were left out")
    bad = set(excluded.case_id) & set(joined.case_id)
    if bad:
        notes.append(f"{len(bad)} cases excluded: TE below the floor {spec.floor:g} for at least one estimator")
        joined = joined[~joined.case_id.isin(bad)].reset_index(drop=True)
    n_edit = int(edits.case_id.nunique())
    halves = half_effects(draws, trace, spec)
    r2, h1 = regression_tables(joined, spec, n_edit, halves)
    per_layer = per_layer_tests(joined, spec, n_edit)
    within, argmax = within_case_tests(joined, spec, n_edit)
    return AnalysisResult(joined=joined, r2=r2, h1=h1, per_layer=per_layer, within_case=within, argmax=argmax,
                          excluded=excluded.reset_index(drop=True), spec=spec, n_edit_cases=n_edit, notes=notes,
                          reliability=reliability_table(joined, halves, spec))


def analyze_all(trace: pd.DataFrame, edits: pd.DataFrame, base: AnalysisSpec,
                draws: pd.DataFrame | None = None) -> list[AnalysisResult]:
    """The default analysis (must succeed) and each variant whose trace rows exist (``draws``, when
    given, add reliability to the analyses whose rows it holds)."""
    results = [analyze(trace, edits, base, draws)]
    for spec in variant_specs(base)[1:]:
        try:
            results.append(analyze(trace, edits, spec, draws))
        except AnalysisError:
            continue
    return results


def _tagged(results: list[AnalysisResult], attr: str) -> pd.DataFrame:
    frames = [getattr(r, attr).assign(variant=r.spec.name) for r in results if not getattr(r, attr).empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def summary_dict(results: list[AnalysisResult], run_info: dict | None = None) -> dict:
    """Headline numbers: per variant, ΔR² per estimator and score with CI, F-test and cluster p, and H1
    per pair with CI, one-sided p, minimum detectable difference and verdict; exclusions counted."""
    out = {"variants": {}, "model": (run_info or {}).get("model"), "config": (run_info or {}).get("config")}
    for r in results:
        v = {"spec": asdict(r.spec), "description": r.spec.describe(), "notes": r.notes,
             "n_cases": int(r.joined.case_id.nunique()), "n_rows": len(r.joined),
             "n_edit_cases": r.n_edit_cases, "te_floor": r.spec.floor,
             "n_excluded": r.n_edit_cases - int(r.joined.case_id.nunique()),
             "excluded": [dict(estimator=x.estimator, case_id=int(x.case_id), te=float(x.te), reason=x.reason)
                          for x in r.excluded.itertuples()],
             "comparative": r.comparative,
             "layers": sorted(int(x) for x in r.joined.layer.unique()),
             "estimators": present_estimators(r.joined, r.spec), "delta_r2": {}, "h1": {}}
        v["h1_delta_r2"] = {}
        for row in r.r2.itertuples():
            v["delta_r2"].setdefault(row.score, {})[row.estimator] = dict(
                r2_layer=row.r2_layer, r2_effect=row.r2_effect, r2_both=row.r2_both, delta_r2=row.delta_r2,
                ci_low=row.delta_ci_low, ci_high=row.delta_ci_high, p_f=row.p_f, p_cluster=row.p_cluster,
                cluster_method=row.cluster_method, n_cases=row.n_cases, n_excluded=row.n_excluded,
                delta_r2_pos=row.delta_r2_pos, delta_r2_neg=row.delta_r2_neg, null_mean=row.delta_null_mean,
                excess=row.delta_excess, r_w=row.r_w, r_w_ci_low=row.r_w_ci_low, r_w_ci_high=row.r_w_ci_high,
                p_r_w=row.p_r_w, reliability=row.reliability, reliability_ci_low=row.reliability_ci_low,
                reliability_ci_high=row.reliability_ci_high, r_w_disattenuated=row.r_w_disattenuated,
                excess_disattenuated=row.delta_excess_disattenuated)
        for row in r.h1.itertuples():
            key = "h1" if row.measure == PRIMARY else "h1_delta_r2"
            v[key].setdefault(row.score, {})[f"{row.a}-{row.b}"] = dict(
                measure=row.measure, diff=row.diff, ci_low=row.ci_low, ci_high=row.ci_high, lower=row.lower,
                upper=row.upper, p_one_sided=row.p_one_sided, mdd=row.mdd, verdict=row.verdict, method=row.method,
                delta_a=row.delta_a, delta_b=row.delta_b, n_cases=row.n_cases, n_excluded=row.n_excluded,
                n_perm=row.n_perm, diff_disattenuated=row.diff_disattenuated,
                ci_low_disattenuated=row.ci_low_disattenuated, ci_high_disattenuated=row.ci_high_disattenuated)
        v["reliability"] = {row.estimator: dict(r_half=row.r_half, reliability=row.reliability, ci_low=row.ci_low,
                                                ci_high=row.ci_high, n_cases=row.n_cases,
                                                first3_minus_all=row.first3_minus_all,
                                                bias_ci_low=row.bias_ci_low, bias_ci_high=row.bias_ci_high)
                            for row in r.reliability.itertuples() if row.layer == -1} if len(r.reliability) else {}
        out["variants"][r.spec.name] = v
    return out


def write_results(results: list[AnalysisResult], out_dir: Path, run_info: dict | None = None) -> Path:
    """``<out>/analysis/{joined,r2,h1,per_layer,within_case,argmax}.parquet`` (column ``variant``) and
    ``summary.json``; returns the summary path (written last: it marks the stage finished)."""
    folder = Path(out_dir) / "analysis"
    for name in ANALYSIS_TABLES:
        atomic_write_parquet(folder / f"{name}.parquet", _tagged(results, name))
    path = folder / "summary.json"
    atomic_write_json(path, _finite(summary_dict(results, run_info)))
    return path


def _finite(obj):
    """JSON-safe copy: NaN/inf become null."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


@dataclass(kw_only=True)
class AnalysisTables(AnalysisFrames):
    """The analysis outputs of a results folder, as read back from disk."""

    folder: Path
    summary: dict


def load_results(out_dir: Path) -> AnalysisTables:
    """Read ``<out>/analysis``; a missing folder is an error that says to run the analyze stage."""
    folder = Path(out_dir) / "analysis"
    path = folder / "summary.json"
    if not path.is_file():
        raise AnalysisError(f"{path} is missing: run the analyze stage first "
                            f"(python -m experiments.main --stage analyze --out {out_dir})")
    frames = {n: pd.read_parquet(folder / f"{n}.parquet") if (folder / f"{n}.parquet").is_file() else pd.DataFrame()
              for n in ANALYSIS_TABLES}
    return AnalysisTables(folder=folder, summary=json.loads(path.read_text()), **frames)


def _fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{digits}f}"


def headline(summary: dict, variant: str = "default", score: str = "rewrite_score") -> str:
    """The answer in a few lines: per estimator the directional r_w with its CI and permutation p, the
    reliability, and Hase et al.'s ΔR² beside its no-signal expectation; H1 (flip − noise) on r_w with
    its interval, one-sided bound, p, minimum detectable difference and verdict, and on ΔR²."""
    v = summary["variants"].get(variant)
    if v is None:
        return f"no analysis variant {variant!r} in the summary"
    lines = [f"Does localisation inform editing? ({v['description']}; {v['n_cases']} cases × "
             f"{len(v['layers'])} edit layers, {v.get('n_excluded', 0)} cases excluded; score: {score})"]
    for est, d in v["delta_r2"].get(score, {}).items():
        rel = d.get("reliability")
        rel_text = (f", reliability {_fmt(rel, 2)} [{_fmt(d.get('reliability_ci_low'), 2)}, "
                    f"{_fmt(d.get('reliability_ci_high'), 2)}] (r_w disattenuated {_fmt(d.get('r_w_disattenuated'))})"
                    if rel is not None else "")
        lines.append(f"  {est:>9}: r_w = {_fmt(d.get('r_w'))} [{_fmt(d.get('r_w_ci_low'))}, {_fmt(d.get('r_w_ci_high'))}]"
                     f", one-sided permutation p = {_fmt(d.get('p_r_w'))}{rel_text}")
        lines.append(f"  {'':>9}  ΔR² = {_fmt(d['delta_r2'], 4)} (no-signal expectation {_fmt(d.get('null_mean'), 4)}, "
                     f"excess {_fmt(d.get('excess'), 4)}; from positive slopes {_fmt(d.get('delta_r2_pos'), 4)}), "
                     f"permutation p = {_fmt(d.get('p_cluster'))}, F-test p = {_fmt(d['p_f'])} (assumes independent rows)")
    for key, label in (("h1", "r_w"), ("h1_delta_r2", "ΔR²")):
        h = v.get(key, {}).get(score, {}).get("flip-noise")
        if h is None:
            continue
        lines.append(f"  H1 on {label}: flip − noise = {_fmt(h['diff'], 4)} [{_fmt(h['ci_low'], 4)}, "
                     f"{_fmt(h['ci_high'], 4)}], one-sided 95% bounds [{_fmt(h.get('lower'), 4)}, "
                     f"{_fmt(h.get('upper'), 4)}], one-sided p = {_fmt(h['p_one_sided'], 3)} ({h['n_perm']} swaps, "
                     f"{h['n_cases']} cases); minimum detectable difference (80% power) = {_fmt(h['mdd'], 4)}")
        lines.append(f"  → the evidence {h['verdict']}")
    if v.get("h1", {}).get(score, {}).get("flip-noise") is None:
        lines.append("  H1: not tested (flip or noise estimator missing)")
    return "\n".join(lines)
