"""The onset layer of residual-stream restoration at the last token, as a localisation metric on planted
facts (docs/groundtruth.md#onset).

Restoring the residual stream at the subject's positions cannot locate anything: at layer 0 it already
carries the whole clean subject, so it restores the answer from the first layer on (Meng et al. 2022,
Fig. 1, the subject's early residual rows).  At the *last token* the residual stream carries the answer
only once it has been moved there from the subject (Meng et al. 2022, Fig. 1, the late rise of the
last-token residual; Geva et al. 2023: attributes are extracted from the enriched subject by attention
in the upper layers).  Per planted edit (fact, planted layer l) and estimator, with the profile
r(j) = the planted fact's indirect effect of restoring the residual stream (block output, window 1) at
the last token after block j (denoising, metric p(o_new)):

* ``onset`` = the first layer j with r(j) ≥ ½ · max_k r(k) (NaN when max_k r(k) ≤ 0); restoring the last
  block's output there restores the clean output, so max_k r(k) is about the total effect;
* ``onset_error`` = |onset − l| (layers); **the onset's primary metric**: smaller is better;
* ``onset_after`` = [onset > l]: the answer arrives at the last token only after the layer that wrote it
  (block l's MLP output is read by attention from block l + 1 on);
* ``onset_lag`` = onset − l (descriptive).

Baselines: uniform chance (an onset uniform over the L layers: E|U − l| and P(U > l) = (L − 1 − l)/L) and
the most-common-onset rule (predict, for every edit, the most common onset of this estimator on the
*other* facts; ties split).  Means over facts, CIs and paired tests as in
:mod:`causaleval.groundtruth.accuracy`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from causaleval.groundtruth.accuracy import against_rule, paired_accuracy, rejection_rate

KEYS = ["case_id", "relation_id", "estimator", "window", "planted_layer"]
METRICS = ("onset_error", "onset_after", "onset_lag")
PRIMARY = "onset_error"
FRACTION = 0.5


def onset_layer(layers: np.ndarray, effect: np.ndarray, fraction: float = FRACTION) -> float:
    """The first of ``layers`` (ascending) at which ``effect`` reaches ``fraction`` of its maximum; NaN when
    the maximum is not positive (nothing is restored)."""
    x = np.asarray(effect, float)
    if not np.isfinite(x).any() or np.nanmax(x) <= 0:
        return float("nan")
    reached = np.flatnonzero(np.nan_to_num(x, nan=-np.inf) >= fraction * np.nanmax(x))
    return float(np.asarray(layers)[reached[0]])


def _scores(onset: float, planted: int) -> dict:
    if not np.isfinite(onset):
        return dict(onset_error=np.nan, onset_after=np.nan, onset_lag=np.nan)
    return dict(onset_error=abs(onset - planted), onset_after=float(onset > planted), onset_lag=onset - planted)


def onset_rows(profiles: pd.DataFrame) -> pd.DataFrame:
    """One row per (case, estimator, window, planted layer): ``onset`` and its metrics, the unedited model's
    onset for the same answer (``onset_unedited``) and the most-common-onset rule's ``rule_*`` values.

    ``profiles``: a row per layer j with columns KEYS + ``layer``, ``ie`` (and ``ie_unedited``)."""
    rows = []
    for key, g in profiles.sort_values("layer").groupby(KEYS, sort=True):
        onset = onset_layer(g.layer.to_numpy(), g.ie.to_numpy(float))
        base = onset_layer(g.layer.to_numpy(), g.ie_unedited.to_numpy(float)) if "ie_unedited" in g else np.nan
        rows.append({**dict(zip(KEYS, key)), "onset": onset, "onset_unedited": base, **_scores(onset, int(key[-1]))})
    out = pd.DataFrame(rows, columns=KEYS + ["onset", "onset_unedited", *METRICS])
    if out.empty:
        return out
    rule = [rule_scores(out[(out.estimator == r.estimator) & (out.case_id != r.case_id)].onset, int(r.planted_layer))
            for r in out.itertuples()]
    return pd.concat([out, pd.DataFrame(rule, index=out.index)], axis=1)


def rule_scores(other_onsets: pd.Series, planted: int) -> dict:
    """The most-common-onset rule: the mode of ``other_onsets`` (other facts' onsets), ties split equally."""
    counts = other_onsets.dropna().value_counts()
    if counts.empty:
        return {f"rule_{m}": np.nan for m in METRICS}
    modes = counts.index[counts == counts.max()]
    per_mode = pd.DataFrame([_scores(float(m), planted) for m in modes]).mean()
    return {f"rule_{m}": float(per_mode[m]) for m in METRICS}


def chance(planted: int, n_layers: int) -> dict:
    """Each metric for an onset drawn uniformly from the ``n_layers`` layers."""
    u = np.arange(n_layers)
    return dict(onset_error=float(np.abs(u - planted).mean()), onset_after=float((u > planted).mean()),
                onset_lag=float((u - planted).mean()))


def onset_summary(rows: pd.DataFrame, n_layers: int, n_perm: int = 9999, n_resamples: int = 1000,
                  seed: int = 0) -> pd.DataFrame:
    """Per estimator × metric: the mean over facts (a fact's value = its mean over planted layers) with a
    bootstrap CI, uniform chance, the rule's mean, and estimator − rule with CI and sign-flip p."""
    rng = np.random.default_rng(seed)
    out = []
    for (est, w), g in rows.groupby(["estimator", "window"], sort=True):
        ch = pd.DataFrame([chance(int(l), n_layers) for l in g.planted_layer]).mean()
        for metric in METRICS:
            row = against_rule(g, metric, n_resamples, n_perm, rng, seed)
            out.append(dict(estimator=est, window=int(w), metric=metric, mean=row.pop("mean"),
                            ci_low=row.pop("ci_low"), ci_high=row.pop("ci_high"), chance=float(ch[metric]), **row,
                            n_undefined=int(g.onset.isna().sum())))
    return pd.DataFrame(out)


def onset_tests(rows: pd.DataFrame, n_layers: int, n_perm: int, n_resamples: int,
                seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The onset rows' two tables: :func:`onset_summary` (against chance and the rule) and the paired
    flip − noise and resample − noise tests on the onset metrics (:func:`paired_accuracy`)."""
    return (onset_summary(rows, n_layers, n_perm, n_resamples, seed),
            paired_accuracy(rows, n_perm=n_perm, n_resamples=n_resamples, seed=seed, metrics=METRICS))


def simulate_onset_errors(n_facts: int, planted: np.ndarray, n_layers: int, shift: float, rng: np.random.Generator,
                          fact_sd: float = 3.0, edit_sd: float = 2.0, noise_sd: float = 2.0,
                          lag: float = 4.0) -> np.ndarray:
    """Per-fact differences a − b of the mean ``onset_error`` over the ``planted`` layers in a simulated study:
    the onset is l + ``lag`` plus a fact effect and an edit effect shared by both estimators (so a fact's rows
    are correlated across planted layers and between estimators) plus estimator noise, rounded to a layer and
    clipped to the model; estimator a's onset is moved towards l by ``shift`` layers."""
    k = len(planted)
    shared = planted[None, :] + lag + rng.normal(0, fact_sd, (n_facts, 1)) + rng.normal(0, edit_sd, (n_facts, k))
    a = shared - shift + rng.normal(0, noise_sd, (n_facts, k))
    b = shared + rng.normal(0, noise_sd, (n_facts, k))
    err = lambda x: np.abs(np.clip(np.round(x), 0, n_layers - 1) - planted[None, :])  # noqa: E731
    return (err(a) - err(b)).mean(1)


def onset_calibration(n_facts: int = 50, planted=(3, 10, 17, 24), n_layers: int = 30, shifts=(0.0, 1.0, 2.0),
                      n_sim: int = 1000, n_perm: int = 999, alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """Rejection rate of the paired sign-flip test of ``onset_error`` at ``alpha`` per planted shift (0: the
    size under a null that keeps the dependence; > 0: the power), with its Monte-Carlo standard error."""
    rng = np.random.default_rng(seed)
    planted = np.asarray(planted, int)
    out = []
    for shift in shifts:
        rates = rejection_rate(lambda: simulate_onset_errors(n_facts, planted, n_layers, shift, rng), n_sim, n_perm,
                               alpha, rng)
        out.append(dict(kind="onset_error", shift=shift, **rates, n_facts=n_facts, n_layers=len(planted),
                        n_sim=n_sim, n_perm=n_perm, alpha=alpha))
    return pd.DataFrame(out)
