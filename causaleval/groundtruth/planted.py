"""Ground truth for localisers: do they find a fact where ROME planted it? (docs/estimands.md#planted-facts)

A ROME edit of (s, r, o → o_new) at layer l writes the new association into the MLP of block l at the
subject's last token (Meng et al. 2022, §3).  On the edited model a localiser that finds where a fact
is stored should put the planted fact's effect at l.  Per edit (case, planted layer l), estimator and
MLP window w, with the *profile* e(j) = IE of the planted fact (answer o_new) at the last subject
token, MLP window w centred at layer j, for every layer j (denoising, metric p(o_new)):

* ``hit1`` = [l ∈ argmax_j e(j)] / |argmax set|, ties split (a random tie-break picks l);
* ``hit3`` = P(l is among the 3 largest of e under a random tie-break): clip((3 − G) / (T + 1), 0, 1)
  with G layers strictly above e(l) and T others tied with it;
* ``distance`` = mean over the argmax set of |j − l| (layers);
* ``mass`` = e(l)⁺ / Σ_j e(j)⁺, the share of the profile's positive part at l (NaN when it is all ≤ 0);
* ``ie_at`` = e(l); ``ie_unedited_at`` = the same estimand on the unedited model (same answer o_new,
  same draws and partners); ``added`` = ie_at − ie_unedited_at: the part of the effect at l the edit added.

Chance for hit1 is 1/L for a profile unrelated to l.  Hase et al. (2023) asked whether localisation
predicts edit success; this asks whether it recovers a known locus.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from causaleval.inference.argmax import argmax_sets
from causaleval.inference.bootstrap import bootstrap_ci
from causaleval.inference.paired import sign_flip_test

KEYS = ["case_id", "relation_id", "estimator", "window", "planted_layer"]
METRICS = ("hit1", "hit3", "distance", "mass", "ie_at", "ie_unedited_at", "added")


def top_k_hit(profile: np.ndarray, idx: int, k: int, rtol: float = 1e-9) -> float:
    """P(position ``idx`` is among the ``k`` largest of ``profile`` under a uniformly random tie-break)."""
    v = profile[idx]
    if not np.isfinite(v):
        return 0.0
    tol = rtol * max(1.0, abs(v))
    x = np.nan_to_num(profile, nan=-np.inf)
    greater = int(np.sum(x > v + tol))
    tied = int(np.sum(np.abs(x - v) <= tol)) - 1
    return float(np.clip((k - greater) / (tied + 1), 0.0, 1.0))


def edit_metrics(layers: np.ndarray, ie: np.ndarray, ie_unedited: np.ndarray, planted: int) -> dict:
    """The accuracy of one profile (see module docstring); ``layers`` ascending, ``planted`` among them."""
    idx = int(np.flatnonzero(layers == planted)[0])
    top = argmax_sets(ie[None, :])[0]
    pos = np.clip(np.nan_to_num(ie, nan=0.0), 0.0, None)
    return dict(hit1=float(top[idx] / top.sum()), hit3=top_k_hit(ie, idx, 3),
                distance=float(np.abs(layers[top] - planted).mean()),
                mass=float(pos[idx] / pos.sum()) if pos.sum() > 0 else float("nan"),
                ie_at=float(ie[idx]), ie_unedited_at=float(ie_unedited[idx]),
                added=float(ie[idx] - ie_unedited[idx]),
                argmax_layers=[int(x) for x in layers[top]])


def localisation_rows(profiles: pd.DataFrame) -> pd.DataFrame:
    """One row per (case, estimator, window, planted layer) with :func:`edit_metrics` and the edit's TE.

    ``profiles``: a row per layer j with columns KEYS + ``layer``, ``ie``, ``ie_unedited``, ``te``."""
    rows = []
    for key, g in profiles.sort_values("layer").groupby(KEYS, sort=True):
        m = edit_metrics(g.layer.to_numpy(), g.ie.to_numpy(float), g.ie_unedited.to_numpy(float), int(key[-1]))
        rows.append({**dict(zip(KEYS, key)), **m, "te": float(g.te.iloc[0]), "n_layers": len(g)})
    return pd.DataFrame(rows, columns=KEYS + [*METRICS, "argmax_layers", "te", "n_layers"])


def rows_without_layers(profiles: pd.DataFrame, localisation: pd.DataFrame, exclude=(0,), window: int = 1) -> pd.DataFrame:
    """:func:`localisation_rows` of the edits in ``localisation`` (window ``window``) with the layers
    ``exclude`` left out of every profile: where does the effect peak among the other layers?  (On the
    embedded models the layer-0 MLP carries a large effect for every fact, whatever was planted, so it
    takes most misses.)  Chance hit@1 is then 1/(L − |exclude|); planted layers in ``exclude`` are dropped."""
    keys = localisation.loc[localisation.window == window, KEYS].drop_duplicates()
    keys = keys[~keys.planted_layer.isin(list(exclude))]
    kept = profiles[(profiles.window == window) & ~profiles.layer.isin(list(exclude))].merge(keys, on=KEYS)
    return localisation_rows(kept)


def per_fact(rows: pd.DataFrame, metric: str, by: list[str]) -> pd.DataFrame:
    """The mean of ``metric`` per fact within each group of ``by`` (over the fact's planted layers)."""
    return rows.groupby(by + ["case_id"], as_index=False)[metric].mean()


def accuracy_table(rows: pd.DataFrame, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per estimator × window × planted layer (and ``planted_layer = -1``: all planted layers, a fact's
    value being its mean over them): the mean over facts of every metric with a bootstrap CI over facts."""
    out = []
    every = rows.assign(planted_layer=-1)
    for frame in (rows, every):
        for key, g in frame.groupby(["estimator", "window", "planted_layer"], sort=True):
            row = dict(zip(["estimator", "window", "planted_layer"], key), n_facts=g.case_id.nunique(),
                       n_edits=len(g))
            for metric in METRICS:
                vals = g.groupby("case_id")[metric].mean().dropna().to_numpy()
                ci = bootstrap_ci(vals, n_resamples=n_resamples, seed=seed)
                row.update({metric: ci.estimate, f"{metric}_low": ci.low, f"{metric}_high": ci.high})
            out.append(row)
    return pd.DataFrame(out)


def paired_differences(rows: pd.DataFrame, pairs, metrics):
    """(a, b, window, metric, d, n_edits) per pair, window and metric on the edits both estimators have:
    ``d`` holds per fact the mean over its planted layers of a's value minus b's."""
    for a, b in pairs:
        for window in sorted(rows.window.unique()):
            w = rows[rows.window == window]
            for metric in metrics:
                wide = w.pivot_table(index=["case_id", "planted_layer"], columns="estimator", values=metric)
                if a not in wide or b not in wide:
                    continue
                both = wide[[a, b]].dropna()
                d = (both[a] - both[b]).groupby(level="case_id").mean().to_numpy()
                yield a, b, int(window), metric, d, len(both)


def paired_tests(rows: pd.DataFrame, pairs=(("flip", "noise"), ("resample", "noise")), n_perm: int = 9999,
                 n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Paired comparisons a − b per window and metric (:func:`paired_differences`), tested by
    :func:`sign_flip_test`, with a bootstrap CI over facts."""
    out = []
    rng = np.random.default_rng(seed)
    for a, b, window, metric, d, n_edits in paired_differences(rows, pairs, METRICS):
        test = sign_flip_test(d, n_perm, rng)
        ci = bootstrap_ci(d, n_resamples=n_resamples, seed=seed)
        out.append(dict(a=a, b=b, window=window, metric=metric, diff=test.diff, ci_low=ci.low,
                        ci_high=ci.high, p=test.p, n_facts=test.n, n_edits=n_edits, n_perm=n_perm))
    return pd.DataFrame(out)


def argmax_histogram(rows: pd.DataFrame) -> pd.DataFrame:
    """Where the argmax lands: per estimator × window × planted layer × argmax layer, the share of edits
    (tied argmax layers share an edit equally); ``miss`` marks argmax layers other than the planted one."""
    recs = [dict(estimator=r.estimator, window=int(r.window), planted_layer=int(r.planted_layer), argmax_layer=j,
                 weight=1.0 / len(r.argmax_layers))
            for r in rows.itertuples() for j in r.argmax_layers]
    cols = ["estimator", "window", "planted_layer", "argmax_layer", "edits", "share", "miss"]
    if not recs:
        return pd.DataFrame(columns=cols)
    keys = ["estimator", "window", "planted_layer", "argmax_layer"]
    h = pd.DataFrame(recs).groupby(keys, as_index=False).weight.sum()
    total = rows.groupby(["estimator", "window", "planted_layer"]).size().rename("n").reset_index()
    h = h.merge(total).rename(columns={"weight": "edits"})
    h["share"] = h.edits / h.n
    h["miss"] = h.argmax_layer != h.planted_layer
    return h[cols]
