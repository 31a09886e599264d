"""The whole analysis of a results folder: every table of one spec (:func:`analyze`), the default and
its variants (:func:`analyze_all`), the summary, writing and reading ``<out>/analysis``, the headline.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from causaleval.analysis.effects import exclusions, half_effects, join_effects, localisation_effects, present_estimators
from causaleval.analysis.per_layer import per_layer_tests
from causaleval.analysis.regression_tables import regression_tables
from causaleval.analysis.reliability import reliability_table
from causaleval.analysis.spec import ANALYSIS_TABLES, AnalysisError, AnalysisSpec, variant_specs
from causaleval.analysis.within_case import within_case_tests
from causaleval.inference.h1 import PRIMARY
from causaleval.runs.store import atomic_write_json, atomic_write_parquet


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
    reliability = reliability_table(joined, halves, spec)
    r2, h1 = regression_tables(joined, spec, n_edit, halves, reliability)
    per_layer = per_layer_tests(joined, spec, n_edit)
    within, argmax = within_case_tests(joined, spec, n_edit)
    return AnalysisResult(joined=joined, r2=r2, h1=h1, per_layer=per_layer, within_case=within, argmax=argmax,
                          excluded=excluded.reset_index(drop=True), spec=spec, n_edit_cases=n_edit, notes=notes,
                          reliability=reliability)


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


def effect_reliability(variant: dict, estimator: str, score_entry: dict | None = None) -> tuple:
    """(reliability, ci_low, ci_high) of one estimator's effect in a summary variant, as every table and
    page quotes it: the pooled row of the reliability table (``variant["reliability"]``), unless the
    score's own entry (``delta_r2[score][estimator]``, computed on that score's rows) has another value —
    its rows differ (a score missing for some facts), so it is another quantity; Nones when not measured."""
    own = score_entry or {}
    own_value = own.get("reliability")
    if own_value is not None and not np.isfinite(own_value):
        own_value = None
    r = (variant.get("reliability") or {}).get(estimator)
    if r and (own_value is None or abs(own_value - r["reliability"]) < 1e-12):
        return r.get("reliability"), r.get("ci_low"), r.get("ci_high")
    return own_value, own.get("reliability_ci_low"), own.get("reliability_ci_high")


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
        rel, rel_lo, rel_hi = effect_reliability(v, est, d)
        rel_text = (f", reliability {_fmt(rel, 2)} [{_fmt(rel_lo, 2)}, "
                    f"{_fmt(rel_hi, 2)}] (r_w disattenuated {_fmt(d.get('r_w_disattenuated'))})"
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
