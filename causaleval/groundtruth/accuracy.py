"""Threshold-free accuracy of a localiser on planted facts, defined at every window (docs/groundtruth.md#accuracy).

Per planted edit (fact, planted layer l), estimator and MLP window w, with the profile e(j) = the planted
fact's IE with the window centred at layer j (last subject token, denoising, metric p(o_new)):

* ``rr``: E[1/rank(l)] under a uniformly random tie-break (rank 1 = the largest e(j)); its mean is the MRR;
* ``coverage``: the share of the argmax set whose window (the w layers centred at j, clipped; Meng et al.
  2022's windows) contains l; ``covers0``: the share whose window contains layer 0;
* ``mass``: e(l)⁺ / Σ_j e(j)⁺.

Baselines: uniform chance (a profile unrelated to l) and the most-common-argmax rule (rank layers by how
often they are the estimator's argmax, same window, on the *other* facts).  Paired comparisons use the
within-fact sign-flip test of :mod:`causaleval.inference.paired` with a bootstrap CI over facts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import norm

from causaleval.groundtruth.planted import paired_differences
from causaleval.inference.argmax import argmax_sets
from causaleval.inference.bootstrap import bootstrap_ci
from causaleval.inference.paired import sign_flip_test
from causaleval.model.sites import window_layers

KEYS = ["case_id", "relation_id", "estimator", "window", "planted_layer"]
METRICS = ("rr", "coverage", "mass", "hit1")


def reciprocal_rank(profile: np.ndarray, idx: int, rtol: float = 1e-9) -> float:
    """E[1/rank] of position ``idx`` in ``profile`` (descending) under a random tie-break; NaN counts lowest."""
    x = np.nan_to_num(np.asarray(profile, float), nan=-np.inf)
    v = x[idx]
    tol = rtol * max(1.0, abs(v)) if np.isfinite(v) else 0.0
    greater = int(np.sum(x > v + tol))
    tied = int(np.sum(np.abs(x - v) <= tol)) if np.isfinite(v) else int(np.sum(x == v))
    return float(np.mean(1.0 / np.arange(greater + 1, greater + tied + 1)))


def covers(center: int, target: int, window: int, n_layers: int) -> bool:
    """Whether the window of ``window`` layers centred at ``center`` contains layer ``target``."""
    return target in window_layers(int(center), int(window), int(n_layers))


def profile_metrics(layers: np.ndarray, ie: np.ndarray, planted: int, window: int, n_layers: int) -> dict:
    """The metrics of one profile (``layers`` ascending, ``planted`` among them)."""
    idx = int(np.flatnonzero(layers == planted)[0])
    top = np.flatnonzero(argmax_sets(ie[None, :])[0])
    pos = np.clip(np.nan_to_num(ie, nan=0.0), 0.0, None)
    return dict(rr=reciprocal_rank(ie, idx),
                coverage=float(np.mean([covers(layers[t], planted, window, n_layers) for t in top])),
                covers0=float(np.mean([covers(layers[t], 0, window, n_layers) for t in top])),
                mass=float(pos[idx] / pos.sum()) if pos.sum() > 0 else float("nan"),
                hit1=float(np.mean(layers[top] == planted)),
                argmax=[int(layers[t]) for t in top])


def accuracy_rows(profiles: pd.DataFrame, n_layers: int) -> pd.DataFrame:
    """One row per (case, estimator, window, planted layer) with :func:`profile_metrics` and the
    most-common-argmax rule's values (``rule_rr``, ``rule_coverage``, ``rule_mass``, ``rule_hit1``).

    ``profiles``: a row per layer j with columns KEYS + ``layer``, ``ie``."""
    rows = []
    for key, g in profiles.sort_values("layer").groupby(KEYS, sort=True):
        m = profile_metrics(g.layer.to_numpy(), g.ie.to_numpy(float), int(key[-1]), int(key[3]), n_layers)
        rows.append({**dict(zip(KEYS, key)), **m, "layers": g.layer.to_numpy()})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    rule = []
    for r in out.itertuples():
        others = out[(out.estimator == r.estimator) & (out.window == r.window) & (out.case_id != r.case_id)]
        rule.append(rule_metrics(others.argmax, r.layers, int(r.planted_layer), int(r.window), n_layers))
    out = pd.concat([out.drop(columns="layers"), pd.DataFrame(rule, index=out.index)], axis=1)
    return out


def rule_metrics(argmaxes, layers: np.ndarray, planted: int, window: int, n_layers: int) -> dict:
    """The most-common-argmax rule fitted on ``argmaxes`` (the argmax sets of other facts; ties share an
    edit): its score per layer is the (tie-split) count of argmaxes there."""
    score = pd.Series(0.0, index=[int(x) for x in layers])
    for s in argmaxes:
        for j in s:
            score[int(j)] += 1.0 / len(s)
    prof = score.to_numpy()
    m = profile_metrics(np.asarray(layers), prof, planted, window, n_layers)
    total = prof.sum()
    return dict(rule_rr=m["rr"], rule_coverage=m["coverage"], rule_hit1=m["hit1"],
                rule_mass=float(score[planted] / total) if total > 0 else float("nan"))


def chance(layers: np.ndarray, planted: int, window: int, n_layers: int) -> dict:
    """Uniform chance of each metric for a profile unrelated to l over ``layers``."""
    k = len(layers)
    return dict(rr=float(np.mean(1.0 / np.arange(1, k + 1))),
                coverage=float(np.mean([covers(j, planted, window, n_layers) for j in layers])),
                mass=1.0 / k, hit1=1.0 / k)


def per_fact(rows: pd.DataFrame, col: str, by: list[str]) -> pd.DataFrame:
    return rows.groupby(by + ["case_id"], as_index=False)[col].mean()


def accuracy_summary(rows: pd.DataFrame, n_layers: int, n_perm: int = 9999, n_resamples: int = 1000,
                     seed: int = 0) -> pd.DataFrame:
    """Per estimator × window × metric: the mean over facts (a fact's value = its mean over planted layers)
    with a bootstrap CI, uniform chance, the rule's mean, and estimator − rule with CI and sign-flip p.
    ``coverage_no0`` is coverage over the edits whose argmax window does not contain layer 0."""
    rng = np.random.default_rng(seed)
    out = []
    rows = rows.assign(coverage_no0=np.where(rows.covers0 > 0, np.nan, rows.coverage),
                       rule_coverage_no0=np.where(rows.covers0 > 0, np.nan, rows.rule_coverage))
    layers_all = np.arange(n_layers)
    for (est, w), g in rows.groupby(["estimator", "window"], sort=True):
        ch = pd.DataFrame([chance(layers_all, int(l), int(w), n_layers) for l in g.planted_layer]).mean()
        for metric in (*METRICS, "coverage_no0"):
            row = against_rule(g, metric, n_resamples, n_perm, rng, seed)
            out.append(dict(estimator=est, window=int(w), metric=metric, mean=row.pop("mean"),
                            ci_low=row.pop("ci_low"), ci_high=row.pop("ci_high"),
                            chance=float(ch[metric.removesuffix("_no0")]), **row))
    return pd.DataFrame(out)


def against_rule(g: pd.DataFrame, metric: str, n_resamples: int, n_perm: int, rng: np.random.Generator,
                 seed: int) -> dict:
    """One metric over the edits ``g`` (per-fact means): its mean with a bootstrap CI over facts, the baseline
    rule's mean (column ``rule_<metric>``), and metric − rule with its CI and sign-flip test over facts."""
    f = g.groupby("case_id")[[metric, f"rule_{metric}"]].mean()
    vals = f[metric].dropna().to_numpy()
    d = (f[metric] - f[f"rule_{metric}"]).to_numpy()
    ci = bootstrap_ci(vals, n_resamples=n_resamples, seed=seed)
    dci = bootstrap_ci(d[np.isfinite(d)], n_resamples=n_resamples, seed=seed)
    test = sign_flip_test(d, n_perm, rng)
    return dict(mean=ci.estimate, ci_low=ci.low, ci_high=ci.high, rule=float(f[f"rule_{metric}"].mean()),
                minus_rule=test.diff, minus_rule_low=dci.low, minus_rule_high=dci.high, p_rule=test.p,
                n_facts=len(vals), n_edits=int(g[metric].notna().sum()))


def paired_accuracy(rows: pd.DataFrame, pairs=(("flip", "noise"), ("resample", "noise")), n_perm: int = 9999,
                    n_resamples: int = 1000, seed: int = 0, metrics=METRICS) -> pd.DataFrame:
    """a − b per window and metric on the edits both have: per fact the mean over its planted layers of
    a − b, the within-fact sign-flip test and a bootstrap CI over facts; ``mdd`` ≈ (z₀.₉₇₅ + z₀.₈) · sd(d) / √n,
    the difference the two-sided 5 % test detects with 80 % power at this spread of per-fact differences."""
    rng = np.random.default_rng(seed)
    out = []
    for a, b, window, metric, d, n_edits in paired_differences(rows, pairs, metrics):
        test = sign_flip_test(d, n_perm, rng)
        ci = bootstrap_ci(d, n_resamples=n_resamples, seed=seed)
        fin = d[np.isfinite(d)]
        mdd = float((norm.ppf(0.975) + norm.ppf(0.8)) * fin.std(ddof=1) / np.sqrt(fin.size)) if fin.size > 1 \
            else float("nan")
        out.append(dict(a=a, b=b, window=window, metric=metric, diff=test.diff, ci_low=ci.low,
                        ci_high=ci.high, p=test.p, mdd=mdd, n_facts=test.n, n_edits=n_edits))
    return pd.DataFrame(out)


def simulate_paired(n_facts: int, n_layers: int, effect: float, kind: str, rng: np.random.Generator,
                    fact_sd: float = 1.0, edit_sd: float = 1.0, base: float = 0.0) -> np.ndarray:
    """Per-fact differences a − b (mean over its ``n_layers`` planted layers) of a simulated study in
    which each fact and each edit has an effect shared by both estimators (so a fact's rows are correlated
    across planted layers and between estimators) plus estimator noise; a is shifted by ``effect`` on
    the latent scale.  ``kind`` "binary": the metric is [latent > 0] (coverage/hit-like); "continuous":
    the latent's logistic transform (rr/mass-like)."""
    u = rng.normal(0, fact_sd, (n_facts, 1))
    v = rng.normal(0, edit_sd, (n_facts, n_layers))
    la = base + u + v + effect + rng.normal(0, 1, (n_facts, n_layers))
    lb = base + u + v + rng.normal(0, 1, (n_facts, n_layers))
    f = (lambda x: (x > 0).astype(float)) if kind == "binary" else (lambda x: 1 / (1 + np.exp(-x)))
    return (f(la) - f(lb)).mean(1)


def paired_calibration(n_facts: int = 50, n_layers: int = 4, effects=(0.0, 0.25, 0.5), n_sim: int = 1000,
                       n_perm: int = 999, alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """Rejection rate of the sign-flip test at ``alpha`` per metric kind and planted latent effect
    (effect 0: the size under a null that keeps the dependence; > 0: the power), with the mean
    difference it produced, and the Monte-Carlo standard error of the rate."""
    rng = np.random.default_rng(seed)
    out = []
    for kind in ("binary", "continuous"):
        for eff in effects:
            rates = rejection_rate(lambda: simulate_paired(n_facts, n_layers, eff, kind, rng), n_sim, n_perm,
                                   alpha, rng)
            out.append(dict(kind=kind, latent_effect=eff, **rates, n_facts=n_facts, n_layers=n_layers,
                            n_sim=n_sim, n_perm=n_perm, alpha=alpha))
    return pd.DataFrame(out)


def rejection_rate(simulate, n_sim: int, n_perm: int, alpha: float, rng: np.random.Generator) -> dict:
    """The sign-flip test's rejection rate at ``alpha`` over ``n_sim`` simulated per-fact differences
    (``simulate()``), with the mean difference they produced and the rate's Monte-Carlo standard error."""
    ps, ds = [], []
    for _ in range(n_sim):
        d = simulate()
        ps.append(sign_flip_test(d, n_perm, rng).p)
        ds.append(d.mean())
    rate = float(np.mean(np.array(ps) <= alpha))
    return dict(mean_diff=float(np.mean(ds)), rejection=rate, mc_se=float(np.sqrt(rate * (1 - rate) / n_sim)))
