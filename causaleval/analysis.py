"""The hypothesis tests of SPEC §7 over the joined (case, edit layer) table.

Data: one row per (case, edit layer) with the edit scores (SPEC §6) and, per estimator E, the
localisation effect at that layer, computed with one rule for every estimator (default: MLP, window 5,
denoising, metric p, max over token positions of the mean indirect effect; ``subject_last`` as a
variant).  Tests:

* Hase et al. (2023) regressions per estimator and score: R²(score ~ C(layer)), R²(score ~ effect),
  R²(score ~ C(layer) × effect), ΔR² = R²(both) − R²(layer) with the nested F-test and a
  cluster-robust (by case) Wald test of the added terms;
* H1: ΔR²_flip − ΔR²_noise by a paired cluster bootstrap over cases (one resample of cases refits both);
* per layer: Williams' t (Williams 1959; Steiger 1980, eq. 7) for the dependent correlations
  r(score, E_a) vs r(score, E_b), Holm/BH across layers, and a paired bootstrap CI of r_a − r_b;
* within case: Spearman correlation across layers of effect and score after removing layer means,
  averaged over cases with a bootstrap CI; argmax-layer hit rate against chance (binomial test).
"""

from __future__ import annotations

import gc
import json
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pingouin as pg
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.stats.multitest import multipletests

from causaleval.errors import CausalEvalError
from causaleval.store import atomic_write_json, atomic_write_parquet

ESTIMATORS: tuple[str, ...] = ("noise", "resample", "flip")
SCORES: tuple[str, ...] = ("rewrite_score", "paraphrase_score", "neighborhood_score")
PAIRS: tuple[tuple[str, str], ...] = (("flip", "noise"), ("resample", "noise"), ("flip", "resample"))
ANALYSIS_TABLES = ("joined", "r2", "h1", "per_layer", "within_case", "argmax")


class AnalysisError(CausalEvalError):
    """The trace or edit tables cannot be analysed (missing columns, rows or estimators)."""


@dataclass(frozen=True)
class AnalysisSpec:
    """Which localisation effect is compared with which edit scores, and how (SPEC §7)."""

    name: str = "default"
    estimators: tuple[str, ...] = ESTIMATORS
    component: str = "mlp"
    window: int = 5
    token_rule: str = "max"            # "max" over positions, or a token role such as "subject_last"
    direction: str = "denoise"
    metric: str = "p"
    scores: tuple[str, ...] = SCORES
    pairs: tuple[tuple[str, str], ...] = PAIRS
    n_bootstrap: int = 1000
    seed: int = 0
    correction: str = "holm"           # multipletests method across layers ("holm" or "fdr_bh")
    ci_level: float = 0.95

    def describe(self) -> str:
        tok = "max over token positions" if self.token_rule == "max" else f"token role {self.token_rule}"
        return (f"{self.component.upper()} window {self.window}, {self.direction}, metric {self.metric}, {tok}")


def variant_specs(base: AnalysisSpec) -> list[AnalysisSpec]:
    """The default analysis and its variants: subject_last token, flip noising, logit-difference metric."""
    return [base,
            replace(base, name="subject_last", token_rule="subject_last"),
            replace(base, name="noising", direction="noise"),
            replace(base, name="logit_diff", metric="ld")]


# ----------------------------------------------------------------------------- the joined table

TRACE_COLUMNS = ("estimator", "direction", "metric", "case_id", "component", "window", "layer", "position",
                 "role", "ie")
EDIT_COLUMNS = ("case_id", "relation_id", "layer")


def _require(frame: pd.DataFrame, columns, what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise AnalysisError(f"{what} lacks columns {missing}; it must follow the trace/edit stage schema "
                            "(rerun those stages with --force)")


def localisation_effects(trace: pd.DataFrame, spec: AnalysisSpec) -> pd.DataFrame:
    """Effect per (estimator, case_id, layer): the token rule applied to ``ie`` of the chosen rows."""
    _require(trace, TRACE_COLUMNS, "trace.parquet")
    sel = trace[(trace.component == spec.component) & (trace.window == spec.window)
                & (trace.direction == spec.direction) & (trace.metric == spec.metric)
                & trace.estimator.isin(spec.estimators)]
    if sel.empty:
        have = trace[["estimator", "direction", "metric", "component", "window"]].drop_duplicates()
        raise AnalysisError(f"trace.parquet has no rows for {spec.describe()} and estimators {spec.estimators}; "
                            f"it holds:\n{have.to_string(index=False)}")
    if spec.token_rule != "max":
        sel = sel[sel.role == spec.token_rule]
        if sel.empty:
            raise AnalysisError(f"trace.parquet has no positions with role {spec.token_rule!r}")
        agg = sel.groupby(["estimator", "case_id", "layer"]).ie.mean()
    else:
        agg = sel.groupby(["estimator", "case_id", "layer"]).ie.max()
    return agg.rename("effect").reset_index()


def join_effects(effects: pd.DataFrame, edits: pd.DataFrame, spec: AnalysisSpec) -> pd.DataFrame:
    """One row per (case, edit layer): edit scores plus ``effect_<estimator>`` columns (inner join)."""
    _require(edits, EDIT_COLUMNS + tuple(spec.scores), "edits.parquet")
    wide = effects.pivot_table(index=["case_id", "layer"], columns="estimator", values="effect")
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
    """R² of layer, effect and both models, ΔR² with the nested F-test and the cluster-robust Wald test.

    Both = ``score ~ C(layer) * effect`` (Hase et al. 2023): a separate intercept and effect slope per layer.
    The Wald test is of the coefficients added to the layer model (effect and C(layer):effect), with the
    covariance clustered by case (rows of one case are not independent).
    """
    eff = f"effect_{estimator}"
    d = data[[score, eff, "layer", "case_id"]]
    m_layer = smf.ols(f"{score} ~ C(layer)", d).fit()
    m_eff = smf.ols(f"{score} ~ {eff}", d).fit()
    m_both = smf.ols(f"{score} ~ C(layer) * {eff}", d).fit()
    f_stat, p_f, df_num = m_both.compare_f_test(m_layer)
    robust = smf.ols(f"{score} ~ C(layer) * {eff}", d).fit(cov_type="cluster",
                                                            cov_kwds={"groups": d.case_id.to_numpy()})
    names = list(robust.params.index)
    added = [i for i, n in enumerate(names) if eff in n]
    restriction = np.zeros((len(added), len(names)))
    restriction[np.arange(len(added)), added] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wald = robust.wald_test(restriction, use_f=False, scalar=True)
        rank = int(np.linalg.matrix_rank(restriction @ robust.cov_params().to_numpy() @ restriction.T))
    return dict(r2_layer=m_layer.rsquared, r2_effect=m_eff.rsquared, r2_both=m_both.rsquared,
                delta_r2=m_both.rsquared - m_layer.rsquared, f=float(f_stat), f_df_num=float(df_num),
                f_df_den=float(m_both.df_resid), p_f=float(p_f), wald_chi2=float(np.squeeze(wald.statistic)),
                wald_df=len(added), wald_rank=rank, p_wald=float(np.squeeze(wald.pvalue)),
                n_cases=int(d.case_id.nunique()), n_rows=len(d))


def case_layer_arrays(data: pd.DataFrame, column: str, layers: list[int], cases: list) -> np.ndarray:
    """A (case × layer) array of one column, NaN where the row is missing."""
    return data.pivot_table(index="case_id", columns="layer", values=column, dropna=False) \
        .reindex(index=cases, columns=layers).to_numpy(dtype=float)


def weighted_r2(y: np.ndarray, x: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """R²(score ~ C(layer)) and R²(score ~ C(layer) × effect) for many case-weightings at once.

    ``y``, ``x``: (cases × layers) with NaN for missing rows; ``weights``: (B × cases), e.g. the
    multiplicities of a cluster bootstrap.  With a free intercept and slope per layer, the residual
    sum of squares of the full model is the sum over layers of simple-regression residuals, so only
    weighted per-layer moments are needed (identical to the OLS fit; tested against statsmodels).
    """
    mask = ~(np.isnan(y) | np.isnan(x))
    y = np.where(mask, y - np.nanmean(y), 0.0)
    x = np.where(mask, x - np.nanmean(x), 0.0)
    m = mask.astype(float)
    n = weights @ m
    sy, sx = weights @ y, weights @ x
    syy, sxx, sxy = weights @ (y * y), weights @ (x * x), weights @ (x * y)
    with np.errstate(invalid="ignore", divide="ignore"):
        safe_n = np.where(n > 0, n, 1.0)
        ss_layer = syy - sy ** 2 / safe_n
        vxx = sxx - sx ** 2 / safe_n
        cxy = sxy - sx * sy / safe_n
        gain = np.where(vxx > 1e-12 * np.maximum(sxx, 1e-300), cxy ** 2 / np.where(vxx > 0, vxx, 1.0), 0.0)
        total_n = n.sum(1)
        sst = syy.sum(1) - sy.sum(1) ** 2 / total_n
        r2_layer = 1.0 - ss_layer.sum(1) / sst
        r2_both = 1.0 - (ss_layer - gain).sum(1) / sst
    return r2_layer, r2_both


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


def regression_tables(joined: pd.DataFrame, spec: AnalysisSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per (estimator, score) regressions with a bootstrap CI of ΔR², and the H1 pair differences.

    H1 (SPEC §7): ΔR²_a − ΔR²_b over one paired cluster bootstrap (the same resampled cases refit
    every estimator); percentile CI; one-sided p = (1 + #{diff* ≤ 0}) / (B + 1).
    """
    ests = present_estimators(joined, spec)
    r2_rows, h1_rows = [], []
    for score in spec.scores:
        data = common_rows(joined, score, ests)
        if data.case_id.nunique() < 3 or data.layer.nunique() < 2:
            continue
        layers = sorted(data.layer.unique())
        cases = sorted(data.case_id.unique())
        y = case_layer_arrays(data, score, layers, cases)
        w = bootstrap_weights(len(cases), spec.n_bootstrap, spec.seed)
        boot, point = {}, {}
        for e in ests:
            fit = fit_r2(data, score, e)
            x = case_layer_arrays(data, f"effect_{e}", layers, cases)
            r2l, r2b = weighted_r2(y, x, w)
            boot[e] = r2b - r2l
            point[e] = fit["delta_r2"]
            lo, hi = percentile_ci(boot[e], spec.ci_level)
            r2_rows.append(dict(estimator=e, score=score, **fit, delta_ci_low=lo, delta_ci_high=hi,
                                n_boot=spec.n_bootstrap))
        for a, b in spec.pairs:
            if a not in boot or b not in boot:
                continue
            diff = boot[a] - boot[b]
            lo, hi = percentile_ci(diff, spec.ci_level)
            finite = diff[np.isfinite(diff)]
            p = (1 + np.sum(finite <= 0)) / (finite.size + 1)
            h1_rows.append(dict(a=a, b=b, score=score, delta_a=point[a], delta_b=point[b],
                                diff=point[a] - point[b], ci_low=lo, ci_high=hi, p_one_sided=float(p),
                                n_boot=int(finite.size), n_cases=len(cases), n_rows=len(data)))
    return pd.DataFrame(r2_rows), pd.DataFrame(h1_rows)


# ----------------------------------------------------------------------------- per-layer correlations

def williams_t(r12: float, r13: float, r23: float, n: int) -> tuple[float, int, float]:
    """Williams' t for H0: ρ12 = ρ13 (two correlations sharing variable 1), df = n − 3, two-sided p.

    Williams (1959); Steiger (1980, eq. 7):
    t = (r12 − r13) √[(n−1)(1+r23) / (2 (n−1)/(n−3) |R| + r̄² (1−r23)³)],
    |R| = 1 − r12² − r13² − r23² + 2 r12 r13 r23, r̄ = (r12 + r13)/2.
    Worked value (Howell, Statistical Methods for Psychology): r12=.80, r13=.72, r23=.89, n=26 → t=1.361, p=.187.
    """
    if n <= 3:
        return float("nan"), n - 3, float("nan")
    det = 1 - r12 ** 2 - r13 ** 2 - r23 ** 2 + 2 * r12 * r13 * r23
    rbar = (r12 + r13) / 2
    denom = 2 * (n - 1) / (n - 3) * det + rbar ** 2 * (1 - r23) ** 3
    if not denom > 0:
        return float("nan"), n - 3, float("nan")
    t = (r12 - r13) * np.sqrt((n - 1) * (1 + r23) / denom)
    return float(t), n - 3, float(2 * stats.t.sf(abs(t), n - 3))


def weighted_corr(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Pearson r of x and y (length n) under each row of ``weights`` (B × n)."""
    n = weights.sum(1)
    mx, my = weights @ x / n, weights @ y / n
    cxy = weights @ (x * y) / n - mx * my
    vx = weights @ (x * x) / n - mx ** 2
    vy = weights @ (y * y) / n - my ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return cxy / np.sqrt(vx * vy)


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


def per_layer_tests(joined: pd.DataFrame, spec: AnalysisSpec) -> pd.DataFrame:
    """Per (score, layer, pair): r(score, E) for each estimator with a 95% CI, Williams' t of r_a vs r_b,
    a paired bootstrap CI of r_a − r_b over cases, and the p-value corrected across layers."""
    ests = present_estimators(joined, spec)
    rows = []
    for score in spec.scores:
        data = common_rows(joined, score, ests)
        for layer, d in data.groupby("layer"):
            if len(d) < 5:
                continue
            y = d[score].to_numpy(float)
            base = dict(score=score, layer=int(layer), n=len(d))
            for e in ests:
                c = pg.corr(d[f"effect_{e}"], d[score])
                base[f"r_{e}"] = float(c["r"].iloc[0])
                ci = c.filter(like="CI").iloc[0, 0]
                base[f"r_{e}_ci_low"], base[f"r_{e}_ci_high"] = float(ci[0]), float(ci[1])
            w = bootstrap_weights(len(d), spec.n_bootstrap, spec.seed + int(layer))
            for a, b in spec.pairs:
                if a not in ests or b not in ests:
                    continue
                xa, xb = d[f"effect_{a}"].to_numpy(float), d[f"effect_{b}"].to_numpy(float)
                rab = float(np.corrcoef(xa, xb)[0, 1])
                t, df, p = williams_t(base[f"r_{a}"], base[f"r_{b}"], rab, len(d))
                diff = weighted_corr(xa, y, w) - weighted_corr(xb, y, w)
                lo, hi = percentile_ci(diff, spec.ci_level)
                rows.append(dict(base, a=a, b=b, r_a=base[f"r_{a}"], r_b=base[f"r_{b}"], r_ab=rab,
                                 r_diff=base[f"r_{a}"] - base[f"r_{b}"], ci_low=lo, ci_high=hi,
                                 williams_t=t, df=df, p=p))
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


def within_case_tests(joined: pd.DataFrame, spec: AnalysisSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Within-case rank correlation of layer profiles and the argmax-layer hit rate (SPEC §7).

    Profiles: score and effect minus their mean over cases at each layer; per case the Spearman ρ across
    layers; the mean ρ over cases with a bootstrap CI; for pairs, the mean paired difference ρ_a − ρ_b
    with a bootstrap CI and a Wilcoxon signed-rank test.  Argmax: the share of cases whose effect peaks at
    the layer where the edit scores best (raw profiles, first maximum), against 1/L and against the
    chance implied by the two marginal argmax distributions (binomial tests, Wilson CI).
    """
    ests = present_estimators(joined, spec)
    wc_rows, am_rows = [], []
    for score in spec.scores:
        data = common_rows(joined, score, ests)
        layers = sorted(data.layer.unique())
        cases = sorted(data.case_id.unique())
        if len(layers) < 3 or len(cases) < 3:
            continue
        y = case_layer_arrays(data, score, layers, cases)
        complete = ~np.isnan(y).any(1)
        rhos = {}
        for e in ests:
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
                                p=float("nan"), n_cases=int(np.isfinite(rho).sum()), n_layers=len(layers)))
            ex, ey = np.argmax(x[full], 1), np.argmax(y[full], 1)
            n = int(full.sum())
            if n == 0:
                continue
            hits = int(np.sum(ex == ey))
            chance_marginal = float(sum(np.mean(ex == k) * np.mean(ey == k) for k in range(len(layers))))
            test = stats.binomtest(hits, n, 1.0 / len(layers), alternative="greater")
            ci = stats.binomtest(hits, n).proportion_ci(confidence_level=spec.ci_level, method="wilson")
            am_rows.append(dict(score=score, estimator=e, hits=hits, n_cases=n, hit_rate=hits / n,
                                ci_low=float(ci.low), ci_high=float(ci.high), n_layers=len(layers),
                                chance=1.0 / len(layers), p=float(test.pvalue), chance_marginal=chance_marginal,
                                p_marginal=float(stats.binomtest(hits, n, min(max(chance_marginal, 1e-9), 1.0),
                                                                 alternative="greater").pvalue)))
        for k, (a, b) in enumerate(spec.pairs):
            if a not in rhos or b not in rhos:
                continue
            d = rhos[a] - rhos[b]
            mean, lo, hi = _mean_ci(d, spec, salt=k + 1)
            ok = d[np.isfinite(d)]
            p = float(stats.wilcoxon(ok).pvalue) if ok.size >= 3 and np.any(ok != 0) else float("nan")
            wc_rows.append(dict(score=score, estimator=f"{a} - {b}", a=a, b=b, mean_rho=mean, ci_low=lo,
                                ci_high=hi, p=p, n_cases=int(ok.size), n_layers=len(layers)))
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


@dataclass(kw_only=True)
class AnalysisResult(AnalysisFrames):
    """All tables of one analysis specification."""

    spec: AnalysisSpec
    notes: list[str] = field(default_factory=list)


def analyze(trace: pd.DataFrame, edits: pd.DataFrame, spec: AnalysisSpec) -> AnalysisResult:
    """Every test of SPEC §7 for one way of reading the localisation effect."""
    effects = localisation_effects(trace, spec)
    joined = join_effects(effects, edits, spec)
    notes = []
    dropped = len(edits) - len(joined)
    if dropped:
        notes.append(f"{dropped} (case, layer) rows of edits.parquet have no localisation effect and were left out")
    r2, h1 = regression_tables(joined, spec)
    per_layer = per_layer_tests(joined, spec)
    within, argmax = within_case_tests(joined, spec)
    return AnalysisResult(joined=joined, r2=r2, h1=h1, per_layer=per_layer, within_case=within, argmax=argmax,
                          spec=spec, notes=notes)


def analyze_all(trace: pd.DataFrame, edits: pd.DataFrame, base: AnalysisSpec) -> list[AnalysisResult]:
    """The default analysis (must succeed) and each variant whose trace rows exist."""
    results = [analyze(trace, edits, base)]
    for spec in variant_specs(base)[1:]:
        try:
            results.append(analyze(trace, edits, spec))
        except AnalysisError:
            continue
    return results


def _tagged(results: list[AnalysisResult], attr: str) -> pd.DataFrame:
    frames = [getattr(r, attr).assign(variant=r.spec.name) for r in results if not getattr(r, attr).empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def summary_dict(results: list[AnalysisResult], run_info: dict | None = None) -> dict:
    """Headline numbers: per-variant ΔR² per estimator (rewrite score) with CI, and H1 for flip vs noise."""
    out = {"variants": {}, "model": (run_info or {}).get("model"), "config": (run_info or {}).get("config")}
    for r in results:
        v = {"spec": asdict(r.spec), "description": r.spec.describe(), "notes": r.notes,
             "n_cases": int(r.joined.case_id.nunique()), "n_rows": len(r.joined),
             "layers": sorted(int(x) for x in r.joined.layer.unique()),
             "estimators": present_estimators(r.joined, r.spec), "delta_r2": {}, "h1": {}}
        for row in r.r2.itertuples():
            v["delta_r2"].setdefault(row.score, {})[row.estimator] = dict(
                r2_layer=row.r2_layer, r2_effect=row.r2_effect, r2_both=row.r2_both, delta_r2=row.delta_r2,
                ci_low=row.delta_ci_low, ci_high=row.delta_ci_high, p_f=row.p_f, p_wald=row.p_wald,
                n_cases=row.n_cases)
        for row in r.h1.itertuples():
            v["h1"].setdefault(row.score, {})[f"{row.a}-{row.b}"] = dict(
                diff=row.diff, ci_low=row.ci_low, ci_high=row.ci_high, p_one_sided=row.p_one_sided,
                delta_a=row.delta_a, delta_b=row.delta_b, n_cases=row.n_cases, n_boot=row.n_boot)
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
    frames = {n: pd.read_parquet(folder / f"{n}.parquet") for n in ANALYSIS_TABLES}
    return AnalysisTables(folder=folder, summary=json.loads(path.read_text()), **frames)


def _fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{digits}f}"


def headline(summary: dict, variant: str = "default", score: str = "rewrite_score") -> str:
    """The answer in a few lines: ΔR² per estimator with CI, and H1 (flip − noise) with CI and one-sided p."""
    v = summary["variants"].get(variant)
    if v is None:
        return f"no analysis variant {variant!r} in the summary"
    lines = [f"Does localisation inform editing? ({v['description']}; {v['n_cases']} cases × "
             f"{len(v['layers'])} edit layers; score: {score})"]
    for est, d in v["delta_r2"].get(score, {}).items():
        lines.append(f"  {est:>9}: R²(layer) = {_fmt(d['r2_layer'])}, R²(both) = {_fmt(d['r2_both'])}, "
                     f"ΔR² = {_fmt(d['delta_r2'], 4)} [{_fmt(d['ci_low'], 4)}, {_fmt(d['ci_high'], 4)}], "
                     f"F-test p = {_fmt(d['p_f'], 3)}, cluster Wald p = {_fmt(d['p_wald'], 3)}")
    h = v["h1"].get(score, {}).get("flip-noise")
    if h is not None:
        lines.append(f"  H1 ΔR²_flip − ΔR²_noise = {_fmt(h['diff'], 4)} [{_fmt(h['ci_low'], 4)}, "
                     f"{_fmt(h['ci_high'], 4)}], one-sided p = {_fmt(h['p_one_sided'], 3)} "
                     f"({h['n_boot']} paired cluster-bootstrap resamples of {h['n_cases']} cases)")
    else:
        lines.append("  H1: not tested (flip or noise estimator missing)")
    return "\n".join(lines)
